"""Whole-call recording to a WAV file that survives a crash or power cut.

Why it is shaped like this
--------------------------
A recording is evidence for the family ("listen to what they told grandma"), so
a power cut mid-call must not leave an unplayable file. The recorder writes a
canonical 44-byte RIFF/WAVE header (16-bit mono PCM) at ``open()``, then
appends audio in flushes of about half a second. Every flush writes the audio,
patches the RIFF and ``data`` sizes in the header and ``fsync``s, so the file on
disk is a valid WAV holding everything up to the last flush. A process killed
between writing audio and patching the header, or a torn write after a power
cut, leaves sizes that disagree with the file length: ``repair_wav`` recomputes
them from the length (dropping a torn half-sample), and ``repair_interrupted``
does that at start-up for every recording the store still marks "being written".

Both voices, one file, in time order
------------------------------------
A modem in voice mode is half-duplex per step: it plays (``AT+VTX``) *or*
listens (``AT+VRX``), never both at once. So the caller's audio and ours never
overlap in time, and appending what we played, then what we received, in the
order the session did them *is* the timeline of the call — no mixing needed.
The session writes the announcement it played (``write(clip pcm)``) and then
the audio the line delivers while listening.

Never break a call
------------------
``write`` is called from the line's audio thread: it only appends to a buffer,
and does file I/O (one write, one header patch, one fsync) once per
``flush_bytes`` of audio — size-based, no timer thread. If the directory is
unusable or the disk fills up, the recorder logs once, marks itself failed,
drops further audio and keeps what was flushed; no method raises into the
session.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Self

from blocklist.store.rows import relpath_problem
from screening.core.files import fsync_dir
from screening.core.model import EventKind

__all__ = [
    "HEADER_BYTES", "CallRecorder", "RecordingInfo", "repair_interrupted", "repair_wav", "resolve_recording",
]  # fmt: skip

log = logging.getLogger(__name__)

HEADER_BYTES = 44  # canonical PCM WAV header: RIFF(12) + fmt (8 + 16) + data(8)
SAMPLE_BYTES = 2  # 16-bit mono
FLUSH_SECONDS = 0.5  # bounds what a power cut can lose, and the fsyncs per second of audio
_RIFF_SIZE_AT = 4
_DATA_SIZE_AT = 40
_MAX_CHUNK_WALK = 64  # chunks to skip looking for 'data' in a foreign WAV; bounds a corrupt file's cost


@dataclass(frozen=True, slots=True)
class RecordingInfo:
    """A finished (or repaired) recording. ``bytes`` is the file size on disk, which is
    what the disk quota counts; ``seconds`` is the audio it holds."""

    path: Path
    bytes: int
    seconds: float


def _header(sample_rate: int, data_bytes: int) -> bytes:
    """Canonical 44-byte little-endian PCM WAV header for 16-bit mono."""
    byte_rate = sample_rate * SAMPLE_BYTES
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF", 36 + data_bytes, b"WAVE",
        b"fmt ", 16, 1, 1, sample_rate, byte_rate, SAMPLE_BYTES, 16,
        b"data", data_bytes,
    )  # fmt: skip


def _pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    """pwrite until done: a short write (e.g. the disk filling up mid-way) is not an error by itself."""
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        if written <= 0:
            raise OSError(f"pwrite wrote {written} bytes")
        view, offset = view[written:], offset + written


class CallRecorder:
    """One call's recording. Thread-safe: ``write`` from the audio thread, the rest from the session.

    The constructor does no I/O. ``open`` creates the file exclusively (``O_EXCL``): an
    existing recording is evidence and is never overwritten — that is a failure instead.
    """

    def __init__(self, path: Path, sample_rate: int = 8000, *, flush_bytes: int | None = None) -> None:
        if sample_rate <= 0:
            raise ValueError(f"bad sample rate {sample_rate}")
        self.path = Path(path)
        self.sample_rate = sample_rate
        default_flush = int(sample_rate * FLUSH_SECONDS) * SAMPLE_BYTES
        self._flush_bytes = max(SAMPLE_BYTES, flush_bytes or default_flush)
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._buffer = bytearray()
        self._data_bytes = 0  # audio bytes on disk and covered by the header
        self._dropped_bytes = 0
        self._closed = False
        self._created = False  # the file at ``path`` is ours (never report or touch someone else's)
        self.error: str | None = None

    # ----------------------------------------------------------------- state

    @property
    def failed(self) -> bool:
        """True once open or a flush failed: further audio is dropped, what was flushed is kept."""
        return self.error is not None

    @property
    def flushed_bytes(self) -> int:
        """Audio bytes durably in the file (covered by the header and fsync'ed)."""
        with self._lock:
            return self._data_bytes

    @property
    def dropped_bytes(self) -> int:
        with self._lock:
            return self._dropped_bytes

    # ----------------------------------------------------------------- lifecycle

    def open(self) -> bool:
        """Create the file with an empty-but-valid header. False (logged, recorder failed) on error."""
        with self._lock:
            if self._fd is not None or self._closed or self.failed:
                return self._fd is not None
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o640)
            except OSError as exc:
                self._fail("cannot create recording", exc)
                return False
            self._fd, self._created = fd, True
            try:
                _pwrite_all(fd, _header(self.sample_rate, 0), 0)
                os.fsync(fd)
            except OSError as exc:
                self._fail("cannot write recording header", exc)
                return False
        fsync_dir(self.path.parent)
        log.debug("recording to %s", self.path)
        return True

    def write(self, pcm16: bytes) -> None:
        """Append 16-bit mono PCM (little-endian). Cheap except once per ``flush_bytes``; never raises."""
        if not pcm16:
            return
        with self._lock:
            if self._fd is None or self._closed:
                self._dropped_bytes += len(pcm16)
                return
            self._buffer += pcm16
            if len(self._buffer) >= self._flush_bytes:
                self._flush_locked()

    def flush(self) -> None:
        """Flush buffered whole samples now (e.g. between the announcement and listening)."""
        with self._lock:
            if self._fd is not None:
                self._flush_locked()

    def close(self) -> RecordingInfo:
        """Flush, close and describe what is on disk. Idempotent; never raises."""
        with self._lock:
            if self._fd is not None:
                self._flush_locked()
                if len(self._buffer) % SAMPLE_BYTES:
                    log.debug("%s: dropping a trailing half-sample", self.path)
                self._dropped_bytes += len(self._buffer)
                self._buffer.clear()
                self._close_fd()
            self._closed = True
            if self._dropped_bytes and self.failed:
                log.error("recording %s kept %.1f s; %d bytes of audio were lost (%s)",
                          self.path, self._seconds(self._data_bytes), self._dropped_bytes, self.error)  # fmt: skip
            return self._info()

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------- internals

    def _flush_locked(self) -> None:
        """Append the buffered whole samples, patch both sizes, fsync. On error: fail, keep the rest."""
        usable = len(self._buffer) - len(self._buffer) % SAMPLE_BYTES
        if self._fd is None or usable == 0:
            return
        chunk = bytes(self._buffer[:usable])
        new_size = self._data_bytes + usable
        try:
            _pwrite_all(self._fd, chunk, HEADER_BYTES + self._data_bytes)
            _pwrite_all(self._fd, struct.pack("<I", 36 + new_size), _RIFF_SIZE_AT)
            _pwrite_all(self._fd, struct.pack("<I", new_size), _DATA_SIZE_AT)
            os.fsync(self._fd)
        except OSError as exc:
            self._dropped_bytes += len(self._buffer)
            self._buffer.clear()
            self._fail("cannot write recording (disk full?)", exc)
            return
        del self._buffer[:usable]
        self._data_bytes = new_size

    def _fail(self, what: str, exc: OSError) -> None:
        """Log once, stop recording, and cut the file back to the last consistent flush."""
        self.error = f"{what}: {exc}"
        log.error("%s %s (%s); the call continues without recording", what, self.path, exc)
        if self._fd is None:
            return
        try:  # a partial write beyond the header's size is garbage; drop it and free the space
            os.ftruncate(self._fd, HEADER_BYTES + self._data_bytes)
            _pwrite_all(self._fd, _header(self.sample_rate, self._data_bytes), 0)
            os.fsync(self._fd)
        except OSError as again:
            log.warning("could not tidy %s after the failure (%s); repair_wav will fix it", self.path, again)
        self._close_fd()

    def _close_fd(self) -> None:
        assert self._fd is not None
        try:
            os.close(self._fd)
        except OSError as exc:
            log.warning("closing recording %s: %s", self.path, exc)
        self._fd = None

    def _info(self) -> RecordingInfo:
        size = _size_or_zero(self.path) if self._created else 0
        return RecordingInfo(self.path, size, self._seconds(self._data_bytes))

    def _seconds(self, data_bytes: int) -> float:
        return data_bytes / (self.sample_rate * SAMPLE_BYTES)


