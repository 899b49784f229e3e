"""Voice-mode audio: paced +VTX playback and +VRX audio delivered to sinks."""


from __future__ import annotations

import contextlib
import logging
import queue
import time
from collections.abc import Iterator

from firmware import dle
from firmware.audio_format import from_line_format
from firmware.dialects import (
    ModemDialect,
)
from firmware.modemline.base import ModemLineBase
from firmware.modemline.support import (
    PLAY_CHUNK_S,
    PLAY_LEAD_S,
    CommandTimeout,
    DataMode,
    ModemFault,
    _PendingCommand,
)
from screening.core.line import (
    AudioSink,
    EndReason,
    LineError,
)

# Every part logs as the one line adapter it is.
log = logging.getLogger("firmware.modem_line")


class VoiceAudio(ModemLineBase):
    """Streams audio to and from the modem for play() and listen()."""

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
