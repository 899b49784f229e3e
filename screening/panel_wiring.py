"""The optional front panel (firmware/panel.py), built from ``[panel]`` and attached to the daemon.

The driver only shows states and calls back on a long press; what a report *means* (block
the number, record the verdict, tell the family) is the use case here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from blocklist.store import Store
from firmware.panel import FrontPanel, PanelPins, PanelState
from screening.config import Config
from screening.core.model import CallerID, Decision, EventKind, ListEntry, ListKind, MatchKind, Verdict
from screening.events import CallScreened, EventBus, FraudHeard, LineFault, LineRestored

if TYPE_CHECKING:
    from screening.alert_wiring import RunningAlerts
    from voice.pipeline import FraudEvent

log = logging.getLogger(__name__)

REPORTED_NOTE = "reported with the button"


@dataclass(slots=True)
class RunningPanel:
    panel: FrontPanel
    hooks: PanelHooks

    def subscribe(self, bus: EventBus) -> Callable[[], None]:
        """Show the daemon's events on the panel; returns the function that stops listening."""
        hooks: Any = self.hooks
        unsubscribers = [
            bus.subscribe(CallScreened, lambda event: hooks.on_screened(event.call_id, event.caller, event.decision)),
            bus.subscribe(LineFault, lambda event: hooks.on_line_fault(event.message)),
            bus.subscribe(LineRestored, lambda event: hooks.on_line_restored(event.message)),
            bus.subscribe(FraudHeard, lambda event: hooks.on_fraud(event.fraud)),
        ]

        def unsubscribe() -> None:
            for stop_listening in unsubscribers:
                stop_listening()

        return unsubscribe

    def close(self) -> None:
        self.panel.close()


def start_panel(cfg: Config, store: Store, alerts: object | None) -> RunningPanel | None:
    """None when no pin is configured (no panel fitted). Without gpiozero the parts fail to
    open and are logged by the driver; screening goes on either way."""
    pins = cfg.panel
    if not any((pins.status_led, pins.red_led, pins.button, pins.buzzer)):
        return None
    panel = FrontPanel(PanelPins(pins.status_led, pins.red_led, pins.button, pins.buzzer))
    hooks = PanelHooks(panel, store, alerts)  # type: ignore[arg-type]
    if panel.open():
        panel.show(PanelState.READY)
    return RunningPanel(panel, hooks)


@dataclass(slots=True)
class PanelHooks:
    """Callbacks the daemon and voice service can take, driving one :class:`FrontPanel`.

    Attach: ``Daemon.on_screened``, ``Daemon.on_line_fault``, ``VoiceService.on_fraud``
    (append), and line-restored from wherever ``LineRestored`` is seen. The panel's
    long press is bound to :meth:`report_last_call` unless it already had an action.
    """

    panel: FrontPanel
    store: Store
    alerts: RunningAlerts | None = None
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))

    def __post_init__(self) -> None:
        if self.panel.on_report is None:
            self.panel.on_report = self.report_last_call

    def on_call_started(self) -> None:
        """CALL while a call is being handled. Nothing calls this yet (the daemon only reports
        a call once it is over); kept so the lead can wire a session-start hook later."""
        self.panel.show(PanelState.CALL)

    def on_screened(self, call_id: int, caller: CallerID, decision: Decision) -> None:
        """The daemon calls this after the call is over: back to READY (FRAUD stays latched)."""
        self.panel.show(PanelState.READY)

    def on_fraud(self, event: FraudEvent) -> None:
        self.panel.show(PanelState.FRAUD)

    def on_line_fault(self, message: str) -> None:
        self.panel.show(PanelState.FAULT)

    def on_line_restored(self, message: str = "") -> None:
        self.panel.show(PanelState.READY)

    def report_last_call(self) -> int | None:
        """The household says the last call was a fraud: block it, record it, tell the family.

        Returns the call id reported, or None when there is no call yet. The call is *not*
        marked reviewed: its recording stays protected from retention until a relative
        has listened to it (``Store.mark_reviewed`` is for them).
        """
        calls = self.store.recent_calls(limit=1)
        if not calls:
            log.warning("panel report: there is no call to report")
            return None
        call = calls[0]
        blocked = self._block(call.number_e164)
        self._record_fraud(call.id, call.verdict, call.score, call.transcript, call.fraud_at is None, blocked)
        self._alert(call.id, CallerID(raw_number=call.raw_number, number_e164=call.number_e164), blocked)
        return call.id

    def _block(self, number_e164: str | None) -> bool:
        if not number_e164:
            log.warning("panel report: the last call had no usable number; nothing to block")
            return False
        self.store.add_entry(ListEntry(ListKind.BLOCK, MatchKind.EXACT, number_e164, source="household",
                                       note=REPORTED_NOTE))  # fmt: skip
        log.info("panel report: %s blocked", number_e164)
        return True

    def _record_fraud(self, call_id: int, verdict: Verdict | None, score: float | None, transcript: str | None,
                      no_fraud_time: bool, blocked: bool) -> None:  # fmt: skip
        """Verdict fraud (keeping the detector's score and transcript) plus an event saying who said so."""
        if verdict is not Verdict.FRAUD:
            self.store.set_detection(call_id, Verdict.FRAUD.value, score if score is not None else 1.0,
                                     transcript or "", fraud_at=self.clock() if no_fraud_time else None)  # fmt: skip
        self.store.add_event(call_id, EventKind.FRAUD, source="household", via="button", blocked=blocked,
                             previous_verdict=verdict.value if verdict else None)  # fmt: skip

    def _alert(self, call_id: int, caller: CallerID, blocked: bool) -> None:
        if self.alerts is None:
            log.info("panel report: alerts are off; the report is in the call log only")
            return
        label = self.alerts.label(caller)
        outcome = "the number is now blocked" if blocked else "it had no number to block"
        # TODO(lead): AlertService has no "household reported a call" trigger; this rides on the
        # HEALTH alert (NORMAL urgency, waits out quiet hours, text "mamoru needs attention: …").
        # A dedicated AlertKind (e.g. REPORTED, URGENT) with its own templates would read better.
        try:
            self.alerts.service.on_health(f"household_report:call:{call_id}",
                                          f"the household pressed the button: call {call_id} from {label} "
                                          f"was a fraud; {outcome}")  # fmt: skip
        except Exception:
            log.exception("panel report: alerting the family failed")
