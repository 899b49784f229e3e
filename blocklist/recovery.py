"""A damaged database: found at start-up, set aside (never deleted), salvaged on request.

Why: a database that cannot be read used to stop ``mamoru run`` before the line was
opened (a systemd restart loop: no screening at all), and a file emptied to 0 bytes was
silently taken for a new install (the calls and the lists gone without a word).
Screening matters more than the call log, and the log is evidence, so:

* ``find_damage`` looks at the file before the store opens it: 0 bytes, a header that
  is not SQLite's, a file shorter than its header says (truncated), or a failing
  ``PRAGMA quick_check``. A missing file is a new install; a locked or unreadable one
  is an outage the store's spool already handles — neither is damage.
* ``set_aside_if_damaged`` renames the file (with its ``-wal``/``-shm``, which may hold
  the newest commits) to ``<name>.damaged-<UTC time>`` and appends a notice to
  ``<name>.damaged.json``; the daemon then starts on a fresh database with the
  config's rules and says so in the log, the health page, ``mamoru doctor`` and a
  health alert. The spool stays: its records belong to the fresh database.
* ``salvage`` (``mamoru store recover``) reads what SQLite can still read — per table,
  row by row past unreadable pages — from a *copy* of the damaged file (its header
  magic restored if that was what broke) into a new database with the current schema.
  This is Python's sqlite3 only; Debian's ``sqlite3`` CLI and its ``.recover`` are
  not needed on the appliance.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sqlite3
import struct
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from blocklist.store import Store
from screening.core.clock import iso_utc
from screening.core.files import atomic_write_text, fsync_dir

__all__ = [
    "DAMAGED_STORE_MESSAGE",
    "DamageNotice",
    "SalvageReport",
    "clear_notice",
    "damaged_copies",
    "find_damage",
    "read_notices",
    "salvage",
    "set_aside_if_damaged",
]

log = logging.getLogger(__name__)

SQLITE_MAGIC = b"SQLite format 3\x00"
_HEADER_BYTES = 100
_SIDE_FILES = ("-wal", "-shm")
_CHECK_BUSY_TIMEOUT_S = 2.0
_NOT_COPIED_META = {"spool_last_rid"}  # the spool replays into the live database, not a salvaged copy
_MAX_ROWID = 1 << 62
# For the family (alert, doctor): Japanese first, English alongside, no jargon.
DAMAGED_STORE_MESSAGE = ("通話の記録が壊れていたため、別の名前で残し、新しい記録で電話の見守りを続けています。"
                         "これまでの記録は設置担当者が取り戻せます。 / The call records were damaged: they were "
                         "kept aside and mamoru goes on screening calls with new records. Your helper can "
                         "recover the old ones.")
_BATCH = 5000


@dataclass(frozen=True, slots=True)
class DamageNotice:
    """One damaged database set aside; kept until it is recovered."""

    moved_to: Path
    problem: str
    at: str  # ISO UTC

    def as_dict(self) -> dict[str, str]:
        return {"moved_to": str(self.moved_to), "problem": self.problem, "at": self.at}


@dataclass(slots=True)
class SalvageReport:
    source: Path
    database: Path
    tables: dict[str, int] = field(default_factory=dict)  # rows copied per table
    unreadable: dict[str, int] = field(default_factory=dict)  # unreadable stretches met per table
    header_repaired: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"source": str(self.source), "database": str(self.database), "tables": self.tables,
                "unreadable": self.unreadable, "header_repaired": self.header_repaired}  # fmt: skip


# --------------------------------------------------------------------------- finding damage


def find_damage(path: Path) -> str | None:
    """Why ``path`` is a damaged database, or None (fine, missing, or merely unavailable now)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            header = f.read(_HEADER_BYTES)
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("cannot read %s to check it (%s); the store will retry", path, exc)
        return None
    if size == 0:
        return "the file is empty (0 bytes)"
    if len(header) < _HEADER_BYTES or header[:16] != SQLITE_MAGIC:
        return "the file does not start with an SQLite header"
    page_size, pages = _page_size(header), _header_pages(header)
    if page_size and pages and pages * page_size > size:
        return f"the file is cut short ({size} bytes, its header says {pages * page_size})"
    return _quick_check(path)


def _header_pages(header: bytes) -> int:
    """The in-header page count, or 0 where SQLite itself would not trust it (written by a
    version that did not keep it: its "valid-for" counter differs from the change counter)."""
    return struct.unpack_from(">I", header, 28)[0] if header[92:96] == header[24:28] else 0


