"""A pty-based emulator of a USB voice modem (USR5637 / Conexant CX93001 dialects).

Tests, the demo and the benchmarks run the real host code (pyserial on a tty)
against this instead of hardware, so it behaves like a modem on a phone line,
byte for byte as ``firmware/dialects.py`` describes: V.250 command echo and
result framing, caller ID blocks, RING cadence, voice mode with DLE-shielded
audio (ITU-T V.253), outgoing voice calls (``ATDT<digits>`` with call
progress: BUSY / NO ANSWER / NO DIALTONE / VCON-or-OK once the scripted callee
answers, see "Dialling" in ``firmware/dialects.py``), plus the faults real USB
modems have (firmware hang, device vanishing and reappearing under another tty
name).
On a ``jp_nd`` cadence the line is a Japanese Number Display line as the
exchange runs it (``firmware/virtual_nd.py``): CAR at the fast cadence, the
caller ID as V.23 FSK in the received audio once the host goes off-hook, then
normal ringing; no formatted caller ID is printed, as no real modem decodes ND.

Design:
* One emulator thread owns the pty and all modem state. It sleeps in
  ``select()`` on the master fd and a wake pipe with a timeout taken from the
  next timer, so an idle modem costs no CPU.
* Public methods are thread-safe: they take the modem's lock and wake the
  thread. Anything that opens or closes file descriptors (``vanish()``,
  ``reappear()``, ``stop()``) runs on the emulator thread, so ``select()``
  never watches a closed or reused fd.
* Time on the emulated line is multiplied by ``time_scale`` (ring cadence,
  audio rate, hang-up times), so a 0.02 scale runs a 60 s call in 1.2 s.
* The master fd is non-blocking with an output queue; during ``+VTX`` the
  emulator reads only as fast as it "plays", which is the back-pressure a USB
  modem's flow control gives the host.
"""

from __future__ import annotations

import contextlib
import functools
import heapq
import itertools
import logging
import os
import re
import select
import shutil
import tempfile
import threading
import time
import tty
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from pathlib import Path

from firmware.dialects import (
    CADENCE_PERIOD_S,
    CONEXANT_CX93001,
    DEFAULT_NO_ANSWER_S,
    DIAL_TONE_WAIT_S,
    RINGBACK_GOES_AWAY_S,
    ModemDialect,
    RingCadence,
)
from firmware.dle import DLE, DTMF_DIGITS, ETX, DleEvent, shield
from firmware.scenarios import (
    SILENCE_U8,
    CalleeBehaviour,
    CalleeScript,
    CallScript,
    busy_tone,
    callee_audio_u8,
    caller_audio_u8,
)
from firmware.virtual_nd import NdExchange, NdLineOutcome, nd_frame_for, nd_line_audio

log = logging.getLogger(__name__)

DEVICE_LINK_NAME = "mamoru-modem"  # like the udev rule's /dev/mamoru-modem
MAX_COMMAND_LEN = 256  # longer command lines are answered with ERROR
READ_SIZE = 4096
MAX_SELECT_S = 1.0  # upper bound on a select() sleep; the wake pipe normally ends it sooner
VRX_TICK_S = 0.02  # real seconds between +VRX audio writes
VTX_BUFFER_S = 0.5  # line seconds of audio the modem accepts ahead of playback in +VTX
MAX_OUT_BACKLOG = 512 * 1024  # bytes queued to an unread host before output is dropped
VRX_MAX_BACKLOG = 64 * 1024  # +VRX audio is dropped (receive overrun) beyond this backlog
SILENCE_AMPLITUDE = 4  # |u8 - 0x80| at or below this counts as silence for DLE s

# Line timing in line seconds (scaled by time_scale).
CID_BEFORE_RING_S = 1.0  # JP/UK: caller ID block this long before the first RING
NA_CID_AFTER_RING_S = 2.5  # NA: 2 s ring burst + 0.5 s, then the Bellcore FSK block
CALL_WAITING_CID_DELAY_S = 0.5  # type-II caller ID arrives shortly after the call
HOUSEHOLD_TALK_S = 10.0  # how long the household talks if the script gives no hang-up time
# Dialling out, in line seconds (see "Dialling" in firmware/dialects.py).
DIAL_TONE_DETECT_S = 0.5  # off-hook until the modem has heard dial tone
DTMF_DIGIT_S = 0.2  # per digit: S11's ~95 ms tone plus the gap
CALL_SETUP_S = 1.0  # last digit -> the exchange plays ringback or busy
BUSY_DETECT_S = 2.0  # a couple of busy cadences before the modem is sure
RINGBACK_ON_S: dict[RingCadence, float] = {  # the audible part of each ringback period
    RingCadence.JAPAN: 1.0,  # 呼出音: 1 s on, 2 s off
    RingCadence.NORTH_AMERICA: 2.0,  # 2 s on, 4 s off
    RingCadence.UK: 1.0,  # 0.4 on 0.2 off 0.4 on, 2 s off
    RingCadence.JAPAN_ND: 1.0,
}
DIAL_MODIFIERS = frozenset("TPW,!@-()")  # tone/pulse/wait/pause/flash and separators: not digits

CR, LF, BS, CAN = 0x0D, 0x0A, 0x08, 0x18
ABORT_RX = ord("!")

OK = "OK"
ERROR = "ERROR"
CONNECT = "CONNECT"
RING = "RING"
NO_CARRIER = "NO CARRIER"
BUSY = "BUSY"
NO_ANSWER = "NO ANSWER"
NO_DIALTONE = "NO DIALTONE"
_DEFERRED = "<final reply later>"  # a handler's result when the final reply comes from a timer
NUMERIC_CODES = {OK: "0", CONNECT: "1", RING: "2", NO_CARRIER: "3", ERROR: "4",
                 "NO DIALTONE": "6", "BUSY": "7", "NO ANSWER": "8"}
FCLASS_VALUES = ("0", "1", "8")
VOICE_CLASS = "8"

# What the exchange plays once the caller has hung up, as the modem reports it.
HANGUP_EVENT: dict[RingCadence, DleEvent] = {
    RingCadence.JAPAN: DleEvent.BUSY,  # 話中音
    RingCadence.UK: DleEvent.BUSY,
    RingCadence.JAPAN_ND: DleEvent.BUSY,
    RingCadence.NORTH_AMERICA: DleEvent.DIAL_TONE,
}

_SILENCE_TABLE = bytes(0 if abs(b - SILENCE_U8) <= SILENCE_AMPLITUDE else 1 for b in range(256))


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


class _CommandError(Exception):
    """A command the emulated modem rejects with ERROR."""


@dataclass(frozen=True, slots=True)
class AtCommand:
    """One command out of an AT command line: ``E1``, ``+VLS=1``, ``S0?``, ``+FCLASS=?``."""

    name: str  # "E", "&F", "S", "+FCLASS", "#CID", "D"
    op: str  # "" (action/basic), "=", "?", "=?"
    arg: str  # digits for basic commands, the raw text after '=' for extended ones


_EXT_NAME = re.compile(r"[+#][A-Z][A-Z0-9!%\-./:_]*")
_S_REGISTER = re.compile(r"S(\d{1,3})(=(\d{0,3})|\?)?")
_DIGITS = re.compile(r"\d*")


def _normalise_body(body: str) -> str:
    """Upper-case and drop spaces outside double quotes (V.250 5.2.1)."""
    out: list[str] = []
    quoted = False
    for ch in body:
        if ch == '"':
            quoted = not quoted
        if quoted or ch == '"':
            out.append(ch)
        elif ch != " ":
            out.append(ch.upper())
    return "".join(out)


def _find_unquoted(text: str, char: str, start: int) -> int:
    quoted = False
    for i in range(start, len(text)):
        if text[i] == '"':
            quoted = not quoted
        elif text[i] == char and not quoted:
            return i
    return len(text)


def parse_at_body(body: str) -> list[AtCommand]:
    """Split what follows ``AT`` into commands; raises ``ValueError`` on malformed text."""
    text = _normalise_body(body)
    cmds: list[AtCommand] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == ";":
            i += 1
        elif ch in "+#":
            i = _parse_extended(text, i, cmds)
        elif ch == "&":
            if i + 1 >= n or not text[i + 1].isalpha():
                raise ValueError(f"bad & command at {i}")
            digits = _DIGITS.match(text, i + 2).group()  # type: ignore[union-attr]
            cmds.append(AtCommand("&" + text[i + 1], "", digits))
            i += 2 + len(digits)
        elif ch == "S":
            m = _S_REGISTER.match(text, i)
            if not m:
                raise ValueError(f"bad S-register command at {i}")
            op = "" if m.group(2) is None else ("?" if m.group(2) == "?" else "=")
            cmds.append(AtCommand("S", op, f"{m.group(1)},{m.group(3) or ''}"))
            i = m.end()
        elif ch in "AD":
            cmds.append(AtCommand(ch, "", text[i + 1 :]))  # A and D take the rest of the line
            break
        elif ch.isalpha():
            digits = _DIGITS.match(text, i + 1).group()  # type: ignore[union-attr]
            cmds.append(AtCommand(ch, "", digits))
            i += 1 + len(digits)
        else:
            raise ValueError(f"unexpected {ch!r} at {i}")
    return cmds


