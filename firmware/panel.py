"""The appliance's front panel: two LEDs, a buzzer and one big button, through gpiozero.

Why a panel at all: the household cannot read a web page mid-call. A red light and
a beep say "this call sounds like fraud" where they are; one button lets them say
"that last call was a fraud" without a phone or a relative at hand.

Every part is optional (:class:`PanelPins` fields are ``None`` when not fitted), and
a panel that fails to open leaves screening untouched: :meth:`FrontPanel.open`
logs and carries on with whatever parts did open. Nothing here ever raises into
the call loop.

States (:class:`PanelState`)

* READY: green steady.
* CALL: green blinking.
* FRAUD: red fast blink plus buzzer beeps. *Latched*: later states are remembered
  but not shown until someone presses the button briefly (or :meth:`acknowledge`).
* FAULT: red steady.

Without a red LED the green one stands in (FRAUD fast blink, FAULT a short flash
every two seconds), so a single-LED build still tells the states apart.

Button (wired to ground, internal pull-up): a *long* press (``hold_time_s``, 2 s by
default, so a knock does not report anything) calls ``on_report`` — "report the
last call as fraud" — and answers with two short beeps; a *short* press
acknowledges a FRAUD latch. What a report does is not the driver's business: the
use case lives in ``screening/panel_wiring.py``.

gpiozero runs blinking, beeping and button callbacks on its own threads;
:class:`FrontPanel` serialises state changes under a lock and never calls
``on_report`` while holding it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Self

log = logging.getLogger(__name__)

DEFAULT_HOLD_S = 2.0  # long enough that leaning on the box does not report a call
DEFAULT_BOUNCE_S = 0.05
CALL_BLINK_S = (0.5, 0.5)  # (on, off)
FRAUD_BLINK_S = (0.1, 0.1)
FAULT_FLASH_S = (0.1, 1.9)  # single-LED build only
FRAUD_BEEP_S = (0.2, 0.8)
FRAUD_BEEPS = 30  # about 30 s of beeping; the red light stays latched after that
CONFIRM_BEEP_S = (0.1, 0.1)
CONFIRM_BEEPS = 2


class PanelState(StrEnum):
    READY = "ready"
    CALL = "call"
    FRAUD = "fraud"
    FAULT = "fault"


@dataclass(frozen=True, slots=True)
class PanelPins:
    """BCM (GPIO) numbers; ``None`` for a part that is not fitted."""

    status_led: int | None = None  # green
    red_led: int | None = None
    button: int | None = None  # to ground; the internal pull-up is used
    buzzer: int | None = None  # active buzzer (beeps on a plain high level)


class FrontPanel:
    """LEDs, buzzer and button; see the module docstring for what each state looks like."""

    def __init__(
        self,
        pins: PanelPins,
        pin_factory: Any = None,  # gpiozero Factory; None: gpiozero's default (lgpio on a Pi)
        *,
        on_report: Callable[[], object] | None = None,
        hold_time_s: float = DEFAULT_HOLD_S,
        bounce_time_s: float = DEFAULT_BOUNCE_S,
    ) -> None:
        self.pins = pins
        self.on_report = on_report
        self._pin_factory = pin_factory
        self._hold_time_s = hold_time_s
        self._bounce_time_s = bounce_time_s
        self._lock = threading.RLock()
        self._green: Any = None
        self._red: Any = None
        self._buzzer: Any = None
        self._button: Any = None
        self._state = PanelState.READY  # what is shown
        self._behind_latch: PanelState | None = None  # requested while FRAUD was latched
        self._held = False  # the current press already fired on_report

    # ---- lifecycle -----------------------------------------------------------------

    def open(self) -> bool:
        """Create the gpiozero devices and show READY. False if any configured part failed
        (logged; the parts that opened work, and screening must go on without the rest)."""
        ok = True
        with self._lock:
            self._green, good = self._make("status LED", self.pins.status_led, self._make_led)
            ok &= good
            self._red, good = self._make("red LED", self.pins.red_led, self._make_led)
            ok &= good
            self._buzzer, good = self._make("buzzer", self.pins.buzzer, self._make_buzzer)
            ok &= good
            self._button, good = self._make("button", self.pins.button, self._make_button)
            ok &= good
            self._render(self._state)
        return ok

    def close(self) -> None:
        """Switch everything off and release the pins; safe to call twice."""
        with self._lock:
            for device in (self._button, self._buzzer, self._red, self._green):
                if device is None:
                    continue
                try:
                    device.close()
                except Exception:
                    log.exception("panel: closing %r failed", device)
            self._green = self._red = self._buzzer = self._button = None

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- state ---------------------------------------------------------------------

    @property
    def state(self) -> PanelState:
        """What the panel shows now (FRAUD while latched)."""
        return self._state

    @property
    def latched(self) -> bool:
        return self._state is PanelState.FRAUD

    def show(self, state: PanelState) -> None:
        """Show ``state``; while FRAUD is latched, remember it for after the acknowledgement."""
        with self._lock:
            if self._state is PanelState.FRAUD and state is not PanelState.FRAUD:
                self._behind_latch = state
                return
            if state is self._state and state is not PanelState.READY:
                return  # restarting a blink would make it stutter; FRAUD would beep again
            self._state = state
            self._render(state)

    def acknowledge(self) -> bool:
        """Release a FRAUD latch and show what was asked for meanwhile. True if there was one."""
        with self._lock:
            if self._state is not PanelState.FRAUD:
                return False
            following = self._behind_latch or PanelState.READY
            self._behind_latch = None
            self._state = following
            self._render(following)
        log.info("panel: fraud alarm acknowledged")
        return True

    # ---- rendering -----------------------------------------------------------------

    def _render(self, state: PanelState) -> None:
        """Drive the outputs for ``state`` (lock held). Hardware errors are logged, not raised."""
        try:
            self._quiet()
            if state is PanelState.READY:
                _on(self._green)
            elif state is PanelState.CALL:
                _blink(self._green, CALL_BLINK_S)
            elif state is PanelState.FRAUD:
                _blink(self._red or self._green, FRAUD_BLINK_S)
                if self._buzzer is not None:
                    self._buzzer.beep(*FRAUD_BEEP_S, n=FRAUD_BEEPS, background=True)
            elif self._red is not None:  # FAULT
                self._red.on()
            else:
                _blink(self._green, FAULT_FLASH_S)
        except Exception:
            log.exception("panel: could not show %s", state)

    def _quiet(self) -> None:
        for device in (self._green, self._red, self._buzzer):
            if device is not None:
                device.off()  # also stops a blink or beep thread

    def _confirm(self) -> None:
        """Two short beeps: "your report was taken"."""
        with self._lock:
            if self._buzzer is None:
                return
            try:
                self._buzzer.beep(*CONFIRM_BEEP_S, n=CONFIRM_BEEPS, background=True)
            except Exception:
                log.exception("panel: confirmation beep failed")

    # ---- button --------------------------------------------------------------------

    def _pressed(self) -> None:
        self._held = False

    def _long_press(self) -> None:
        """gpiozero thread: the button was held for ``hold_time_s``: report the last call."""
        self._held = True
        self.acknowledge()  # they have reacted; the report supersedes the alarm
        callback = self.on_report
        if callback is None:
            log.warning("panel: long press, but no report action is attached")
            return
        log.info("panel: long press: reporting the last call as fraud")
        try:
            callback()
        except Exception:
            log.exception("panel: reporting the last call failed")
            return
        self._confirm()

    def _released(self) -> None:
        """gpiozero thread: a release that did not reach the hold time is a short press."""
        if self._held:
            self._held = False
            return
        if not self.acknowledge():
            log.debug("panel: short press with nothing to acknowledge")

    # ---- device construction -------------------------------------------------------

    def _make(self, what: str, pin: int | None, factory: Callable[[int], Any]) -> tuple[Any, bool]:
        if pin is None:
            return None, True
        try:
            return factory(pin), True
        except Exception:
            log.exception("panel: cannot open the %s on GPIO%d; continuing without it", what, pin)
            return None, False

    def _make_led(self, pin: int) -> Any:
        from gpiozero import LED  # type: ignore[import-untyped]

        return LED(pin, initial_value=False, pin_factory=self._pin_factory)

    def _make_buzzer(self, pin: int) -> Any:
        from gpiozero import Buzzer  # type: ignore[import-untyped]

        return Buzzer(pin, initial_value=False, pin_factory=self._pin_factory)

    def _make_button(self, pin: int) -> Any:
        from gpiozero import Button  # type: ignore[import-untyped]

        button = Button(pin, pull_up=True, bounce_time=self._bounce_time_s, hold_time=self._hold_time_s,
                        pin_factory=self._pin_factory)  # fmt: skip
        button.when_pressed = self._pressed
        button.when_held = self._long_press
        button.when_released = self._released
        return button


def _on(led: Any) -> None:
    if led is not None:
        led.on()


def _blink(led: Any, times: tuple[float, float]) -> None:
    if led is not None:
        led.blink(on_time=times[0], off_time=times[1], n=None, background=True)
