"""The hub outbox: what the unit will tell the hub, kept on disk until the broker acknowledged it.

A message is written here *before* any attempt to send it, so a broker outage, a restart or a
power cut never loses one; the sender drains the rows oldest first and deletes a row only after
the broker's PUBACK (QoS 1), so delivery is at-least-once and in order (each message carries a
unique id for the hub to drop repeats).

A separate SQLite file beside the call database (``<db>.hub.db``), not a table of the Store: the
queue is a work queue that reads its own writes back and deletes them, and its rows are
disposable (losing them costs the hub some history, never the household its screening). The
writes are short transactions in WAL mode with ``synchronous=FULL``: a committed row survives
a power cut.

Bounded: at most ``limit`` rows. Health is a state, so only its newest row is kept. When the
queue is full, the oldest call summaries go first (the hub can live without old call lists),
then the oldest of anything else; each drop is logged and counted.

The same file keeps marks: how far a poll has read (the last fraud review reported).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from screening.core.clock import iso_utc
from screening.hubwire import Channel

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    channel TEXT NOT NULL,
    payload BLOB NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS marks (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
_DROP_FIRST = (Channel.CALLS.value, Channel.HEALTH.value)  # when full: these, oldest first, before the rest


@dataclass(frozen=True, slots=True)
class Queued:
    id: int
    channel: Channel
    payload: bytes


def queue_path_for(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + ".hub.db")


class HubQueue:
    """Durable FIFO of unit → hub messages (payloads already encoded by ``screening.hubwire``). Thread-safe."""

    def __init__(self, path: Path, *, limit: int) -> None:
        self.path = path
        self.limit = limit
        self.dropped = 0
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=5.0, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")  # a committed row must survive a power cut
        db.executescript(_SCHEMA)
        self._db = db

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def __enter__(self) -> HubQueue:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("hub queue is not open")
        return self._db

    def put(self, channel: Channel, payload: bytes, now: datetime) -> None:
        with self._lock:
            db = self._conn()
            db.execute("BEGIN IMMEDIATE")
            try:
                if channel is Channel.HEALTH:
                    db.execute("DELETE FROM outbox WHERE channel = ?", (channel.value,))
                db.execute("INSERT INTO outbox (channel, payload, created_at) VALUES (?, ?, ?)",
                           (channel.value, payload, iso_utc(now)))  # fmt: skip
                self._trim(db)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def _trim(self, db: sqlite3.Connection) -> None:
        (count,) = db.execute("SELECT count(*) FROM outbox").fetchone()
        excess = count - self.limit
        if excess <= 0:
            return
        marks = ",".join("?" * len(_DROP_FIRST))
        victims = [row[0] for row in db.execute(
            f"SELECT id FROM outbox WHERE channel IN ({marks}) ORDER BY id LIMIT ?", (*_DROP_FIRST, excess))]  # fmt: skip
        if len(victims) < excess:
            victims += [row[0] for row in db.execute(
                f"SELECT id FROM outbox WHERE id NOT IN ({','.join('?' * len(victims)) or 'NULL'}) ORDER BY id LIMIT ?",
                (*victims, excess - len(victims)))]  # fmt: skip
        db.executemany("DELETE FROM outbox WHERE id = ?", [(v,) for v in victims])
        self.dropped += len(victims)
        log.warning("hub queue full (%d rows): dropped the %d oldest message(s)", self.limit, len(victims))

    def oldest(self) -> Queued | None:
        with self._lock:
            row = self._conn().execute("SELECT id, channel, payload FROM outbox ORDER BY id LIMIT 1").fetchone()
        return Queued(row[0], Channel(row[1]), bytes(row[2])) if row else None

    def remove(self, row_id: int) -> None:
        with self._lock:
            self._conn().execute("DELETE FROM outbox WHERE id = ?", (row_id,))

    def __len__(self) -> int:
        with self._lock:
            return int(self._conn().execute("SELECT count(*) FROM outbox").fetchone()[0])

    def pending(self) -> list[Queued]:
        with self._lock:
            rows = self._conn().execute("SELECT id, channel, payload FROM outbox ORDER BY id").fetchall()
        return [Queued(r[0], Channel(r[1]), bytes(r[2])) for r in rows]

    # ---- marks: how far a poll has read (e.g. the last fraud review reported) -------------

    def mark(self, name: str) -> str | None:
        with self._lock:
            row = self._conn().execute("SELECT value FROM marks WHERE name = ?", (name,)).fetchone()
        return str(row[0]) if row else None

    def set_mark(self, name: str, value: str) -> None:
        with self._lock:
            self._conn().execute("INSERT INTO marks (name, value) VALUES (?, ?) "
                                 "ON CONFLICT(name) DO UPDATE SET value = excluded.value", (name, value))  # fmt: skip


def queue_backlog(path: Path) -> tuple[int, str | None]:
    """(rows waiting, when the oldest was queued) of a hub queue file, read-only; (0, None) if there is none.

    For ``mamoru doctor``, in another process than the daemon's: the file is only read.
    """
    if not path.exists():
        return 0, None
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=2.0)
    try:
        count, oldest = db.execute("SELECT count(*), min(created_at) FROM outbox").fetchone()
    except sqlite3.OperationalError:  # created but not yet given its table
        return 0, None
    finally:
        db.close()
    return int(count), oldest
