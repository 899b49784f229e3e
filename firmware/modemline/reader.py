"""The reader thread: every byte from the modem, sorted into replies, events and voice data."""


from __future__ import annotations

import logging
import threading
import time
from typing import Any

import serial  # type: ignore[import-untyped]

from firmware import dle
from firmware.at_channel import (
    ATTENTION,
    Direction,
    DleCode,
    Overflow,
    TextLine,
    VoiceStreamDecoder,
)
from firmware.dialects import (
    FINAL_REPLIES,
    RingCadence,
)
from firmware.dle import DTMF_DIGITS, DleEvent
from firmware.modemline.base import ModemLineBase
from firmware.modemline.support import (
    CID_INCOMPLETE_GRACE_S,
    CID_MAX_OPEN_S,
    INLINE_POLL_S,
    CommandTimeout,
    DataMode,
    ModemFault,
    _PendingCommand,
    _StreamState,
)
from screening.core.callerid import CidField, parse_cid_line
from screening.core.line import (
    CallOffered,
    Dtmf,
    EndReason,
    HandsetOffHook,
    HandsetOnHook,
    HandsetStale,
    LineError,
    Ring,
    RingingStopped,
)
from screening.core.model import CallerID

# Every part logs as the one line adapter it is.
log = logging.getLogger("firmware.modem_line")


class Reader(ModemLineBase):
    """Owns every read from the port and dispatches what it reads."""

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
