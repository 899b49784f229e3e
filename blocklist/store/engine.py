"""The store's engine: one SQLite connection, the write queue, the spool and replay.

Every write is a ``Record`` (``blocklist.store.records``) submitted here: applied at
once in its own ``BEGIN IMMEDIATE`` transaction, or — when SQLite refuses — queued in
memory and appended to the spool (``blocklist.store.spool``), to be replayed in order,
in one transaction, once the database takes writes again. Bulk list changes bypass the
spool (``_bulk``). The aggregate stores (calls, reviews, list entries, feed state) are
mixins over this class; ``blocklist.store.Store`` puts them together.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

from sqlite_utils import Database

from blocklist.durability import SYNCHRONOUS
from blocklist.store.records import APPLY, Record, is_transient
from blocklist.store.rows import StoreError
from blocklist.store.schema import migrate
from blocklist.store.spool import SPOOL_MARKER, Spool, nothing
from screening.core.clock import iso_utc, utc_now

__all__ = ["Clock", "StoreEngine"]

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
T = TypeVar("T")


class StoreEngine:
    """One SQLite file's connection, write queue and spool; see the module docstring.

    Thread-safe (one lock around everything). ``busy_timeout`` bounds how long a
    write waits for another writer; ``retry_interval`` how often, while the
    database is failing, a write tries it again instead of going straight to
    the spool — so a ringing phone pays the busy wait at most once per interval.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        clock: Clock = utc_now,
        spool_dir: str | Path | None = None,
        read_only: bool = False,
        recover_calls: bool = True,
        busy_timeout: float = 1.0,
        retry_interval: float = 5.0,
    ) -> None:
        self.path = Path(path)
        self.spool_path = Path(spool_dir or self.path.parent) / f"{self.path.name}.spool.jsonl"
        self._spool = Spool(self.spool_path, busy_timeout)
        self._clock = clock
        self._read_only = read_only
        self._recover_calls = recover_calls
        self._busy_timeout = busy_timeout
        self._retry_interval = retry_interval
        self._lock = threading.RLock()
        self._db: Database | None = None
        self._ready = False  # connected and migrated
        self._opened = False
        self._pending: list[Record] = []
        self._retry_at = 0.0  # time.monotonic() before which writes skip the DB
        self._failing = False
        self._next_provisional = -1
        self._uid_of: dict[int, str] = {}  # provisional id -> call_uid
        self._real_of: dict[int, int] = {}  # provisional id -> row id, once replayed

    # ----------------------------------------------------------------- lifecycle

    def open(self) -> Self:
        """Connect, migrate, replay any spool and mark crashed calls interrupted.

        Never raises for an unavailable database: the store then runs on its
        spool until the database comes back. Raises StoreError only for a
        database written by a newer version (refusing beats corrupting it).
        """
        with self._lock:
            self._opened = True
            if self._recover_calls:
                self._submit(Record("recover", {"at": self._now()}), force=True)
            else:
                self.flush_pending()
            return self

    def close(self) -> None:
        with self._lock:
            if self._pending:
                self.flush_pending()
            lost = [r for r in self._pending if not r.filed]
            if lost:
                log.error("closing with %d record(s) neither in the database nor spooled: %s",
                          len(lost), [r.to_json() for r in lost])  # fmt: skip
            if self._db is not None:
                self._db.close()
            self._db, self._ready, self._opened = None, False, False

    def __enter__(self) -> Self:
        return self if self._opened else self.open()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def pending_count(self) -> int:
        """Records not yet in the database (in memory; most are also in the spool file)."""
        return len(self._pending)

    def _bulk(self, apply: Callable[[Database], T]) -> T:
        """Run ``apply`` in one write transaction, straight to the database.

        Bulk changes are never spooled (a million-row feed does not belong in a
        JSON-lines file); anything already queued is replayed first so order holds.
        Raises StoreError when the database cannot be written now.
        """
        with self._lock:
            if (self._pending or self._spool.has_data()) and not self.flush_pending():
                raise StoreError(f"database {self.path} is unavailable: earlier records are still queued")
            db = self._reader()
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    result = apply(db)
                    db.execute("COMMIT")
                except BaseException:
                    db.rollback()
                    raise
            except sqlite3.Error as exc:
                raise StoreError(f"cannot write to {self.path}: {exc}") from exc
            return result


    # ----------------------------------------------------------------- spool & replay

    def flush_pending(self) -> bool:
        """Replay the spool and in-memory queue now. True if nothing is left pending."""
        with self._lock:
            if self._pending or self._spool.has_data():
                self._flush(batch_tail=None)
            return not self._pending

    def _submit(self, rec: Record, *, force: bool = False) -> tuple[bool, Any]:
        """Apply ``rec`` after anything pending; on an outage spool it. Returns (applied, result)."""
        with self._lock:
            if force or time.monotonic() >= self._retry_at:
                results = self._flush(batch_tail=rec)
                if results is not None:
                    return True, results.get(rec.rid)
            self._pending.append(rec)
            self._spool_append(rec)
            return False, None

    def _flush(self, batch_tail: Record | None) -> dict[str, Any] | None:
        """Apply spool file + unfiled memory records (+ ``batch_tail``) in one transaction."""
        if not self._ensure_ready():
            return None
        spool_context = self._spool.locked() if self._spool.has_data() else nothing()
        try:
            with spool_context as spool:
                filed = Spool.read(spool) if spool is not None else []
                marker = self._db_meta(SPOOL_MARKER)
                if marker in {r.rid for r in filed}:  # applied before a crash, not yet truncated
                    filed = filed[[r.rid for r in filed].index(marker) + 1 :]
                batch = filed + [r for r in self._pending if not r.filed]
                if batch_tail is not None:
                    batch.append(batch_tail)
                results = self._apply_batch(batch, marker=filed[-1].rid if filed else None)
                if spool is not None:
                    spool.truncate(0)
        except Exception as exc:
            if not is_transient(exc):
                raise
            self._note_failure(exc)
            return None
        if self._pending or self._failing:
            log.warning("database %s writable again: %d queued record(s) applied", self.path, len(batch))
        self._pending.clear()
        self._failing = False
        self._resolve_provisional()
        return results

    def _apply_batch(self, batch: list[Record], marker: str | None) -> dict[str, Any]:
        assert self._db is not None
        db, results = self._db, {}
        db.execute("BEGIN IMMEDIATE")
        try:
            for rec in batch:
                try:
                    with db.atomic():  # a savepoint: a bad record is undone alone
                        results[rec.rid] = APPLY[rec.op](db, rec.args)
                except (sqlite3.Error, KeyError, TypeError) as exc:
                    if is_transient(exc):
                        raise
                    log.error("dropping a record the database rejects (%s): %s", exc, rec.to_json())
            if marker is not None:
                db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", [SPOOL_MARKER, marker])
            db.execute("COMMIT")
        except BaseException:
            db.rollback()
            raise
        return results

    def _note_failure(self, exc: BaseException) -> None:
        self._retry_at = time.monotonic() + self._retry_interval
        if not self._failing:
            log.error("cannot write to %s (%s); queueing records in memory and in %s",
                      self.path, exc, self.spool_path)  # fmt: skip
        self._failing = True

    def _spool_append(self, rec: Record) -> None:
        """Append to the spool file; once that fails, stay in memory to keep order."""
        if any(not r.filed for r in self._pending[:-1]):
            return
        try:
            self._spool.append(rec)
            rec.filed = True
        except OSError as exc:
            log.error("cannot write spool %s (%s): record kept in memory only", self.spool_path, exc)

    def _resolve_provisional(self) -> None:
        unresolved = [p for p in self._uid_of if p not in self._real_of]
        if not unresolved or self._db is None:
            return
        for provisional in unresolved:
            row = self._db.execute("SELECT id FROM calls WHERE call_uid = ?", [self._uid_of[provisional]]).fetchone()
            if row:
                self._real_of[provisional] = int(row[0])

    # ----------------------------------------------------------------- connection

    def _ensure_ready(self) -> bool:
        if self._ready:
            return True
        try:
            if self._db is None:
                self._db = self._connect()
            migrate(self._db, self.path)
        except (sqlite3.Error, OSError) as exc:
            if not is_transient(exc):
                raise
            self._note_failure(exc)
            return False
        self._ready = True
        return True

    def _connect(self) -> Database:
        mode = "ro" if self._read_only else "rwc"
        conn = sqlite3.connect(
            f"file:{self.path}?mode={mode}",
            uri=True,
            timeout=self._busy_timeout,
            isolation_level=None,  # we issue BEGIN/COMMIT ourselves
            check_same_thread=False,  # guarded by self._lock
        )
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={SYNCHRONOUS}")  # a finished call survives a power cut
        except sqlite3.OperationalError as exc:  # e.g. read-only: keep whatever mode the file has
            log.debug("cannot set WAL on %s: %s", self.path, exc)
        return Database(conn, execute_plugins=False)

    def _reader(self) -> Database:
        if not self._ensure_ready():
            raise StoreError(f"database {self.path} is unavailable")
        assert self._db is not None
        return self._db

    def _query(self, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
        with self._lock:
            db = self._reader()
            try:
                return list(db.query(sql, params or []))
            except sqlite3.Error as exc:
                raise StoreError(f"cannot read {self.path}: {exc}") from exc

    def _db_meta(self, key: str) -> str | None:
        assert self._db is not None
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()
        return row[0] if row else None

    # ----------------------------------------------------------------- helpers

    def _now(self) -> str:
        return iso_utc(self._clock())

    def _ref(self, call_id: int) -> dict[str, Any]:
        """How a record names a call: real id, or call_uid while it is only spooled."""
        if call_id > 0:
            return {"id": call_id}
        if call_id in self._real_of:
            return {"id": self._real_of[call_id]}
        if call_id in self._uid_of:
            return {"uid": self._uid_of[call_id]}
        raise ValueError(f"unknown call id {call_id}")

    def _update_call(self, call_id: int, **fields: Any) -> None:
        self._submit(Record("update_call", {"ref": self._ref(call_id), "fields": fields}))

