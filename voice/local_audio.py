"""Audio on the Pi itself (not through the modem), via PortAudio / sounddevice.

Two optional devices, both named in ``[voice]``:

* ``HouseholdSpeaker`` -- a small in-home speaker that plays the household
  warning, so the elderly person hears it even while on the phone;
* ``LineTap`` -- a telephone recording adapter (line in) that lets us hear calls
  the modem did not answer itself.

``sounddevice`` is imported lazily, inside these classes, because the core must
install and run on a Pi without PortAudio; only the raw (bytes) stream API is
used, so numpy is not needed either. Constructors do no I/O. A missing PortAudio
library, a missing ``sounddevice`` package or an unknown device becomes a
``LocalAudioError`` whose message says what to install or configure.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

from screening.core.audio import resample_pcm16
from screening.core.line import AudioClip, AudioSink

log = logging.getLogger(__name__)

Device = str | int | None
CHUNK_S = 0.02  # 20 ms: PortAudio block size, and the granularity of deadlines
_POLL_S = 0.005  # sleep while the output buffer is full
_QUEUE_CHUNKS = 500  # 10 s of line audio buffered before we start dropping
_JOIN_S = 2.0  # how long stop() waits for the delivery thread


class LocalAudioError(RuntimeError):
    """The local speaker or line tap cannot be used; the message says why and what to do."""


def load_sounddevice() -> ModuleType:
    """``sounddevice``, or a LocalAudioError naming the missing piece."""
    try:
        import sounddevice  # type: ignore[import-untyped,import-not-found,unused-ignore]
    except OSError as exc:  # raised at import when libportaudio.so.2 is absent
        raise LocalAudioError(
            f"PortAudio library not found ({exc}): install the Debian package libportaudio2"
        ) from exc
    except ImportError as exc:
        raise LocalAudioError(
            "the Python package sounddevice is not installed: pip install 'mamoru[voice]'"
        ) from exc
    return sounddevice


def normalise_device(device: Device) -> Device:
    """Config gives strings: "" means the default device, "3" means PortAudio index 3."""
    if isinstance(device, str):
        device = device.strip()
        if not device:
            return None
        if device.isdigit():
            return int(device)
    return device


def describe_device(sd: ModuleType, device: Device, kind: str) -> dict[str, Any]:
    """PortAudio's info for an input/output device; LocalAudioError listing what exists."""
    try:
        return dict(sd.query_devices(device, kind))
    except (ValueError, sd.PortAudioError) as exc:
        available = "; ".join(
            f"{i}: {d['name']}" for i, d in enumerate(sd.query_devices())
            if d[f"max_{kind}_channels"] > 0
        )
        raise LocalAudioError(
            f"no usable PortAudio {kind} device {device!r} ({exc}); available: {available or 'none'}"
        ) from exc


def pick_rate(check: Callable[..., None], error: type[Exception], device: Device, wanted: int,
              fallback: float) -> int:
    """``wanted`` if the device accepts it, else the device's default rate (we resample)."""
    try:
        check(device=device, samplerate=wanted, channels=1, dtype="int16")
        return wanted
    except (ValueError, error) as exc:
        log.info("device %r refuses %d Hz (%s); using its default %d Hz", device, wanted, exc, int(fallback))
        return int(fallback)


