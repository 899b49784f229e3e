"""Recording retention: an age limit and a disk quota, never at the cost of unseen fraud.

Why it is shaped like this
--------------------------
The appliance runs for years on a small SD card, so recordings must be pruned,
but a recording of a fraud call nobody has listened to yet is the one thing the
family may need (for the police, the bank, or to talk to grandma). So:

1. recordings older than ``keep_days`` are deleted;
2. then, oldest first, until the total is under ``max_bytes``;
3. a call whose verdict is ``fraud`` and that no one has reviewed is *never*
   deleted by either rule — staying over quota is logged as a warning instead.

Only paths from the database are ever deleted, each resolved strictly inside
the recordings dir (a row with an absolute path, ``..`` or a symlink out is
refused). Files in the dir that no call references are left alone and
logged: retention cannot know whose they are. The file is unlinked *before*
its row is cleared, so a crash in between leaves a row pointing at a missing
file — cleared on the next run — never an unreferenced file that would be
kept forever. Recordings still being written (no size in the row) are skipped.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from blocklist.store.rows import RecordingRow
from screening.core.clock import iso_utc
from screening.core.model import EventKind
from voice.recorder import resolve_recording

__all__ = ["RetentionPolicy", "RetentionReport", "apply_retention"]

log = logging.getLogger(__name__)

_MIB = 1024 * 1024
_ORPHANS_LOGGED = 10  # name at most this many unreferenced files per run; the count is always logged


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    keep_days: int
    max_bytes: int

    def __post_init__(self) -> None:
        if self.keep_days < 0 or self.max_bytes < 0:
            raise ValueError(f"retention limits must not be negative: {self}")

    @classmethod
    def from_config(cls, recording: Any) -> RetentionPolicy:
        """From ``screening.config.RecordingConfig`` (keep_days, max_disk_mb)."""
        return cls(keep_days=recording.keep_days, max_bytes=recording.max_disk_mb * _MIB)


@dataclass(slots=True)
class RetentionReport:
    deleted: list[int] = field(default_factory=list)  # call ids whose recording was deleted
    freed_bytes: int = 0
    kept_protected: list[int] = field(default_factory=list)  # unreviewed fraud a rule would have deleted
    missing: list[int] = field(default_factory=list)  # file already gone: row cleared
    rejected: list[int] = field(default_factory=list)  # path outside the dir: row left, file untouched
    failed: list[int] = field(default_factory=list)  # delete failed (I/O): kept, retried next run
    unreferenced: list[Path] = field(default_factory=list)  # files no call names: left alone
    total_bytes: int = 0  # referenced recordings on disk after the run


class _RetentionStore(Protocol):
    """The part of blocklist.store.Store retention uses."""

    def recordings_oldest_first(self) -> list[RecordingRow]: ...

    def clear_recording(self, call_id: int) -> None: ...

    def add_event(self, call_id: int | None, kind: EventKind, **detail: object) -> None: ...


@dataclass(slots=True)
class _Candidate:
    row: RecordingRow
    path: Path
    size: int


def apply_retention(store: _RetentionStore, recordings_dir: Path, policy: RetentionPolicy,
                    now: datetime) -> RetentionReport:  # fmt: skip
    """Apply ``policy`` once. Store read errors (StoreError) propagate; writes are spooled as usual."""
    report = RetentionReport()
    recordings_dir = Path(recordings_dir)
    candidates, referenced = _collect(store, recordings_dir, report)
    report.total_bytes = sum(c.size for c in candidates)
    cutoff = iso_utc(now - timedelta(days=policy.keep_days))
    survivors = []
    for cand in candidates:  # rule 1: age
        if cand.row.started_at < cutoff and _delete(store, cand, "age", report):
            continue
        survivors.append(cand)
    for cand in survivors:  # rule 2: quota, oldest first
        if report.total_bytes <= policy.max_bytes:
            break
        _delete(store, cand, "quota", report)
    if report.total_bytes > policy.max_bytes:
        log.warning("recordings use %.1f MiB, over the %.1f MiB quota: %d unreviewed fraud recording(s) kept "
                    "until someone reviews them, %d could not be deleted", report.total_bytes / _MIB,
                    policy.max_bytes / _MIB, len(report.kept_protected), len(report.failed))  # fmt: skip
    _note_unreferenced(recordings_dir, referenced, report)
    if report.deleted or report.missing:
        log.info("retention: deleted %d recording(s), freed %.1f MiB, %d already missing",
                 len(report.deleted), report.freed_bytes / _MIB, len(report.missing))  # fmt: skip
    return report


def _collect(store: _RetentionStore, recordings_dir: Path,
             report: RetentionReport) -> tuple[list[_Candidate], set[Path]]:  # fmt: skip
    """Finished recordings that exist, oldest first (rows whose file is gone are cleared),
    and every file any row references, including recordings still being written."""
    candidates, referenced = [], set()
    for row in store.recordings_oldest_first():
        path = resolve_recording(recordings_dir, row.relpath)
        if path is not None:
            referenced.add(path)
        else:
            log.error("call %s: recording path %r from the database is outside %s; not touching it",
                      row.call_id, row.relpath, recordings_dir)  # fmt: skip
            report.rejected.append(row.call_id)
            continue
        if row.bytes is None:
            log.debug("call %s: recording %s still being written; skipped", row.call_id, row.relpath)
            continue
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            _forget_missing(store, row, report)
            continue
        except OSError as exc:
            log.error("call %s: cannot stat recording %s: %s", row.call_id, path, exc)
            report.failed.append(row.call_id)
            continue
        candidates.append(_Candidate(row, path, size))
    return candidates, referenced


def _delete(store: _RetentionStore, cand: _Candidate, reason: str, report: RetentionReport) -> bool:
    """Delete one recording unless protected. True if it is gone (deleted or found missing)."""
    row = cand.row
    if row.protected:
        if row.call_id not in report.kept_protected:
            log.warning("call %s: keeping unreviewed fraud recording %s despite the %s rule",
                        row.call_id, row.relpath, reason)  # fmt: skip
            report.kept_protected.append(row.call_id)
        return False
    try:
        cand.path.unlink()
    except FileNotFoundError:
        _forget_missing(store, row, report)
        report.total_bytes -= cand.size
        return True
    except OSError as exc:
        log.error("call %s: cannot delete recording %s: %s", row.call_id, cand.path, exc)
        report.failed.append(row.call_id)
        return False
    store.clear_recording(row.call_id)
    store.add_event(row.call_id, EventKind.RECORDING, action="deleted", reason=reason, path=row.relpath,
                    bytes=cand.size)  # fmt: skip
    report.deleted.append(row.call_id)
    report.freed_bytes += cand.size
    report.total_bytes -= cand.size
    return True


def _forget_missing(store: _RetentionStore, row: RecordingRow, report: RetentionReport) -> None:
    log.warning("call %s: recording %s is missing; clearing it from the call", row.call_id, row.relpath)
    store.clear_recording(row.call_id)
    store.add_event(row.call_id, EventKind.RECORDING, action="missing", path=row.relpath)
    report.missing.append(row.call_id)


def _note_unreferenced(recordings_dir: Path, referenced: set[Path], report: RetentionReport) -> None:
    """Log files no call references: left alone, retention cannot know whose they are."""
    if not recordings_dir.is_dir():
        return
    root = recordings_dir.resolve()
    files: list[Path] = []
    for dirpath, _dirs, names in os.walk(root, onerror=lambda exc: log.warning("cannot list %s", exc)):
        files += [p for name in names if not (p := Path(dirpath, name)).is_symlink()]  # no link loops
    report.unreferenced = sorted(p for p in files if p not in referenced)
    if report.unreferenced:
        shown = ", ".join(str(p.relative_to(root)) for p in report.unreferenced[:_ORPHANS_LOGGED])
        more = " …" if len(report.unreferenced) > _ORPHANS_LOGGED else ""
        log.info("%d file(s) in %s belong to no call and are left alone: %s%s",
                 len(report.unreferenced), recordings_dir, shown, more)
