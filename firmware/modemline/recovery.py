"""Recovery: reopen a modem that stopped answering, with back-off and a USB power cycle."""


from __future__ import annotations

import logging
import time

import serial  # type: ignore[import-untyped]

from firmware.modemline.base import ModemLineBase
from firmware.modemline.support import POWER_CYCLE_TIMEOUT_S
from screening.core.line import (
    EndReason,
    LineError,
    LineFault,
    LineRestored,
)

# Every part logs as the one line adapter it is.
log = logging.getLogger("firmware.modem_line")


class Recovery(ModemLineBase):
    """Brings a failed modem back (reader thread), reporting LineFault / LineRestored."""

    # ---- recovery -------------------------------------------------------------------------------

    def _request_recovery(self, reason: str) -> None:
        """From any thread: have the reader start recovery (it owns the port)."""
        if self._recovering or self._closing.is_set() or not self._initialised:
            return
        if self._recovery_reason is None:
            self._recovery_reason = reason
        self._wake_reader()

    def _recover(self, message: str) -> None:
        """Reader thread: LineFault, reopen with backoff, re-init, LineRestored."""
        self._recovering = True
        self._recovery_reason = None
        log.warning("%s: line fault: %s; recovering", self.name, message)
        self._emit(LineFault(message, time.monotonic()))
        self._abandon_pending(message)
        self._signal_stop(EndReason.LINE_FAULT)
        with self._state_lock:
            self._off_hook = False
            self._rings.reset()
        # The handset state is kept: after a modem reset we cannot know, and the call-waiting
        # guard must err on the side of not taking the line (the next ring corrects it).
        self._close_port()
        delay = self.reconnect_min_s
        attempts = 0
        while not self._closing.is_set():
            attempts += 1
            if self._try_reconnect(attempts):
                self._recovery_reason = None
                self._recovering = False
                self._emit(LineRestored(f"{self.port} answering again after {attempts} attempt(s)", time.monotonic()))
                log.warning("%s: line restored after %d attempt(s)", self.name, attempts)
                return
            if attempts == self.power_cycle_after and self.power_cycler is not None:
                # Re-opening and re-initialising did not help: the modem has wedged (the
                # failure users of other screeners report most). Cut its USB power, port closed.
                result = self.power_cycler.power_cycle(POWER_CYCLE_TIMEOUT_S)
                log.warning("%s: USB power cycle after %d failed reconnects: %s", self.name, attempts, result)
            if self._closing.wait(delay):
                break
            delay = min(delay * 2, self.reconnect_max_s)

    def _try_reconnect(self, attempt: int) -> bool:
        try:
            self._open_port()
            self._initialise()
        except (LineError, serial.SerialException, OSError) as exc:
            log.info("%s: reconnect attempt %d failed: %s", self.name, attempt, exc)
            self._abandon_pending("reconnect failed")
            self._close_port()
            return False
        return True
