"""A USB voice modem as a :class:`screening.core.line.LineAdapter`, over pyserial.

Threads
-------
One *reader thread* owns every read from the serial port. Everything the modem
says passes through it and is sorted into three kinds:

* replies to the command in flight: lines up to a final result code
  (``dialects.FINAL_REPLIES``) go into the single pending-command slot, and
  the waiting thread is woken through its ``threading.Event``;
* unsolicited news: ``RING``, caller-ID fields, DLE event codes. They become
  :mod:`screening.core.line` events on a queue the call loop drains with
  :meth:`ModemLine.next_event`, or stop signals for :meth:`play` / :meth:`listen`;
* audio, while the modem is in receive data state (after ``CONNECT`` to
  ``AT+VRX``), unshielded and handed to the thread running :meth:`listen`.

Callers' threads only write (under a write lock) and wait with timeouts. The
reader never runs user code, so a slow audio sink or event consumer cannot
delay caller ID.

Recovery
--------
A command that gets no reply in time, or any serial/OS error (a USB modem that
vanished raises EIO), puts the line into recovery: the reader emits
:class:`LineFault`, closes the port, reopens the same path with bounded
exponential backoff, re-runs the init sequence (sending the commands itself
and pumping the replies inline, since it is the only reader), and emits
:class:`LineRestored`. The consumer keeps calling ``next_event`` throughout;
commands issued meanwhile fail fast with :class:`LineError`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from enum import Enum, auto
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import serial  # type: ignore[import-untyped]

from firmware import dle
from firmware.at_channel import (
    ATTENTION,
    IDENTIFY,
    DleCode,
    Direction,
    LineSplitter,
    Overflow,
    TextLine,
    Transcript,
    TranscriptEntry,
    VoiceStreamDecoder,
)
from firmware.audio_format import from_line_format, to_line_format
from firmware.dialects import (
    CADENCE_PERIOD_S,
    DIAL_TONE_WAIT_S,
    DIALECTS,
    FINAL_REPLIES,
    RINGBACK_GOES_AWAY_S,
    ModemDialect,
    RingCadence,
    dialect_for_ati3,
)
from firmware.dle import DTMF_DIGITS, DleEvent
from firmware.handset_state import HandsetState
from firmware.number_display import NdTiming, NumberDisplayReceiver
from screening.core.callerid import CallerIdBuilder, CidField, parse_cid_line
from screening.core.line import (
    AudioClip,
    AudioSink,
    CallOffered,
    Dtmf,
    EndReason,
    HandsetOffHook,
    HandsetOnHook,
    HandsetStale,
    LineError,
    LineEvent,
    LineFault,
    LineRestored,
    Ring,
    RingingStopped,
)
from screening.core.model import CallerID
from screening.voice_call import DialResult

log = logging.getLogger(__name__)

AUTO_DIALECT = "auto"
URI_SCHEME = "modem"

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
# Dialling: beyond the ring time, the modem needs dial tone (S6), the digits,
# call setup and +VRA of ringback silence before it reports an answer.
DIAL_OVERHEAD_S = DIAL_TONE_WAIT_S + 4.0 + RINGBACK_GOES_AWAY_S
MAX_S7 = 255
# A handset reported off-hook this long is worth a person's look (phone not put back, or a stuck state).
DEFAULT_HANDSET_STALE_S = 3 * 3600.0
DIAL_SEPARATORS = frozenset(" -().")


class ModemFault(LineError):
    """The modem stopped answering or the port failed; recovery has been started."""


class CommandTimeout(ModemFault):
    """No final reply within the command's timeout."""


class UnsupportedModem(LineError):
    """``ATI3`` identified a chipset none of our dialects describes."""


# Final replies to a voice-mode D command that leave the modem on-hook.
_DIAL_FINALS: dict[str, DialResult] = {
    "BUSY": DialResult.BUSY,
    "NO ANSWER": DialResult.NO_ANSWER,
    "NO CARRIER": DialResult.NO_ANSWER,  # some firmware reports the S7 timeout this way
    "NO DIALTONE": DialResult.NO_DIALTONE,
    "ERROR": DialResult.FAILED,
}


# URI options (milliseconds) -> NdTiming fields.
_ND_URI_OPTIONS: dict[str, str] = {
    "nd_car_interval_ms": "car_max_interval_s",
    "nd_window_ms": "fsk_window_s",
    "nd_response_delay_ms": "primary_response_delay_s",
    "nd_response_deadline_ms": "primary_response_deadline_s",
}


def _milliseconds(key: str, value: str, uri: str) -> float:
    try:
        return float(value) / 1000
    except ValueError as exc:
        raise ValueError(f"{key} must be a number of milliseconds in {uri!r}") from exc


def dialable(number: str) -> str:
    """Digits, ``*`` and ``#`` only, separators dropped; ValueError for anything else.

    A '+' is refused: turning E.164 into what this line dials needs the home
    region's international prefix, which the caller (screening) knows.
    """
    text = "".join(ch for ch in number.strip() if ch not in DIAL_SEPARATORS)
    if not text or any(ch not in DTMF_DIGITS or ch in "ABCD" for ch in text):
        raise ValueError(f"not a dialable number (digits, * and # only): {number!r}")
    return text


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