# --------------------------------------------------------------------------- repair


@dataclass(frozen=True, slots=True)
class _WavLayout:
    data_size_at: int  # offset of the data chunk's size field
    data_start: int
    block_align: int
    byte_rate: int


def _parse_layout(head: bytes) -> _WavLayout | str:
    """Where the audio starts in a RIFF/WAVE file, or why it is not one we can repair."""
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return "no RIFF/WAVE signature"
    pos, fmt = 12, None
    for _ in range(_MAX_CHUNK_WALK):
        if pos + 8 > len(head):
            return "header cut short"
        chunk_id, size = head[pos : pos + 4], struct.unpack_from("<I", head, pos + 4)[0]
        if chunk_id == b"fmt " and size >= 16 and pos + 24 <= len(head):
            fmt = struct.unpack_from("<HHIIH", head, pos + 8)
        elif chunk_id == b"data":
            if fmt is None:
                return "no fmt chunk before the audio"
            _tag, _channels, _rate, byte_rate, block_align = fmt
            if block_align <= 0 or byte_rate <= 0:
                return "invalid fmt chunk"
            return _WavLayout(pos + 4, pos + 8, block_align, byte_rate)
        pos += 8 + size + (size & 1)  # chunks are word-aligned
    return "no data chunk"


def repair_wav(path: Path) -> RecordingInfo | None:
    """Make a WAV left by a crash playable: sizes from the file length, torn half-sample cut.

    Writes only when something is wrong, so it is safe to run on every start-up. A file
    that is not a WAV at all (or missing) is logged and left untouched: it may be
    someone's evidence in a format we do not know; returns None.
    """
    path = Path(path)
    try:
        with open(path, "r+b") as f:
            head = f.read(4096)
            layout = _parse_layout(head)
            if isinstance(layout, str):
                log.warning("not repairing %s: %s", path, layout)
                return None
            size = os.fstat(f.fileno()).st_size
            data = max(0, size - layout.data_start)
            data -= data % layout.block_align
            changed = _patch_sizes(f, head, layout, data, size)
            if changed:
                f.flush()
                os.fsync(f.fileno())
                log.warning("repaired recording %s: %.1f s of audio", path, data / layout.byte_rate)
            return RecordingInfo(path, layout.data_start + data, data / layout.byte_rate)
    except OSError as exc:
        log.error("cannot repair recording %s: %s", path, exc)
        return None