def _parse_extended(text: str, i: int, cmds: list[AtCommand]) -> int:
    m = _EXT_NAME.match(text, i)
    if not m:
        raise ValueError(f"bad extended command at {i}")
    name, i = m.group(), m.end()
    if text.startswith("=?", i):
        op, arg, i = "=?", "", i + 2
    elif text.startswith("?", i):
        op, arg, i = "?", "", i + 1
    elif text.startswith("=", i):
        end = _find_unquoted(text, ";", i + 1)
        op, arg, i = "=", text[i + 1 : end], end
    else:
        op, arg = "", ""
    if i < len(text) and text[i] != ";":
        raise ValueError(f"junk after {name} at {i}")
    cmds.append(AtCommand(name, op, arg))
    return i


def format_cid_block(lines: Sequence[str]) -> bytes:
    """Frame caller-ID lines as both dialects print them: ``\\r\\nKEY = VALUE\\r\\n`` each."""
    return b"".join(b"\r\n" + line.encode("utf-8", "replace") + b"\r\n" for line in lines)


def _int_arg(value: str, low: int = 0, high: int = 255) -> int:
    if not value.isdigit() or not low <= int(value) <= high:
        raise _CommandError(f"bad numeric argument {value!r}")
    return int(value)


def _dialect_vsm_args(dialect: ModemDialect) -> tuple[str, ...]:
    """The ``+VSM`` arguments the dialect's own voice_format command uses."""
    _, _, args = dialect.voice_format.partition("=")
    return tuple(a.strip() for a in args.split(","))


def _parse_dial_string(arg: str) -> tuple[str, bool]:
    """The digits of a D command's dial string and whether it ended in ';' (V.250 6.3.1).

    Tone/pulse/wait/pause modifiers and separators are skipped; stored-number
    and other modifiers are not emulated and give ERROR.
    """
    return_after_dial = arg.endswith(";")
    body = arg[:-1] if return_after_dial else arg
    digits: list[str] = []
    for ch in body:
        if ch in DTMF_DIGITS:
            digits.append(ch)
        elif ch not in DIAL_MODIFIERS:
            raise _CommandError(f"dial modifier {ch!r} not emulated")
    if not digits:
        raise _CommandError("empty dial string")
    return "".join(digits), return_after_dial


def _cyclic(pattern: bytes, offset: int, length: int) -> bytes:
    if length <= 0:
        return b""
    offset %= len(pattern)
    reps = (offset + length) // len(pattern) + 1
    return (pattern * reps)[offset : offset + length]