class ModemLine:
    """One telephone line on a V.253 voice modem (USR5637, Conexant CX93001)."""

    def __init__(
        self,
        port: str,
        dialect: str = AUTO_DIALECT,
        home_region: str = "JP",
        cadence: RingCadence = RingCadence.JAPAN,
        baudrate: int = 115200,
        cid_quiet_s: float = 0.005,
        name: str = "modem",
        *,
        ring_gap_s: float | None = None,
        command_timeout_s: float = 2.0,
        reset_timeout_s: float = 5.0,
        health_interval_s: float | None = 30.0,
        reconnect_min_s: float = 0.2,
        reconnect_max_s: float = 5.0,
        write_timeout_s: float = 2.0,
        transcript_size: int = 2000,
        handset_stale_s: float | None = DEFAULT_HANDSET_STALE_S,
        number_display: NdTiming | None = None,
    ) -> None:
        """No I/O here: :meth:`open` touches the device.

        ``ring_gap_s`` defaults to 1.5 x the cadence period (a longer silence
        means a new call / ringing stopped); tests with a time-scaled modem set
        it. ``health_interval_s`` is how long the line may be idle before the
        reader sends ``AT`` to notice a silently dead modem (None: never).
        ``handset_stale_s``: a handset off-hook this long is reported (HandsetStale; None: never).
        ``number_display``: ND timing for a ``jp_nd`` line (scaled like ``ring_gap_s``).
        """
        if dialect != AUTO_DIALECT and dialect not in DIALECTS:
            raise ValueError(f"unknown modem dialect {dialect!r}; use {AUTO_DIALECT!r} or one of {sorted(DIALECTS)}")
        self.name = name
        self.port = port
        self.dialect_key = dialect
        self.home_region = home_region
        self.cadence = RingCadence(cadence)
        self.baudrate = baudrate
        self.cid_quiet_s = cid_quiet_s
        self.command_timeout_s = command_timeout_s
        self.reset_timeout_s = reset_timeout_s
        self.health_interval_s = health_interval_s
        self.reconnect_min_s = reconnect_min_s
        self.reconnect_max_s = reconnect_max_s
        self.write_timeout_s = write_timeout_s
        gap = ring_gap_s if ring_gap_s is not None else 1.5 * CADENCE_PERIOD_S[self.cadence]
        self._tick_s = min(IDLE_TICK_S, gap / 4)

        self._serial: Any = None  # serial.Serial while open
        self._reader: threading.Thread | None = None
        self._closing = threading.Event()
        self._events: queue.Queue[LineEvent] = queue.Queue(maxsize=EVENT_QUEUE_SIZE)
        self._transcript = Transcript(transcript_size)

        self._cmd_lock = threading.RLock()  # one command (or play/listen step) at a time
        self._write_lock = threading.Lock()  # serialises writes and port swaps
        self._state_lock = threading.RLock()  # pending slot, ring tracker, call flags
        self._pending: _PendingCommand | None = None

        self._dialect: ModemDialect | None = DIALECTS.get(dialect)
        self._initialised = False
        self._recovering = False
        self._recovery_reason: str | None = None

        # Escalation when reconnecting does not help: firmware.usb_power.UsbPowerCycler (set by the
        # composition root; None = never power-cycle).
        self.power_cycler: Any = None
        self.power_cycle_after = DEFAULT_POWER_CYCLE_AFTER

        # Reader-owned parsing state (replaced on every (re)open).
        self._splitter = LineSplitter()
        self._stream = _StreamState.COMMAND
        self._decoder: VoiceStreamDecoder | None = None
        self._cid = CallerIdBuilder()
        self._cid_opened_at = 0.0
        self._rings = _RingTracker(gap)
        self._last_rx_at = 0.0
        self._last_traffic_at = 0.0
        self._current_timeout: float | None = None

        # Call state shared with the caller's thread.
        self._handset = HandsetState(ring_grace_s=gap / 4, stale_after_s=handset_stale_s)
        self._off_hook = False
        self._stop = _StopSignal()
        self._stop_on_silence = False
        self._rx_queue: queue.Queue[bytes | EndReason | None] | None = None

        # Japanese Number Display decoded here (the modem cannot): only on a jp_nd line.
        self.number_display: NumberDisplayReceiver | None = None
        self._held_ring_at: float | None = None  # a RING that may be CAR's first burst
        if self.cadence is RingCadence.JAPAN_ND:
            self.number_display = NumberDisplayReceiver(self, home_region, self._offer_caller_id, number_display)

    # ---- construction from config ------------------------------------------

    @classmethod
    def from_uri(cls, uri: str, **kwargs: Any) -> ModemLine:
        """``modem:///dev/ttyACM0?dialect=usr&baud=115200`` (also ``name``, ``cid_quiet_ms``).

        On a ``jp_nd`` line the Number Display timings can be tuned too (milliseconds):
        ``nd_car_interval_ms``, ``nd_window_ms``, ``nd_response_delay_ms``, ``nd_response_deadline_ms``.

        A setting may come from the URI or from ``kwargs``, not both: a
        conflict is a config error worth reporting, not silently resolving.
        """
        parts = urlsplit(uri)
        if parts.scheme != URI_SCHEME:
            raise ValueError(f"not a modem URI (want {URI_SCHEME}:///dev/...): {uri!r}")
        if parts.netloc:
            raise ValueError(f"modem URI needs an absolute device path (three slashes): {uri!r}")
        if not parts.path:
            raise ValueError(f"modem URI has no device path: {uri!r}")
        options: dict[str, Any] = {}
        nd_timing: dict[str, float] = {}
        for key, value in parse_qsl(parts.query, keep_blank_values=True, strict_parsing=False):
            if key in _ND_URI_OPTIONS:
                nd_timing[_ND_URI_OPTIONS[key]] = _milliseconds(key, value, uri)
            else:
                options.update(cls._uri_option(key, value, uri))
        if nd_timing:
            options["number_display"] = NdTiming(**nd_timing)
        for key in options.keys() & kwargs.keys():
            raise ValueError(f"{key!r} given both in {uri!r} and as an argument")
        return cls(parts.path, **options, **kwargs)

    @staticmethod
    def _uri_option(key: str, value: str, uri: str) -> dict[str, Any]:
        try:
            match key:
                case "dialect":
                    return {"dialect": value or AUTO_DIALECT}
                case "baud":
                    return {"baudrate": int(value)}
                case "name":
                    return {"name": value}
                case "cid_quiet_ms":
                    return {"cid_quiet_s": float(value) / 1000}
        except ValueError as exc:
            raise ValueError(f"bad value {value!r} for {key!r} in {uri!r}") from exc
        raise ValueError(f"unknown option {key!r} in {uri!r} (known: dialect, baud, name, cid_quiet_ms, "
                         f"{', '.join(_ND_URI_OPTIONS)})")

    # ---- lifecycle ------------------------------------------------------------

    @property
    def dialect(self) -> ModemDialect | None:
        """The dialect in use (known after :meth:`open` when configured as auto)."""
        return self._dialect

    def open(self) -> None:
        """Open the port, start the reader, initialise the modem. Raises LineError."""
        if self._reader is not None:
            raise LineError(f"{self.name}: already open")
        self._closing.clear()
        self._open_port()
        self._reader = threading.Thread(target=self._reader_main, name=f"{self.name}-reader", daemon=True)
        self._reader.start()
        try:
            self._initialise()
        except LineError:
            self.close()
            raise
        self._initialised = True
        assert self._dialect is not None
        log.info("%s: %s ready on %s", self.name, self._dialect.description, self.port)

    def open_or_retry(self) -> None:
        """Like :meth:`open`, but a modem missing or silent at start-up is not an error.

        Start-up then does what recovery does: the reader reports LineFault ("modem not found
        at /dev/..."), retries with backoff (and the USB power cycle) until the modem answers,
        and reports LineRestored. An unsupported modem still raises: retrying cannot fix it.
        """
        try:
            self.open()
            return
        except UnsupportedModem:
            raise
        except LineError as exc:
            if os.path.exists(self.port):
                reason = f"modem at {self.port} did not start: {exc}"
            else:
                reason = f"modem not found at {self.port}"
        log.error("%s: %s; screening starts as soon as it answers", self.name, reason)
        # open() left nothing running; from here on the reader owns (re)opening the port.
        self._closing.clear()
        self._initialised = True
        self._recovering = True  # commands fail fast until LineRestored
        self._recovery_reason = reason
        self._reader = threading.Thread(target=self._reader_main, name=f"{self.name}-reader", daemon=True)
        self._reader.start()

    def close(self, join_timeout: float = 3.0) -> None:
        """Stop the reader (and any recovery), put the line on-hook if we held it, close."""
        reader = self._reader
        if reader is not None and self._off_hook and not self._recovering:
            self.hang_up(timeout=min(1.0, self.command_timeout_s))
        if self.number_display is not None:
            self.number_display.close()
        self._closing.set()
        self._abandon_pending(f"{self.name}: line closed")
        self._signal_stop(EndReason.LINE_FAULT)
        self._wake_reader()
        if reader is not None and reader is not threading.current_thread():
            reader.join(join_timeout)
            if reader.is_alive():
                log.warning("%s: reader thread did not stop within %.1f s", self.name, join_timeout)
        self._reader = None
        self._close_port()
        self._initialised = False
        self._recovering = False

    def __enter__(self) -> ModemLine:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- LineAdapter: events ----------------------------------------------------

    def next_event(self, timeout: float) -> LineEvent | None:
        try:
            if timeout <= 0:
                return self._events.get_nowait()
            return self._events.get(timeout=timeout)
        except queue.Empty:
            return None

    def handset_off_hook(self) -> bool:
        return self._handset.off_hook

    def transcript(self) -> list[TranscriptEntry]:
        """Recent (monotonic time, direction, bytes) exchanged with the modem; no audio."""
        return self._transcript.entries()

    # ---- LineAdapter: call control -----------------------------------------------

    def answer(self, timeout: float = 5.0) -> None:
        """Go off-hook in voice mode, unless the household is on the line."""
        if self._handset.off_hook:
            raise LineError(
                f"{self.name}: handset is off-hook; not answering (never take the line while the household is on it)"
            )
        dialect = self._require_dialect()
        self._stop.clear()
        self._command(dialect.off_hook, timeout=timeout, expect=dialect.off_hook_replies)
        with self._state_lock:
            self._off_hook = True
            self._rings.reset()

    def can_dial(self) -> bool:
        """A modem always can (a missing one fails the dial itself)."""
        return True

    def dial(self, number: str, timeout: float = 60.0) -> DialResult:
        """Call ``number`` in voice mode; ``timeout`` is how long it may ring.

        Refused (NO_DIALTONE, nothing sent) while the household's handset is
        off-hook: seizing the line would break into their conversation. The
        modem's own S7 timer is set to ``timeout`` so it reports NO ANSWER
        itself; our wait adds the dialling and answer-detection time, and if
        even that passes we abort the dial (any character does) and hang up.
        After ANSWERED the call is ours as after :meth:`answer`.
        """
        digits = dialable(number)
        if self._handset.off_hook:
            log.warning("%s: handset is off-hook; not dialling %s over the household's call", self.name, digits)
            return DialResult.NO_DIALTONE
        dialect = self._require_dialect()
        if self._off_hook:
            raise LineError(f"{self.name}: already off-hook; hang up before dialling")
        ring_s = max(1, min(MAX_S7, math.ceil(timeout)))
        try:
            self._command(dialect.no_answer_timer.format(seconds=ring_s), timeout=self.command_timeout_s)
        except LineError as exc:
            log.warning("%s: could not set the ring timeout: %s", self.name, exc)
            return DialResult.FAILED
        self._stop.clear()
        log.info("%s: dialling %s (ring timeout %d s)", self.name, digits, ring_s)
        try:
            reply, _ = self._exchange(dialect.dial.format(number=digits), timeout=ring_s + DIAL_OVERHEAD_S,
                                      expect=tuple(FINAL_REPLIES), recover=False)
        except CommandTimeout:
            log.warning("%s: no call progress from the modem for %s; aborting the dial", self.name, digits)
            self._abort_dial()
            return DialResult.NO_ANSWER
        except LineError as exc:
            log.warning("%s: dialling %s failed: %s", self.name, digits, exc)
            return DialResult.FAILED
        return self._dial_outcome(reply.final, dialect)

    def _dial_outcome(self, final: str, dialect: ModemDialect) -> DialResult:
        if final in dialect.dial_answered_replies:
            with self._state_lock:
                self._off_hook = True
                self._rings.reset()
            log.info("%s: call answered (%s)", self.name, final)
            return DialResult.ANSWERED
        result = _DIAL_FINALS.get(final)
        if result is None:  # CONNECT or another reply that may have left the line held
            log.warning("%s: unexpected reply %s to the dial; hanging up", self.name, final)
            self.hang_up(timeout=self.command_timeout_s)
            return DialResult.FAILED
        log.info("%s: dial ended: %s", self.name, final)
        return result

    def _abort_dial(self) -> None:
        """Any character aborts a dial (V.250); ``AT`` also gets an OK if it had already ended.

        Then hang up regardless, so a call answered at the last moment is not left open.
        """
        try:
            self._exchange(ATTENTION, timeout=self.command_timeout_s, expect=tuple(FINAL_REPLIES))
        except LineError as exc:
            log.warning("%s: aborting the dial failed: %s", self.name, exc)
        with self._state_lock:
            self._off_hook = True  # so a failing hang-up starts recovery (ATZ puts it on-hook)
        self.hang_up(timeout=self.command_timeout_s)

    def hang_up(self, timeout: float = 5.0) -> None:
        """On-hook. Never raises: a failure on an idle line is only logged; a failure
        with the line held starts recovery, whose ATZ puts the modem on-hook."""
        with self._state_lock:
            was_off_hook = self._off_hook
            self._off_hook = False
            self._rings.reset()
        dialect = self._dialect
        if dialect is None or not self._initialised:
            log.info("%s: hang_up on a line that is not open; nothing to do", self.name)
            return
        try:
            self._command(dialect.hang_up, timeout=timeout)
        except LineError as exc:
            if was_off_hook:
                log.error("%s: hang-up failed while off-hook: %s", self.name, exc)
                self._request_recovery(f"hang-up failed: {exc}")
            else:
                log.info("%s: hang-up on idle line failed (ignored): %s", self.name, exc)

    def ping(self, timeout: float = 2.0) -> bool:
        """Health check: does the modem answer ``AT`` with OK within ``timeout``?"""
        try:
            self._command(ATTENTION, timeout=timeout)
        except LineError as exc:
            log.info("%s: health check failed: %s", self.name, exc)
            return False
        return True

    # ---- LineAdapter: audio --------------------------------------------------------

    def play(self, clip: AudioClip, timeout: float | None = None) -> EndReason:
        """Stream a clip to the caller at real time; stop early on hang-up/handset."""
        dialect = self._require_dialect()
        audio = to_line_format(clip.pcm16, clip.sample_rate, dialect.sample_rate, dialect.audio_format)
        if (early := self._stop.reason) is not None:
            return early
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._call_step():
            try:
                data_phase = self._start_stream(dialect.transmit, DataMode.TRANSMIT)
                reason = self._stream_audio(audio, dialect.sample_rate, deadline)
                if not data_phase.done.is_set():
                    self._send(dle.END_TRANSMIT, record=True)
                # The modem plays out its buffer (<= PLAY_LEAD_S) before its OK;
                # a hang-up reported meanwhile still counts.
                self._await_stream_end(data_phase, PLAY_LEAD_S + self.command_timeout_s)
                if reason is EndReason.COMPLETED and self._stop.reason is not None:
                    reason = self._stop.reason
            except ModemFault as exc:
                log.warning("%s: playback of %s failed: %s", self.name, clip.name, exc)
                return EndReason.LINE_FAULT
        log.debug("%s: played %s: %s", self.name, clip.name, reason)
        return reason

    def listen(self, seconds: float, sink: AudioSink | None = None, stop_on_silence: bool = False) -> EndReason:
        """Receive call audio for up to ``seconds``, feeding 16-bit PCM to ``sink``.

        DTMF digits arrive as :class:`Dtmf` events meanwhile. Ends early when
        the caller hangs up, the handset goes on-hook, or (if asked) the modem
        reports silence.
        """
        dialect = self._require_dialect()
        if (early := self._stop.reason) is not None:
            return early
        rx: queue.Queue[bytes | EndReason | None] = queue.Queue()
        with self._call_step():
            self._rx_queue = rx
            self._stop_on_silence = stop_on_silence
            try:
                if (early := self._stop.reason) is not None:
                    return early
                data_phase = self._start_stream(dialect.receive, DataMode.RECEIVE)
                reason = self._deliver_audio(rx, sink, time.monotonic() + seconds, dialect)
                if not data_phase.done.is_set():
                    self._send(dle.ABORT_RECEIVE, record=True)
                self._await_stream_end(data_phase, self.command_timeout_s)
                self._drain_audio(rx, sink, dialect)
            except ModemFault as exc:
                log.warning("%s: listening failed: %s", self.name, exc)
                return EndReason.LINE_FAULT
            finally:
                self._rx_queue = None
                self._stop_on_silence = False
                self._stop.clear(only=EndReason.SILENCE)
        return reason

    def end_listen(self) -> None:
        """End the :meth:`listen` in progress early, as COMPLETED (any thread, the sink included)."""
        rx = self._rx_queue
        if rx is not None:
            rx.put(EndReason.COMPLETED)

    # ---- audio helpers -----------------------------------------------------------------

    @contextlib.contextmanager
    def _call_step(self) -> Iterator[None]:
        """Hold the command lock for a whole play/listen, data phase included."""
        if not self._cmd_lock.acquire(timeout=self.command_timeout_s):
            raise LineError(f"{self.name}: modem busy with another command")
        try:
            yield
        finally:
            self._cmd_lock.release()

    def _start_stream(self, command: str, mode: DataMode) -> _PendingCommand:
        reply, data_phase = self._exchange(command, timeout=self.command_timeout_s, expect=("CONNECT",), data_mode=mode)
        if data_phase is None:  # pragma: no cover - the reader always installs one on CONNECT
            raise ModemFault(f"{command}: CONNECT without a data phase")
        return data_phase

    def _stream_audio(self, audio: bytes, rate: int, deadline: float | None) -> EndReason:
        """Write shielded audio, at most PLAY_LEAD_S ahead of real time."""
        chunk = max(1, int(rate * PLAY_CHUNK_S))
        start = time.monotonic()
        sent = 0
        while sent < len(audio):
            now = time.monotonic()
            early = sent / rate - (now - start) - PLAY_LEAD_S
            reason = self._stop.wait(early) if early > 0 else self._stop.reason
            if reason is not None:
                return reason
            if deadline is not None and time.monotonic() > deadline:
                return EndReason.TIMEOUT
            if early > 0:
                continue
            block = audio[sent : sent + chunk]
            self._send(dle.shield(block), record=False)
            sent += len(block)
        return EndReason.COMPLETED

    def _await_stream_end(self, data_phase: _PendingCommand, timeout: float) -> None:
        if not data_phase.done.wait(timeout):
            self._request_recovery("voice data state did not end")
            raise CommandTimeout(f"{self.name}: modem did not leave voice data state within {timeout:.1f} s")
        if data_phase.failure:
            raise ModemFault(data_phase.failure)
        if data_phase.final != "OK":
            log.info("%s: voice data state ended with %s", self.name, data_phase.final)

    def _deliver_audio(
        self,
        rx: queue.Queue[bytes | EndReason | None],
        sink: AudioSink | None,
        deadline: float,
        dialect: ModemDialect,
    ) -> EndReason:
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                item = rx.get(timeout=remaining)
            except queue.Empty:
                break
            if item is None:  # the modem ended the stream on its own: the call is gone
                return self._stop.reason or EndReason.CALLER_HUNG_UP
            if isinstance(item, EndReason):
                return item
            sink = self._feed_sink(sink, item, dialect)
        return EndReason.COMPLETED

    def _drain_audio(self, rx: queue.Queue[bytes | EndReason | None], sink: AudioSink | None, dialect: ModemDialect) -> None:
        """Audio that arrived between our abort and the modem's DLE ETX still belongs to the call."""
        while True:
            try:
                item = rx.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, bytes):
                sink = self._feed_sink(sink, item, dialect)

    def _feed_sink(self, sink: AudioSink | None, data: bytes, dialect: ModemDialect) -> AudioSink | None:
        """Call the sink; a failing sink is dropped (logged), the call goes on."""
        if sink is None or not data:
            return sink
        try:
            sink(from_line_format(data, dialect.audio_format))
        except Exception:
            log.exception("%s: audio sink failed; no more audio will be delivered to it", self.name)
            return None
        return sink

    # ---- commands ------------------------------------------------------------------------

    def _require_dialect(self) -> ModemDialect:
        if self._dialect is None or not self._initialised:
            raise LineError(f"{self.name}: line is not open")
        return self._dialect

    def _command(self, command: str, *, timeout: float, expect: tuple[str, ...] = ("OK",)) -> CommandReply:
        return self._exchange(command, timeout=timeout, expect=expect)[0]

    def _exchange(
        self,
        command: str,
        *,
        timeout: float,
        expect: tuple[str, ...] = ("OK",),
        data_mode: DataMode | None = None,
        recover: bool = True,
    ) -> tuple[CommandReply, _PendingCommand | None]:
        """Send one command and wait for its final reply. Raises LineError / ModemFault.

        ``recover=False``: a timeout is the caller's to handle (a dial it will abort).
        """
        on_reader = threading.current_thread() is self._reader
        if self._recovering and not on_reader:
            raise LineError(f"{self.name}: line is recovering from a fault; {command} not sent")
        if not self._cmd_lock.acquire(timeout=timeout):
            raise LineError(f"{self.name}: modem busy; {command} not sent")
        try:
            pending = self._send_command(command, data_mode)
            if on_reader:
                self._pump_until(pending.done, time.monotonic() + timeout)
            else:
                pending.done.wait(timeout)
            return self._reply_of(pending, expect, timeout), pending.data_phase
        except CommandTimeout as exc:
            if recover and not on_reader and self._initialised:
                self._request_recovery(str(exc))
            raise
        finally:
            self._cmd_lock.release()

    def _send_command(self, command: str, data_mode: DataMode | None) -> _PendingCommand:
        pending = _PendingCommand(command, data_mode)
        with self._state_lock:
            self._pending = pending
        log.debug("%s -> %s", self.name, command)
        try:
            self._send(command.encode("ascii") + b"\r", record=True)
        except LineError:
            with self._state_lock:
                if self._pending is pending:
                    self._pending = None
            raise
        return pending

    def _reply_of(self, pending: _PendingCommand, expect: tuple[str, ...], timeout: float) -> CommandReply:
        if not pending.done.is_set():
            with self._state_lock:
                if self._pending is pending:
                    self._pending = None
            raise CommandTimeout(f"{self.name}: no reply to {pending.command} within {timeout:.2f} s")
        if pending.failure is not None:
            raise ModemFault(f"{self.name}: {pending.command} interrupted: {pending.failure}")
        assert pending.final is not None
        if pending.final not in expect:
            raise LineError(f"{self.name}: {pending.command} failed: modem replied {pending.final}")
        return CommandReply(pending.command, pending.final, tuple(pending.lines))

    def _send(self, data: bytes, *, record: bool) -> None:
        """Write to the modem; a failing port starts recovery and raises ModemFault."""
        with self._write_lock:
            port = self._serial
            if port is None:
                raise ModemFault(f"{self.name}: port is closed")
            failure: str | None
            try:
                port.write(data)
            except (serial.SerialException, OSError) as exc:
                failure = f"write to {self.port} failed: {exc}"
            else:
                failure = None
        now = time.monotonic()
        self._last_traffic_at = now
        if record:
            self._transcript.add(now, Direction.SENT, data)
        if failure is not None:
            self._request_recovery(failure)
            raise ModemFault(f"{self.name}: {failure}")

    def _initialise(self) -> None:
        """Reset, identify, and configure voice mode. Runs on open and after recovery."""
        timeout = self.command_timeout_s
        self._command(_dialect_default("reset"), timeout=self.reset_timeout_s)
        self._command(_dialect_default("echo_off"), timeout=timeout)
        dialect = self._identify() if self.dialect_key == AUTO_DIALECT else DIALECTS[self.dialect_key]
        for command in dialect.init_commands:
            self._command(command, timeout=timeout)
        for command in (dialect.voice_mode, dialect.voice_format, dialect.silence_detection):
            self._command(command, timeout=timeout)
        self._dialect = dialect

    def _identify(self) -> ModemDialect:
        reply = self._command(IDENTIFY, timeout=self.command_timeout_s)
        text = " ".join(reply.lines).strip()
        dialect = dialect_for_ati3(text)
        if dialect is None:
            raise UnsupportedModem(
                f"{self.name}: unsupported modem on {self.port}: {IDENTIFY} replied {text!r}. "
                f"Supported: {_supported_modems()}. Set the dialect explicitly if your modem is compatible."
            )
        log.info("%s: %s identified as %s", self.name, text, dialect.key)
        return dialect

    # ---- port handling -------------------------------------------------------------------

    def _open_port(self) -> None:
        try:
            port = serial.Serial(
                self.port,
                self.baudrate,
                timeout=self._tick_s,
                write_timeout=self.write_timeout_s,
                exclusive=True,
            )
        except (serial.SerialException, OSError, ValueError) as exc:
            raise LineError(f"{self.name}: cannot open {self.port}: {exc}") from exc
        with contextlib.suppress(serial.SerialException, OSError):
            port.reset_input_buffer()
        self._current_timeout = self._tick_s
        self._splitter = LineSplitter()
        self._stream = _StreamState.COMMAND
        self._decoder = None
        self._cid.reset()
        self._last_rx_at = self._last_traffic_at = time.monotonic()
        with self._write_lock:
            self._serial = port

    def _close_port(self) -> None:
        with self._write_lock:
            port, self._serial = self._serial, None
        if port is not None:
            with contextlib.suppress(Exception):
                port.close()

    def _wake_reader(self) -> None:
        port = self._serial
        if port is not None:
            with contextlib.suppress(Exception):
                port.cancel_read()

    # ---- reader thread -------------------------------------------------------------------

    def _reader_main(self) -> None:
        """Read and dispatch until closed. Survives anything; recovers from faults."""
        while not self._closing.is_set():
            try:
                if self._recovery_reason is not None:
                    self._recover(self._recovery_reason)
                    continue
                self._pump_once(self._idle_read_timeout())
                self._housekeeping(time.monotonic())
            except (serial.SerialException, OSError, ModemFault) as exc:
                if self._closing.is_set():
                    break
                if not self._initialised:  # open() is still initialising: let it fail
                    self._abandon_pending(f"serial port failed: {exc}")
                    self._closing.wait(self._tick_s)
                    continue
                self._recover(f"serial port failed: {exc}")
            except Exception:  # a bug must not silence the line
                log.exception("%s: reader: unexpected error; continuing", self.name)
                self._closing.wait(self._tick_s)
        log.debug("%s: reader stopped", self.name)

    def _pump_once(self, timeout: float) -> None:
        port = self._serial
        if port is None:
            raise ModemFault("port is closed")
        data = self._read(port, timeout)
        if data:
            self._last_rx_at = self._last_traffic_at = time.monotonic()
            self._on_bytes(data)

    def _pump_until(self, done: threading.Event, deadline: float) -> None:
        """The reader waits for a reply to its own command by reading itself."""
        while not done.is_set() and not self._closing.is_set():
            if time.monotonic() >= deadline:
                return
            self._pump_once(INLINE_POLL_S)

    def _read(self, port: Any, timeout: float) -> bytes:
        """Block until a byte arrives (or ``timeout``), then take all that is waiting."""
        if timeout != self._current_timeout:
            port.timeout = timeout  # pyserial reconfigures the port; only done on change
            self._current_timeout = timeout
        data: bytes = port.read(1)
        if data:
            waiting = port.in_waiting
            if waiting:
                data += port.read(waiting)
        return data

    def _idle_read_timeout(self) -> float:
        """Short while a caller-ID block is open (its end is the quiet gap), else the tick."""
        if self._cid.started:
            return self.cid_quiet_s if self._cid.has_number_field else CID_INCOMPLETE_GRACE_S
        return self._tick_s

    def _housekeeping(self, now: float) -> None:
        self._release_held_ring(now)
        if self._cid.started:
            quiet_needed = self._idle_read_timeout()
            if now - self._last_rx_at >= quiet_needed or now - self._cid_opened_at >= CID_MAX_OPEN_S:
                self._finish_caller_id(now)
        with self._state_lock:
            stopped = not self._off_hook and self._rings.stopped(now)
        if stopped:
            self._emit(RingingStopped(now))
        if (doubt := self._handset.check(now)) is not None:
            log.warning("%s: %s", self.name, doubt)
            self._emit(HandsetStale(doubt, now))
        self._maybe_health_check(now)

    def _maybe_health_check(self, now: float) -> None:
        """Ping an idle modem now and then so a silent death is noticed before the next call."""
        if (
            self.health_interval_s is None
            or now - self._last_traffic_at < self.health_interval_s
            or self._off_hook
            or self._rings.active
            or self._cid.started
        ):
            return
        if not self._cmd_lock.acquire(blocking=False):
            return  # a caller is talking to the modem: that is health check enough
        try:
            self._command(ATTENTION, timeout=self.command_timeout_s)
        except CommandTimeout as exc:
            self._recover(f"modem stopped answering: {exc}")
        except LineError as exc:
            log.info("%s: health check: %s", self.name, exc)
        finally:
            self._cmd_lock.release()

    # ---- dispatch (reader thread) -----------------------------------------------------------

    def _on_bytes(self, data: bytes) -> None:
        if self._stream is _StreamState.RECEIVING:
            self._on_voice_bytes(data)
        else:
            self._splitter.feed(data)
            self._drain_frames()

    def _drain_frames(self) -> None:
        while self._stream is _StreamState.COMMAND:
            frame = self._splitter.next_frame()
            if frame is None:
                return
            if isinstance(frame, TextLine):
                self._on_line(frame)
            elif isinstance(frame, DleCode):
                self._on_dle_code(chr(frame.code))
            elif isinstance(frame, Overflow):
                log.warning("%s: dropped an over-long line (%d bytes): framing lost or noise", self.name, frame.length)
                self._transcript.add(time.monotonic(), Direction.RECEIVED, b"<overflow>")

    def _on_line(self, frame: TextLine) -> None:
        now = time.monotonic()
        self._transcript.add(now, Direction.RECEIVED, frame.data)
        text = frame.text().strip("\x00")
        log.debug("%s <- %r", self.name, text)
        pending = self._pending
        if pending is not None and pending.is_echo(text):
            return
        upper = text.upper()
        if upper == "RING" or upper.startswith("RING "):
            self._on_ring(now)
        elif (cid := parse_cid_line(text)) is not None:
            self._on_cid_field(*cid, text, now)
        elif upper in FINAL_REPLIES:
            self._on_final_reply(upper)
        elif pending is not None:
            pending.lines.append(text)
        else:
            log.info("%s: ignoring unsolicited line %r", self.name, frame.data[:80])

    def _on_ring(self, now: float) -> None:
        self._finish_caller_id(now)  # Bellcore: the block sits before the 2nd ring
        with self._state_lock:
            if self._off_hook:
                return
        # Only an on-hook line is rung (CAR included): an off-hook report is re-checked first,
        # so a stray one (or a lost DLE h) never keeps the line unscreened or CAR unanswered.
        if (doubt := self._handset.rang(now)) is not None:
            log.warning("%s: %s", self.name, doubt)
            self._emit(HandsetStale(doubt, now))
            self._emit(HandsetOnHook(now))
        with self._state_lock:
            if self._off_hook:
                return
            if self.number_display is not None:
                self._on_ring_nd(now)
                return
            count = self._rings.ring(now)
        self._emit(Ring(count, now))

    def _on_ring_nd(self, now: float) -> None:
        """A jp_nd line: a RING is held until it is known not to be CAR's first burst.

        CAR is not ringing: reporting its first burst as a ring would count it into an earlier
        call's ringing (a redial within the ring gap becomes "ring 2 without caller ID").
        """
        assert self.number_display is not None
        self._release_held_ring(now)
        if self.number_display.on_ring(now):  # CAR: the primary response is under way
            self._held_ring_at = None
            if self._rings.active:  # rings before this CAR belonged to the previous call
                self._rings.reset()
                self._emit(RingingStopped(now))
            return
        self._held_ring_at = now

    def _release_held_ring(self, now: float) -> None:
        """Report a held RING once no CAR burst has followed it in time (reader thread)."""
        nd = self.number_display
        with self._state_lock:
            at = self._held_ring_at
            if nd is None or at is None or now - at <= nd.timing.car_max_interval_s:
                return
            self._held_ring_at = None
            if self._off_hook:
                return
            count = self._rings.ring(at)
        self._emit(Ring(count, at))

    def _on_cid_field(self, cid_field: CidField, value: str, text: str, now: float) -> None:
        if not self._cid.started:
            self._cid_opened_at = now
        self._cid.add(cid_field, value, text)
        if self._cid.looks_complete:
            self._finish_caller_id(now)

    def _finish_caller_id(self, now: float) -> None:
        if not self._cid.started:
            return
        caller = self._cid.build(self.home_region)
        self._cid.reset()
        with self._state_lock:
            if self._off_hook or self._rings.repeats(caller, now):
                # We hold the line, or the modem printed this ringing's block again: not a new call.
                log.info("%s: caller-ID block repeated by the modem ignored: %r", self.name, caller.raw_lines)
                if not self._off_hook:
                    self._rings.caller_id(now)
                return
            # Japan and the UK send caller ID before the first ring: a block after this ringing's
            # rings belongs to the next call, even if the ring gap has not run out yet (a redial).
            next_call = self.cadence is not RingCadence.NORTH_AMERICA and self._rings.last_ring_at is not None
            if next_call:
                self._rings.reset()
            self._rings.caller_id(now, caller)
        if next_call:
            self._emit(RingingStopped(now))
        self._emit(CallOffered(caller, now))

    def _offer_caller_id(self, caller: CallerID, now: float) -> None:
        """Caller ID from Number Display (any thread): offered like a block before the first ring."""
        with self._state_lock:
            self._rings.caller_id(now)
        self._emit(CallOffered(caller, now))

    def _on_final_reply(self, reply: str) -> None:
        with self._state_lock:
            pending = self._pending
            if pending is None:
                log.info("%s: unsolicited %s", self.name, reply)
                if reply == "NO CARRIER" and self._off_hook:
                    self._signal_stop(EndReason.CALLER_HUNG_UP)
                return
            if reply == "CONNECT" and pending.data_mode is not None:
                pending.data_phase = self._pending = _PendingCommand("")
                if pending.data_mode is DataMode.RECEIVE:
                    self._enter_receive_state()
            else:
                self._pending = None
        pending.finish(reply)

    def _enter_receive_state(self) -> None:
        rest, after_cr = self._splitter.take_unparsed()
        self._stream = _StreamState.RECEIVING
        self._decoder = VoiceStreamDecoder(skip_leading_lf=after_cr)
        if rest:
            self._on_voice_bytes(rest)

    def _on_voice_bytes(self, data: bytes) -> None:
        assert self._decoder is not None
        chunk = self._decoder.feed(data)
        rx = self._rx_queue
        if chunk.audio and rx is not None:
            rx.put(chunk.audio)
        for code in chunk.codes:
            self._on_dle_code(code)
        if chunk.rest is not None:
            self._transcript.add(time.monotonic(), Direction.RECEIVED, dle.END_TRANSMIT)
            self._stream = _StreamState.COMMAND
            self._decoder = None
            if rx is not None:
                rx.put(None)
            self._splitter.feed(chunk.rest)
            self._drain_frames()

    def _on_dle_code(self, code: str) -> None:
        now = time.monotonic()
        self._transcript.add(now, Direction.RECEIVED, bytes([dle.DLE]) + code.encode("latin-1"))
        log.debug("%s <- DLE %r", self.name, code)
        if code in DTMF_DIGITS:
            self._emit(Dtmf(code, now))
            return
        try:
            event = DleEvent(code)
        except ValueError:
            log.info("%s: unknown DLE code %r ignored", self.name, code)
            return
        self._on_dle_event(event, now)

    def _on_dle_event(self, event: DleEvent, now: float) -> None:
        match event:
            case DleEvent.HANDSET_OFF_HOOK:
                self._handset.picked_up(now)
                self._emit(HandsetOffHook(now))
            case DleEvent.HANDSET_ON_HOOK:
                self._handset.put_down()
                self._emit(HandsetOnHook(now))
                if self._off_hook:
                    self._signal_stop(EndReason.HANDSET_ON_HOOK)
            case DleEvent.BUSY | DleEvent.DIAL_TONE | DleEvent.LOOP_INTERRUPTION:
                if self._off_hook:
                    self._signal_stop(EndReason.CALLER_HUNG_UP)
            case DleEvent.SILENCE | DleEvent.QUIET:
                if self._off_hook and self._stop_on_silence:
                    self._signal_stop(EndReason.SILENCE)
            case DleEvent.RING:
                self._on_ring(now)
            case _:
                log.debug("%s: DLE %s noted", self.name, event.name)

    # ---- signalling ---------------------------------------------------------------------------

    def _emit(self, event: LineEvent) -> None:
        log.debug("%s: event %s", self.name, event)
        try:
            self._events.put_nowait(event)
        except queue.Full:
            with contextlib.suppress(queue.Empty):
                dropped = self._events.get_nowait()
                log.warning("%s: event queue full; dropped %s", self.name, dropped)
            with contextlib.suppress(queue.Full):
                self._events.put_nowait(event)

    def _signal_stop(self, reason: EndReason) -> None:
        if self._stop.set(reason):
            rx = self._rx_queue
            if rx is not None:
                rx.put(reason)

    def _abandon_pending(self, why: str) -> None:
        with self._state_lock:
            pending, self._pending = self._pending, None
        if pending is not None:
            pending.abandon(why)

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