class HouseholdSpeaker:
    """An in-home speaker. ``play`` blocks until the clip has played (or ``timeout``)."""

    def __init__(self, device: Device) -> None:
        self.device = normalise_device(device)

    def play(self, clip: AudioClip, timeout: float) -> None:
        """Play ``clip``; LocalAudioError if the device fails or playback overruns ``timeout``.

        ``timeout`` must allow for the clip's duration. On overrun the stream is
        aborted, so the speaker is free for the next warning. Resamples when the
        device refuses the clip's rate (USB speakers often take only 44.1/48 kHz).
        """
        sd = load_sounddevice()
        info = describe_device(sd, self.device, "output")
        rate = pick_rate(sd.check_output_settings, sd.PortAudioError, self.device, clip.sample_rate,
                         info["default_samplerate"])
        pcm = resample_pcm16(clip.pcm16, clip.sample_rate, rate)
        deadline = time.monotonic() + timeout
        try:
            stream = sd.RawOutputStream(samplerate=rate, channels=1, dtype="int16", device=self.device,
                                        blocksize=int(rate * CHUNK_S))
        except sd.PortAudioError as exc:
            raise LocalAudioError(f"cannot open speaker {info['name']!r} at {rate} Hz: {exc}") from exc
        try:
            self._write_all(stream, pcm, deadline, clip.name)
        except sd.PortAudioError as exc:
            raise LocalAudioError(f"speaker {info['name']!r} failed while playing {clip.name}: {exc}") from exc
        finally:
            stream.close(ignore_errors=True)

    @staticmethod
    def _write_all(stream: Any, pcm: bytes, deadline: float, name: str) -> None:
        """Write into free buffer space only, so no write can block past ``deadline``.

        The clip is followed by a buffer's worth of silence and the stream is then
        aborted (dropped, not drained): draining a stalled ALSA device can block
        forever, and aborting after the silence cuts nothing audible.
        """
        latency = float(stream.latency)
        pcm += bytes(2 * int(stream.samplerate * (latency + CHUNK_S)))
        stream.start()
        offset = 0
        try:
            while offset < len(pcm):
                if time.monotonic() > deadline:
                    raise LocalAudioError(
                        f"playing {name} did not finish in time (device stalled or timeout too short)"
                    )
                room = stream.write_available * 2
                if room <= 0:
                    time.sleep(_POLL_S)
                    continue
                chunk = pcm[offset : offset + room]
                stream.write(chunk)
                offset += len(chunk)
            time.sleep(max(0.0, min(latency, deadline - time.monotonic())))  # let the buffer play out
        finally:
            stream.abort(ignore_errors=True)


class LineTap:
    """A line-in recording adapter: 16-bit mono PCM at ``sample_rate`` delivered to a sink.

    The PortAudio callback only copies each block into a bounded queue (nothing
    else may run on PortAudio's real-time thread); a delivery thread resamples
    if needed and calls the sink. If the sink falls more than ~10 s behind,
    blocks are dropped and counted in ``dropped`` rather than growing memory.
    """

    def __init__(self, device: Device, sample_rate: int = 8000) -> None:
        self.device = normalise_device(device)
        self.sample_rate = sample_rate
        self.device_rate = sample_rate
        self.dropped = 0  # blocks lost because the sink was too slow
        self.overflows = 0  # PortAudio reported input overflow (the device lost samples)
        self._queue: queue.Queue[bytes] = queue.Queue(maxsize=_QUEUE_CHUNKS)
        self._stop = threading.Event()
        self._stream: Any = None
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._stream is not None

    def start(self, sink: AudioSink) -> None:
        """Open the device and start delivering to ``sink``; LocalAudioError if that fails."""
        if self._stream is not None or (self._thread is not None and self._thread.is_alive()):
            raise LocalAudioError("line tap already started (or its sink is still busy after stop())")
        sd = load_sounddevice()
        info = describe_device(sd, self.device, "input")
        self.device_rate = pick_rate(sd.check_input_settings, sd.PortAudioError, self.device,
                                     self.sample_rate, info["default_samplerate"])
        self._stop.clear()
        try:
            stream = sd.RawInputStream(samplerate=self.device_rate, channels=1, dtype="int16",
                                       device=self.device, blocksize=int(self.device_rate * CHUNK_S),
                                       callback=self._on_block)
            stream.start()
        except sd.PortAudioError as exc:
            raise LocalAudioError(f"cannot open line tap {info['name']!r} at {self.device_rate} Hz: {exc}") from exc
        self._stream = stream
        self._thread = threading.Thread(target=self._deliver, args=(sink,), name="line-tap", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop capturing and delivering. Idempotent; bounded by a timeout."""
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.abort(ignore_errors=True)  # immediate, unlike stop(), which waits for the device
            stream.close(ignore_errors=True)
        self._stop.set()
        if self._thread is not None:
            self._thread.join(_JOIN_S)
            if self._thread.is_alive():  # kept, so start() refuses to run a second one
                log.warning("line tap delivery thread still busy in the sink after %.0f s", _JOIN_S)
            else:
                self._thread = None

    def _on_block(self, indata: Any, frames: int, time_info: Any, status: Any) -> None:
        """PortAudio thread: copy and enqueue, nothing else."""
        if status.input_overflow:
            self.overflows += 1
        try:
            self._queue.put_nowait(bytes(indata))
        except queue.Full:
            self.dropped += 1

    def _deliver(self, sink: AudioSink) -> None:
        while not self._stop.is_set():
            try:
                block = self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
            try:
                sink(resample_pcm16(block, self.device_rate, self.sample_rate))
            except Exception:  # a broken sink must not silently end the tap
                log.exception("line tap sink failed; continuing")
        self._drain()

    def _drain(self) -> None:
        """Forget blocks captured after stop(), so a restart begins with fresh audio."""
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                return
