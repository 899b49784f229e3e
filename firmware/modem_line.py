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

Layout
------
This module is the public face (construction from a URI, lifecycle, the
LineAdapter methods); the parts live in ``firmware/modemline/``: ``support``
(constants, errors, small state objects), ``base`` (shared state, the command
channel, port handling, signalling), ``audio`` (paced +VTX, +VRX delivery),
``reader`` (the reader thread and its dispatch) and ``recovery``.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import threading
import time
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from firmware import dle
from firmware.at_channel import (
    ATTENTION,
    TranscriptEntry,
)
from firmware.audio_format import to_line_format
from firmware.dialects import (
    DIAL_TONE_WAIT_S,
    FINAL_REPLIES,
    RINGBACK_GOES_AWAY_S,
    ModemDialect,
)
from firmware.dle import DTMF_DIGITS
from firmware.modemline.audio import VoiceAudio
from firmware.modemline.reader import Reader
from firmware.modemline.recovery import Recovery
from firmware.modemline.support import (
    AUTO_DIALECT,
    PLAY_LEAD_S,
    CommandTimeout,
    DataMode,
    ModemFault,
    UnsupportedModem,
)
from firmware.number_display import NdTiming, NumberDisplayReceiver
from screening.core.line import (
    AudioClip,
    AudioSink,
    DialResult,
    EndReason,
    LineError,
    LineEvent,
    next_queued,
)

log = logging.getLogger(__name__)

URI_SCHEME = "modem"
# Dialling: beyond the ring time, the modem needs dial tone (S6), the digits,
# call setup and +VRA of ringback silence before it reports an answer.
DIAL_OVERHEAD_S = DIAL_TONE_WAIT_S + 4.0 + RINGBACK_GOES_AWAY_S
MAX_S7 = 255
DIAL_SEPARATORS = frozenset(" -().")


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


class ModemLine(VoiceAudio, Reader, Recovery):
    """One telephone line on a V.253 voice modem (USR5637, Conexant CX93001)."""

    def _number_display_receiver(self, home_region: str, timing: NdTiming | None) -> NumberDisplayReceiver:
        return NumberDisplayReceiver(self, home_region, self._offer_caller_id, timing)

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
        return next_queued(self._events, timeout)

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
