"""What the virtual modem reports about calls (records, outcomes) and the state it keeps per call."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum, StrEnum

from firmware.scenarios import (
    CalleeScript,
    CallScript,
)
from firmware.virtual_nd import NdLineOutcome


class CallOutcome(StrEnum):
    """How a scripted call ended."""

    ANSWERED = "answered"  # the host answered and hung up first
    CALLER_HUNG_UP = "caller_hung_up"  # the host answered; the caller hung up first
    GAVE_UP = "gave_up"  # nobody answered within max_rings
    HOUSEHOLD_ANSWERED = "household_answered"  # the household's phone picked up while ringing
    LINE_IN_USE = "line_in_use"  # handset already off-hook: caller ID only (call-waiting)
    LINE_BUSY = "line_busy"  # the modem itself was off-hook: the caller heard busy
    LINE_FAULT = "line_fault"  # the device vanished or the emulator stopped mid-call
    CANCELLED = "cancelled"  # the emulator stopped before the call started


class _LineRecord:
    """What CallRecord and DialRecord share: the audio the host played, and whether it is over."""

    _played: bytearray
    outcome: object | None

    @property
    def played_audio(self) -> bytes:
        """Unshielded audio the host sent in +VTX while the far end was on the line."""
        return bytes(self._played)

    @property
    def ended(self) -> bool:
        return self.outcome is not None


@dataclass(eq=False)
class CallRecord(_LineRecord):
    """What happened on one scripted call; times are ``time.monotonic()``.

    Mutated only by the emulator thread under the modem's lock; read it after
    ``wait_for_call_end()``. ``hung_up_at`` may be set after ``ended_at`` when
    the caller hung up first and the host went on-hook later.
    """

    index: int
    script: CallScript
    queued_at: float
    started_at: float | None = None
    cid_written_at: float | None = None
    cid_bytes: bytes = b""
    first_ring_at: float | None = None
    rings: int = 0
    answered_at: float | None = None
    caller_hung_up_at: float | None = None
    hung_up_at: float | None = None
    ended_at: float | None = None
    outcome: CallOutcome | None = None
    commands: list[tuple[float, str]] = field(default_factory=list)
    dle_events: list[tuple[float, str]] = field(default_factory=list)
    # jp_nd lines: CAR RINGs sent, the primary response, the terminal back on-hook, what was sent.
    car_rings: int = 0
    first_car_at: float | None = None
    primary_response_at: float | None = None
    nd_on_hook_at: float | None = None
    nd_frame: bytes = b""
    nd_outcome: NdLineOutcome | None = None
    _played: bytearray = field(default_factory=bytearray, repr=False)


class DialOutcome(StrEnum):
    """How a call the modem dialled out ended."""

    ANSWERED = "answered"  # the callee answered; the host hung up first
    CALLEE_HUNG_UP = "callee_hung_up"  # the callee answered and hung up first
    BUSY = "busy"
    NO_ANSWER = "no_answer"  # rang for S7 seconds
    NO_DIALTONE = "no_dialtone"  # the line was in use (household handset, incoming call)
    ABORTED = "aborted"  # the host sent a character (or hung up) before the call was answered
    NO_CARRIER = "no_carrier"  # dialled outside voice mode: the callee never sent a data carrier
    LINE_FAULT = "line_fault"  # the device vanished or the emulator stopped mid-call


@dataclass(eq=False)
class DialRecord(_LineRecord):
    """One outgoing call: what the host dialled and what the callee heard and pressed.

    Times are ``time.monotonic()``. Mutated only by the emulator thread under
    the modem's lock; read it after ``wait_for_dial_end()``.
    """

    index: int
    dial_string: str  # the command line exactly as received, e.g. "ATDT09012345678"
    number: str  # the digits that went down the line
    script: CalleeScript
    dialled_at: float
    return_after_dial: bool = False  # the dial string ended in ';'
    ringback_at: float | None = None
    answered_at: float | None = None  # the callee picked up
    reported_at: float | None = None  # the modem's final reply to the D command
    final: str | None = None  # that reply: VCON/OK, BUSY, NO ANSWER, ...
    callee_hung_up_at: float | None = None
    hung_up_at: float | None = None  # the modem went back on-hook
    ended_at: float | None = None
    outcome: DialOutcome | None = None
    commands: list[tuple[float, str]] = field(default_factory=list)
    dle_events: list[tuple[float, str]] = field(default_factory=list)
    dtmf_sent: list[tuple[float, str]] = field(default_factory=list)  # what the callee pressed
    _played: bytearray = field(default_factory=bytearray, repr=False)


class _Mode(Enum):
    COMMAND = "command"
    DIALING = "dialing"  # D command in progress: any byte from the host aborts it
    VTX = "vtx"
    VTX_DRAIN = "vtx_drain"  # DLE ETX received, playing out the buffer before OK
    VRX = "vrx"


class _Phase(Enum):
    DIALING = "dialing"  # outgoing: dialling, then ringback at the callee
    ALERTING = "alerting"
    CAR = "car"  # jp_nd: Number Display call signal, waiting for the primary response
    ND_DATA = "nd_data"  # jp_nd: terminal off-hook, caller ID FSK on the line
    WAITING = "waiting"  # call-waiting: household on the line, no ringing
    CONNECTED = "connected"  # answered by the modem
    HOUSEHOLD = "household"  # answered by the household's phone
    ENDED = "ended"


@dataclass(order=True)
class _Timer:
    at: float
    seq: int
    fn: Callable[[float], None] = field(compare=False)
    cancelled: bool = field(default=False, compare=False)


@dataclass(eq=False)
class _Call:
    record: CallRecord
    audio: bytes
    phase: _Phase = _Phase.ALERTING
    first_ring_due: float = 0.0
    answered_at: float | None = None  # modem answer time: origin of the caller's audio
    hangup_at: float | None = None  # caller hang-up time: busy tone from here
    handset_by_script: bool = False
    timers: list[_Timer] = field(default_factory=list)
    nd_audio: bytes = b""  # jp_nd: what the terminal hears after its primary response
    nd_epoch: float = 0.0  # primary response time: origin of nd_audio


@dataclass(eq=False)
class _OutCall:
    """An outgoing call on the line; shares the audio fields ``_Call`` has."""

    record: DialRecord
    audio: bytes  # what the callee says after answering
    phase: _Phase = _Phase.DIALING
    answered_at: float | None = None  # callee pick-up time: origin of their audio
    hangup_at: float | None = None  # callee hang-up time: busy tone from here
    reported: bool = False  # the D command's final reply (or ';' OK) has been sent
    timers: list[_Timer] = field(default_factory=list)


@dataclass(eq=False)
class _Action:
    """Work another thread hands to the emulator thread (it owns the fds)."""

    fn: Callable[[], None]
    done: threading.Event = field(default_factory=threading.Event)
    error: Exception | None = None


@dataclass(slots=True)
class _Settings:
    """Device settings that ATZ / power-on restore."""

    echo: bool = True
    verbose: bool = True
    fclass: str = "0"
    caller_id: bool = False
    vsm: str | None = None
    vsd: tuple[int, int] = (128, 50)  # sensitivity, silence duration in 0.1 s (0 = off)
    vgt: int = 128
    vgr: int = 128
    vit: int = 0
    s_registers: dict[int, int] = field(default_factory=dict)

