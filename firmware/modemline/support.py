"""The modem line's settings constants, errors and the small state objects its parts share."""


from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field, fields
from enum import Enum, auto

from firmware.dialects import (
    DIALECTS,
    ModemDialect,
)
from screening.core.line import (
    EndReason,
    LineError,
)
from screening.core.model import CallerID

# Every part logs as the one line adapter it is.
log = logging.getLogger("firmware.modem_line")

AUTO_DIALECT = "auto"

# How long a caller-ID block without any number field may stay open waiting for
# more lines before it is emitted anyway (e.g. a modem that printed DATE/TIME
# and then nothing): long enough for a slow modem, short against a ring cycle.
CID_INCOMPLETE_GRACE_S = 0.3
DEFAULT_POWER_CYCLE_AFTER = 3  # failed reconnect attempts before cutting the modem's USB power
POWER_CYCLE_TIMEOUT_S = 20.0
# Hard cap on an open caller-ID block, in case line noise never lets it go quiet.
CID_MAX_OPEN_S = 1.0
# Reader wake-up when nothing happens: bounds how late RingingStopped and the
# idle health check can be, and keeps idle CPU near zero.
IDLE_TICK_S = 0.5
# Read timeout while the reader itself waits for a reply (recovery, health check).
INLINE_POLL_S = 0.05
# Playback pacing: audio is written in CHUNK_S pieces, never more than LEAD_S
# ahead of real time, so the modem's buffer neither underruns nor overflows.
PLAY_CHUNK_S = 0.04
PLAY_LEAD_S = 0.25
EVENT_QUEUE_SIZE = 1000
# A handset reported off-hook this long is worth a person's look (phone not put back, or a stuck state).
DEFAULT_HANDSET_STALE_S = 3 * 3600.0



class ModemFault(LineError):
    """The modem stopped answering or the port failed; recovery has been started."""


class CommandTimeout(ModemFault):
    """No final reply within the command's timeout."""


class UnsupportedModem(LineError):
    """``ATI3`` identified a chipset none of our dialects describes."""


class DataMode(Enum):
    """Which voice data state a command enters after ``CONNECT``."""

    TRANSMIT = auto()  # +VTX: we stream audio; the modem only sends DLE codes and lines
    RECEIVE = auto()  # +VRX: the modem streams shielded audio until DLE ETX


class _StreamState(Enum):
    COMMAND = auto()
    RECEIVING = auto()


@dataclass(eq=False, slots=True)
class _PendingCommand:
    """The one command whose replies the reader is collecting."""

    command: str  # for matching the echo; "" for a data phase (no echo)
    data_mode: DataMode | None = None
    done: threading.Event = field(default_factory=threading.Event)
    lines: list[str] = field(default_factory=list)
    final: str | None = None
    failure: str | None = None  # set when the line failed under the command
    data_phase: _PendingCommand | None = None  # after CONNECT: waits for the stream's end

    def finish(self, final: str) -> None:
        self.final = final
        self.done.set()

    def abandon(self, why: str) -> None:
        if not self.done.is_set():
            self.failure = why
            self.done.set()

    def is_echo(self, text: str) -> bool:
        return bool(self.command) and text.upper() == self.command.upper()


@dataclass(frozen=True, slots=True)
class CommandReply:
    command: str
    final: str
    lines: tuple[str, ...]


class _StopSignal:
    """The first reason the current call step must end (hang-up, handset, fault).

    Set by the reader, waited on by :meth:`ModemLine.play` (an Event, so a
    paced playback sleeps until either its next chunk or the hang-up).
    """

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._reason: EndReason | None = None

    def set(self, reason: EndReason) -> bool:
        with self._lock:
            if self._reason is not None:
                return False
            self._reason = reason
            self._event.set()
            return True

    def clear(self, only: EndReason | None = None) -> None:
        """Forget the reason (or only ``only``: silence ends one listen, not the call)."""
        with self._lock:
            if only is None or self._reason is only:
                self._reason = None
                self._event.clear()

    @property
    def reason(self) -> EndReason | None:
        return self._reason

    def wait(self, timeout: float) -> EndReason | None:
        self._event.wait(timeout)
        return self._reason


@dataclass(slots=True)
class _RingTracker:
    """Counts rings per call and notices when ringing stopped.

    A ring more than ``gap_s`` after the previous one starts a new call.
    Caller ID counts as call activity too (Japan sends it before the first
    ring, so a caller who gives up before ring 1 still gets RingingStopped).
    """

    gap_s: float
    count: int = 0
    last_ring_at: float | None = None
    last_activity_at: float | None = None
    caller: CallerID | None = None  # this ringing's caller-ID block, to tell a repeat from a new call
    caller_at: float | None = None

    def ring(self, now: float) -> int:
        if self.last_ring_at is None or now - self.last_ring_at > self.gap_s:
            self.count = 0
        self.count += 1
        self.last_ring_at = now
        self.last_activity_at = now
        return self.count

    def caller_id(self, now: float, caller: CallerID | None = None) -> None:
        if self.last_ring_at is not None and now - self.last_ring_at > self.gap_s:
            self.count = 0
            self.last_ring_at = None
        self.last_activity_at = now
        if caller is not None:
            self.caller, self.caller_at = caller, now

    def repeats(self, caller: CallerID, now: float) -> bool:
        """This ringing's block again with no ring in between: the modem printed it twice.

        (After a ring, the same block is the same caller calling straight back: a new call.)
        """
        return (self.caller == caller and self.caller_at is not None and now - self.caller_at <= self.gap_s
                and (self.last_ring_at is None or self.last_ring_at < self.caller_at))

    def stopped(self, now: float) -> bool:
        """True once when activity has been quiet for longer than the gap."""
        if self.last_activity_at is None or now - self.last_activity_at <= self.gap_s:
            return False
        self.reset()
        return True

    @property
    def active(self) -> bool:
        return self.last_activity_at is not None

    def reset(self) -> None:
        self.count = 0
        self.last_ring_at = None
        self.last_activity_at = None
        self.caller = self.caller_at = None


def _dialect_default(name: str) -> str:
    """A command every dialect shares (``reset``, ``echo_off``), before we know the chip."""
    for f in fields(ModemDialect):
        if f.name == name and isinstance(f.default, str):
            return f.default
    raise KeyError(name)


def _supported_modems() -> str:
    return "; ".join(f"{d.key}: {d.description}" for d in DIALECTS.values())


