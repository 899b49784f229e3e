"""The virtual modem's state, output queue, device state and timers, shared by its parts.

The parts (commands, exchange, voice) are mixins over :class:`ModemBase`; a method one
part calls in another is declared here, so each part reads on its own.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path

from firmware.dialects import (
    CONEXANT_CX93001,
    ModemDialect,
    RingCadence,
)
from firmware.dle import DLE, DleEvent
from firmware.scenarios import (
    SILENCE_U8,
    CalleeScript,
)
from firmware.virtual_nd import NdExchange
from firmware.vmodem.at import NUMERIC_CODES, VOICE_CLASS, AtCommand, _dialect_vsm_args
from firmware.vmodem.records import (
    CallOutcome,
    CallRecord,
    DialOutcome,
    DialRecord,
    _Action,
    _Call,
    _Mode,
    _OutCall,
    _Phase,
    _Settings,
    _Timer,
)

# Every part logs as the one emulator it is (``mamoru modem emulate`` quietens this name).
log = logging.getLogger("firmware.virtual_modem")

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


# What the exchange plays once the caller has hung up, as the modem reports it.
HANGUP_EVENT: dict[RingCadence, DleEvent] = {
    RingCadence.JAPAN: DleEvent.BUSY,  # 話中音
    RingCadence.UK: DleEvent.BUSY,
    RingCadence.JAPAN_ND: DleEvent.BUSY,
    RingCadence.NORTH_AMERICA: DleEvent.DIAL_TONE,
}

_SILENCE_TABLE = bytes(0 if abs(b - SILENCE_U8) <= SILENCE_AMPLITUDE else 1 for b in range(256))


class ModemBase:
    """State and plumbing every part of the emulator uses (see the module docstring)."""

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
        self._handlers = self._command_handlers()
        self._power_on()

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


    # ---- timers --------------------------------------------------------------------------

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

    # ---- what one part calls in another (implemented by the part named) --------------

    def _command_handlers(self) -> dict[str, Callable[[AtCommand, list[str], float], str | None]]:
        raise NotImplementedError  # AtCommands

    def _wants_read(self, now: float) -> bool:
        raise NotImplementedError  # AtCommands

    def _on_input(self, data: bytes, now: float) -> None:
        raise NotImplementedError  # AtCommands

    def _skip_lf(self, data: bytes) -> bytes:
        raise NotImplementedError  # AtCommands

    def _set_handset(self, off_hook: bool, now: float) -> None:
        raise NotImplementedError  # AtCommands

    def _answer(self, call: _Call, now: float) -> None:
        raise NotImplementedError  # Exchange

    def _primary_response(self, call: _Call, now: float) -> None:
        raise NotImplementedError  # Exchange

    def _nd_on_hook(self, call: _Call, now: float) -> None:
        raise NotImplementedError  # Exchange

    def _end_call(self, call: _Call, outcome: CallOutcome, now: float) -> None:
        raise NotImplementedError  # Exchange

    def _start_dial(self, call: _OutCall, now: float) -> None:
        raise NotImplementedError  # Exchange

    def _feed_dialing(self, data: bytes, now: float) -> bytes:
        raise NotImplementedError  # Exchange

    def _end_dial(self, call: _OutCall, outcome: DialOutcome, now: float) -> None:
        raise NotImplementedError  # Exchange

    def _enter_vtx(self, now: float) -> None:
        raise NotImplementedError  # VoiceData

    def _enter_vrx(self, now: float) -> None:
        raise NotImplementedError  # VoiceData

    def _feed_vtx(self, data: bytes, now: float) -> bytes:
        raise NotImplementedError  # VoiceData

    def _feed_vrx(self, data: bytes, now: float) -> bytes:
        raise NotImplementedError  # VoiceData

    def _pump_vrx(self, now: float) -> None:
        raise NotImplementedError  # VoiceData