def _page_size(header: bytes) -> int:
    raw = struct.unpack_from(">H", header, 16)[0]
    return 65536 if raw == 1 else raw


def _quick_check(path: Path) -> str | None:
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=_CHECK_BUSY_TIMEOUT_S)
    except sqlite3.Error as exc:
        log.warning("cannot open %s to check it (%s); the store will retry", path, exc)
        return None
    try:
        verdict = str(con.execute("PRAGMA quick_check(1)").fetchone()[0])
    except sqlite3.OperationalError as exc:  # locked, I/O: an outage, not damage
        log.warning("cannot check %s (%s); the store will retry", path, exc)
        return None
    except sqlite3.DatabaseError as exc:  # "malformed", "not a database"
        return f"SQLite cannot read it ({exc})"
    finally:
        con.close()
    return None if verdict == "ok" else f"SQLite's check found damage ({verdict})"


# --------------------------------------------------------------------------- setting aside


def set_aside_if_damaged(path: Path, now: datetime | None = None) -> DamageNotice | None:
    """At start-up, before the store opens ``path``: move a damaged database aside. Never deletes."""
    path = Path(path)
    problem = find_damage(path)
    if problem is None:
        return None
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    moved = path.with_name(f"{path.name}.damaged-{stamp}")
    n = 1
    while moved.exists():
        moved, n = path.with_name(f"{path.name}.damaged-{stamp}-{n}"), n + 1
    for suffix in _SIDE_FILES:  # first: the main file's name must be free before the fresh store runs
        side = Path(f"{path}{suffix}")
        if side.exists():
            side.rename(f"{moved}{suffix}")
    path.rename(moved)
    fsync_dir(path.parent)
    notice = DamageNotice(moved, problem, iso_utc(now or datetime.now(UTC)))
    _write_notices(path, [*read_notices(path), notice])
    log.critical("データベースが壊れていました。%s に移して残し、新しいデータベースで着信の確認を続けます。"
                 "The database was damaged (%s): moved to %s, screening continues with a fresh one. "
                 "Salvage the old records with: mamoru store recover", moved, problem, moved)  # fmt: skip
    return notice


def notice_path(db: Path) -> Path:
    return Path(db).with_name(f"{Path(db).name}.damaged.json")


def read_notices(db: Path) -> list[DamageNotice]:
    """Damaged databases set aside and not yet recovered (empty when none, or unreadable)."""
    try:
        document = json.loads(notice_path(db).read_text(encoding="utf-8"))
        return [DamageNotice(Path(d["moved_to"]), str(d["problem"]), str(d["at"])) for d in document["damaged"]]
    except FileNotFoundError:
        return []
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.error("cannot read %s: %s", notice_path(db), exc)
        return []


def clear_notice(db: Path, moved_to: Path) -> None:
    """``moved_to`` was recovered: it no longer needs anyone's attention (the file itself stays)."""
    rest = [n for n in read_notices(db) if n.moved_to != Path(moved_to)]
    if rest:
        _write_notices(db, rest)
    else:
        notice_path(db).unlink(missing_ok=True)


def damaged_copies(db: Path) -> list[Path]:
    """Every damaged database set aside beside ``db`` (recovered or not), oldest first."""
    db = Path(db)
    return sorted(p for p in db.parent.glob(f"{db.name}.damaged-*") if not p.name.endswith(_SIDE_FILES))


def _write_notices(db: Path, notices: list[DamageNotice]) -> None:
    target = notice_path(db)
    data = json.dumps({"damaged": [n.as_dict() for n in notices]}, ensure_ascii=False, indent=2) + "\n"
    atomic_write_text(target, data, mode=0o600)


# --------------------------------------------------------------------------- salvage


def salvage(damaged: Path, out: Path) -> SalvageReport:
    """Copy every row SQLite can read from ``damaged`` into a new database ``out`` (current schema).

    ``damaged`` is only read (a temporary copy is what gets opened and, if only its
    header magic was broken, patched). Raises FileExistsError if ``out`` exists.
    """
    damaged, out = Path(damaged), Path(out)
    if out.exists():
        raise FileExistsError(out)
    report = SalvageReport(damaged, out)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".salvage-") as tmp:
        work = Path(tmp) / "work.db"
        shutil.copyfile(damaged, work)
        if Path(f"{damaged}-wal").exists():
            shutil.copyfile(f"{damaged}-wal", f"{work}-wal")
        report.header_repaired = _repair_magic(work)
        _pad_to_header_size(work)
        Store(out).open().close()  # the current schema, by the store's own migrations
        source = sqlite3.connect(f"file:{work}?mode=ro", uri=True)
        target = sqlite3.connect(out, isolation_level=None)
        try:
            for table in _tables(target):
                copied, bad = _copy_table(source, target, table)
                report.tables[table], report.unreadable[table] = copied, bad
        finally:
            source.close()
            target.close()
    report.unreadable = {t: n for t, n in report.unreadable.items() if n}
    log.info("salvaged %s into %s: %s; unreadable stretches: %s", damaged, out, report.tables, report.unreadable)
    return report


