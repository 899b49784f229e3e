"""An external Number Display adapter on a serial port, as a caller-ID source.

The adapter decodes the exchange's ND signal and prints each caller as a frame
(format: ``screening/core/nd_adapter_frame.py``); it does not answer calls, so it is
paired with a modem line by ``firmware/nd_line.py``.

One reader thread owns the port: it splits the byte stream into frames, answers
ACK for a good frame and NAK for a bad one, and queues a ``CallOffered`` for
each caller. A frame the adapter resends because our ACK was lost is
acknowledged and queued again; the line (``firmware/nd_line.py``), which knows
whether a call came between, takes it as the same caller. If the port cannot be opened or
vanishes (USB-serial unplugged), the thread queues a ``LineFault``, retries with
backoff, and queues ``LineRestored`` once it is back. Every wait has a timeout.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from pathlib import Path

import serial

from screening.core.line import CallOffered, LineFault, LineRestored, next_queued
from screening.core.nd_adapter_frame import (
    ACK,
    DEFAULT_FORMAT,
    NAK,
    FrameError,
    FrameReader,
    NdFrameFormat,
    Parity,
    parse_frame,
)

log = logging.getLogger(__name__)

READ_TIMEOUT_S = 0.1  # one read() wait: how soon a stop request or a broken frame is noticed
REOPEN_BACKOFF_S = (0.5, 1.0, 2.0, 5.0, 10.0)
EVENT_QUEUE_SIZE = 100

_PARITY = {Parity.EVEN: serial.PARITY_EVEN, Parity.ODD: serial.PARITY_ODD, Parity.NONE: serial.PARITY_NONE}
_BYTESIZE = {7: serial.SEVENBITS, 8: serial.EIGHTBITS}

NdEvent = CallOffered | LineFault | LineRestored


class NdAdapter:
    """The adapter on ``path`` (e.g. ``/dev/ttyUSB0``). Constructing does no I/O; ``open()`` starts it."""

    def __init__(self, path: str | Path, fmt: NdFrameFormat = DEFAULT_FORMAT, home_region: str = "JP",
                 backoff_s: tuple[float, ...] = REOPEN_BACKOFF_S) -> None:  # fmt: skip
        self.path = str(path)
        self.fmt = fmt
        self.home_region = home_region
        self._backoff = backoff_s
        self._events: queue.Queue[NdEvent] = queue.Queue(maxsize=EVENT_QUEUE_SIZE)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._port: serial.Serial | None = None
        self._faulted = False
        self.frames_acked = 0
        self.frames_naked = 0

    @property
    def faulted(self) -> bool:
        """True while the adapter is missing (calls then have no caller ID from it)."""
        return self._faulted

    def open(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="nd-adapter", daemon=True)
        self._thread.start()

    def close(self, join_timeout: float = 3.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=join_timeout)
            self._thread = None
        self._close_port()

    def next_event(self, timeout: float) -> NdEvent | None:
        return next_queued(self._events, timeout)

    # ---- reader thread ----------------------------------------------------------

    def _run(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            try:
                self._open_port()
            except (serial.SerialException, OSError) as exc:
                self._fault(f"ND adapter {self.path} not available ({exc}); calls get no caller ID from it")
                self._stop.wait(self._backoff[min(attempt, len(self._backoff) - 1)])
                attempt += 1
                continue
            attempt = 0
            if self._faulted:
                self._faulted = False
                self._put(LineRestored(f"ND adapter {self.path} is back", time.monotonic()))
            log.info("ND adapter on %s (%s, %d bit/s)", self.path, self.fmt.name, self.fmt.baudrate)
            try:
                self._read_frames()
            except (serial.SerialException, OSError) as exc:
                self._close_port()
                self._fault(f"ND adapter {self.path} lost ({exc}); calls get no caller ID from it")

    def _open_port(self) -> None:
        self._port = serial.Serial(self.path, baudrate=self.fmt.baudrate, bytesize=_BYTESIZE[self.fmt.bytesize],
                                   parity=_PARITY[self.fmt.parity], stopbits=self.fmt.stopbits,
                                   timeout=READ_TIMEOUT_S, write_timeout=1.0, exclusive=True)
        self._port.reset_input_buffer()

    def _close_port(self) -> None:
        port, self._port = self._port, None
        if port is not None:
            try:
                port.close()
            except (serial.SerialException, OSError):
                pass

    def _read_frames(self) -> None:
        port = self._port
        assert port is not None
        reader = FrameReader(self.fmt)
        while not self._stop.is_set():
            # One byte (or what is already waiting): read(256) would sit out the whole timeout per frame.
            data = port.read(max(1, port.in_waiting))
            now = time.monotonic()
            if not data and not port.is_open:
                raise serial.SerialException("port closed")
            for item in reader.feed(data, now) if data else reader.expire(now):
                self._answer(port, item, now)

    def _answer(self, port: serial.Serial, item: bytes | FrameError, now: float) -> None:
        if isinstance(item, FrameError):
            self._nak(port, str(item))
            return
        try:
            caller = parse_frame(item, self.fmt, self.home_region)
        except FrameError as exc:
            self._nak(port, str(exc))
            return
        port.write(bytes([ACK]))
        self.frames_acked += 1
        # A resend (our ACK was lost) is offered again: only the line knows whether a call came between.
        log.info("ND adapter: caller %s", caller.raw_number or caller.reason)
        self._put(CallOffered(caller, now))

    def _nak(self, port: serial.Serial, why: str) -> None:
        log.warning("ND adapter: bad frame (%s): asking for it again", why)
        port.write(bytes([NAK]))
        self.frames_naked += 1

    def _fault(self, message: str) -> None:
        if not self._faulted:  # one fault per outage, not one per retry
            self._faulted = True
            log.error("%s", message)
            self._put(LineFault(message, time.monotonic()))

    def _put(self, event: NdEvent) -> None:
        try:
            self._events.put_nowait(event)
        except queue.Full:
            log.error("ND adapter: event queue full; dropping %r", event)
