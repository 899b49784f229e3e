"""Voice data states: +VTX playback at the line's rate, +VRX audio and silence detection."""

from __future__ import annotations

import logging

from firmware.dle import DLE, ETX, DleEvent, shield
from firmware.scenarios import (
    SILENCE_U8,
    busy_tone,
)
from firmware.vmodem.at import ABORT_RX, CAN, OK
from firmware.vmodem.base import (
    _SILENCE_TABLE,
    HANGUP_EVENT,
    MAX_SELECT_S,
    VRX_MAX_BACKLOG,
    VRX_TICK_S,
    VTX_BUFFER_S,
    ModemBase,
)
from firmware.vmodem.records import _Call, _Mode, _Phase

# Every part logs as the one emulator it is (``mamoru modem emulate`` quietens this name).
log = logging.getLogger("firmware.virtual_modem")


def _cyclic(pattern: bytes, offset: int, length: int) -> bytes:
    if length <= 0:
        return b""
    offset %= len(pattern)
    reps = (offset + length) // len(pattern) + 1
    return (pattern * reps)[offset : offset + length]



class VoiceData(ModemBase):
    """Audio in both directions while the modem is in voice mode."""

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