def _patch_sizes(f: Any, head: bytes, layout: _WavLayout, data: int, size: int) -> bool:
    """Truncate to whole samples and rewrite RIFF/data sizes if they disagree. True if anything changed."""
    changed = False
    end = layout.data_start + data
    if size != end:
        f.truncate(end)
        changed = True
    riff = end - 8
    if struct.unpack_from("<I", head, 4)[0] != riff:
        f.seek(_RIFF_SIZE_AT)
        f.write(struct.pack("<I", riff))
        changed = True
    if struct.unpack_from("<I", head, layout.data_size_at)[0] != data:
        f.seek(layout.data_size_at)
        f.write(struct.pack("<I", data))
        changed = True
    return changed


def resolve_recording(recordings_dir: Path, relpath: str) -> Path | None:
    """The file a DB path names, or None if it would lie outside ``recordings_dir``.

    Defensive: paths come from the database (or a replayed spool line), and what we do
    with them is delete. Rejects absolute paths and ``..``, and — after resolving
    symlinks — anything that lands outside the dir.
    """
    if relpath_problem(relpath):
        return None
    root = Path(recordings_dir).resolve()
    full = (root / relpath).resolve()
    return full if full != root and full.is_relative_to(root) else None


class _RecordingStore(Protocol):
    """The part of blocklist.store.Store repair needs."""

    def unfinished_recordings(self) -> list[Any]: ...

    def set_recording(self, call_id: int, relpath: str, bytes_: int | None = None,
                      seconds: float | None = None) -> None: ...  # fmt: skip

    def clear_recording(self, call_id: int) -> None: ...

    def add_event(self, call_id: int | None, kind: EventKind, **detail: object) -> None: ...


def repair_interrupted(store: _RecordingStore, recordings_dir: Path) -> list[RecordingInfo]:
    """At start-up (after ``Store.open()``): repair every recording a crash left "being written".

    Each gets its sizes stored, so it is repaired once and retention can count it; a
    missing file is cleared from its row; a file that is not a WAV keeps its path and
    gets its size on disk (still evidence, still counted against the quota).
    """
    repaired = []
    for row in store.unfinished_recordings():
        path = resolve_recording(recordings_dir, row.relpath)
        if path is None:
            log.error("call %s: recording path %r is outside %s; ignoring it", row.call_id, row.relpath,
                      recordings_dir)  # fmt: skip
            continue
        if not path.exists():
            log.warning("call %s: recording %s was never written or is gone", row.call_id, path)
            store.clear_recording(row.call_id)
            continue
        info = repair_wav(path)
        if info is None:
            store.set_recording(row.call_id, row.relpath, _size_or_zero(path), 0.0)
            continue
        store.set_recording(row.call_id, row.relpath, info.bytes, info.seconds)
        store.add_event(row.call_id, EventKind.RECORDING, action="repaired", path=row.relpath,
                        seconds=round(info.seconds, 2))  # fmt: skip
        repaired.append(info)
    return repaired


def _size_or_zero(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
