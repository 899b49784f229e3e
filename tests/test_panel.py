"""Front panel (firmware/panel.py) against gpiozero's MockFactory.

The mock pins are gpiozero's own: LEDs and the buzzer really drive them (blinking on
gpiozero's threads), and the button really debounces and times the hold. What this
does not prove is the wiring or the lgpio back-end on a Pi.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("gpiozero")
from gpiozero.pins.mock import MockFactory

from blocklist.store import Store
from firmware.panel import FrontPanel, PanelPins, PanelState
from screening.core.model import Action, CallerID, Category, Decision, EventKind, ListKind, MatchKind, Verdict
from screening.panel_wiring import PanelHooks

GREEN, RED, BUTTON, BUZZER = 17, 27, 22, 23
HOLD_S = 0.3  # the real 2 s would make every test slow; the mechanism is the same
BOUNCE_S = 0.01
WAIT_S = 3.0  # upper bound for anything asynchronous


@pytest.fixture
def factory() -> Iterator[MockFactory]:
    f = MockFactory()
    yield f
    f.reset()


def make_panel(factory: MockFactory, pins: PanelPins | None = None, **kw: Any) -> FrontPanel:
    pins = pins or PanelPins(status_led=GREEN, red_led=RED, button=BUTTON, buzzer=BUZZER)
    return FrontPanel(pins, pin_factory=factory, hold_time_s=HOLD_S, bounce_time_s=BOUNCE_S, **kw)


@pytest.fixture
def panel(factory: MockFactory) -> Iterator[FrontPanel]:
    p = make_panel(factory)
    assert p.open()
    yield p
    p.close()


def level(factory: MockFactory, pin: int) -> bool:
    return bool(factory.pin(pin).state)


def toggles(factory: MockFactory, pin: int, seconds: float) -> int:
    """Sample a pin for ``seconds`` and count the level changes seen (a blink shows several)."""
    seen, last = 0, level(factory, pin)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        now = level(factory, pin)
        if now != last:
            seen, last = seen + 1, now
        time.sleep(0.005)
    return seen


def wait_until(predicate: Callable[[], bool], timeout: float = WAIT_S) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def press(factory: MockFactory, seconds: float) -> None:
    """Button to ground with pull-up: low is pressed."""
    pin = factory.pin(BUTTON)
    pin.drive_low()
    time.sleep(seconds)
    pin.drive_high()
    time.sleep(BOUNCE_S * 3)


# ---------------------------------------------------------------------- construction


def test_constructor_touches_no_pins(factory: MockFactory) -> None:
    make_panel(factory)
    assert factory.pins == {}  # nothing reserved until open()


def test_missing_parts_are_fine(factory: MockFactory) -> None:
    panel = make_panel(factory, PanelPins())
    assert panel.open()
    for state in PanelState:
        panel.show(state)
    assert panel.acknowledge()  # FRAUD was latched, even with nothing to show it on
    panel.close()
    panel.close()


def test_part_that_cannot_open_is_skipped(factory: MockFactory) -> None:
    # The pin is already taken: gpiozero refuses, the panel carries on with the rest.
    from gpiozero import LED

    squatter = LED(RED, pin_factory=factory)
    panel = make_panel(factory)
    try:
        assert panel.open() is False
        panel.show(PanelState.READY)
        assert level(factory, GREEN)
    finally:
        panel.close()
        squatter.close()


# ---------------------------------------------------------------------- states


def test_ready_is_green_steady(panel: FrontPanel, factory: MockFactory) -> None:
    panel.show(PanelState.READY)
    assert level(factory, GREEN) and not level(factory, RED) and not level(factory, BUZZER)
    assert toggles(factory, GREEN, 0.3) == 0


def test_call_is_green_blinking(panel: FrontPanel, factory: MockFactory) -> None:
    panel.show(PanelState.CALL)
    assert toggles(factory, GREEN, 1.5) >= 2
    assert not level(factory, RED)


def test_fraud_is_red_fast_blink_and_beeps(panel: FrontPanel, factory: MockFactory) -> None:
    panel.show(PanelState.FRAUD)
    assert toggles(factory, RED, 0.6) >= 4  # 0.1 s on / 0.1 s off
    assert toggles(factory, BUZZER, 1.5) >= 2
    assert not level(factory, GREEN)


def test_fault_is_red_steady(panel: FrontPanel, factory: MockFactory) -> None:
    panel.show(PanelState.FAULT)
    assert level(factory, RED) and not level(factory, GREEN)
    assert toggles(factory, RED, 0.3) == 0


def test_single_led_build_still_shows_fault_and_fraud(factory: MockFactory) -> None:
    panel = make_panel(factory, PanelPins(status_led=GREEN))
    panel.open()
    try:
        panel.show(PanelState.FRAUD)
        assert toggles(factory, GREEN, 0.6) >= 4
        panel.acknowledge()
        panel.show(PanelState.FAULT)
        assert toggles(factory, GREEN, 2.5) >= 2  # a short flash every two seconds
    finally:
        panel.close()


def test_fraud_latches_until_acknowledged(panel: FrontPanel, factory: MockFactory) -> None:
    panel.show(PanelState.FRAUD)
    panel.show(PanelState.READY)  # the call ended: still FRAUD
    assert panel.state is PanelState.FRAUD
    assert toggles(factory, RED, 0.5) >= 2
    panel.show(PanelState.FAULT)
    assert panel.acknowledge()
    assert panel.state is PanelState.FAULT  # the last state asked for while latched
    assert level(factory, RED) and not level(factory, BUZZER)
    assert not panel.acknowledge()


# ---------------------------------------------------------------------- button


def test_short_press_acknowledges_fraud(panel: FrontPanel, factory: MockFactory) -> None:
    reports: list[int] = []
    panel.on_report = lambda: reports.append(1)
    panel.show(PanelState.FRAUD)
    press(factory, 0.05)
    assert wait_until(lambda: panel.state is PanelState.READY)
    assert level(factory, GREEN) and not level(factory, RED)
    assert reports == []


def test_long_press_reports(panel: FrontPanel, factory: MockFactory) -> None:
    reported = threading.Event()
    panel.on_report = reported.set
    factory.pin(BUTTON).drive_low()
    assert reported.wait(WAIT_S)  # fires while still held, at hold time
    factory.pin(BUTTON).drive_high()
    assert toggles(factory, BUZZER, 0.5) >= 2  # the confirmation beeps


def test_short_press_does_not_report(panel: FrontPanel, factory: MockFactory) -> None:
    reported = threading.Event()
    panel.on_report = reported.set
    press(factory, HOLD_S / 4)
    assert not reported.wait(HOLD_S * 2)


def test_long_press_during_fraud_reports_and_clears_it(panel: FrontPanel, factory: MockFactory) -> None:
    reported = threading.Event()
    panel.on_report = reported.set
    panel.show(PanelState.FRAUD)
    press(factory, HOLD_S * 2)
    assert reported.is_set()
    assert panel.state is PanelState.READY


def test_failing_report_action_is_contained(panel: FrontPanel, factory: MockFactory) -> None:
    calls: list[int] = []

    def broken() -> None:
        calls.append(1)
        raise RuntimeError("database gone")

    panel.on_report = broken
    press(factory, HOLD_S * 2)
    assert calls == [1]
    reported = threading.Event()
    panel.on_report = reported.set  # gpiozero's callback thread is still alive
    press(factory, HOLD_S * 2)
    assert reported.is_set()


# ---------------------------------------------------------------------- hooks and the report


class FakeService:
    def __init__(self) -> None:
        self.health: list[tuple[str, str]] = []

    def on_health(self, key: str, message: str) -> None:
        self.health.append((key, message))


class FakeAlerts:
    """Stands in for RunningAlerts: only ``label`` and ``service.on_health`` are used."""

    def __init__(self) -> None:
        self.service = FakeService()

    def label(self, caller: CallerID | None) -> str:
        return caller.number_e164 if caller and caller.number_e164 else "?"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "mamoru.db", busy_timeout=0.05, retry_interval=0.0) as s:
        yield s


ALLOWED = Decision(Action.ALLOW, "default", "nothing against it", Category.DOMESTIC)


def test_report_blocks_number_and_records_fraud(store: Store, factory: MockFactory) -> None:
    store.begin_call("modem", CallerID(raw_number="0311112222", number_e164="+81311112222"), decision=ALLOWED)
    last = store.begin_call("modem", CallerID(raw_number="0398765432", number_e164="+81398765432"),
                            decision=ALLOWED)  # fmt: skip
    alerts = FakeAlerts()
    panel = make_panel(factory)
    hooks = PanelHooks(panel, store, alerts)  # type: ignore[arg-type]
    assert panel.on_report == hooks.report_last_call
    panel.open()
    try:
        press(factory, HOLD_S * 2)
    finally:
        panel.close()

    blocked = store.list_entries(ListKind.BLOCK)
    assert [(e.match, e.value, e.source) for e in blocked] == [(MatchKind.EXACT, "+81398765432", "household")]
    assert blocked[0].note == "reported with the button"
    row = store.get_call(last)
    assert row.verdict is Verdict.FRAUD and row.fraud_at is not None
    assert row.reviewed_at is None  # the recording stays protected until a relative listens
    events = [e for e in store.events_for(last) if e.kind == EventKind.FRAUD]
    assert len(events) == 1 and events[0].detail["source"] == "household"
    assert [key for key, _ in alerts.service.health] == [f"household_report:call:{last}"]


def test_report_of_call_without_number(store: Store, factory: MockFactory) -> None:
    call = store.begin_call("modem", CallerID(reason=None, raw_number=None), decision=ALLOWED)
    hooks = PanelHooks(make_panel(factory), store, None)
    assert hooks.report_last_call() == call
    assert store.list_entries(ListKind.BLOCK) == []
    assert store.get_call(call).verdict is Verdict.FRAUD


def test_report_with_no_calls(store: Store, factory: MockFactory) -> None:
    assert PanelHooks(make_panel(factory), store, None).report_last_call() is None


def test_report_keeps_detector_verdict_and_score(store: Store, factory: MockFactory) -> None:
    call = store.begin_call("modem", CallerID(raw_number="0398765432", number_e164="+81398765432"),
                            decision=ALLOWED)  # fmt: skip
    store.set_detection(call, "fraud", 0.93, "振り込んで", fraud_at=None)
    PanelHooks(make_panel(factory), store, None).report_last_call()
    row = store.get_call(call)
    assert (row.verdict, row.score, row.transcript) == (Verdict.FRAUD, 0.93, "振り込んで")


def test_hooks_drive_states(store: Store, panel: FrontPanel, factory: MockFactory) -> None:
    hooks = PanelHooks(panel, store, None)
    hooks.on_line_fault("modem stopped answering")
    assert panel.state is PanelState.FAULT and level(factory, RED)
    hooks.on_line_restored()
    assert panel.state is PanelState.READY and level(factory, GREEN)
    hooks.on_call_started()
    assert panel.state is PanelState.CALL
    hooks.on_fraud(object())  # type: ignore[arg-type]
    hooks.on_screened(1, CallerID(), ALLOWED)
    assert panel.state is PanelState.FRAUD  # latched through the end of the call
    panel.acknowledge()
    assert panel.state is PanelState.READY
