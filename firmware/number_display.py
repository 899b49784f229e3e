"""Japanese Number Display received in software on a plain voice modem.

No USB voice modem decodes Japanese ND, and an ND line does not start with
normal ringing: the exchange first sends **CAR** (ringing bursts at a fast
cadence, ~0.5 s on / 0.5 s off). The terminal must make the *primary
response* (go off-hook) within ~6 s; the exchange then sends the caller ID as
V.23 FSK, the terminal goes back on-hook, and only then does normal ringing
(1 s on / 2 s off) start. A modem that just reported RING would treat CAR as
the call, and the real call would never ring.

:class:`NumberDisplayReceiver` is the terminal's part. The modem reader hands
it every RING (:meth:`on_ring`); two RINGs closer together than
``car_max_interval_s`` are CAR. It then, on its own thread (the reader must
never block): goes off-hook in voice mode, receives the line audio for
``fsk_window_s``, goes on-hook, demodulates, checks and parses the frame and
offers the caller ID -- all before the first normal ring, which the call loop
then treats like any Japanese call whose caller ID came first.

A frame that fails its checks is logged with its bytes and no caller ID is
offered: the call rings on and is screened as "no caller ID", never dropped.
The household's handset being off-hook means CAR is never answered (we would
break into their conversation); :meth:`ModemLine.answer` refuses too.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Protocol

from firmware.v23_fsk import SAMPLE_RATE, FskRx, demodulate, from_pcm16
from screening.core.line import AudioSink, EndReason, LineError
from screening.core.model import CallerID
from screening.core.nd_frame import NdFrameError, caller_id_from_message, decode_frame

log = logging.getLogger(__name__)

HISTORY_SIZE = 20


@dataclass(frozen=True, slots=True)
class NdTiming:
    """The terminal's timing, in real seconds (scale with :meth:`scaled` for a time-scaled line)."""

    # CAR repeats every ~1 s; normal Japanese ringing every 3 s. Between the two.
    car_max_interval_s: float = 1.6
    # Wait this long after recognising CAR before going off-hook (0: at once). The exchange
    # gives up on the primary response after ~6 s.
    primary_response_delay_s: float = 0.0
    # Never go off-hook later than this after the first CAR RING: by ~6 s the exchange has given
    # up and rings normally, and going off-hook then would answer the real call.
    primary_response_deadline_s: float = 5.0
    # Longest off-hook -> on-hook: the exchange's delay before the FSK plus the frame (~0.35 s) and
    # slack. The receive ends as soon as a whole frame has checked out.
    fsk_window_s: float = 1.5
    command_timeout_s: float = 2.0

    def __post_init__(self) -> None:
        for name in ("car_max_interval_s", "fsk_window_s", "command_timeout_s", "primary_response_deadline_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if not 0 <= self.primary_response_delay_s < self.primary_response_deadline_s:
            raise ValueError("primary_response_delay_s must be >= 0 and below primary_response_deadline_s")

    def scaled(self, factor: float) -> NdTiming:
        """Line times multiplied by ``factor`` (the virtual modem's ``time_scale``)."""
        return replace(
            self,
            car_max_interval_s=self.car_max_interval_s * factor,
            primary_response_delay_s=self.primary_response_delay_s * factor,
            primary_response_deadline_s=self.primary_response_deadline_s * factor,
            fsk_window_s=self.fsk_window_s * factor,
        )


class NdOutcome(StrEnum):
    CALLER_ID = "caller_id"  # a checked frame: caller ID offered
    BAD_FRAME = "bad_frame"  # no frame, or it failed parity/CRC: no caller ID
    NOT_ANSWERED = "not_answered"  # handset off-hook, or the modem refused to go off-hook


@dataclass(frozen=True, slots=True)
class NdAttempt:
    """One primary response, for logs, tests and the benchmark (monotonic times)."""

    car_at: float  # the RING that made us recognise CAR
    first_car_at: float
    outcome: NdOutcome
    decided_at: float
    caller: CallerID | None = None
    octets: bytes = b""
    detail: str = ""
    demod_cpu_s: float = 0.0
    audio_s: float = 0.0  # line audio received before the on-hook


class NdLine(Protocol):
    """What the receiver needs from the modem line (``ModemLine`` has all of it)."""

    name: str

    def handset_off_hook(self) -> bool: ...

    def answer(self, timeout: float = 5.0) -> None: ...

    def listen(self, seconds: float, sink: AudioSink | None = None, stop_on_silence: bool = False) -> EndReason: ...

    def hang_up(self, timeout: float = 5.0) -> None: ...

    def end_listen(self) -> None: ...


class _FrameCollector:
    """The listen sink: keeps the audio and ends the listen as soon as a whole frame checks out.

    Tries a decode each time another ``TRY_EVERY_SAMPLES`` have arrived, so a frame ends the
    receive window ~0.1 s after its CRC instead of at the window's end (a bad frame still waits
    for the whole window).
    """

    TRY_EVERY_SAMPLES = 800  # 0.1 s at 8 kHz

    def __init__(self, rx: FskRx, end_listen: Callable[[], None]) -> None:
        self._rx = rx
        self._end_listen = end_listen
        self._chunks: list[bytes] = []
        self._size = 0
        self._tried_at = 0
        self._done = False
        self.cpu_s = 0.0

    def feed(self, pcm16: bytes) -> None:
        self._chunks.append(pcm16)
        self._size += len(pcm16) // 2
        if self._done or self._size - self._tried_at < self.TRY_EVERY_SAMPLES:
            return
        self._tried_at = self._size
        start = time.thread_time()
        try:
            decode_frame(demodulate(from_pcm16(self.audio()), self._rx))
        except NdFrameError:
            return
        finally:
            self.cpu_s += time.thread_time() - start
        self._done = True
        self._end_listen()

    def audio(self) -> bytes:
        return b"".join(self._chunks)

    @property
    def audio_s(self) -> float:
        return self._size / SAMPLE_RATE


class NumberDisplayReceiver:
    """Recognises CAR in the RING reports and makes the primary response. No I/O until a call."""

    def __init__(
        self,
        line: NdLine,
        home_region: str,
        offer: Callable[[CallerID, float], None],
        timing: NdTiming | None = None,
        rx: FskRx | None = None,
    ) -> None:
        self.line = line
        self.home_region = home_region
        self.timing = timing or NdTiming()
        self.rx = rx or FskRx()
        self._offer = offer
        self._lock = threading.Lock()
        self._last_ring_at: float | None = None
        self._worker: threading.Thread | None = None
        self._closing = threading.Event()
        self._history: deque[NdAttempt] = deque(maxlen=HISTORY_SIZE)
        self._attempt_done = threading.Condition(self._lock)

    # ---- reader thread ----------------------------------------------------------------

    def on_ring(self, now: float) -> bool:
        """Called for every RING while on-hook; True means it was CAR and must not count as ringing."""
        with self._lock:
            if self._worker is not None and self._worker.is_alive():
                return True  # CAR still arriving while we go off-hook
            previous, self._last_ring_at = self._last_ring_at, now
            if previous is None or now - previous > self.timing.car_max_interval_s:
                return False
            if self.line.handset_off_hook():
                log.info("%s: CAR while the handset is off-hook: not answering it (no Number Display)", self.line.name)
                return False
            self._last_ring_at = None
            self._worker = threading.Thread(
                target=self._respond, args=(previous, now), name=f"{self.line.name}-nd", daemon=True
            )
            self._worker.start()
        log.info("%s: CAR recognised (RINGs %.2f s apart): making the primary response", self.line.name, now - previous)
        return True

    # ---- primary response (own thread) ------------------------------------------------------

    def _respond(self, first_car_at: float, car_at: float) -> None:
        try:
            attempt = self._primary_response(first_car_at, car_at)
        except Exception as exc:  # a bug must not leave the line off-hook or kill the call
            log.exception("%s: Number Display reception failed", self.line.name)
            attempt = NdAttempt(car_at, first_car_at, NdOutcome.BAD_FRAME, time.monotonic(), detail=repr(exc))
        with self._attempt_done:
            self._history.append(attempt)
            self._attempt_done.notify_all()
        if attempt.caller is not None:
            self._offer(attempt.caller, attempt.decided_at)

    def _primary_response(self, first_car_at: float, car_at: float) -> NdAttempt:
        timing = self.timing
        if timing.primary_response_delay_s and self._closing.wait(timing.primary_response_delay_s):
            return NdAttempt(car_at, first_car_at, NdOutcome.NOT_ANSWERED, time.monotonic(), detail="closing")
        late = time.monotonic() - first_car_at
        if late > timing.primary_response_deadline_s:
            log.warning("%s: CAR %.1f s ago: too late for the primary response; the call will ring "
                        "without caller ID", self.line.name, late)
            return NdAttempt(car_at, first_car_at, NdOutcome.NOT_ANSWERED, time.monotonic(), detail="too late")
        if self.line.handset_off_hook():  # picked up meanwhile: theirs, not ours
            return NdAttempt(car_at, first_car_at, NdOutcome.NOT_ANSWERED, time.monotonic(), detail="handset off-hook")
        try:
            self.line.answer(timeout=timing.command_timeout_s)
        except LineError as exc:
            log.warning("%s: could not make the Number Display primary response: %s", self.line.name, exc)
            return NdAttempt(car_at, first_car_at, NdOutcome.NOT_ANSWERED, time.monotonic(), detail=str(exc))
        collector = _FrameCollector(self.rx, self.line.end_listen)
        try:
            ended = self.line.listen(timing.fsk_window_s, collector.feed)
        finally:
            self.line.hang_up(timeout=timing.command_timeout_s)
        cpu_start = time.thread_time()
        octets = demodulate(from_pcm16(collector.audio()), self.rx)
        try:
            message = decode_frame(octets)
        except NdFrameError as exc:
            cpu = time.thread_time() - cpu_start + collector.cpu_s
            log.warning(
                "%s: Number Display frame refused (%s; listen ended %s); the call rings on as no caller ID. "
                "Received octets: %s", self.line.name, exc.fault.value, ended.value, octets.hex(" ") or "none",
            )
            return NdAttempt(car_at, first_car_at, NdOutcome.BAD_FRAME, time.monotonic(), octets=octets,
                             detail=str(exc), demod_cpu_s=cpu, audio_s=collector.audio_s)
        caller = caller_id_from_message(message, self.home_region)
        cpu = time.thread_time() - cpu_start + collector.cpu_s
        shown = caller.raw_number or (caller.reason.name if caller.reason else "neither number nor reason")
        log.info("%s: Number Display: %s", self.line.name, shown)
        return NdAttempt(car_at, first_car_at, NdOutcome.CALLER_ID, time.monotonic(), caller=caller,
                         octets=message.raw, demod_cpu_s=cpu, audio_s=collector.audio_s)

    # ---- introspection and shutdown -----------------------------------------------------------

    def history(self) -> list[NdAttempt]:
        with self._lock:
            return list(self._history)

    def wait_for_attempts(self, count: int, timeout: float) -> list[NdAttempt]:
        """Block until ``count`` attempts have finished (or ``timeout``); returns them all."""
        deadline = time.monotonic() + timeout
        with self._attempt_done:
            while len(self._history) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._attempt_done.wait(remaining)
            return list(self._history)

    def close(self, timeout: float = 3.0) -> None:
        self._closing.set()
        worker = self._worker
        if worker is not None and worker is not threading.current_thread():
            worker.join(timeout)
        self._closing.clear()  # the line may be opened again
