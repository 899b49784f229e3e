"""Recordings that lost their call row get a call row again, never the bin.

A recording is fsync'ed while it is written, so after a power cut (or after a damaged
database was moved aside) a WAV can outlive the row that named it. That file is
evidence of a call the family may need. At start-up every WAV in the recordings dir
that no call references is *adopted*: a new call row in state ``interrupted`` with line
``recovered``, the start time read from the file name (``YYYY/MM/DD/call-<id>-HHMMSS.wav``,
the name the pipeline gives it), the sizes from ``repair_wav`` and a ``recording``
event with ``action="adopted"`` that keeps the old call id. The number is unknown: the
row says so rather than guess. Retention then treats it like any other recording.
"""

from __future__ import annotations

import logging
import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from blocklist.store.rows import RecordingRow
from voice.recorder import repair_wav, resolve_recording

__all__ = ["ADOPTED_LINE", "adopt_orphan_recordings", "recording_relpath"]

log = logging.getLogger(__name__)

ADOPTED_LINE = "recovered"  # the line column of an adopted call: which line it came in on is lost
_NAME = re.compile(r"^(?P<day>\d{4}/\d{2}/\d{2})/call-(?P<call>-?\d+)-(?P<hms>\d{6})\.wav$")


def recording_relpath(call_id: int, when: datetime) -> str:
    """Where a call's recording goes, relative to the recordings dir (UTC date and time)."""
    return f"{when:%Y/%m/%d}/call-{call_id}-{when:%H%M%S}.wav"


class _AdoptingStore(Protocol):
    """The part of blocklist.store.Store adoption uses."""

    def recordings_oldest_first(self) -> list[RecordingRow]: ...

    def adopt_recording(self, line: str, relpath: str, started_at: datetime, bytes_: int, seconds: float,
                        **detail: Any) -> int: ...  # fmt: skip


def adopt_orphan_recordings(store: _AdoptingStore, recordings_dir: Path) -> list[int]:
    """Give every unreferenced ``.wav`` under ``recordings_dir`` a call row. Returns the new call ids.

    Run at start-up after ``Store.open()`` and ``repair_interrupted``, before retention
    (which would otherwise only log the files as belonging to no call).
    """
    root = Path(recordings_dir)
    if not root.is_dir():
        return []
    root = root.resolve()
    referenced = {p for row in store.recordings_oldest_first()
                  if (p := resolve_recording(root, row.relpath)) is not None}  # fmt: skip
    adopted = []
    for path in _wav_files(root):
        if path in referenced:
            continue
        relpath = path.relative_to(root).as_posix()
        started, old_id = _from_name(relpath, path)
        info = repair_wav(path)  # None: not a WAV we can read; still evidence, adopted with its size
        call_id = store.adopt_recording(ADOPTED_LINE, relpath, started, info.bytes if info else _size(path),
                                        info.seconds if info else 0.0, previous_call_id=old_id)  # fmt: skip
        log.warning("recording %s had no call (its row was lost): adopted as call %s", relpath, call_id)
        adopted.append(call_id)
    return adopted


def _wav_files(root: Path) -> list[Path]:
    files = []
    for dirpath, _dirs, names in os.walk(root, onerror=lambda exc: log.warning("cannot list %s", exc)):
        files += [p for name in names if name.endswith(".wav") and not (p := Path(dirpath, name)).is_symlink()]
    return sorted(files)


def _from_name(relpath: str, path: Path) -> tuple[datetime, int | None]:
    """Start time and old call id from the pipeline's file name; else the file's mtime."""
    match = _NAME.match(relpath)
    if match:
        try:
            started = datetime.strptime(f"{match['day']} {match['hms']}", "%Y/%m/%d %H%M%S").replace(tzinfo=UTC)
            return started, int(match["call"])
        except ValueError:
            pass
    return datetime.fromtimestamp(_mtime(path), UTC), None


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