def _repair_magic(work: Path) -> bool:
    with open(work, "r+b") as f:
        head = f.read(16)
        if head == SQLITE_MAGIC or len(head) < 16:
            return False
        f.seek(0)
        f.write(SQLITE_MAGIC)
    return True


def _pad_to_header_size(work: Path) -> None:
    """A file cut short is refused whole; padded with zero pages, only the lost pages are unreadable."""
    with open(work, "r+b") as f:
        header = f.read(_HEADER_BYTES)
        if len(header) < _HEADER_BYTES:
            return
        want = _page_size(header) * _header_pages(header)
        if want > os.fstat(f.fileno()).st_size:
            f.truncate(want)


def _tables(con: sqlite3.Connection) -> list[str]:
    rows = con.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
                       "ORDER BY rootpage").fetchall()  # fmt: skip
    return [r[0] for r in rows]


def _columns(con: sqlite3.Connection, table: str) -> list[str]:
    return [r[1] for r in con.execute(f'PRAGMA table_info("{table}")').fetchall()]


def _copy_table(source: sqlite3.Connection, target: sqlite3.Connection, table: str) -> tuple[int, int]:
    """Rows copied, and unreadable stretches skipped. A table the damaged file lacks copies nothing."""
    try:
        have = set(_columns(source, table))
    except sqlite3.DatabaseError as exc:
        log.warning("table %s: schema unreadable (%s)", table, exc)
        return 0, 1
    columns = [c for c in _columns(target, table) if c in have]
    if not columns:
        return 0, 0
    names = ", ".join(f'"{c}"' for c in columns)
    insert = f'INSERT OR IGNORE INTO "{table}" ({names}) VALUES ({", ".join("?" * len(columns))})'
    key = columns.index("key") if table == "meta" and "key" in columns else None
    copied, batch = 0, []
    rows, bad = _readable_rows(source, f'SELECT rowid, {names} FROM "{table}" WHERE rowid > ? ORDER BY rowid')
    target.execute("BEGIN")
    for row in rows:
        if key is not None and row[1 + key] in _NOT_COPIED_META:
            continue
        batch.append(row[1:])  # row[0] is the rowid, only for stepping over unreadable pages
        if len(batch) >= _BATCH:
            copied += _insert(target, insert, batch)
            batch = []
    copied += _insert(target, insert, batch)
    target.execute("COMMIT")
    return copied, bad[0]


def _insert(target: sqlite3.Connection, sql: str, rows: list[tuple[Any, ...]]) -> int:
    before = target.total_changes
    for row in rows:
        try:
            target.execute(sql, row)
        except sqlite3.DatabaseError as exc:  # a damaged value the schema refuses: skip that row only
            log.warning("skipping an unreadable row: %s", exc)
    return target.total_changes - before


def _readable_rows(source: sqlite3.Connection, query: str) -> tuple[Iterator[tuple[Any, ...]], list[int]]:
    """Rows in rowid order, stepping over pages SQLite cannot read; and a counter of those stretches."""
    bad = [0]

    def rows() -> Iterator[tuple[Any, ...]]:
        last = 0
        while True:
            try:
                for row in source.execute(query, [last]):
                    last = row[0]
                    yield row
                return
            except sqlite3.DatabaseError:
                bad[0] += 1
                resume = _next_readable(source, query, last)
                if resume is None:
                    return
                last = resume

    return rows(), bad


def _next_readable(source: sqlite3.Connection, query: str, failed_at: int) -> int | None:
    """The smallest ``x > failed_at`` from which ``query`` starts reading again (doubling, then bisecting)."""
    def readable(after: int) -> bool:
        try:
            source.execute(query, [after]).fetchone()
            return True
        except sqlite3.DatabaseError:
            return False

    step, low = 1, failed_at
    while not readable(low + step):
        low += step
        step *= 2
        if low + step > _MAX_ROWID:
            return None
    high = low + step  # readable; low is not
    while high - low > 1:
        mid = (low + high) // 2
        if readable(mid):
            high = mid
        else:
            low = mid
    return high
