"""What a modem line believes about the household's handset, and when to doubt it.

A voice modem reports the extension phone with two DLE codes: ``DLE H``
(picked up) and ``DLE h`` (put down). Nothing ever repeats them, so two stray
bytes on an idle line (noise, a confused firmware) used to leave the line
believing the handset was up for good, and the call-waiting guard then let
every call ring through unscreened.

The belief is therefore re-checked:

* a ring proves it wrong: the exchange rings only an on-hook line (a waiting
  call on a busy line gets an in-band tone and, at most, caller ID, never a
  ring), so a ring a moment after the pick-up puts the handset back down;
* off-hook for longer than ``stale_after_s`` is reported once: either the
  phone was not put back properly (no calls can come in) or the state is
  stuck; either way a person should look. The belief itself is kept, since
  answering into a real conversation is the one thing the guard must prevent.

Neither supported chipset (USR5637, CX93001) documents a command that reads
the extension's hook state, so there is no query to ask the modem itself.

Pure state: the modem line's reader thread calls it with ``time.monotonic()``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class HandsetState:
    """The household handset as the modem reported it, with the checks above.

    ``ring_grace_s``: a ring this soon after ``DLE H`` may have been on its way
    when the household picked up during ringing; it proves nothing.
    """

    ring_grace_s: float
    stale_after_s: float | None = None
    off_hook: bool = False
    off_since: float | None = None
    _stale_reported: bool = False

    def picked_up(self, now: float) -> None:
        if not self.off_hook:
            self.off_since = now
        self.off_hook = True
        self._stale_reported = False

    def put_down(self) -> None:
        self.off_hook = False
        self.off_since = None
        self._stale_reported = False

    def rang(self, now: float) -> str | None:
        """A ring arrived: if the handset was believed up, put it down and say why (else None)."""
        if not self.off_hook or self.off_since is None or now - self.off_since < self.ring_grace_s:
            return None
        held = now - self.off_since
        self.put_down()
        return f"the line rang while the handset was believed off-hook for {_duration(held)}: it is on-hook"

    def check(self, now: float) -> str | None:
        """Once per pick-up, when the handset has been up longer than ``stale_after_s`` (else None)."""
        if (self.stale_after_s is None or not self.off_hook or self.off_since is None or self._stale_reported
                or now - self.off_since < self.stale_after_s):
            return None
        self._stale_reported = True
        return f"the handset has been off-hook for {_duration(now - self.off_since)}"


def _duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.0f} min"