class VirtualModem:
    """An emulated voice modem on a pty, with a scripted telephone line behind it.

    Constructing does no I/O; ``start()`` opens the pty, publishes the
    ``device_path`` symlink and starts the emulator thread.
    """

    def __init__(
        self,
        dialect: ModemDialect = CONEXANT_CX93001,
        cadence: RingCadence = RingCadence.JAPAN,
        time_scale: float = 1.0,
        link_dir: Path | None = None,
        number_display: NdExchange | None = None,
    ) -> None:
        if not time_scale > 0:
            raise ValueError(f"time_scale must be > 0, got {time_scale!r}")
        self.dialect = dialect
        self.cadence = RingCadence(cadence)
        self.time_scale = float(time_scale)
        self.number_display = number_display or NdExchange()  # used on jp_nd lines only
        self._link_dir = Path(link_dir) if link_dir is not None else None
        self._own_dir: Path | None = None
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stop_requested = False
        self._wake_r = -1
        self._wake_w = -1
        self._master: int | None = None
        self._slave: int | None = None
        self._slave_name: str | None = None
        self._out = bytearray()
        self._actions: deque[_Action] = deque()
        self._timers: list[_Timer] = []
        self._seq = itertools.count()
        self._records: list[CallRecord] = []
        self._pending: deque[tuple[CallRecord, bytes]] = deque()
        self._next_start_at: float | None = None
        self._live: _Call | None = None  # incoming call in progress on the line
        self._line_call: _Call | _OutCall | None = None  # call the modem is off-hook on (may have ended)
        self._callees: dict[str, deque[tuple[CalleeScript, bytes]]] = {}
        self._dials: list[DialRecord] = []
        self._command_log: list[tuple[float, str]] = []
        self._silent = False
        self._handset = False
        self._dropped_warned = False
        self._vsm_args = _dialect_vsm_args(dialect)
        self._rate_real = dialect.sample_rate / self.time_scale  # audio bytes per real second
        self._handlers: dict[str, Callable[[AtCommand, list[str], float], str | None]] = {
            "E": self._cmd_echo, "V": self._cmd_verbose, "Q": self._cmd_quiet, "H": self._cmd_hook,
            "Z": self._cmd_reset, "&F": self._cmd_reset, "A": self._cmd_answer, "I": self._cmd_info,
            "S": self._cmd_s_register, "D": self._cmd_dial,
            "L": self._cmd_accept, "M": self._cmd_accept, "X": self._cmd_accept,
            "&C": self._cmd_accept, "&D": self._cmd_accept, "&K": self._cmd_accept,
            "+FCLASS": self._cmd_fclass, "+VCID": self._cmd_caller_id, "#CID": self._cmd_caller_id,
            "+VSM": self._cmd_vsm, "+VSD": self._cmd_vsd, "+VGT": self._cmd_gain,
            "+VGR": self._cmd_gain, "+VIT": self._cmd_gain, "+VLS": self._cmd_vls,
            "+VTX": self._cmd_vtx, "+VRX": self._cmd_vrx,
        }
        self._power_on()

    # ---- lifecycle ---------------------------------------------------------------

    def start(self) -> Path:
        """Open the pty, publish the symlink, start the emulator thread; returns device_path."""
        with self._cond:
            if self._thread is not None:
                raise RuntimeError("virtual modem already started")
            self._stop_requested = False
            if self._link_dir is None and self._own_dir is None:
                self._own_dir = Path(tempfile.mkdtemp(prefix="mamoru-vmodem-"))
            self._wake_r, self._wake_w = os.pipe()
            os.set_blocking(self._wake_r, False)
            os.set_blocking(self._wake_w, False)
            self._open_pty()
            self._thread = threading.Thread(target=self._run, name="virtual-modem", daemon=True)
            self._thread.start()
        log.info("virtual %s modem on %s -> %s", self.dialect.key, self.device_path, self._slave_name)
        return self.device_path

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread, close the pty, remove the symlink; unfinished calls are closed out."""
        with self._cond:
            thread = self._thread
            if thread is None:
                return
            self._stop_requested = True
            self._wake()
        thread.join(timeout)
        if thread.is_alive():
            log.error("virtual modem thread did not stop within %.1f s", timeout)
            return
        with self._cond:
            self._thread = None
            for fd in (self._wake_r, self._wake_w):
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._wake_r = self._wake_w = -1
            if self._own_dir is not None:
                shutil.rmtree(self._own_dir, ignore_errors=True)
                self._own_dir = None

    def __enter__(self) -> VirtualModem:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def device_path(self) -> Path:
        """The stable symlink the host opens; survives vanish()/reappear()."""
        directory = self._link_dir or self._own_dir
        if directory is None:
            raise RuntimeError("device_path is known only after start() (or with link_dir)")
        return directory / DEVICE_LINK_NAME

    @property
    def tty_name(self) -> str | None:
        """The current pty slave (changes on reappear(), like ttyACM0 -> ttyACM1)."""
        with self._cond:
            return self._slave_name

    @property
    def running(self) -> bool:
        return self._thread is not None

    # ---- calls and observation ---------------------------------------------------

    def place_call(self, script: CallScript) -> CallRecord:
        """Queue an incoming call; it starts ``gap_s`` after the line is free.

        The caller's audio is loaded here, in the calling thread, so a bad WAV
        raises ``ValueError`` to the test instead of inside the emulator.
        """
        audio = caller_audio_u8(script)
        with self._cond:
            record = CallRecord(index=len(self._records), script=script, queued_at=time.monotonic())
            self._records.append(record)
            self._pending.append((record, audio))
            self._wake()
            return record

    @property
    def calls(self) -> list[CallRecord]:
        return self.records()

    def records(self) -> list[CallRecord]:
        with self._cond:
            return list(self._records)

    def expect_dial(self, number: str, script: CalleeScript) -> None:
        """Script who answers when the host dials ``number`` (separators ignored).

        Scripts for one number queue up: each dial uses the next, and the last
        one repeats (busy, then answered on the retry). The callee's audio is
        loaded here so a bad WAV raises in the test. A number dialled without a
        script rings until the modem's S7 timer gives NO ANSWER.
        """
        digits = "".join(ch for ch in number.upper() if ch in DTMF_DIGITS)
        if not digits:
            raise ValueError(f"no digits to dial in {number!r}")
        audio = callee_audio_u8(script)
        with self._cond:
            self._callees.setdefault(digits, deque()).append((script, audio))

    @property
    def dials(self) -> list[DialRecord]:
        """Every D command the modem accepted, in order."""
        with self._cond:
            return list(self._dials)

    def wait_for_dial_end(self, which: int | DialRecord, timeout: float) -> DialRecord:
        """Block until that outgoing call has an outcome; raises TimeoutError."""
        def ended() -> bool:
            record = self._dial_lookup(which)
            return record is not None and record.ended

        if not self._wait_for(ended, timeout):
            raise TimeoutError(f"dial {which if isinstance(which, int) else which.index} did not end within {timeout} s")
        record = self._dial_lookup(which)
        assert record is not None
        return record

    def _dial_lookup(self, which: int | DialRecord) -> DialRecord | None:
        if isinstance(which, DialRecord):
            return which
        with self._cond:
            return self._dials[which] if 0 <= which < len(self._dials) else None

    @property
    def command_log(self) -> list[tuple[float, str]]:
        """Every AT command line received, with its monotonic time."""
        with self._cond:
            return list(self._command_log)

    @property
    def off_hook(self) -> bool:
        with self._cond:
            return self._off_hook

    @property
    def handset_off_hook(self) -> bool:
        with self._cond:
            return self._handset

    def wait_for_call_end(self, which: int | CallRecord, timeout: float) -> CallRecord:
        """Block until that call has an outcome; raises TimeoutError."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                record = self._lookup(which)
                if record is not None and record.ended:
                    return record
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"call {which if isinstance(which, int) else which.index} "
                                       f"did not end within {timeout} s")
                self._cond.wait(remaining)

    def wait_idle(self, timeout: float) -> None:
        """Block until no call is queued or in progress; raises TimeoutError."""
        if not self._wait_for(self._is_idle, timeout):
            raise TimeoutError(f"virtual modem not idle within {timeout} s")

    def wait_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait (under the modem lock) for a condition on records/state; False on timeout."""
        return self._wait_for(predicate, timeout)

    def _wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(predicate, timeout)

    def is_idle(self) -> bool:
        """No call queued or in progress (the modem may still be off-hook)."""
        with self._cond:
            return self._is_idle()

    def _is_idle(self) -> bool:
        return not self._pending and self._live is None

    def _lookup(self, which: int | CallRecord) -> CallRecord | None:
        if isinstance(which, CallRecord):
            return which
        return self._records[which] if 0 <= which < len(self._records) else None

    # ---- the household's phone -----------------------------------------------------

    def set_handset(self, off_hook: bool) -> None:
        """Lift or replace the household's handset by hand (not from a script)."""
        with self._cond:
            now = time.monotonic()
            call = self._live
            if off_hook and call is not None and call.phase is _Phase.ALERTING:
                self._household_answers(call, now, talk_s=None)
            elif not off_hook and call is not None and call.phase is _Phase.HOUSEHOLD:
                self._end_call(call, CallOutcome.HOUSEHOLD_ANSWERED, now)
            self._set_handset(off_hook, now)
            self._wake()

    # ---- fault injection -----------------------------------------------------------

    def go_silent(self) -> None:
        """Firmware hang: stop echoing, replying and reporting anything."""
        with self._cond:
            self._silent = True
            self._line.clear()
            log.info("virtual modem: gone silent")

    def resume(self) -> None:
        with self._cond:
            self._silent = False
            log.info("virtual modem: answering again")
            self._wake()

    def inject(self, data: bytes) -> None:
        """Write raw bytes to the host (line noise, a confused firmware)."""
        with self._cond:
            if self._master is not None:
                self._queue_out(bytes(data))
            self._wake()

    def vanish(self, timeout: float = 5.0) -> None:
        """The USB device disappears: pty closed, symlink removed, any answered call dropped."""
        self._run_on_thread(self._do_vanish, timeout)

    def reappear(self, timeout: float = 5.0) -> None:
        """The device comes back: a fresh pty in power-on state behind the same symlink path."""
        self._run_on_thread(self._do_reappear, timeout)

    def _run_on_thread(self, fn: Callable[[], None], timeout: float) -> None:
        """Run fd-touching work on the emulator thread; re-raise its exception here."""
        action = _Action(fn)
        with self._cond:
            if self._thread is None:
                raise RuntimeError("virtual modem is not running")
            self._actions.append(action)
            self._wake()
        if not action.done.wait(timeout):
            raise TimeoutError(f"virtual modem did not run {fn.__name__} within {timeout} s")
        if action.error is not None:
            raise action.error

    def _do_vanish(self) -> None:
        now = time.monotonic()
        if self._master is None:
            return
        self._drop_connection(now)
        self._close_pty()
        log.info("virtual modem: vanished")

    def _do_reappear(self) -> None:
        if self._master is not None:
            return
        self._power_on()
        self._open_pty()
        log.info("virtual modem: reappeared as %s", self._slave_name)

    # ---- pty ------------------------------------------------------------------------

    def _open_pty(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)
        os.set_blocking(master, False)
        self._master, self._slave = master, slave
        self._slave_name = os.ttyname(slave)
        self._out.clear()
        self._publish_link()

    def _publish_link(self) -> None:
        link = self.device_path
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.exists() and not link.is_symlink():
            raise FileExistsError(f"{link} exists and is not a symlink; refusing to replace it")
        tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        os.symlink(self._slave_name or "", tmp)
        os.replace(tmp, link)

    def _close_pty(self) -> None:
        for fd in (self._master, self._slave):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._master = self._slave = None
        self._slave_name = None
        self._out.clear()
        with contextlib.suppress(FileNotFoundError, RuntimeError):
            link = self.device_path
            if link.is_symlink():
                link.unlink()

    def _wake(self) -> None:
        if self._wake_w >= 0:
            with contextlib.suppress(BlockingIOError, OSError):
                os.write(self._wake_w, b"x")

    # ---- emulator thread ------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                if self._stop_requested:
                    break
                try:
                    self._step(time.monotonic())
                    rlist, wlist, timeout = self._select_plan(time.monotonic())
                except Exception:  # never let host garbage or a bug kill the modem
                    log.exception("virtual modem: internal error; continuing")
                    rlist, wlist, timeout = [self._wake_r], [], 0.05
            try:
                readable, writable, _ = select.select(rlist, wlist, [], timeout)
            except (OSError, ValueError) as exc:
                log.warning("virtual modem: select failed: %s", exc)
                time.sleep(0.01)
                continue
            with self._cond:
                try:
                    self._handle_io(readable, writable)
                except Exception:
                    log.exception("virtual modem: error handling I/O; continuing")
        with self._cond:
            self._shutdown()

    def _step(self, now: float) -> None:
        while self._actions:
            action = self._actions.popleft()
            try:
                action.fn()
            except Exception as exc:  # reported to the caller of vanish()/reappear()
                action.error = exc
            finally:
                action.done.set()
        self._run_timers(now)
        self._maybe_start_next(now)
        self._pump_mode(now)
        self._flush()

    def _select_plan(self, now: float) -> tuple[list[int], list[int], float]:
        deadline = now + MAX_SELECT_S
        while self._timers and self._timers[0].cancelled:
            heapq.heappop(self._timers)
        if self._timers:
            deadline = min(deadline, self._timers[0].at)
        if self._next_start_at is not None:
            deadline = min(deadline, self._next_start_at)
        deadline = min(deadline, self._mode_deadline(now))
        rlist = [self._wake_r]
        wlist: list[int] = []
        if self._master is not None:
            if self._wants_read(now):
                rlist.append(self._master)
            if self._out:
                wlist.append(self._master)
        return rlist, wlist, max(0.0, deadline - now)

    def _handle_io(self, readable: list[int], writable: list[int]) -> None:
        if self._wake_r in readable:
            with contextlib.suppress(BlockingIOError, OSError):
                while os.read(self._wake_r, 512):
                    pass
        if self._master is None:
            return
        if self._master in writable:
            self._flush()
        if self._master in readable:
            try:
                data = os.read(self._master, self._read_size(time.monotonic()))
            except BlockingIOError:
                return
            except OSError as exc:
                log.warning("virtual modem: read failed: %s", exc)
                return
            if data:
                self._on_input(data, time.monotonic())
                self._flush()

    def _shutdown(self) -> None:
        now = time.monotonic()
        self._drop_connection(now)
        if self._live is not None:
            self._end_call(self._live, CallOutcome.LINE_FAULT, now)
        while self._pending:
            record, _ = self._pending.popleft()
            record.outcome, record.ended_at = CallOutcome.CANCELLED, now
        self._timers.clear()
        self._close_pty()
        self._cond.notify_all()

    # ---- output ----------------------------------------------------------------------

    def _emit(self, data: bytes) -> bool:
        """Send to the host unless the firmware is 'hung' or the device is gone."""
        if self._silent or self._master is None or not data:
            return False
        self._queue_out(data)
        return True

    def _queue_out(self, data: bytes) -> None:
        if len(self._out) + len(data) > MAX_OUT_BACKLOG:
            if not self._dropped_warned:
                log.warning("virtual modem: host is not reading; dropping output")
                self._dropped_warned = True
            return
        self._dropped_warned = False
        self._out += data
        self._flush()

    def _flush(self) -> None:
        if self._master is None or not self._out:
            return
        try:
            written = os.write(self._master, self._out)
        except BlockingIOError:
            return
        except OSError as exc:
            log.warning("virtual modem: write failed: %s", exc)
            self._out.clear()
            return
        del self._out[:written]

    def _final(self, code: str, info: Iterable[str] = ()) -> None:
        """Emit information text then a final result code, framed per ATV."""
        if self._settings.verbose:
            text = "".join(f"\r\n{line}\r\n" for line in info) + f"\r\n{code}\r\n"
        else:
            text = "".join(f"{line}\r\n" for line in info) + f"{NUMERIC_CODES.get(code, code)}\r"
        self._emit(text.encode("ascii", "replace"))

    def _unsolicited(self, code: str) -> bool:
        if self._settings.verbose:
            return self._emit(f"\r\n{code}\r\n".encode("ascii"))
        return self._emit(f"{NUMERIC_CODES.get(code, code)}\r".encode("ascii"))

    def _send_dle_event(self, code: str, now: float) -> None:
        """Report a DLE event (voice class only), inline with +VRX audio if streaming."""
        if self._settings.fclass != VOICE_CLASS:
            return
        if self._mode is _Mode.VRX:
            self._pump_vrx(now)
        if self._emit(bytes([DLE, ord(code)])):
            call = self._live or self._line_call
            if call is not None:
                call.record.dle_events.append((now, code))

    # ---- device state ----------------------------------------------------------------

    def _power_on(self) -> None:
        """Everything a power cycle or ATZ resets (the line and handset are not the device)."""
        self._settings = _Settings()
        self._mode = _Mode.COMMAND
        self._line = bytearray()
        self._overflow = False
        self._off_hook = False
        self._after_reply: Callable[[float], None] | None = None
        self._swallow_lf = False
        self._dle_pending = False
        self._play_clock = 0.0
        self._deferred = bytearray()
        self._vrx_clock = 0.0
        self._vrx_pos = 0
        self._silence_run = 0
        self._silence_reported = False

    def _drop_connection(self, now: float) -> None:
        """The device lost power or vanished: an answered call is cut off."""
        line_call = self._line_call
        if isinstance(line_call, _OutCall):
            line_call.record.hung_up_at = now
            self._end_dial(line_call, DialOutcome.LINE_FAULT, now)
        elif line_call is not None and line_call.phase is _Phase.CONNECTED:
            line_call.record.hung_up_at = now
            self._end_call(line_call, CallOutcome.LINE_FAULT, now)
        self._off_hook = False
        self._line_call = None
        self._mode = _Mode.COMMAND

    # ---- input -----------------------------------------------------------------------

    def _wants_read(self, now: float) -> bool:
        if self._mode is _Mode.VTX_DRAIN:
            return False
        if self._mode is _Mode.VTX and not self._silent:
            return self._play_clock - now < VTX_BUFFER_S * self.time_scale
        return True

    def _read_size(self, now: float) -> int:
        if self._mode is not _Mode.VTX or self._silent:
            return READ_SIZE
        room_s = VTX_BUFFER_S * self.time_scale - max(0.0, self._play_clock - now)
        return max(64, min(READ_SIZE, int(room_s * self._rate_real)))

    def _on_input(self, data: bytes, now: float) -> None:
        if self._silent:
            log.debug("virtual modem (silent): discarding %d bytes", len(data))
            return
        while data:
            if self._mode is _Mode.COMMAND:
                data = self._feed_command(data, now)
            elif self._mode is _Mode.VTX:
                data = self._feed_vtx(data, now)
            elif self._mode is _Mode.VRX:
                data = self._feed_vrx(data, now)
            elif self._mode is _Mode.DIALING:
                data = self._feed_dialing(data, now)
            else:
                self._deferred += data
                return

    def _feed_command(self, data: bytes, now: float) -> bytes:
        i = 0
        while i < len(data):
            j = data.find(b"\r", i)
            end = len(data) if j < 0 else j + 1
            piece = data[i:end]
            if self._settings.echo:
                self._emit(piece)  # a modem echoes what it receives, as it receives it
            self._buffer_line(piece if j < 0 else piece[:-1])
            i = end
            if j < 0:
                break
            line, overflow = bytes(self._line), self._overflow
            self._line.clear()
            self._overflow = False
            self._execute_line(line, overflow, now)
            if self._mode is not _Mode.COMMAND:
                return self._skip_lf(data[i:])
        return b""

    def _skip_lf(self, data: bytes) -> bytes:
        """A CRLF-terminated +VTX/+VRX: the LF is line ending, not the first audio byte."""
        if not self._swallow_lf or not data:
            return data
        self._swallow_lf = False
        return data[1:] if data[0] == LF else data

    def _buffer_line(self, piece: bytes) -> None:
        piece = piece.replace(b"\n", b"")
        if b"\x08" in piece:
            for byte in piece:
                if byte == BS:
                    if self._line:
                        self._line.pop()
                else:
                    self._append_line(bytes([byte]))
        else:
            self._append_line(piece)

    def _append_line(self, piece: bytes) -> None:
        room = MAX_COMMAND_LEN - len(self._line)
        if len(piece) > room:
            self._overflow = True
            piece = piece[: max(0, room)]
        self._line += piece

    # ---- command execution ----------------------------------------------------------------

    def _execute_line(self, line: bytes, overflow: bool, now: float) -> None:
        text = line.decode("latin-1")
        start = text.upper().find("AT")
        if start < 0:
            if text.strip():
                log.debug("virtual modem: ignoring line without AT: %r", text)
            return
        command = text[start:]
        self._note_command(now, command)
        if overflow or not (command.isascii() and command.isprintable()):
            log.info("virtual modem: rejecting %s command line", "overlong" if overflow else "non-ASCII")
            self._final(ERROR)
            return
        try:
            cmds = parse_at_body(command[2:])
        except ValueError as exc:
            log.info("virtual modem: malformed %r: %s", command, exc)
            self._final(ERROR)
            return
        self._run_commands(cmds, now)

    def _run_commands(self, cmds: list[AtCommand], now: float) -> None:
        info: list[str] = []
        final: str | None = None
        self._after_reply = None
        for cmd in cmds:
            handler = self._handlers.get(cmd.name)
            try:
                if handler is None:
                    raise _CommandError(f"unknown command {cmd.name}")
                final = handler(cmd, info, now)
            except _CommandError as exc:
                log.info("virtual modem: ERROR for %s%s%s: %s", cmd.name, cmd.op, cmd.arg, exc)
                final = ERROR
                self._after_reply = None
            if final is not None:
                break
        if final == _DEFERRED:  # the D command answers once call progress is known
            self._after_reply = None
            return
        self._final(final or OK, info)
        after, self._after_reply = self._after_reply, None
        if after is not None:
            after(now)

    def _note_command(self, now: float, command: str) -> None:
        entry = (now, command.strip())
        self._command_log.append(entry)
        call = self._live or self._line_call
        if call is not None:
            call.record.commands.append(entry)

    def _require_voice(self) -> None:
        if self._settings.fclass != VOICE_CLASS:
            raise _CommandError("voice command outside +FCLASS=8")

    @staticmethod
    def _flag(cmd: AtCommand) -> bool:
        if cmd.arg not in ("", "0", "1"):
            raise _CommandError(f"bad flag {cmd.arg!r}")
        return cmd.arg == "1"

    def _off_hook_final(self) -> str | None:
        """The dialect's reply to going off-hook in voice mode (None = plain OK)."""
        final = self.dialect.off_hook_replies[0]
        return None if final == OK else final

    # basic commands

    def _cmd_echo(self, cmd: AtCommand, info: list[str], now: float) -> str | None:
        self._settings.echo = self._flag(cmd)
        return None

    def _cmd_verbose(self, cmd: AtCommand, info: list[str], now: float) -> str | None:
        self._settings.verbose = self._flag(cmd)
        return None

    def _cmd_quiet(self, cmd: AtCommand, info: list[str], now: float) -> str | None:
        if self._flag(cmd):
            raise _CommandError("ATQ1 (quiet) is not emulated")
        return None

    def _cmd_hook(self, cmd: AtCommand, info: list[str], now: float) -> str | None:
        if self._flag(cmd):
            self._go_off_hook(now)
        else:
            self._go_on_hook(now)
        return None

    def _cmd_reset(self, cmd: AtCommand, info: list[str], now: float) -> str | None:
        if cmd.arg not in ("", "0", "1"):
            raise _CommandError("bad profile")
        self._go_on_hook(now)
        self._power_on()
        return None

    def _cmd_answer(self, cmd: AtCommand, info: list[str], now: float) -> str | None:
        if self._settings.fclass == VOICE_CLASS:
            self._go_off_hook(now)
            return self._off_hook_final()
        # Data/fax answer: a voice caller never sends a carrier, so the handshake fails.
        self._go_off_hook(now)
        self._go_on_hook(now)
        return NO_CARRIER

    def _cmd_info(self, cmd: AtCommand, info: list[str], now: float) -> str | None:
        if cmd.arg in ("", "0"):
            info.append(self.dialect.ati0_reply)
        elif cmd.arg == "3":
            info.append(self.dialect.ati3_reply)
        else:
            raise _CommandError(f"ATI{cmd.arg} not emulated")
        return None

    def _cmd_accept(self, cmd: AtCommand, info: list[str], now: float) -> str | None:
        """Settings with no effect on an emulated line (speaker, result set, DTR/DCD)."""
        return None

    def _cmd_dial(self, cmd: AtCommand, info: list[str], now: float) -> str | None:
        """``ATD[T|P]<digits>[;]``: seize the line, dial, then report call progress.

        Outcomes are timers (see ``_start_dial``); the final reply is deferred.
        """
        number, return_after_dial = _parse_dial_string(cmd.arg)
        if self._off_hook:
            raise _CommandError("dialling from the off-hook voice command state is not emulated")
        script, audio = self._next_callee(number)
        if script is None:
            log.warning("virtual modem: %s dialled with no expect_dial script; it will ring out", number)
            script = CalleeScript.no_answer(label="unscripted")
        raw = self._command_log[-1][1] if self._command_log else f"ATD{cmd.arg}"
        record = DialRecord(index=len(self._dials), dial_string=raw, number=number, script=script,
                            dialled_at=now, return_after_dial=return_after_dial)
        self._dials.append(record)
        self._start_dial(_OutCall(record=record, audio=audio), now)
        return _DEFERRED

    def _next_callee(self, number: str) -> tuple[CalleeScript | None, bytes]:
        queued = self._callees.get(number)
        if not queued:
            return None, b""
        return queued.popleft() if len(queued) > 1 else queued[0]

    def _cmd_s_register(self, cmd: AtCommand, info: list[str], now: float) -> str | None:
        reg_text, _, value = cmd.arg.partition(",")
        register = _int_arg(reg_text)
        if cmd.op == "?":
            info.append(f"{self._settings.s_registers.get(register, 0):03d}")
        elif cmd.op == "=":
            self._settings.s_registers[register] = _int_arg(value or "0")
        else:
            raise _CommandError("bare S-register")
        return None

    # extended commands

    def _cmd_fclass(self, cmd: AtCommand, info: list[str], now: float) -> str | None:
        if cmd.op == "=":
            if cmd.arg not in FCLASS_VALUES:
                raise _CommandError(f"unsupported class {cmd.arg!r}")
            self._settings.fclass = cmd.arg
        elif cmd.op == "?":
            info.append(self._settings.fclass)
        elif cmd.op == "=?":
            info.append(",".join(FCLASS_VALUES))
        else:
            raise _CommandError("+FCLASS needs an operator")
        return None

    def _cmd_caller_id(self, cmd: AtCommand, info: list[str], now: float) -> str | None:
        if cmd.op == "=":
            if cmd.arg not in ("0", "1"):
                raise _CommandError(f"caller ID mode {cmd.arg!r} not emulated")
            self._settings.caller_id = cmd.arg == "1"
        elif cmd.op == "?":
            info.append("1" if self._settings.caller_id else "0")
        elif cmd.op == "=?":
            info.append("(0,1)")
        else:
            raise _CommandError(f"{cmd.name} needs an operator")
        return None

    def _cmd_vsm(self, cmd: AtCommand, info: list[str], now: float) -> str | None:
        self._require_voice()
        if cmd.op == "=":
            self._settings.vsm = self._check_vsm(cmd.arg)
        elif cmd.op == "?":
            info.append(self._settings.vsm or ",".join(self._vsm_args))
        elif cmd.op == "=?":
            info.append(f'{self._vsm_args[0]},"8-BIT LINEAR",(0),(0),({self.dialect.sample_rate})')
        else:
            raise _CommandError("+VSM needs an operator")
        return None

    def _check_vsm(self, arg: str) -> str:
        """Accept only the compression the dialect streams (u8 linear at its rate)."""
        args = [a.strip() for a in arg.split(",")]
        if len(args) > len(self._vsm_args) or not all(a.isdigit() for a in args):
            raise _CommandError(f"bad +VSM arguments {arg!r}")
        if args[0] != self._vsm_args[0]:
            raise _CommandError(f"compression {args[0]} not offered by {self.dialect.key}")
        if len(args) > 1 and int(args[1]) != self.dialect.sample_rate:
            raise _CommandError(f"sample rate {args[1]} not emulated")
        return ",".join(args)

    def _cmd_vsd(self, cmd: AtCommand, info: list[str], now: float) -> str | None:
        self._require_voice()
        if cmd.op == "=":
            parts = cmd.arg.split(",")
            if len(parts) != 2:
                raise _CommandError("+VSD takes sensitivity,duration")
            self._settings.vsd = (_int_arg(parts[0]), _int_arg(parts[1]))
        elif cmd.op == "?":
            info.append("{},{}".format(*self._settings.vsd))
        elif cmd.op == "=?":
            info.append("(0-255),(0-255)")
        else:
            raise _CommandError("+VSD needs an operator")
        return None

    def _cmd_gain(self, cmd: AtCommand, info: list[str], now: float) -> str | None:
        """+VGT, +VGR, +VIT: stored and reported; audio is not scaled by them."""
        self._require_voice()
        attr = {"+VGT": "vgt", "+VGR": "vgr", "+VIT": "vit"}[cmd.name]
        if cmd.op == "=":
            setattr(self._settings, attr, _int_arg(cmd.arg))
        elif cmd.op == "?":
            info.append(str(getattr(self._settings, attr)))
        elif cmd.op == "=?":
            info.append("(0-255)")
        else:
            raise _CommandError(f"{cmd.name} needs an operator")
        return None

    def _cmd_vls(self, cmd: AtCommand, info: list[str], now: float) -> str | None:
        self._require_voice()
        if cmd.op == "=":
            if cmd.arg == "0":
                self._go_on_hook(now)
                return None
            if cmd.arg == "1":
                self._go_off_hook(now)
                return self._off_hook_final()
            raise _CommandError(f"+VLS={cmd.arg} (local devices) not emulated")
        if cmd.op == "?":
            info.append("1" if self._off_hook else "0")
        elif cmd.op == "=?":
            info.append("0,1")
        else:
            raise _CommandError("+VLS needs an operator")
        return None

    def _cmd_vtx(self, cmd: AtCommand, info: list[str], now: float) -> str | None:
        self._require_data_state(cmd)
        self._after_reply = self._enter_vtx
        return CONNECT

    def _cmd_vrx(self, cmd: AtCommand, info: list[str], now: float) -> str | None:
        self._require_data_state(cmd)
        self._after_reply = self._enter_vrx
        return CONNECT

    def _require_data_state(self, cmd: AtCommand) -> None:
        self._require_voice()
        if cmd.op or cmd.arg:
            raise _CommandError(f"{cmd.name} takes no arguments")
        if not self._off_hook:
            raise _CommandError(f"{cmd.name} while on-hook")

    # ---- hook state --------------------------------------------------------------------

    def _go_off_hook(self, now: float) -> None:
        if self._off_hook:
            return
        self._off_hook = True
        call = self._live
        if call is None:
            log.debug("virtual modem: off-hook with no call (line seized)")
        elif call.phase is _Phase.ALERTING:
            self._answer(call, now)
        elif call.phase is _Phase.CAR:
            self._primary_response(call, now)
        else:
            log.info("virtual modem: off-hook during %s call; not answering it", call.phase.value)

    def _go_on_hook(self, now: float) -> None:
        if not self._off_hook:
            return
        self._off_hook = False
        self._mode = _Mode.COMMAND
        call, self._line_call = self._line_call, None
        if call is None:
            return
        if isinstance(call, _Call) and call.phase is _Phase.ND_DATA:
            self._nd_on_hook(call, now)
            return
        call.record.hung_up_at = now
        if isinstance(call, _OutCall):
            connected = call.phase is _Phase.CONNECTED
            self._end_dial(call, DialOutcome.ANSWERED if connected else DialOutcome.ABORTED, now)
        elif call.phase is _Phase.CONNECTED:
            self._end_call(call, CallOutcome.ANSWERED, now)
        self._cond.notify_all()

    def _set_handset(self, off_hook: bool, now: float) -> None:
        if off_hook == self._handset:
            return
        self._handset = off_hook
        code = DleEvent.HANDSET_OFF_HOOK if off_hook else DleEvent.HANDSET_ON_HOOK
        self._send_dle_event(code.value, now)

    # ---- call lifecycle ---------------------------------------------------------------------

    def _schedule(self, call: _Call | _OutCall | None, at: float, fn: Callable[[float], None]) -> _Timer:
        timer = _Timer(at, next(self._seq), fn)
        heapq.heappush(self._timers, timer)
        if call is not None:
            call.timers.append(timer)
        return timer

    def _run_timers(self, now: float) -> None:
        while self._timers and self._timers[0].at <= now:
            timer = heapq.heappop(self._timers)
            if not timer.cancelled:
                timer.cancelled = True
                timer.fn(timer.at)

    @staticmethod
    def _cancel_timers(call: _Call | _OutCall) -> None:
        for timer in call.timers:
            timer.cancelled = True
        call.timers.clear()

    def _real(self, line_s: float) -> float:
        return line_s * self.time_scale

    def _maybe_start_next(self, now: float) -> None:
        if self._live is not None or not self._pending:
            return
        if self._next_start_at is None:
            if self._off_hook:
                return  # the gap starts once the modem is back on-hook
            self._next_start_at = now + self._real(self._pending[0][0].script.gap_s)
        if now < self._next_start_at:
            return
        self._next_start_at = None
        record, audio = self._pending.popleft()
        record.started_at = now
        if self._off_hook:
            log.info("virtual modem: call %d hears busy (modem off-hook)", record.index)
            record.outcome, record.ended_at = CallOutcome.LINE_BUSY, now
            self._cond.notify_all()
            return
        self._begin_call(_Call(record=record, audio=audio), now)

    def _begin_call(self, call: _Call, now: float) -> None:
        script = call.record.script
        self._live = call
        log.info("virtual modem: incoming call %d %s (%s)", call.record.index, script.nmbr, script.label)
        waiting = self._handset or script.call_waiting
        if script.call_waiting and not self._handset:
            call.handset_by_script = True
            self._set_handset(True, now)
        if self.cadence is RingCadence.JAPAN_ND:
            if not waiting:
                self._begin_car(call, now)
                return
            call.record.nd_outcome = NdLineOutcome.NOT_SENT  # no CAR to an off-hook line
        if self.cadence is RingCadence.NORTH_AMERICA and not waiting:
            call.first_ring_due = now
            cid_at = now + self._real(NA_CID_AFTER_RING_S)
        else:
            call.first_ring_due = now + self._real(CID_BEFORE_RING_S)
            cid_at = now + self._real(CALL_WAITING_CID_DELAY_S if waiting else 0.0)
        if self.cadence is not RingCadence.JAPAN_ND:  # no modem prints Japanese ND
            self._schedule(call, cid_at, lambda at: self._send_cid(call))
        period = self._real(CADENCE_PERIOD_S[self.cadence])
        if waiting:
            call.phase = _Phase.WAITING
            give_up_at = call.first_ring_due + script.max_rings * period
            self._schedule(call, give_up_at, lambda at: self._give_up(call, at))
        else:
            self._start_ringing(call, call.first_ring_due)

    def _start_ringing(self, call: _Call, first_ring_at: float) -> None:
        script = call.record.script
        call.phase = _Phase.ALERTING
        call.first_ring_due = first_ring_at
        self._schedule(call, first_ring_at, lambda at: self._ring(call, 0, at))
        if script.handset_off_hook_at_s is not None and script.handset_off_hook_at_s > 0:
            pickup_at = call.first_ring_due + self._real(script.handset_off_hook_at_s)
            self._schedule(call, pickup_at, lambda at: self._household_picks_up(call, at))

    # ---- Japanese Number Display (jp_nd): CAR, primary response, FSK, then ringing ----

    def _begin_car(self, call: _Call, now: float) -> None:
        call.phase = _Phase.CAR
        call.record.first_car_at = now
        self._schedule(call, now, lambda at: self._car_ring(call, at))
        timeout = now + self._real(self.number_display.primary_response_timeout_s)
        self._schedule(call, timeout, lambda at: self._car_timed_out(call, at))

    def _car_ring(self, call: _Call, at: float) -> None:
        if call.phase is not _Phase.CAR:
            return
        if not self._off_hook and self._mode is _Mode.COMMAND:
            self._unsolicited(RING)
        call.record.car_rings += 1
        self._schedule(call, at + self._real(self.number_display.car_period_s), lambda t: self._car_ring(call, t))

    def _car_timed_out(self, call: _Call, at: float) -> None:
        """No primary response: a non-ND terminal, so the exchange rings normally without caller ID."""
        if call.phase is not _Phase.CAR:
            return
        log.info("virtual modem: call %d: no primary response to CAR; ringing without caller ID", call.record.index)
        self._cancel_timers(call)
        call.record.nd_outcome = NdLineOutcome.NO_PRIMARY_RESPONSE
        self._start_ringing(call, at)

    def _primary_response(self, call: _Call, now: float) -> None:
        self._cancel_timers(call)
        script = call.record.script
        frame = nd_frame_for(script.nmbr, script.nd_frame)
        call.phase = _Phase.ND_DATA
        call.nd_epoch = now
        call.nd_audio = nd_line_audio(frame, self.number_display)
        call.record.primary_response_at = now
        call.record.nd_frame = frame
        self._line_call = call

    def _nd_on_hook(self, call: _Call, now: float) -> None:
        call.record.nd_on_hook_at = now
        call.record.nd_outcome = NdLineOutcome.SENT
        self._start_ringing(call, now + self._real(self.number_display.ring_after_on_hook_s))

    def _send_cid(self, call: _Call) -> None:
        if call.phase not in (_Phase.ALERTING, _Phase.WAITING) or not self._settings.caller_id:
            return
        if self._mode is not _Mode.COMMAND:
            return
        block = format_cid_block(call.record.script.cid_lines(time.strftime("%m%d"), time.strftime("%H%M")))
        flushed_before = not self._out
        if self._emit(block):
            call.record.cid_written_at = time.monotonic()
            call.record.cid_bytes = block
            if not flushed_before:
                log.debug("virtual modem: caller ID queued behind %d bytes", len(self._out))

    def _ring(self, call: _Call, k: int, at: float) -> None:
        if call.phase is not _Phase.ALERTING:
            return
        if not self._off_hook and self._mode is _Mode.COMMAND:
            self._unsolicited(RING)
        call.record.rings += 1
        if k == 0:
            call.record.first_ring_at = time.monotonic()
        period = self._real(CADENCE_PERIOD_S[self.cadence])
        if k + 1 < call.record.script.max_rings:
            self._schedule(call, at + period, lambda t: self._ring(call, k + 1, t))
        else:
            self._schedule(call, at + period, lambda t: self._give_up(call, t))

    def _give_up(self, call: _Call, at: float) -> None:
        if call.phase is _Phase.ALERTING:
            self._end_call(call, CallOutcome.GAVE_UP, time.monotonic())
        elif call.phase is _Phase.WAITING:
            self._end_call(call, CallOutcome.LINE_IN_USE, time.monotonic())

    def _answer(self, call: _Call, now: float) -> None:
        """The modem took the ringing call: caller's audio, DTMF and hang-up clocks start."""
        script = call.record.script
        self._cancel_timers(call)
        call.phase = _Phase.CONNECTED
        call.answered_at = now
        call.record.answered_at = now
        self._line_call = call
        if script.hang_up_after_s is not None:
            self._schedule(call, now + self._real(script.hang_up_after_s), lambda at: self._caller_hangs_up(call, at))
        for offset, digit in script.dtmf:
            self._schedule(call, now + self._real(offset), functools.partial(self._dtmf, call, digit))
        pickup = script.handset_off_hook_at_s
        if pickup is not None and pickup > 0:
            pickup_at = call.first_ring_due + self._real(pickup)
            self._schedule(call, max(now, pickup_at), lambda at: self._household_picks_up(call, at))

    def _household_picks_up(self, call: _Call, at: float) -> None:
        """Scripted pick-up: takes a ringing call, or joins an answered one as an extension."""
        now = time.monotonic()
        if call.phase is _Phase.ALERTING:
            talk = call.record.script.hang_up_after_s
            self._household_answers(call, now, talk_s=HOUSEHOLD_TALK_S if talk is None else talk)
        elif call.phase is not _Phase.CONNECTED or self._handset:
            return
        call.handset_by_script = True
        self._set_handset(True, now)

    def _household_answers(self, call: _Call, now: float, talk_s: float | None) -> None:
        """The household's phone took the call (``answered_at`` stays None: the host did not).

        With ``talk_s`` the household hangs up after that long; without it (a
        manual ``set_handset``) the call lasts until the handset is replaced.
        """
        self._cancel_timers(call)
        call.phase = _Phase.HOUSEHOLD
        if talk_s is not None:
            self._schedule(call, now + self._real(talk_s),
                           lambda at: self._end_call(call, CallOutcome.HOUSEHOLD_ANSWERED, time.monotonic()))

    def _caller_hangs_up(self, call: _Call, at: float) -> None:
        if call.phase is not _Phase.CONNECTED:
            return
        now = time.monotonic()
        call.hangup_at = at
        call.record.caller_hung_up_at = now
        self._end_call(call, CallOutcome.CALLER_HUNG_UP, now)
        if self._off_hook and self._line_call is call:
            self._send_dle_event(HANGUP_EVENT[self.cadence].value, now)

    def _dtmf(self, call: _Call, digit: str, at: float) -> None:
        if call.phase is _Phase.CONNECTED and self._off_hook and self._line_call is call:
            self._send_dle_event(digit, time.monotonic())

    def _end_call(self, call: _Call, outcome: CallOutcome, now: float) -> None:
        if call.phase is _Phase.ENDED:
            return
        call.phase = _Phase.ENDED
        self._cancel_timers(call)
        call.record.outcome = outcome
        call.record.ended_at = now
        log.info("virtual modem: call %d ended: %s", call.record.index, outcome.value)
        if self._live is call:
            self._live = None
        if call.handset_by_script and self._handset:
            self._set_handset(False, now)
        self._cond.notify_all()

    # ---- outgoing calls ----------------------------------------------------------------------

    def _start_dial(self, call: _OutCall, now: float) -> None:
        """Off-hook, wait for dial tone, send the digits, then let the exchange decide.

        No dial tone when the household's handset is up or an incoming call
        holds the line: the modem would hear their conversation or the caller,
        so it gives NO DIALTONE after S6 (the host should never get here).
        """
        record = call.record
        self._off_hook = True
        self._line_call = call
        self._mode = _Mode.DIALING
        self._swallow_lf = True
        if self._command_log:
            record.commands.append(self._command_log[-1])
        log.info("virtual modem: dialling %s (%s)", record.number, record.script.behaviour.value)
        if self._handset or self._live is not None:
            no_tone_at = now + self._real(DIAL_TONE_WAIT_S)
            self._schedule(call, no_tone_at, lambda at: self._dial_result(call, DialOutcome.NO_DIALTONE, NO_DIALTONE))
            return
        dialled_at = now + self._real(DIAL_TONE_DETECT_S + DTMF_DIGIT_S * len(record.number))
        if record.return_after_dial:
            self._schedule(call, dialled_at, lambda at: self._dial_returned(call))
        self._schedule(call, dialled_at + self._real(CALL_SETUP_S), lambda at: self._call_progress(call, at))

    def _dial_returned(self, call: _OutCall) -> None:
        """``ATD…;``: the digits are out; OK now, no answer/busy detection follows."""
        call.reported = True
        call.record.final = OK
        call.record.reported_at = time.monotonic()
        self._mode = _Mode.COMMAND
        self._final(OK)

    def _call_progress(self, call: _OutCall, at: float) -> None:
        """The exchange has routed the call: busy tone, or ringback until answer or S7."""
        record = call.record
        record.ringback_at = time.monotonic()
        behaviour = record.script.behaviour
        if behaviour is CalleeBehaviour.BUSY:
            self._schedule(call, at + self._real(BUSY_DETECT_S),
                           lambda t: self._dial_result(call, DialOutcome.BUSY, BUSY))
            return
        s7 = self._settings.s_registers.get(7) or DEFAULT_NO_ANSWER_S
        answer_after = record.script.answer_after_s
        if behaviour is CalleeBehaviour.ANSWERS and isinstance(answer_after, float | int) and answer_after < s7:
            self._schedule(call, at + self._real(answer_after), lambda t: self._callee_answers(call, t, at))
        else:
            self._schedule(call, at + self._real(s7), lambda t: self._dial_result(call, DialOutcome.NO_ANSWER, NO_ANSWER))

    def _callee_answers(self, call: _OutCall, at: float, ringback_from: float) -> None:
        """Pick-up: their audio, DTMF and hang-up clocks start; the modem notices later (+VRA)."""
        script = call.record.script
        call.phase = _Phase.CONNECTED
        call.answered_at = at
        call.record.answered_at = time.monotonic()
        for offset, digit in script.dtmf:
            self._schedule(call, at + self._real(offset), functools.partial(self._dtmf_timer, call, digit))
        if script.hang_up_after_s is not None:
            self._schedule(call, at + self._real(script.hang_up_after_s), lambda t: self._callee_hangs_up(call, t))
        if not call.reported:
            self._schedule(call, self._answer_detected_at(ringback_from, at), lambda t: self._report_answer(call))

    def _answer_detected_at(self, ringback_from: float, answered: float) -> float:
        """When ringback has been silent for +VRA: counted from the end of the last burst heard."""
        period = self._real(CADENCE_PERIOD_S[self.cadence])
        on = self._real(RINGBACK_ON_S[self.cadence])
        into = (answered - ringback_from) % period
        silent_from = answered if into < on else answered - (into - on)
        return max(answered, silent_from + self._real(RINGBACK_GOES_AWAY_S))

    def _report_answer(self, call: _OutCall) -> None:
        if call.phase is not _Phase.CONNECTED or call.reported:
            return
        if self._settings.fclass != VOICE_CLASS:
            self._dial_result(call, DialOutcome.NO_CARRIER, NO_CARRIER)
            return
        call.reported = True
        code = self.dialect.dial_answered_replies[0]
        call.record.final = code
        call.record.reported_at = time.monotonic()
        self._mode = _Mode.COMMAND
        self._final(code)
        self._cond.notify_all()

    def _dtmf_timer(self, call: _OutCall, digit: str, at: float) -> None:
        self._callee_dtmf(call, digit)

    def _callee_dtmf(self, call: _OutCall, digit: str) -> None:
        if call.phase is not _Phase.CONNECTED:
            return
        now = time.monotonic()
        call.record.dtmf_sent.append((now, digit))
        if call.reported and self._off_hook and self._line_call is call and self._mode is not _Mode.DIALING:
            self._send_dle_event(digit, now)

    def _callee_hangs_up(self, call: _OutCall, at: float) -> None:
        if call.phase is not _Phase.CONNECTED:
            return
        now = time.monotonic()
        call.record.callee_hung_up_at = now
        if not call.reported:  # gone before the modem noticed the answer: it hears busy tone
            self._dial_result(call, DialOutcome.CALLEE_HUNG_UP, BUSY)
            return
        call.hangup_at = at
        self._end_dial(call, DialOutcome.CALLEE_HUNG_UP, now)
        if self._off_hook and self._line_call is call:
            self._send_dle_event(HANGUP_EVENT[self.cadence].value, now)

    def _dial_result(self, call: _OutCall, outcome: DialOutcome, final: str) -> None:
        """Call progress ended the dial: final reply and back on-hook (or, after ';', a DLE code)."""
        now = time.monotonic()
        if call.reported:
            if outcome is DialOutcome.BUSY:
                call.hangup_at = now
                self._send_dle_event(DleEvent.BUSY.value, now)
            self._end_dial(call, outcome, now)
            return
        call.reported = True
        call.record.final = final
        call.record.reported_at = now
        self._mode = _Mode.COMMAND
        self._final(final)
        if self._line_call is call:
            self._off_hook = False
            self._line_call = None
            call.record.hung_up_at = now
        self._end_dial(call, outcome, now)

    def _feed_dialing(self, data: bytes, now: float) -> bytes:
        """V.250: any character while dialling aborts; the modem says NO CARRIER, on-hook."""
        data = self._skip_lf(data)
        if not data:
            return b""
        call = self._line_call
        if isinstance(call, _OutCall):
            log.info("virtual modem: host aborted dialling %s", call.record.number)
            self._dial_result(call, DialOutcome.ABORTED, NO_CARRIER)
        else:  # pragma: no cover - DIALING always has an outgoing call
            self._mode = _Mode.COMMAND
        return data[1:]

    def _end_dial(self, call: _OutCall, outcome: DialOutcome, now: float) -> None:
        if call.phase is _Phase.ENDED:
            return
        call.phase = _Phase.ENDED
        self._cancel_timers(call)
        call.record.outcome = outcome
        call.record.ended_at = now
        log.info("virtual modem: dial %d to %s ended: %s", call.record.index, call.record.number, outcome.value)
        self._cond.notify_all()

    # ---- voice data states -----------------------------------------------------------------

    def _enter_vtx(self, now: float) -> None:
        self._mode = _Mode.VTX
        self._play_clock = now
        self._dle_pending = False
        self._swallow_lf = True
        self._report_dead_line(now)

    def _enter_vrx(self, now: float) -> None:
        self._mode = _Mode.VRX
        self._dle_pending = False
        self._swallow_lf = True
        self._vrx_clock = now
        call = self._line_call
        epoch = call.answered_at if call is not None and call.answered_at is not None else now
        if isinstance(call, _Call) and call.phase is _Phase.ND_DATA:
            epoch = call.nd_epoch
        self._vrx_pos = int((now - epoch) * self._rate_real)
        self._silence_run = 0
        self._silence_reported = False
        self._report_dead_line(now)

    def _report_dead_line(self, now: float) -> None:
        """The exchange's busy/dial tone is still there: the modem detects it again."""
        call = self._line_call
        if call is not None and call.hangup_at is not None:
            self._send_dle_event(HANGUP_EVENT[self.cadence].value, now)

    def _feed_vtx(self, data: bytes, now: float) -> bytes:
        data = self._skip_lf(data)
        audio = bytearray()
        i, n = 0, len(data)
        while i < n:
            if self._dle_pending:
                self._dle_pending = False
                code = data[i]
                i += 1
                if code == DLE:
                    audio.append(DLE)
                elif code == ETX:
                    self._play(audio, now)
                    self._mode = _Mode.VTX_DRAIN
                    return data[i:]
                elif code == CAN:
                    audio.clear()
                    self._play_clock = now  # flush: discard what is buffered
                else:
                    log.debug("virtual modem: ignoring DLE %r in +VTX", chr(code))
                continue
            j = data.find(bytes([DLE]), i)
            if j < 0:
                audio += data[i:]
                break
            audio += data[i:j]
            self._dle_pending = True
            i = j + 1
        self._play(audio, now)
        return b""

    def _play(self, audio: bytearray, now: float) -> None:
        if not audio:
            return
        self._play_clock = max(self._play_clock, now) + len(audio) / self._rate_real
        call = self._line_call
        if call is not None:
            call.record._played += audio
        else:
            log.debug("virtual modem: %d bytes played to a line with no call", len(audio))

    def _feed_vrx(self, data: bytes, now: float) -> bytes:
        data = self._skip_lf(data)
        for i, byte in enumerate(data):
            if self._dle_pending:
                self._dle_pending = False
                if byte in (ABORT_RX, ETX):
                    self._end_vrx(now)
                    return data[i + 1 :]
                log.debug("virtual modem: ignoring DLE %r in +VRX", chr(byte))
            elif byte == DLE:
                self._dle_pending = True
        return b""

    def _end_vrx(self, now: float) -> None:
        self._pump_vrx(now)
        self._emit(bytes([DLE, ETX]))
        self._mode = _Mode.COMMAND
        self._final(OK)

    def _pump_mode(self, now: float) -> None:
        if self._mode is _Mode.VRX:
            self._pump_vrx(now)
        elif self._mode is _Mode.VTX_DRAIN and now >= self._play_clock:
            self._mode = _Mode.COMMAND
            self._final(OK)
            deferred, self._deferred = bytes(self._deferred), bytearray()
            if deferred:
                self._on_input(deferred, now)

    def _mode_deadline(self, now: float) -> float:
        if self._mode is _Mode.VRX:
            return now + VRX_TICK_S
        if self._mode is _Mode.VTX_DRAIN:
            return self._play_clock
        if self._mode is _Mode.VTX and not self._wants_read(now):
            return self._play_clock - VTX_BUFFER_S * self.time_scale
        return now + MAX_SELECT_S

    def _pump_vrx(self, now: float) -> None:
        """Stream the line's audio up to ``now`` at the (scaled) sample rate."""
        count = int((now - self._vrx_clock) * self._rate_real)
        if count <= 0:
            return
        self._vrx_clock += count / self._rate_real
        start, self._vrx_pos = self._vrx_pos, self._vrx_pos + count
        if self._silent or len(self._out) > VRX_MAX_BACKLOG:
            return  # receive overrun: the host is not keeping up
        chunk = self._line_audio(start, start + count)
        self._emit(shield(chunk))
        self._detect_silence(chunk, now)

    def _line_audio(self, start: int, end: int) -> bytes:
        """Samples [start, end) of the line since answer: caller's voice, then busy tone."""
        call = self._line_call
        silence = bytes([SILENCE_U8])
        if isinstance(call, _Call) and call.phase is _Phase.ND_DATA:
            data = call.nd_audio[start:end]
            return data + silence * (end - start - len(data))
        if call is None or call.answered_at is None:
            return silence * (end - start)
        hang = end
        if call.hangup_at is not None:
            hang = max(0, int((call.hangup_at - call.answered_at) * self._rate_real))
        parts: list[bytes] = []
        voice_end = min(end, hang)
        if start < voice_end:
            voice = call.audio[start:voice_end]
            parts.append(voice + silence * (voice_end - start - len(voice)))
        tone_start = max(start, hang)
        if tone_start < end:
            parts.append(_cyclic(busy_tone(self.cadence), tone_start - hang, end - tone_start))
        return b"".join(parts)

    def _detect_silence(self, chunk: bytes, now: float) -> None:
        duration_tenths = self._settings.vsd[1]
        if duration_tenths <= 0:
            return
        marks = chunk.translate(_SILENCE_TABLE)
        last_loud = marks.rfind(b"\x01")
        if last_loud >= 0:
            self._silence_run = len(chunk) - last_loud - 1
            self._silence_reported = False
        else:
            self._silence_run += len(chunk)
        needed = duration_tenths / 10 * self.dialect.sample_rate
        if self._silence_run >= needed and not self._silence_reported:
            self._silence_reported = True
            self._send_dle_event(DleEvent.SILENCE.value, now)


def play_scenario(modem: VirtualModem, scenario: Sequence[CallScript]) -> list[CallRecord]:
    """Queue every call; the modem plays them in order, each ``gap_s`` after the line frees."""
    return [modem.place_call(script) for script in scenario]


def emulate_forever(
    modem: VirtualModem,
    scenario: Sequence[CallScript],
    stop_event: threading.Event,
    *,
    repeat: bool = True,
    on_ready: Callable[[Path], None] | None = None,
    poll_s: float = 0.5,
) -> Path:
    """What ``mamoru modem emulate`` runs: play the scenario until ``stop_event`` is set.

    Prints nothing: ``on_ready`` gets the device path once the pty is up so the
    CLI can tell the user what to open. Starts (and finally stops) the modem if
    it was not already running. Returns the device path.
    """
    started_here = not modem.running
    if started_here:
        modem.start()
    path = modem.device_path
    try:
        if on_ready is not None:
            on_ready(path)
        play_scenario(modem, scenario)
        while not stop_event.wait(poll_s):
            if repeat and scenario and modem.is_idle():
                play_scenario(modem, scenario)
    finally:
        if started_here:
            modem.stop()
    return path
