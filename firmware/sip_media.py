"""A pjsua2 AudioMediaPort that exchanges 20 ms PCM16 8 kHz frames with Python.

pjsua2's conference clock thread calls ``onFrameRequested`` / ``onFrameReceived``; they
only touch a lock-protected buffer and a bounded queue, so no pjsua2 call is ever made
from that thread and the SIP owner thread stays the only one driving the endpoint.
"""

from __future__ import annotations

import logging
import queue
import threading

import pjsua2 as pj  # type: ignore[import-untyped]

log = logging.getLogger(__name__)

SAMPLE_RATE = 8000
FRAME_MS = 20
FRAME_BYTES = SAMPLE_RATE * FRAME_MS // 1000 * 2  # 160 samples of int16
_SILENCE = bytes(FRAME_BYTES)
_RX_QUEUE_FRAMES = 500  # 10 s of caller audio; older frames are dropped if nobody listens


class FramePort(pj.AudioMediaPort):  # type: ignore[misc]
    """Outgoing audio is queued with ``feed``; caller audio is read with ``received``.

    Stop the bridge clock (``setNoDev()``) before dropping the last reference: while
    CPython tears the object down its attributes vanish before the C++ port does.
    """

    capturing = False  # class default: see the teardown note above

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._out = bytearray()
        self._drained = threading.Event()
        self._drained.set()
        self._rx: queue.Queue[bytes] = queue.Queue(maxsize=_RX_QUEUE_FRAMES)
        self.capturing = False  # caller audio is only queued while someone listens
        self._ready = True

    def create(self, name: str) -> None:
        """Register with the conference bridge; only from the endpoint's owner thread."""
        fmt = pj.MediaFormatAudio()
        fmt.init(pj.PJMEDIA_FORMAT_PCM, SAMPLE_RATE, 1, FRAME_MS * 1000, 16)
        self.createPort(name, fmt)

    # ---- Python side ---------------------------------------------------------

    def feed(self, pcm16: bytes) -> None:
        """Queue PCM16 8 kHz audio to send to the caller."""
        with self._lock:
            self._out += pcm16
            if self._out:
                self._drained.clear()

    def flush(self) -> None:
        """Drop audio not yet sent (the caller left mid-announcement)."""
        with self._lock:
            self._out.clear()
            self._drained.set()

    def wait_drained(self, timeout: float) -> bool:
        return self._drained.wait(timeout)

    def received(self, timeout: float) -> bytes | None:
        try:
            return self._rx.get(timeout=timeout)
        except queue.Empty:
            return None

    def clear_received(self) -> None:
        while True:
            try:
                self._rx.get_nowait()
            except queue.Empty:
                return

    # ---- clock-thread callbacks -------------------------------------------

    def onFrameRequested(self, frame: pj.MediaFrame) -> None:
        try:
            self._fill(frame)
        except Exception:  # must not unwind into the C++ clock thread
            log.exception("audio port: frame request failed")

    def onFrameReceived(self, frame: pj.MediaFrame) -> None:
        try:
            self._take(frame)
        except Exception:  # must not unwind into the C++ clock thread
            log.exception("audio port: frame receive failed")

    def _fill(self, frame: pj.MediaFrame) -> None:
        if not getattr(self, "_ready", False):
            return
        with self._lock:
            chunk = bytes(self._out[:FRAME_BYTES])
            del self._out[:FRAME_BYTES]
            if not self._out:
                self._drained.set()
        if len(chunk) < FRAME_BYTES:
            chunk += _SILENCE[len(chunk):]
        frame.type = pj.PJMEDIA_FRAME_TYPE_AUDIO
        frame.buf = pj.ByteVector(chunk)
        frame.size = FRAME_BYTES

    def _take(self, frame: pj.MediaFrame) -> None:
        if not getattr(self, "capturing", False) or frame.type != pj.PJMEDIA_FRAME_TYPE_AUDIO:
            return
        data = bytes(frame.buf)
        if not data:
            return
        try:
            self._rx.put_nowait(data)
        except queue.Full:  # nobody draining: keep the newest audio
            try:
                self._rx.get_nowait()
                self._rx.put_nowait(data)
            except (queue.Empty, queue.Full):
                pass
