"""The line protocol: what every telephone-line adapter (modem, SIP, virtual) offers.

Adapters live in ``firmware/`` and import these types; ``screening`` never imports
an adapter except in its composition root (``daemon.py`` / ``cli.py``).

The protocol is synchronous and thread-based: an adapter owns its device and one
reader thread, and hands events to the call loop through a queue. Every blocking
call takes a timeout.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol, TypeVar, runtime_checkable

from screening.core.model import CallerID


class EndReason(StrEnum):
    """Why an answered call (or a play/listen step) ended."""

    COMPLETED = "completed"  # the step ran to its end (clip fully played, listen time up)
    CALLER_HUNG_UP = "caller_hung_up"  # busy / dial tone / loop interruption after answer
    SILENCE = "silence"  # modem reported prolonged silence
    HANDSET_ON_HOOK = "handset_on_hook"  # household hung up their phone
    LINE_FAULT = "line_fault"  # device vanished or stopped answering
    TIMEOUT = "timeout"


class DialResult(StrEnum):
    """How an outgoing call attempt ended (what a line adapter's ``dial`` returns)."""

    ANSWERED = "answered"  # the far end picked up; play/listen/hang_up apply as on an answered call
    BUSY = "busy"
    NO_ANSWER = "no_answer"
    NO_DIALTONE = "no_dialtone"  # the line is in use, or the adapter refused (household on the line)
    FAILED = "failed"  # the modem refused or the line is faulty


class SipUpstream(StrEnum):
    """What sends us INVITEs; it decides whether a SIP rejection really stops the phone ringing."""

    FXO = "fxo"  # an FXO adapter on the analog line: rejecting leaves the line ringing, so block = announce
    HGW = "hgw"  # an extension of a home gateway (NTT Hikari Denwa HGW): a rejection stops the call
    TRUNK = "trunk"  # a SIP trunk or PBX: a rejection stops the call


# ---- events from the line -------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ring:
    """One ring burst. ``count`` is 1 for the first ring of a call."""

    count: int
    at: float  # time.monotonic() when the adapter saw it


@dataclass(frozen=True, slots=True)
class CallOffered:
    """Caller ID for the ringing (or waiting) call has been received completely."""

    caller: CallerID
    at: float  # monotonic time the caller ID block was complete


@dataclass(frozen=True, slots=True)
class HandsetOffHook:
    at: float


@dataclass(frozen=True, slots=True)
class HandsetOnHook:
    at: float


@dataclass(frozen=True, slots=True)
class HandsetStale:
    """The adapter doubts its handset state: off-hook far too long, or the line rang while
    it was believed off-hook (then a HandsetOnHook follows). A person should look."""

    message: str
    at: float = field(default_factory=time.monotonic)  # monotonic


@dataclass(frozen=True, slots=True)
class Dtmf:
    digit: str
    at: float
    household: bool = False  # pressed on the household phone's leg (SIP), not by the caller


@dataclass(frozen=True, slots=True)
class RingingStopped:
    """No ring for longer than a ring cycle: the caller gave up or someone answered."""

    at: float


@dataclass(frozen=True, slots=True)
class LineFault:
    """The device stopped answering or vanished; the adapter is recovering."""

    message: str
    at: float = field(default_factory=time.monotonic)  # monotonic


@dataclass(frozen=True, slots=True)
class LineRestored:
    message: str
    at: float = field(default_factory=time.monotonic)  # monotonic


LineEvent = (
    Ring | CallOffered | HandsetOffHook | HandsetOnHook | HandsetStale | Dtmf | RingingStopped | LineFault
    | LineRestored
)


# ---- audio ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AudioClip:
    """Mono 16-bit signed little-endian PCM. Adapters convert to their line format."""

    name: str
    pcm16: bytes
    sample_rate: int = 8000

    @property
    def duration_s(self) -> float:
        return len(self.pcm16) / 2 / self.sample_rate


# Receives 16-bit PCM at 8 kHz while the call is up (both voices on a modem line).
AudioSink = Callable[[bytes], None]


class CallAudio(Protocol):
    """One answered call's audio as the session feeds it: recording, live transcription.

    The voice pipeline implements it (``voice.pipeline.VoiceCallAudio``); the session
    depends only on this, so a unit without speech recognition runs the same call path.
    """

    def played(self, clip: AudioClip) -> None: ...

    def received(self, pcm16: bytes) -> None: ...

    def finish(self) -> None: ...


@runtime_checkable
class LineAdapter(Protocol):
    """One telephone line. Constructors do no I/O; ``open()`` does."""

    name: str

    def open(self) -> None: ...

    def close(self) -> None: ...

    def next_event(self, timeout: float) -> LineEvent | None:
        """The next line event, or None if none arrived within ``timeout`` seconds."""
        ...

    def handset_off_hook(self) -> bool:
        """True while the household's phone is known to be in use (call-waiting guard)."""
        ...

    def answer(self, timeout: float = 5.0) -> None:
        """Take the line off-hook in voice mode. Raises LineError on failure."""
        ...

    def play(self, clip: AudioClip, timeout: float | None = None) -> EndReason:
        """Play a clip to the caller; returns early if the caller hangs up."""
        ...

    def listen(self, seconds: float, sink: AudioSink | None = None) -> EndReason:
        """Stay on the call receiving audio for up to ``seconds`` (both voices)."""
        ...

    def hang_up(self, timeout: float = 5.0) -> None:
        """Put the line back on-hook. Never raises for an already-idle line."""
        ...


@runtime_checkable
class CallRouting(Protocol):
    """What a line may do beyond answering (a SIP line does; a modem line does not).

    A modem is wired in parallel with the household phone, so the phone rings by
    itself and a call cannot be refused without answering it. A SIP line sits in
    front of the phone: it can decline, and it must itself let the phone ring.
    """

    def reject_unanswered(self, timeout: float = 5.0) -> bool:
        """Decline the offered call without answering, where that really stops it; False if not."""
        ...

    def ring_household(self, timeout: float = 5.0) -> bool:
        """An allowed call: let it ring through to the household; True if a phone leg was started."""
        ...

    def connect_household(self, timeout: float = 5.0) -> bool:
        """An answered, warned call: ring the household phone and join it in; True if started."""
        ...


@runtime_checkable
class HouseholdLeg(Protocol):
    """A line that can ring the household phone as a separate leg and talk to it alone (SIP).

    Used to screen a caller: the household hears the caller's recorded name on its own leg
    and answers with a key (``Dtmf(household=True)``); only then are the two joined. A modem
    line, wired in parallel with the phone, cannot: it uses an in-home speaker and the handset.
    """

    def ring_household_leg(self, timeout: float = 5.0) -> bool:
        """Ring the household phone without joining it to the caller; False if there is none."""
        ...

    def household_state(self) -> HouseholdLegState:
        """Where the household leg is now."""
        ...

    def play_to_household(self, clip: AudioClip, timeout: float | None = None) -> EndReason:
        """Play to the household leg only (the caller hears nothing of it)."""
        ...

    def join_household(self, timeout: float = 5.0) -> bool:
        """Join the picked-up household leg and the caller: they talk. False if either has gone."""
        ...

    def drop_household(self, timeout: float = 5.0) -> None:
        """End the household leg, leaving the caller's call up."""
        ...


class HouseholdLegState(StrEnum):
    NONE = "none"  # no leg placed (or no household phone configured)
    RINGING = "ringing"
    PICKED_UP = "picked_up"
    ENDED = "ended"  # not answered, declined, or hung up


@runtime_checkable
class Dialer(Protocol):
    """A line that can place calls (the modem; a SIP line with an upstream): phoning a relative."""

    def can_dial(self) -> bool:
        """Whether calls can be placed now (a SIP line needs an outbound proxy or a registrar)."""
        ...

    def dial(self, number: str, timeout: float) -> object:
        """Phone ``number``; returns the adapter's dial result (``DialResult``)."""
        ...


class LineError(RuntimeError):
    """A line operation failed (device gone, ERROR reply, no reply in time)."""


_Event = TypeVar("_Event")


def next_queued(events: queue.Queue[_Event], timeout: float) -> _Event | None:
    """The next event an adapter's reader queued, waiting at most ``timeout`` s (0: don't wait)."""
    try:
        if timeout <= 0:
            return events.get_nowait()
        return events.get(timeout=timeout)
    except queue.Empty:
        return None
