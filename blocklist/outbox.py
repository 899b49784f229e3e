"""The alert outbox: alerts and their per-relative deliveries, in the call database.

Why it is shaped like this
--------------------------
An alert is written *before* it is sent, so a crash, a power cut or a restart
never loses one: a new ``AlertService`` simply finds the pending rows and
carries on. The ``UNIQUE(dedupe_key)`` of ``alerts`` and ``UNIQUE(alert_id,
relative, channel_index)`` of ``deliveries`` make "one alert per call per
relative" a database guarantee.

Why not the Store's spooled write path: the outbox is a work queue that must
*read its own writes back* (what is due, what was sent, who acknowledged) and
move rows through states (pending -> sending -> sent), which a write-only,
replay-later spool cannot give. So the outbox uses its own connection to the
same SQLite file (WAL: readers never block the daemon's writers) with one
short ``BEGIN IMMEDIATE`` transaction per change. Its own outage fallback is
simpler than the Store's, because an alert's job is to be fast rather than to
be evidence: if the file cannot be written (locked beyond ``busy_timeout``,
read-only, disk full), new alerts go to an in-memory SQLite database with the
same schema (negative ids) and are still sent from there, and state changes
of file rows are deferred in memory; ``flush()`` (each dispatcher cycle)
moves both into the file once it is writable again. What cannot survive is a
crash *during* such an outage — the only window where an alert can be lost,
and one where it has usually already been sent.

So the database has two outage strategies on purpose, not by accident: the
spool for evidence (call records, which nobody reads back until later), the
in-memory copy for the work queue (alerts, which the dispatcher reads back at
once). Putting the outbox on the spool would need reads that merge the file
with spooled records and provisional alert/delivery ids resolved after replay:
a second engine, not a simplification. The schema is shared all the same:
the outbox's tables are migration 3 of ``blocklist.store.schema``, and the
in-memory copy is built from those same migrations.

Delivery semantics are at-least-once: a row is marked ``sending`` before the
send; one found ``sending`` at start-up (the process died mid-send) is retried.

Secrets: ``channel`` is the masked URL (``apprise``'s ``url(privacy=True)``)
and ``channel_index`` points into the relative's ``notify`` list in the
config; the URLs themselves, which carry passwords and tokens, never enter
the database.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Self

from sqlite_utils import Database

from blocklist.store.schema import MIGRATIONS
from screening.core.clock import iso_utc

__all__ = [
    "ACTIVE_STATUSES", "AlertKind", "AlertRow", "DeliveryRow", "DeliveryStatus", "NewAlert", "NewDelivery",
    "Outbox", "OutboxError", "Urgency",
]  # fmt: skip

log = logging.getLogger(__name__)

SCHEMA_VERSION = 3  # migration 3 (blocklist.store.schema) created the outbox tables
VOICE_CHANNEL = -1  # channel_index of a phone call to the relative's `phone`


class OutboxError(RuntimeError):
    """The outbox cannot be used at all (no database, schema too old)."""


class AlertKind(StrEnum):
    FRAUD = "fraud"
    REPEAT_BLOCK = "repeat_block"
    HEALTH = "health"
    DIGEST = "digest"
    TEST = "test"


class Urgency(StrEnum):
    """URGENT is sent at once, day or night; NORMAL waits out quiet hours and the rate limit."""

    URGENT = "urgent"
    NORMAL = "normal"


class DeliveryStatus(StrEnum):
    PENDING = "pending"  # not tried yet (or waiting for its escalation step)
    SENDING = "sending"  # being sent right now; found at start-up = the process died mid-send
    SENT = "sent"
    FAILED = "failed"  # last attempt failed; retried at next_attempt_at
    ACKNOWLEDGED = "acknowledged"  # the relative said "seen"
    EXPIRED = "expired"  # given up: retry window over, or no longer needed (someone acknowledged)


ACTIVE_STATUSES = (DeliveryStatus.PENDING, DeliveryStatus.FAILED)


@dataclass(frozen=True, slots=True)
class NewAlert:
    kind: AlertKind
    urgency: Urgency
    dedupe_key: str
    subject: str
    body: str
    payload: dict[str, Any]
    call_id: int | None = None


@dataclass(frozen=True, slots=True)
class NewDelivery:
    relative: str
    channel: str  # masked, for display
    channel_index: int  # into the relative's notify list; VOICE_CHANNEL for a phone call
    escalation_step: int
    next_attempt_at: datetime


@dataclass(frozen=True, slots=True)
class AlertRow:
    id: int  # negative: held in memory while the database is unwritable
    created_at: str
    kind: AlertKind
    urgency: Urgency
    call_id: int | None
    dedupe_key: str
    subject: str
    body: str
    payload: dict[str, Any]
    acked_at: str | None
    acked_by: str | None

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "created_at": self.created_at, "kind": self.kind.value, "urgency": self.urgency.value,
                "call_id": self.call_id, "subject": self.subject, "acked_at": self.acked_at,
                "acked_by": self.acked_by}  # fmt: skip


@dataclass(frozen=True, slots=True)
class DeliveryRow:
    id: int
    alert_id: int
    relative: str
    channel: str
    channel_index: int
    status: DeliveryStatus
    attempts: int
    next_attempt_at: str | None
    last_error: str | None
    sent_at: str | None
    acked_at: str | None
    escalation_step: int

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "relative": self.relative, "channel": self.channel, "status": self.status.value,
                "attempts": self.attempts, "next_attempt_at": self.next_attempt_at, "last_error": self.last_error,
                "sent_at": self.sent_at, "acked_at": self.acked_at, "escalation_step": self.escalation_step}  # fmt: skip


def _alert_from(row: sqlite3.Row | _Renamed) -> AlertRow:
    return AlertRow(
        id=row["id"], created_at=row["created_at"], kind=AlertKind(row["kind"]), urgency=Urgency(row["urgency"]),
        call_id=row["call_id"], dedupe_key=row["dedupe_key"], subject=row["subject"], body=row["body"],
        payload=json.loads(row["payload"] or "{}"), acked_at=row["acked_at"], acked_by=row["acked_by"],
    )  # fmt: skip


def _delivery_from(row: sqlite3.Row) -> DeliveryRow:
    return DeliveryRow(
        id=row["id"], alert_id=row["alert_id"], relative=row["relative"], channel=row["channel"],
        channel_index=row["channel_index"], status=DeliveryStatus(row["status"]), attempts=row["attempts"],
        next_attempt_at=row["next_attempt_at"], last_error=row["last_error"], sent_at=row["sent_at"],
        acked_at=row["acked_at"], escalation_step=row["escalation_step"],
    )  # fmt: skip


_ALERT_COLUMNS = ("created_at", "kind", "urgency", "call_id", "dedupe_key", "subject", "body", "payload",
                  "acked_at", "acked_by")  # fmt: skip
_DELIVERY_COLUMNS = ("relative", "channel", "channel_index", "status", "attempts", "next_attempt_at", "last_error",
                     "sent_at", "acked_at", "escalation_step")  # fmt: skip


class Outbox:
    """Alerts and deliveries in the call database; thread-safe. See the module docstring.

    The Store must have migrated the file first (``Store(...).open()``): the outbox
    never changes the schema of a database it does not own.
    """

    def __init__(self, path: str | Path, *, busy_timeout: float = 0.5) -> None:
        self.path = Path(path)
        self._busy_timeout = busy_timeout
        self._lock = threading.RLock()
        self._file: sqlite3.Connection | None = None
        self._memory: sqlite3.Connection | None = None
        self._next_memory_id = -1
        self._deferred: list[tuple[str, list[Any]]] = []  # updates of file rows the file refused
        self._deferred_ids: set[int] = set()  # their delivery ids: not due until written
        self._after_commit: Callable[[], Any] | None = None

    # ---- lifecycle ---------------------------------------------------------------

    def open(self) -> Outbox:
        """Connect; deliveries left ``sending`` by a dead process become due again (at-least-once)."""
        with self._lock:
            self._file = self._connect(f"file:{self.path}?mode=rw", uri=True)
            version = int(self._file.execute("PRAGMA user_version").fetchone()[0])
            if version < SCHEMA_VERSION:
                self.close()
                raise OutboxError(f"{self.path} has schema version {version}; open the Store first to migrate it")
            self._memory = self._connect(":memory:")
            memory_db = Database(self._memory, execute_plugins=False)
            for migration in MIGRATIONS:
                migration(memory_db)
            self._write(lambda db: db.execute(
                "UPDATE deliveries SET status = ?, last_error = 'interrupted while sending' WHERE status = ?",
                [DeliveryStatus.FAILED.value, DeliveryStatus.SENDING.value],
            ))  # fmt: skip
        return self

    def close(self) -> None:
        with self._lock:
            if self._memory is not None and (self._has_memory_rows() or self._deferred):
                self.flush()
                if self._has_memory_rows() or self._deferred:
                    log.error("closing the outbox with alerts the database would not take; they are lost")
            for conn in (self._file, self._memory):
                if conn is not None:
                    conn.close()
            self._file = self._memory = None

    def __enter__(self) -> Self:
        if self._file is None:
            self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _connect(self, target: str, uri: bool = False) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(target, uri=uri, timeout=self._busy_timeout, isolation_level=None,
                                   check_same_thread=False)  # fmt: skip -- guarded by self._lock
        except sqlite3.Error as exc:
            raise OutboxError(f"cannot open {self.path}: {exc}") from exc
        conn.row_factory = sqlite3.Row
        return conn

    # ---- writing -------------------------------------------------------------------

    def add(self, alert: NewAlert, deliveries: Sequence[NewDelivery], now: datetime) -> AlertRow | None:
        """Store an alert and its deliveries; None if ``dedupe_key`` is already there."""
        with self._lock:
            if self.exists(alert.dedupe_key):
                return None
            try:
                return self._write(lambda db: self._insert(db, alert, deliveries, now))
            except sqlite3.OperationalError as exc:
                log.error("cannot write alert %s to %s (%s): holding it in memory until it can",
                          alert.dedupe_key, self.path, exc)  # fmt: skip
                assert self._memory is not None
                return self._write(lambda db: self._insert(db, alert, deliveries, now), self._memory)

    def _insert(self, db: sqlite3.Connection, alert: NewAlert, deliveries: Sequence[NewDelivery],
                now: datetime) -> AlertRow | None:  # fmt: skip
        alert_id = self._memory_id() if db is self._memory else None
        cursor = db.execute(
            "INSERT OR IGNORE INTO alerts (id, created_at, kind, urgency, call_id, dedupe_key, subject, body, payload)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [alert_id, iso_utc(now), alert.kind.value, alert.urgency.value, alert.call_id, alert.dedupe_key,
             alert.subject, alert.body, json.dumps(alert.payload, ensure_ascii=False, default=str)],
        )  # fmt: skip
        if not cursor.rowcount:
            return None
        row = db.execute("SELECT * FROM alerts WHERE dedupe_key = ?", [alert.dedupe_key]).fetchone()
        for d in deliveries:
            db.execute(
                "INSERT OR IGNORE INTO deliveries (id, alert_id, relative, channel, channel_index, status, "
                "next_attempt_at, escalation_step) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [self._memory_id() if db is self._memory else None, row["id"], d.relative, d.channel,
                 d.channel_index, DeliveryStatus.PENDING.value, iso_utc(d.next_attempt_at), d.escalation_step],
            )  # fmt: skip
        return _alert_from(row)

    def mark_sending(self, delivery: DeliveryRow, now: datetime) -> None:
        self._update(delivery, status=DeliveryStatus.SENDING.value, attempts=delivery.attempts + 1)

    def mark_sent(self, delivery: DeliveryRow, now: datetime) -> None:
        self._update(delivery, status=DeliveryStatus.SENT.value, sent_at=iso_utc(now), last_error=None,
                     next_attempt_at=None)  # fmt: skip

    def mark_failed(self, delivery: DeliveryRow, error: str, retry_at: datetime) -> None:
        self._update(delivery, status=DeliveryStatus.FAILED.value, last_error=error[:500],
                     next_attempt_at=iso_utc(retry_at))  # fmt: skip

    def mark_expired(self, delivery: DeliveryRow, error: str) -> None:
        self._update(delivery, status=DeliveryStatus.EXPIRED.value, last_error=error[:500], next_attempt_at=None)

    def postpone(self, delivery: DeliveryRow, until: datetime) -> None:
        """Not an attempt: the rate limit or quiet hours moved it later."""
        self._update(delivery, next_attempt_at=iso_utc(until))

    def _update(self, delivery: DeliveryRow, **fields: Any) -> None:
        sql = f"UPDATE deliveries SET {', '.join(f'{k} = ?' for k in fields)} WHERE id = ?"
        params = [*fields.values(), delivery.id]
        with self._lock:
            if delivery.id < 0:
                assert self._memory is not None
                self._memory.execute(sql, params)
                return
            try:
                if self._deferred:  # keep order: earlier refused updates first
                    raise sqlite3.OperationalError("earlier updates still deferred")
                self._write(lambda db: db.execute(sql, params))
            except sqlite3.OperationalError as exc:
                if not self._deferred:
                    log.error("cannot update delivery %d in %s (%s): deferring", delivery.id, self.path, exc)
                self._deferred.append((sql, params))
                self._deferred_ids.add(delivery.id)

    def acknowledge(self, alert_id: int, relative: str, now: datetime) -> bool:
        """Someone has seen the alert: stop escalating it. False if there is no such alert.

        The acknowledging relative's sent deliveries become ``acknowledged``; deliveries
        to anyone not yet reached (later escalation steps, retries) are expired.
        """
        at = iso_utc(now)

        def apply(db: sqlite3.Connection) -> bool:
            cursor = db.execute("UPDATE alerts SET acked_at = COALESCE(acked_at, ?), acked_by = COALESCE(acked_by, ?)"
                                " WHERE id = ?", [at, relative, alert_id])  # fmt: skip
            if not cursor.rowcount:
                return False
            db.execute("UPDATE deliveries SET status = ?, acked_at = ? WHERE alert_id = ? AND relative = ? "
                       "AND status = ?", [DeliveryStatus.ACKNOWLEDGED.value, at, alert_id, relative,
                                          DeliveryStatus.SENT.value])  # fmt: skip
            db.execute(
                "UPDATE deliveries SET status = ?, last_error = ?, next_attempt_at = NULL WHERE alert_id = ? "
                "AND status IN (?, ?)",
                [DeliveryStatus.EXPIRED.value, f"acknowledged by {relative}", alert_id,
                 *(s.value for s in ACTIVE_STATUSES)],
            )  # fmt: skip
            return True

        with self._lock:
            self.flush()
            return bool(self._write(apply, self._memory if alert_id < 0 else None))

    def flush(self) -> bool:
        """Move alerts held in memory and deferred updates into the file. True if nothing is left over."""
        with self._lock:
            if not self._has_memory_rows() and not self._deferred:
                return True
            try:
                self._write(self._move_memory_rows)
            except sqlite3.OperationalError as exc:
                log.debug("outbox still cannot write %s: %s", self.path, exc)
                return False
            log.warning("database %s writable again: held alerts and updates written", self.path)
            self._deferred.clear()
            self._deferred_ids.clear()
            return True

    def _move_memory_rows(self, db: sqlite3.Connection) -> None:
        assert self._memory is not None
        for sql, params in self._deferred:
            db.execute(sql, params)
        for alert in self._memory.execute("SELECT * FROM alerts ORDER BY id DESC").fetchall():
            values = [alert[c] for c in _ALERT_COLUMNS]
            db.execute(f"INSERT OR IGNORE INTO alerts ({', '.join(_ALERT_COLUMNS)}) "
                       f"VALUES ({', '.join('?' * len(values))})", values)  # fmt: skip
            file_id = db.execute("SELECT id FROM alerts WHERE dedupe_key = ?", [alert["dedupe_key"]]).fetchone()[0]
            for d in self._memory.execute("SELECT * FROM deliveries WHERE alert_id = ?", [alert["id"]]).fetchall():
                values = [file_id, *(d[c] for c in _DELIVERY_COLUMNS)]
                db.execute(f"INSERT OR IGNORE INTO deliveries (alert_id, {', '.join(_DELIVERY_COLUMNS)}) "
                           f"VALUES ({', '.join('?' * len(values))})", values)  # fmt: skip
        # The memory rows go only once the file transaction commits (see _write).
        self._after_commit = lambda: (self._memory.execute("DELETE FROM deliveries"),  # type: ignore[union-attr]
                                      self._memory.execute("DELETE FROM alerts"))  # type: ignore[union-attr]

    def _write(self, change: Callable[[sqlite3.Connection], Any], conn: sqlite3.Connection | None = None) -> Any:
        """Run ``change`` in one BEGIN IMMEDIATE transaction (file by default)."""
        db = conn or self._file
        if db is None:
            raise OutboxError("outbox is not open")
        self._after_commit = None
        db.execute("BEGIN IMMEDIATE")
        try:
            result = change(db)
            db.execute("COMMIT")
        except BaseException:
            db.rollback()
            raise
        if self._after_commit is not None:
            self._after_commit()
            self._after_commit = None
        return result

    def _memory_id(self) -> int:
        value = self._next_memory_id
        self._next_memory_id -= 1
        return value

    def _has_memory_rows(self) -> bool:
        return self._memory is not None and self._memory.execute("SELECT 1 FROM alerts LIMIT 1").fetchone() is not None

    # ---- reading ------------------------------------------------------------------

    @contextmanager
    def _sources(self) -> Iterator[list[sqlite3.Connection]]:
        """The file (if readable) and the memory overlay, under the lock."""
        with self._lock:
            if self._file is None or self._memory is None:
                raise OutboxError("outbox is not open")
            yield [self._file, self._memory]

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        rows: list[sqlite3.Row] = []
        with self._sources() as sources:
            for db in sources:
                try:
                    rows.extend(db.execute(sql, list(params)).fetchall())
                except sqlite3.OperationalError as exc:
                    log.error("cannot read the outbox in %s: %s", self.path, exc)
        return rows

    def exists(self, dedupe_key: str) -> bool:
        return bool(self._read("SELECT 1 FROM alerts WHERE dedupe_key = ?", [dedupe_key]))

    def exists_since(self, key_prefix: str, since: datetime) -> bool:
        """An alert whose dedupe key starts with ``key_prefix`` was made at or after ``since``."""
        pattern = key_prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        return bool(self._read("SELECT 1 FROM alerts WHERE dedupe_key LIKE ? ESCAPE '\\' AND created_at >= ?",
                               [pattern, iso_utc(since)]))  # fmt: skip

    def due(self, now: datetime) -> list[tuple[AlertRow, DeliveryRow]]:
        """Deliveries to try now, urgent first, then oldest first."""
        rows = self._read(
            "SELECT d.*, a.id AS a_id, a.created_at AS a_created_at, a.kind, a.urgency, a.call_id, a.dedupe_key,"
            " a.subject, a.body, a.payload, a.acked_at AS a_acked_at, a.acked_by"
            " FROM deliveries d JOIN alerts a ON a.id = d.alert_id"
            " WHERE d.status IN (?, ?) AND d.next_attempt_at <= ?",
            [*(s.value for s in ACTIVE_STATUSES), iso_utc(now)],
        )
        pairs = [(_alert_from(_Renamed(r)), _delivery_from(r)) for r in rows if r["id"] not in self._deferred_ids]
        pairs.sort(key=lambda p: (p[0].urgency is not Urgency.URGENT, p[1].next_attempt_at or "", p[1].id))
        return pairs

    def next_due_at(self) -> str | None:
        """Earliest next_attempt_at of any active delivery (ISO UTC), for the worker's sleep."""
        rows = self._read("SELECT MIN(next_attempt_at) AS t FROM deliveries WHERE status IN (?, ?)",
                          [s.value for s in ACTIVE_STATUSES])  # fmt: skip
        times = [r["t"] for r in rows if r["t"]]
        return min(times) if times else None

    def sent_since(self, relative: str, since: datetime, kinds: Sequence[AlertKind]) -> list[str]:
        """``sent_at`` of each alert (of ``kinds``) sent to ``relative`` since ``since``, oldest first."""
        marks = ", ".join("?" * len(kinds))
        rows = self._read(
            f"SELECT MIN(d.sent_at) AS t FROM deliveries d JOIN alerts a ON a.id = d.alert_id WHERE d.relative = ? "
            f"AND d.sent_at >= ? AND a.kind IN ({marks}) GROUP BY d.alert_id",
            [relative, iso_utc(since), *(k.value for k in kinds)],
        )
        return sorted(r["t"] for r in rows)

    def get_alert(self, alert_id: int) -> AlertRow | None:
        rows = self._read("SELECT * FROM alerts WHERE id = ?", [alert_id])
        return _alert_from(rows[0]) if rows else None

    def deliveries_for(self, alert_id: int) -> list[DeliveryRow]:
        rows = self._read("SELECT * FROM deliveries WHERE alert_id = ? ORDER BY escalation_step, abs(id)",
                          [alert_id])  # memory rows have negative ids
        return [_delivery_from(r) for r in rows]

    def recent(self, limit: int = 50) -> list[tuple[AlertRow, list[DeliveryRow]]]:
        """Newest alerts first (memory-held ones included), each with its deliveries."""
        rows = self._read("SELECT * FROM alerts ORDER BY id DESC LIMIT ?", [limit])
        alerts = sorted((_alert_from(r) for r in rows), key=lambda a: (a.created_at, a.id), reverse=True)[:limit]
        return [(a, self.deliveries_for(a.id)) for a in alerts]


class _Renamed:
    """A joined row read as an alerts row (the ``a_`` columns shadow the delivery's)."""

    def __init__(self, row: sqlite3.Row) -> None:
        self._row = row

    def __getitem__(self, key: str) -> Any:
        renamed = {"id": "a_id", "created_at": "a_created_at", "acked_at": "a_acked_at"}.get(key, key)
        return self._row[renamed]
