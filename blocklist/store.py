"""The call store: call records, events and number lists in SQLite (via sqlite-utils).

Why it is shaped like this
--------------------------
A call record is evidence ("the bank called at 10:02 and we hung up"), so a
write must never be lost and must never stall or crash the daemon while the
phone is ringing. Every mutation is therefore a small *record*
(``{"rid", "op", "args"}``) applied by one function per op. Normally a record
is applied at once, in its own ``BEGIN IMMEDIATE`` transaction. If SQLite
refuses (locked beyond ``busy_timeout``, read-only file or filesystem, path
unusable …) the failure is logged, the record is kept in memory *and*
appended to a JSON-lines spool file (``<db name>.spool.jsonl`` next to the
database, or in ``spool_dir``). While anything is pending, later writes queue
behind it so order is kept; each later write (at most once per
``retry_interval``), ``open()`` and ``flush_pending()`` replay the spool and
the in-memory queue in one transaction, then truncate the spool.

Call handles while the database is unwritable
---------------------------------------------
Every call row carries a ``call_uid`` (UUID hex, UNIQUE) made before the first
write. ``begin_call`` returns the real row id when the insert succeeds, and a
*negative provisional id* (-1, -2, …, per Store instance) when it is spooled.
Spooled records name their call by ``call_uid``, never by a provisional id, so
a spool written by a process that later crashed replays correctly in the next
one. The store maps provisional ids to uids, and after a replay to the real
ids, so the daemon can keep using the handle it got (``set_state``,
``finish_call``, ``add_event``, ``get_call``) for the life of the Store.

Replay is idempotent: call inserts are ``INSERT OR IGNORE`` on ``call_uid``,
and the rid of the last spooled record applied is stored in ``meta`` in the
same transaction, so a crash between COMMIT and truncating the spool does not
duplicate events. A record SQLite rejects as invalid (integrity error — a bug,
not an outage) is logged in full and dropped, so it cannot block the queue.

Crash recovery is itself a record (``recover``), queued by ``open()``: applied
in order, it marks every call not yet finished *at that point of the stream*
as INTERRUPTED, which covers rows from earlier processes and their spooled
calls but never the calls of this process. Only the daemon should recover;
CLI tools open the store with ``recover_calls=False``.
"""

from __future__ import annotations

import dataclasses

import fcntl
import functools
import json
import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import Any, Self, TypeVar

from sqlite_utils import Database

from blocklist.durability import SYNCHRONOUS, append_durably, fsync_dir
from blocklist.lists import NumberLists, entry_problem, parse_iso_utc
from screening.core.clock import iso_utc
from screening.core.model import (
    UNFINISHED_STATES,
    Action,
    CallerID,
    CallState,
    Category,
    Decision,
    EventKind,
    ListEntry,
    ListKind,
    MatchKind,
    Prompt,
    ReviewLabel,
    Verdict,
)

__all__ = [
    "CallFilter", "CallRow", "CallState", "EventKind", "EventRow", "FlagRow", "RecordingRow", "ReviewLabel", "Store",
    "StoreError", "Verdict", "iso_utc", "relpath_problem",
]  # fmt: skip

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
T = TypeVar("T")
_SPOOL_MARKER = "spool_last_rid"
_GENERATION = "lists_generation"


class StoreError(RuntimeError):
    """The store cannot answer a read, or the database is unusable for this version."""


@dataclass(frozen=True, slots=True)
class CallRow:
    id: int
    call_uid: str
    started_at: str
    line: str
    raw_number: str | None
    number_e164: str | None
    name: str | None
    reason_code: str | None
    cid_date: str | None
    cid_time: str | None
    category: Category | None
    action: Action | None
    rule: str | None
    reason: str | None
    prompt: Prompt | None
    state: CallState
    end_reason: str | None
    ended_at: str | None
    error: str | None
    # schema 2: recording, detection, review (defaults so callers building rows by hand keep working)
    recording: str | None = None  # path relative to the recordings dir
    recording_bytes: int | None = None  # None while the recording is being written (or awaits repair)
    recording_seconds: float | None = None
    verdict: Verdict | None = None
    score: float | None = None
    transcript: str | None = None
    reviewed_at: str | None = None
    fraud_at: str | None = None
    # schema 5: a person's review (mark as fraud / not fraud)
    review_label: ReviewLabel | None = None
    reviewed_by: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: enums as their values."""
        return {f.name: (v.value if isinstance(v, StrEnum) else v)
                for f in dataclasses.fields(self) for v in (getattr(self, f.name),)}

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> CallRow:
        def opt(enum: type[StrEnum], key: str) -> Any:
            return enum(row[key]) if row[key] else None

        return cls(
            **{k: row[k] for k in _CALL_TEXT_FIELDS},
            category=opt(Category, "category"),
            action=opt(Action, "action"),
            prompt=opt(Prompt, "prompt"),
            state=CallState(row["state"]),
            verdict=opt(Verdict, "verdict"),
            review_label=opt(ReviewLabel, "review_label"),
        )


@dataclass(frozen=True, slots=True)
class CallFilter:
    """Which calls the log shows; empty fields do not filter.

    ``text`` is a case-insensitive substring of the caller-ID name, the number as sent
    or its E.164 form; ``numbers`` are further substrings of either number, for the
    forms a typed number takes (the page passes ``031234`` and ``+8131234`` for ``03-1234``).
    """

    verdict: Verdict | None = None
    action: Action | None = None
    text: str = ""
    numbers: tuple[str, ...] = ()

    def where(self) -> tuple[str, list[Any]]:
        """SQL condition on ``calls`` and its parameters (values bound, never formatted in)."""
        clauses, params = ["1"], []
        if self.verdict is not None:
            clauses.append("verdict = ?")
            params.append(self.verdict.value)
        if self.action is not None:
            clauses.append("action = ?")
            params.append(self.action.value)
        alternatives = []
        if self.text:
            alternatives += ["name LIKE ? ESCAPE '\\'", "raw_number LIKE ? ESCAPE '\\'",
                             "number_e164 LIKE ? ESCAPE '\\'"]  # fmt: skip
            params += [_like(self.text)] * 3
        for fragment in self.numbers:
            alternatives += ["raw_number LIKE ? ESCAPE '\\'", "number_e164 LIKE ? ESCAPE '\\'"]
            params += [_like(fragment)] * 2
        if alternatives:
            clauses.append(f"({' OR '.join(alternatives)})")
        return " AND ".join(clauses), params


def _like(text: str) -> str:
    """A LIKE pattern matching ``text`` anywhere, its own % and _ taken literally."""
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


_CALL_TEXT_FIELDS = (
    "id", "call_uid", "started_at", "line", "raw_number", "number_e164", "name", "reason_code",
    "cid_date", "cid_time", "rule", "reason", "end_reason", "ended_at", "error",
    "recording", "recording_bytes", "recording_seconds", "score", "transcript", "reviewed_at", "fraud_at",
    "reviewed_by",
)  # fmt: skip -- copied as stored; the enum columns are converted in from_row
_RECORDING_FIELDS = frozenset({"recording", "recording_bytes", "recording_seconds"})
_DETECTION_FIELDS = frozenset({"verdict", "score", "transcript", "fraud_at"})
_CALL_UPDATABLE = frozenset(
    {"category", "action", "rule", "reason", "prompt", "state", "end_reason", "ended_at", "error", "reviewed_at"}
) | _RECORDING_FIELDS | _DETECTION_FIELDS
_CALL_INSERTABLE = frozenset(_CALL_TEXT_FIELDS) - {"id"} | _CALL_UPDATABLE
_FIRST_EVENTS = "_events"  # begin_call's own events, written in the same transaction as the row


@dataclass(frozen=True, slots=True)
class FlagRow:
    """A phrase the detector flagged in a call, with where in the call's audio it started."""

    id: int
    call_id: int
    phrase: str
    category: str
    start_s: float | None
    at: str


@dataclass(frozen=True, slots=True)
class RecordingRow:
    """What retention needs to know about one call's recording."""

    call_id: int
    relpath: str
    bytes: int | None  # None: still being written, or left by a crash and not yet repaired
    started_at: str
    verdict: Verdict | None
    reviewed_at: str | None

    @property
    def protected(self) -> bool:
        """Unreviewed fraud is the evidence a family member has not seen yet: never delete it."""
        return self.verdict is Verdict.FRAUD and self.reviewed_at is None


@dataclass(frozen=True, slots=True)
class EventRow:
    id: int
    call_id: int | None
    at: str
    kind: EventKind | str  # str for kinds this version does not know
    detail: dict[str, Any]


def relpath_problem(relpath: str) -> str | None:
    """Why ``relpath`` cannot name a file inside the recordings dir, or None if it can.

    Pure string check (no I/O). Recording paths are stored relative so the recordings
    dir can move, and retention deletes by them: an absolute path or a ``..`` would let
    one bad row (or a tampered spool line) point a delete outside that dir.
    """
    if not isinstance(relpath, str) or not relpath.strip():
        return "empty"
    if "\x00" in relpath:
        return "contains NUL"
    path = PurePosixPath(relpath)
    if path.is_absolute():
        return "absolute path"
    if ".." in path.parts:
        return "contains '..'"
    if path.parts in ((), (".",)):
        return "names the recordings dir itself"
    return None


def _utc_now() -> datetime:
    return datetime.now(UTC)


# --------------------------------------------------------------------------- schema


def _migration_1(db: Database) -> None:
    """Initial schema. ``if_not_exists`` everywhere so a half-applied run can be redone."""
    db.table("calls").create(
        {
            "id": int, "call_uid": str, "started_at": str, "line": str, "raw_number": str,
            "number_e164": str, "name": str, "reason_code": str, "cid_date": str, "cid_time": str,
            "category": str, "action": str, "rule": str, "reason": str, "prompt": str,
            "state": str, "end_reason": str, "ended_at": str, "error": str,
        },  # fmt: skip
        pk="id",
        not_null={"call_uid", "started_at", "line", "state"},
        if_not_exists=True,
    )
    db.table("calls").create_index(["call_uid"], unique=True, if_not_exists=True)
    db.table("calls").create_index(["state"], if_not_exists=True)
    db.table("calls").create_index(["started_at"], if_not_exists=True)
    db.table("events").create(
        {"id": int, "call_id": int, "at": str, "kind": str, "detail": str},
        pk="id",
        not_null={"at", "kind", "detail"},
        if_not_exists=True,
    )
    db.table("events").create_index(["call_id"], if_not_exists=True)
    db.table("events").create_index(["at"], if_not_exists=True)
    # value_end is '' (not NULL) for exact/prefix entries: SQLite treats NULLs as
    # distinct in UNIQUE constraints, which would defeat the upsert.
    db.table("list_entries").create(
        {
            "id": int, "list": str, "match": str, "value": str, "value_end": str, "source": str,
            "note": str, "added_at": str, "expires_at": str,
        },  # fmt: skip
        pk="id",
        not_null={"list", "match", "value", "value_end", "source", "note", "added_at"},
        defaults={"value_end": "", "source": "local", "note": ""},
        if_not_exists=True,
    )
    db.table("list_entries").create_index(["list", "match", "value", "value_end"], unique=True, if_not_exists=True)
    db.table("meta").create({"key": str, "value": str}, pk="key", if_not_exists=True)
    db.execute("INSERT OR IGNORE INTO meta(key, value) VALUES (?, '0')", [_GENERATION])


_MIGRATION_2_COLUMNS = (
    ("recording", "TEXT"),
    ("recording_bytes", "INTEGER"),
    ("recording_seconds", "REAL"),
    ("verdict", "TEXT CHECK (verdict IN ('fraud', 'suspicious', 'clean'))"),
    ("score", "REAL"),
    ("transcript", "TEXT"),
    ("reviewed_at", "TEXT"),
    ("fraud_at", "TEXT"),
)


def _migration_2(db: Database) -> None:
    """Recordings, detection results and review state on calls; flagged phrases in ``flags``.

    Plain ``ALTER TABLE ADD COLUMN`` (no table rebuild) so a large call history upgrades
    in place in milliseconds; columns that already exist are skipped so a half-applied
    run can be redone, like migration 1. The CHECK on ``verdict`` makes a bad spooled
    record an integrity error (logged and dropped) instead of a wrong verdict.
    """
    existing = set(db.table("calls").columns_dict)
    for name, sql_type in _MIGRATION_2_COLUMNS:
        if name not in existing:
            db.execute(f"ALTER TABLE calls ADD COLUMN {name} {sql_type}")
    db.table("calls").create_index(["recording"], if_not_exists=True)
    db.table("flags").create(
        {"id": int, "call_id": int, "phrase": str, "category": str, "start_s": float, "at": str},
        pk="id",
        not_null={"call_id", "phrase", "category", "at"},
        if_not_exists=True,
    )
    db.table("flags").create_index(["call_id"], if_not_exists=True)


def _migration_3(db: Database) -> None:
    """The alert outbox (``blocklist.outbox``): every alert is written before it is sent.

    ``alerts`` holds one row per event worth telling the family (``dedupe_key`` UNIQUE makes
    "one alert per call" a database guarantee, not a hope); ``deliveries`` one row per
    relative and channel, with its retry/escalation state. ``channel_index`` points into the
    relative's ``notify`` list in the config (-1: a phone call): the URLs hold passwords and
    tokens, so the database keeps only the masked form for display. The CHECKs turn a bug
    into an integrity error instead of a silently unsendable row.
    """
    db.execute(
        "CREATE TABLE IF NOT EXISTS alerts ("
        " id INTEGER PRIMARY KEY,"
        " created_at TEXT NOT NULL,"
        " kind TEXT NOT NULL CHECK (kind IN ('fraud', 'repeat_block', 'health', 'digest', 'test')),"
        " urgency TEXT NOT NULL CHECK (urgency IN ('urgent', 'normal')),"
        " call_id INTEGER,"
        " dedupe_key TEXT NOT NULL UNIQUE,"
        " subject TEXT NOT NULL,"
        " body TEXT NOT NULL,"
        " payload TEXT NOT NULL DEFAULT '{}',"
        " acked_at TEXT,"
        " acked_by TEXT)"
    )
    db.execute("CREATE INDEX IF NOT EXISTS idx_alerts_created_at ON alerts (created_at)")
    db.execute("CREATE INDEX IF NOT EXISTS idx_alerts_call_id ON alerts (call_id)")
    db.execute(
        "CREATE TABLE IF NOT EXISTS deliveries ("
        " id INTEGER PRIMARY KEY,"
        " alert_id INTEGER NOT NULL REFERENCES alerts (id),"
        " relative TEXT NOT NULL,"
        " channel TEXT NOT NULL,"
        " channel_index INTEGER NOT NULL,"
        " status TEXT NOT NULL CHECK (status IN"
        "  ('pending', 'sending', 'sent', 'failed', 'acknowledged', 'expired')),"
        " attempts INTEGER NOT NULL DEFAULT 0,"
        " next_attempt_at TEXT,"
        " last_error TEXT,"
        " sent_at TEXT,"
        " acked_at TEXT,"
        " escalation_step INTEGER NOT NULL DEFAULT 0,"
        " UNIQUE (alert_id, relative, channel_index))"
    )
    db.execute("CREATE INDEX IF NOT EXISTS idx_deliveries_due ON deliveries (status, next_attempt_at)")
    db.execute("CREATE INDEX IF NOT EXISTS idx_deliveries_relative_sent ON deliveries (relative, sent_at)")


def _migration_4(db: Database) -> None:
    """Signed feeds (``blocklist.feeds``): feed entries live beside hand-made ones.

    ``list_entries.feed`` is '' for entries a person added and the feed's name for
    entries a feed delivered; it joins the unique key, so a feed update (delete
    the feed's rows, insert the new ones) never touches or duplicates-away a
    family's own entry for the same number. ``feeds`` records each trusted feed
    and what was last applied from it.
    """
    if "feed" not in db.table("list_entries").columns_dict:
        db.execute("ALTER TABLE list_entries ADD COLUMN feed TEXT NOT NULL DEFAULT ''")
        db.execute("UPDATE list_entries SET feed = substr(source, 6) WHERE source LIKE 'feed:%'")
    for index in db.table("list_entries").indexes:
        if index.unique and index.columns == ["list", "match", "value", "value_end"]:
            db.execute(f"DROP INDEX [{index.name}]")
    db.execute(
        "CREATE UNIQUE INDEX IF NOT EXISTS idx_list_entries_key ON list_entries (list, match, value, value_end, feed)"
    )
    db.execute("CREATE INDEX IF NOT EXISTS idx_list_entries_feed ON list_entries (feed)")
    db.execute(
        "CREATE TABLE IF NOT EXISTS feeds ("
        " name TEXT PRIMARY KEY,"
        " url TEXT NOT NULL,"
        " added_at TEXT NOT NULL,"
        " version INTEGER,"  # targets metadata version last applied
        " target_hash TEXT,"  # sha256 of the applied list file
        " entries INTEGER NOT NULL DEFAULT 0,"
        " applied_at TEXT,"  # when that version was applied
        " checked_at TEXT,"  # last successful, verified check (renews the entries' expiry)
        " error TEXT,"  # last failure, cleared by a successful check
        " error_at TEXT)"
    )


def _migration_5(db: Database) -> None:
    """A person's review of a call: ``review_label`` (fraud / not_fraud) and who gave it.

    ``reviewed_at`` (migration 2) is reused for when. The label is kept apart from the
    detector's ``verdict`` so reviewed calls can be exported as evaluation data for the
    phrase packs; the CHECK makes a bad spooled record an integrity error, as for verdicts.
    """
    existing = set(db.table("calls").columns_dict)
    if "review_label" not in existing:
        db.execute("ALTER TABLE calls ADD COLUMN review_label TEXT CHECK (review_label IN ('fraud', 'not_fraud'))")
    if "reviewed_by" not in existing:
        db.execute("ALTER TABLE calls ADD COLUMN reviewed_by TEXT")
    db.execute("CREATE INDEX IF NOT EXISTS idx_calls_review_label ON calls (review_label)")


# Append only; index + 1 is the PRAGMA user_version after it has run.
MIGRATIONS: tuple[Callable[[Database], None], ...] = (
    _migration_1, _migration_2, _migration_3, _migration_4, _migration_5,
)



# --------------------------------------------------------------------------- records


@dataclass(slots=True)
class _Record:
    """One mutation, as applied to the DB or written to the spool."""

    op: str
    args: dict[str, Any]
    rid: str = field(default_factory=lambda: uuid.uuid4().hex)
    filed: bool = False  # appended to the spool file

    def to_json(self) -> str:
        return json.dumps({"rid": self.rid, "op": self.op, "args": self.args}, ensure_ascii=False)

    @classmethod
    def from_json(cls, line: str) -> _Record:
        data = json.loads(line)
        return cls(op=data["op"], args=data["args"], rid=data["rid"], filed=True)


def _is_transient(exc: BaseException) -> bool:
    """Outage (locked, read-only, I/O, cannot open) -> retry later; anything else is a bad record."""
    return isinstance(exc, (sqlite3.OperationalError, OSError)) or type(exc) is sqlite3.DatabaseError


def _where(ref: dict[str, Any]) -> tuple[str, Any]:
    return ("id = ?", ref["id"]) if "id" in ref else ("call_uid = ?", ref["uid"])


def _apply_begin_call(db: Database, args: dict[str, Any]) -> int:
    args = dict(args)
    events = args.pop(_FIRST_EVENTS, [])
    if not set(args) <= _CALL_INSERTABLE:  # column names come from the spool file
        raise sqlite3.IntegrityError(f"unknown call columns: {sorted(set(args) - _CALL_INSERTABLE)}")
    cursor = db.execute(
        f"INSERT OR IGNORE INTO calls ({', '.join(args)}) VALUES ({', '.join('?' * len(args))})",
        list(args.values()),
    )
    call_id = int(db.execute("SELECT id FROM calls WHERE call_uid = ?", [args["call_uid"]]).fetchone()[0])
    if cursor.rowcount:  # not on an idempotent replay
        for event in events:
            _apply_add_event(db, {**event, "ref": {"id": call_id}})
    return call_id


def _detail_json(detail: dict[str, Any]) -> str:
    return json.dumps(detail, ensure_ascii=False, default=str, sort_keys=True)


def _apply_update_call(db: Database, args: dict[str, Any]) -> None:
    fields: dict[str, Any] = args["fields"]
    if not set(fields) <= _CALL_UPDATABLE:
        raise sqlite3.IntegrityError(f"not updatable: {sorted(set(fields) - _CALL_UPDATABLE)}")
    clause, key = _where(args["ref"])
    sets = ", ".join(f"{name} = ?" for name in fields)
    db.execute(f"UPDATE calls SET {sets} WHERE {clause}", [*fields.values(), key])


def _apply_add_event(db: Database, args: dict[str, Any]) -> None:
    ref = args["ref"]
    values = [args["at"], args["kind"], args["detail"]]
    if ref is None:
        db.execute("INSERT INTO events (call_id, at, kind, detail) VALUES (NULL, ?, ?, ?)", values)
    elif "id" in ref:
        db.execute("INSERT INTO events (call_id, at, kind, detail) VALUES (?, ?, ?, ?)", [ref["id"], *values])
    else:
        db.execute(
            "INSERT INTO events (call_id, at, kind, detail) "
            "VALUES ((SELECT id FROM calls WHERE call_uid = ?), ?, ?, ?)",
            [ref["uid"], *values],
        )


def _call_id_of(db: Database, ref: dict[str, Any]) -> int:
    """Row id for a record's call reference; IntegrityError (record dropped) if there is no such call."""
    clause, key = _where(ref)
    row = db.execute(f"SELECT id FROM calls WHERE {clause}", [key]).fetchone()
    if row is None:
        raise sqlite3.IntegrityError(f"no call {ref}")
    return int(row[0])


def _apply_add_flags(db: Database, args: dict[str, Any]) -> None:
    call_id = _call_id_of(db, args["ref"])
    for phrase, category, start_s in args["flags"]:
        db.execute(
            "INSERT INTO flags (call_id, phrase, category, start_s, at) VALUES (?, ?, ?, ?, ?)",
            [call_id, phrase, category, start_s, args["at"]],
        )


def _apply_set_review(db: Database, args: dict[str, Any]) -> None:
    """Label, reviewer and time on the call, plus a REVIEW event naming the detector's verdict.

    A fraud mark sets the verdict (the log shows it); a later "not fraud" puts the
    detector's own verdict back, as the first REVIEW event recorded it. One
    transaction, so the event always says what the label replaced.
    """
    call_id = _call_id_of(db, args["ref"])
    if args["label"] not in ReviewLabel._value2member_map_:  # from the spool file: drop it, never crash
        raise sqlite3.IntegrityError(f"unknown review label {args['label']!r}")
    label = ReviewLabel(args["label"])
    first = db.execute("SELECT detail FROM events WHERE call_id = ? AND kind = ? ORDER BY id LIMIT 1",
                       [call_id, EventKind.REVIEW.value]).fetchone()  # fmt: skip
    if first is not None:
        detector = json.loads(first[0]).get("detector_verdict")
    else:
        detector = db.execute("SELECT verdict FROM calls WHERE id = ?", [call_id]).fetchone()[0]
    verdict = Verdict.FRAUD.value if label is ReviewLabel.FRAUD else detector
    db.execute("UPDATE calls SET review_label = ?, reviewed_by = ?, reviewed_at = ?, verdict = ? WHERE id = ?",
               [label.value, args["by"], args["at"], verdict, call_id])  # fmt: skip
    detail = {"label": label.value, "by": args["by"], "detector_verdict": detector}
    db.execute("INSERT INTO events (call_id, at, kind, detail) VALUES (?, ?, ?, ?)",
               [call_id, args["at"], EventKind.REVIEW.value, _detail_json(detail)])  # fmt: skip


def _apply_recover(db: Database, args: dict[str, Any]) -> int:
    states = [s.value for s in UNFINISHED_STATES]
    cursor = db.execute(
        f"UPDATE calls SET state = ?, end_reason = COALESCE(end_reason, 'interrupted'), "
        f"ended_at = COALESCE(ended_at, ?) WHERE state IN ({', '.join('?' * len(states))})",
        [CallState.INTERRUPTED.value, args["at"], *states],
    )
    if cursor.rowcount:
        log.warning("marked %d call(s) left unfinished by a crash as interrupted", cursor.rowcount)
    return cursor.rowcount


def _bump_generation(db: Database) -> None:
    db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = ?", [_GENERATION])


FEED_SOURCE_PREFIX = "feed:"
_UPSERT_ENTRY = (
    "INSERT INTO list_entries (list, match, value, value_end, source, note, added_at, expires_at, feed) "
    "VALUES (:list, :match, :value, :value_end, :source, :note, :added_at, :expires_at, :feed) "
    "ON CONFLICT(list, match, value, value_end, feed) DO UPDATE SET "
    "source = excluded.source, note = excluded.note, expires_at = excluded.expires_at"
)


def feed_of(source: str) -> str:
    """The feed column for an entry's source: the feed name for ``feed:NAME``, else ''."""
    return source[len(FEED_SOURCE_PREFIX) :] if source.startswith(FEED_SOURCE_PREFIX) else ""


def _apply_add_entry(db: Database, args: dict[str, Any]) -> ListEntry:
    args = {**args, "feed": feed_of(args["source"])}
    db.execute(_UPSERT_ENTRY, args)
    _bump_generation(db)
    row = db.execute(
        "SELECT * FROM list_entries WHERE list = ? AND match = ? AND value = ? AND value_end = ? AND feed = ?",
        [args["list"], args["match"], args["value"], args["value_end"], args["feed"]],
    )
    return _entry_from_row(dict(zip([c[0] for c in row.description], row.fetchone())))


def _apply_remove_entry(db: Database, args: dict[str, Any]) -> bool:
    """Removes the entry whatever its origin (a feed's copy comes back with that feed's next
    version), or with ``own_only`` only the one a person added."""
    own = " AND feed = ''" if args.get("own_only") else ""
    cursor = db.execute(
        f"DELETE FROM list_entries WHERE list = ? AND match = ? AND value = ? AND value_end = ?{own}",
        [args["list"], args["match"], args["value"], args["value_end"]],
    )
    if cursor.rowcount:
        _bump_generation(db)
    return cursor.rowcount > 0


_APPLY: dict[str, Callable[[Database, dict[str, Any]], Any]] = {
    "begin_call": _apply_begin_call,
    "update_call": _apply_update_call,
    "add_event": _apply_add_event,
    "add_flags": _apply_add_flags,
    "set_review": _apply_set_review,
    "recover": _apply_recover,
    "add_entry": _apply_add_entry,
    "remove_entry": _apply_remove_entry,
}


_FEED_COLUMNS = {"url", "added_at", "version", "target_hash", "entries", "applied_at", "checked_at", "error",
                 "error_at"}  # fmt: skip
_ENTRY_COLUMNS = ("list", "match", "value", "value_end", "source", "note", "added_at", "expires_at")
_LIST_KINDS = {k.value: k for k in ListKind}
_MATCH_KINDS = {k.value: k for k in MatchKind}


@functools.lru_cache(maxsize=1024)
def _normal_expiry(text: str) -> str:
    """Cached: a 1 M-row feed carries one or a few distinct expiry strings."""
    return iso_utc(parse_iso_utc(text))


def _entry_from_tuple(row: tuple[Any, ...]) -> ListEntry:
    """Fast path for load_lists (1 M rows): no dict per row, enum lookup by dict."""
    kind, match, value, value_end, source, note, added_at, expires_at = row
    return ListEntry(_LIST_KINDS[kind], _MATCH_KINDS[match], value, value_end or None, source, note, added_at, expires_at)


def _entry_from_row(row: dict[str, Any]) -> ListEntry:
    return ListEntry(
        list=ListKind(row["list"]),
        match=MatchKind(row["match"]),
        value=row["value"],
        value_end=row["value_end"] or None,
        source=row["source"],
        note=row["note"],
        added_at=row["added_at"],
        expires_at=row["expires_at"],
    )


# --------------------------------------------------------------------------- store


class Store:
    """Calls, events and lists in one SQLite file; see the module docstring for the spool.

    Thread-safe (one lock around everything). ``busy_timeout`` bounds how long a
    write waits for another writer; ``retry_interval`` how often, while the
    database is failing, a write tries it again instead of going straight to
    the spool — so a ringing phone pays the busy wait at most once per interval.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        clock: Clock = _utc_now,
        spool_dir: str | Path | None = None,
        read_only: bool = False,
        recover_calls: bool = True,
        busy_timeout: float = 1.0,
        retry_interval: float = 5.0,
    ) -> None:
        self.path = Path(path)
        self.spool_path = Path(spool_dir or self.path.parent) / f"{self.path.name}.spool.jsonl"
        self._clock = clock
        self._read_only = read_only
        self._recover_calls = recover_calls
        self._busy_timeout = busy_timeout
        self._retry_interval = retry_interval
        self._lock = threading.RLock()
        self._db: Database | None = None
        self._ready = False  # connected and migrated
        self._opened = False
        self._pending: list[_Record] = []
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
                self._submit(_Record("recover", {"at": self._now()}), force=True)
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

    # ----------------------------------------------------------------- calls

    def begin_call(
        self,
        line: str,
        caller: CallerID,
        started_at: datetime | None = None,
        *,
        decision: Decision | None = None,
        events: Sequence[tuple[EventKind, dict[str, Any]]] = (),
    ) -> int:
        """Write the call row (OFFERED, or DECIDED with ``decision``) and its first events.

        One transaction, so the row exists before the line is touched at the cost of a
        single commit on the caller-ID-to-answer path. Returns the row id, or a negative
        provisional id if the write was spooled.
        """
        uid = uuid.uuid4().hex
        args: dict[str, Any] = {
            "call_uid": uid,
            "started_at": iso_utc(started_at or self._clock()),
            "line": line,
            "raw_number": caller.raw_number,
            "number_e164": caller.number_e164,
            "name": caller.name,
            "reason_code": caller.reason.value if caller.reason else None,
            "cid_date": caller.date,
            "cid_time": caller.time,
            "state": CallState.OFFERED.value,
        }
        if decision is not None:
            args.update(decision.as_dict(), state=CallState.DECIDED.value)
        if events:
            now = self._now()
            args[_FIRST_EVENTS] = [{"at": now, "kind": str(kind), "detail": _detail_json(detail)}
                                   for kind, detail in events]
        with self._lock:
            applied, call_id = self._submit(_Record("begin_call", args))
            if applied:
                return int(call_id)
            provisional = self._next_provisional
            self._next_provisional -= 1
            self._uid_of[provisional] = uid
            return provisional

    def adopt_recording(self, line: str, relpath: str, started_at: datetime, bytes_: int, seconds: float,
                        **detail: Any) -> int:  # fmt: skip
        """A recording whose call row was lost (power cut, database set aside): a new INTERRUPTED call
        linking it, with a RECORDING event (``action="adopted"``, ``detail``), in one transaction,
        so a crash can never adopt the same file twice. Returns the id (negative if spooled)."""
        problem = relpath_problem(relpath)
        if problem:
            raise ValueError(f"bad recording path {relpath!r}: {problem}")
        uid, now = uuid.uuid4().hex, self._now()
        args: dict[str, Any] = {
            "call_uid": uid, "started_at": iso_utc(started_at), "line": line, "state": CallState.INTERRUPTED.value,
            "end_reason": "interrupted", "ended_at": now,
            "recording": relpath, "recording_bytes": bytes_, "recording_seconds": seconds,
            _FIRST_EVENTS: [{"at": now, "kind": str(EventKind.RECORDING),
                             "detail": _detail_json({"action": "adopted", "path": relpath, **detail})}],
        }  # fmt: skip
        with self._lock:
            applied, call_id = self._submit(_Record("begin_call", args))
            if applied:
                return int(call_id)
            provisional = self._next_provisional
            self._next_provisional -= 1
            self._uid_of[provisional] = uid
            return provisional

    def record_decision(self, call_id: int, decision: Decision) -> None:
        self._update_call(call_id, state=CallState.DECIDED.value, **decision.as_dict())

    def set_state(self, call_id: int, state: CallState) -> None:
        self._update_call(call_id, state=state.value)

    def finish_call(self, call_id: int, end_reason: str, error: str | None = None) -> None:
        """End the call: COMPLETED, or FAILED when ``error`` is given."""
        state = CallState.FAILED if error else CallState.COMPLETED
        self._update_call(call_id, state=state.value, end_reason=end_reason, ended_at=self._now(), error=error)

    def add_event(self, call_id: int | None, kind: EventKind, **detail: Any) -> None:
        """Append an event; ``detail`` is stored as JSON (non-JSON values via str())."""
        args = {
            "ref": None if call_id is None else self._ref(call_id),
            "at": self._now(),
            "kind": str(kind),
            "detail": _detail_json(detail),
        }
        self._submit(_Record("add_event", args))

    def get_call(self, call_id: int) -> CallRow:
        """Raises KeyError if there is no such call (yet: a spooled call is not readable)."""
        ref = self._ref(call_id)
        clause, key = _where(ref)
        rows = self._query(f"SELECT * FROM calls WHERE {clause}", [key])
        if not rows:
            raise KeyError(call_id)
        return CallRow.from_row(rows[0])

    def recent_calls(self, limit: int = 50, offset: int = 0) -> list[CallRow]:
        """Newest first by row id (arrival order): a Pi without RTC may boot with a wrong clock."""
        rows = self._query("SELECT * FROM calls ORDER BY id DESC LIMIT ? OFFSET ?", [limit, offset])
        return [CallRow.from_row(r) for r in rows]

    def events_for(self, call_id: int) -> list[EventRow]:
        clause, key = _where(self._ref(call_id))
        rows = self._query(
            f"SELECT * FROM events WHERE call_id = (SELECT id FROM calls WHERE {clause}) ORDER BY id", [key]
        )
        return [_event_from_row(r) for r in rows]

    def count_calls(self, where: CallFilter | None = None) -> int:
        clause, params = (where or CallFilter()).where()
        return int(self._query(f"SELECT COUNT(*) AS n FROM calls WHERE {clause}", params)[0]["n"])

    def find_calls(self, where: CallFilter, limit: int = 50, offset: int = 0) -> list[CallRow]:
        """The call log filtered, newest first by row id (as ``recent_calls``), one page of it."""
        clause, params = where.where()
        rows = self._query(f"SELECT * FROM calls WHERE {clause} ORDER BY id DESC LIMIT ? OFFSET ?",
                           [*params, limit, offset])  # fmt: skip
        return [CallRow.from_row(r) for r in rows]

    def reviewed_calls(self) -> list[CallRow]:
        """Calls a person marked fraud / not fraud, oldest first: the detector's evaluation data."""
        rows = self._query("SELECT * FROM calls WHERE review_label IS NOT NULL ORDER BY id")
        return [CallRow.from_row(r) for r in rows]

    def alert_rows_for_call(self, call_id: int) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
        """The outbox's alerts about a call, oldest first, each with its delivery rows (raw columns).

        Read here rather than through ``blocklist.outbox.Outbox``: opening an Outbox takes over
        deliveries left "sending", which only the daemon's alert worker may do.
        """
        alerts = self._query("SELECT * FROM alerts WHERE call_id = ? ORDER BY id", [call_id])
        if not alerts:
            return []
        marks = ", ".join("?" * len(alerts))
        deliveries = self._query(f"SELECT * FROM deliveries WHERE alert_id IN ({marks}) "
                                 "ORDER BY escalation_step, id", [a["id"] for a in alerts])  # fmt: skip
        return [(a, [d for d in deliveries if d["alert_id"] == a["id"]]) for a in alerts]

    # ----------------------------------------------------------------- recordings & detection
    #
    # All of these go through _submit like every other write: while the database is
    # locked or read-only they are spooled and replayed in order, and they name a call
    # spooled itself by its call_uid, so nothing a call produced is lost to an outage.

    def set_recording(self, call_id: int, relpath: str, bytes_: int | None = None,
                      seconds: float | None = None) -> None:  # fmt: skip
        """Link the call's recording (``relpath`` relative to the recordings dir).

        Call it with only ``relpath`` when recording starts — the row then says "being
        written", so after a crash ``unfinished_recordings`` finds the file to repair —
        and again with the sizes when the recorder is closed (or the file repaired).
        Raises ValueError for an absolute path or one with ``..``: recordings live
        inside the recordings dir, and retention deletes by these paths.
        """
        problem = relpath_problem(relpath)
        if problem:
            raise ValueError(f"bad recording path {relpath!r}: {problem}")
        self._update_call(call_id, recording=relpath, recording_bytes=bytes_, recording_seconds=seconds)

    def clear_recording(self, call_id: int) -> None:
        """The recording is gone (deleted by retention, or found missing): forget the path."""
        self._update_call(call_id, recording=None, recording_bytes=None, recording_seconds=None)

    def add_flags(self, call_id: int, flags: Sequence[tuple[str, str, float]]) -> None:
        """Store flagged phrases as (phrase, category, start_s in the call's audio)."""
        if not flags:
            return
        rows = [[str(phrase), str(category), None if start is None else float(start)]
                for phrase, category, start in flags]  # fmt: skip
        self._submit(_Record("add_flags", {"ref": self._ref(call_id), "at": self._now(), "flags": rows}))

    def set_detection(self, call_id: int, verdict: str, score: float, transcript: str,
                      fraud_at: datetime | None = None) -> None:  # fmt: skip
        """Store the detector's verdict. ``fraud_at`` is when the fraud event fired (if it did);
        None leaves an earlier ``fraud_at`` in place, so the end-of-call update cannot erase it."""
        fields: dict[str, Any] = {"verdict": Verdict(verdict).value, "score": float(score), "transcript": transcript}
        if fraud_at is not None:
            fields["fraud_at"] = iso_utc(fraud_at)
        self._update_call(call_id, **fields)

    def mark_reviewed(self, call_id: int, at: datetime | None = None) -> None:
        """A person has looked at (listened to) this call; unreviewed fraud is never deleted."""
        self._update_call(call_id, reviewed_at=iso_utc(at or self._clock()))

    def set_review(self, call_id: int, label: ReviewLabel, by: str, at: datetime | None = None) -> None:
        """A person marks the call fraud / not fraud (also reviewed, so retention may delete it later).

        A fraud mark also sets the verdict, so the log shows it; a REVIEW event keeps the
        detector's verdict as it was, and a later "not fraud" mark restores it. A later
        mark replaces an earlier one.
        """
        self._submit(_Record("set_review", {"ref": self._ref(call_id), "label": ReviewLabel(label).value,
                                            "by": by, "at": iso_utc(at or self._clock())}))  # fmt: skip

    def flags_for(self, call_id: int) -> list[FlagRow]:
        clause, key = _where(self._ref(call_id))
        rows = self._query(
            f"SELECT * FROM flags WHERE call_id = (SELECT id FROM calls WHERE {clause}) ORDER BY id", [key]
        )
        return [FlagRow(**r) for r in rows]

    def recordings_oldest_first(self) -> list[RecordingRow]:
        """Every call that has a recording, in arrival order (row id: the clock may have been wrong)."""
        return self._recording_rows("recording IS NOT NULL")

    def unfinished_recordings(self) -> list[RecordingRow]:
        """Recordings still marked "being written" on calls no longer in progress: left by a crash.

        Only meaningful at start-up (after ``open()`` recovered interrupted calls), when no
        call of this process is recording yet.
        """
        states = [s.value for s in UNFINISHED_STATES]
        return self._recording_rows(
            f"recording IS NOT NULL AND recording_bytes IS NULL AND state NOT IN ({', '.join('?' * len(states))})",
            states,
        )

    def _recording_rows(self, where: str, params: list[Any] | None = None) -> list[RecordingRow]:
        rows = self._query(
            f"SELECT id, recording, recording_bytes, started_at, verdict, reviewed_at FROM calls "
            f"WHERE {where} ORDER BY id",
            params,
        )
        return [_recording_from_row(r) for r in rows]

    # ----------------------------------------------------------------- lists

    def add_entry(self, entry: ListEntry) -> ListEntry:
        """Insert, or update note/source/expiry of the same list+match+value(+end).

        Returns the stored entry; if the write was spooled, the entry as it will be stored.
        Raises ValueError for a malformed entry (use lists.parse_list_spec to build one).
        """
        args = self._entry_args(entry, self._now())
        applied, stored = self._submit(_Record("add_entry", args))
        return stored if applied else _entry_from_row(args)

    def remove_entry(self, list: ListKind, match: MatchKind, value: str, value_end: str | None = None, *,
                     own_only: bool = False) -> bool:  # fmt: skip
        """True if an entry was removed — or, when the database is unavailable, queued for removal.

        ``own_only`` leaves a feed's copy of the same entry alone (the web page removes what
        the family added; a police feed's number stays blocked).
        """
        args: dict[str, Any] = {"list": list.value, "match": match.value, "value": value, "value_end": value_end or ""}
        if own_only:
            args["own_only"] = True
        applied, removed = self._submit(_Record("remove_entry", args))
        return bool(removed) if applied else True

    def list_entries(self, list: ListKind) -> list[ListEntry]:
        rows = self._query("SELECT * FROM list_entries WHERE list = ? ORDER BY match, value, value_end", [list.value])
        return [_entry_from_row(r) for r in rows]

    def own_entries(self, list: ListKind, limit: int | None = None, offset: int = 0) -> list[ListEntry]:
        """Entries people added (no feed's), newest first; ``limit`` None = all of them."""
        rows = self._query("SELECT * FROM list_entries WHERE list = ? AND feed = '' "
                           "ORDER BY added_at DESC, id DESC LIMIT ? OFFSET ?",
                           [list.value, -1 if limit is None else limit, offset])  # fmt: skip
        return [_entry_from_row(r) for r in rows]

    def count_own_entries(self, list: ListKind) -> int:
        return int(self._query("SELECT count(*) AS n FROM list_entries WHERE list = ? AND feed = ''",
                               [list.value])[0]["n"])  # fmt: skip

    def replace_feed_entries(self, feed: str, entries: Iterable[ListEntry]) -> int:
        """Atomically make ``entries`` the whole content delivered by ``feed``.

        Every entry must have source ``feed:<feed>``. All are checked before
        anything is written; one transaction deletes the feed's old rows and
        inserts the new ones, so the daemon sees the old list or the new one,
        never a mix. Returns the number of rows now held for the feed.
        Raises ValueError for a bad entry, StoreError if the database is unavailable.
        """
        source = FEED_SOURCE_PREFIX + feed
        now = self._now()

        def rows() -> Iterator[dict[str, Any]]:  # streamed: a 1 M-row feed is never a list of dicts
            for entry in entries:
                if entry.source != source:
                    raise ValueError(f"entry {entry.describe()} has source {entry.source!r}, expected {source!r}")
                yield self._entry_args(entry, now) | {"feed": feed}

        def apply(db: Database) -> int:
            db.execute("DELETE FROM list_entries WHERE feed = ?", [feed])
            db.conn.executemany(_UPSERT_ENTRY, rows())
            _bump_generation(db)
            return int(db.execute("SELECT count(*) FROM list_entries WHERE feed = ?", [feed]).fetchone()[0])

        return self._bulk(apply)

    def import_entries(self, entries: Iterable[ListEntry]) -> int:
        """Add or update many hand-made entries in one transaction: all of them or none.

        Raises ValueError (naming the entry) and writes nothing if any is malformed.
        """
        now = self._now()
        count = 0

        def rows() -> Iterator[dict[str, Any]]:
            nonlocal count
            for entry in entries:
                count += 1
                yield self._entry_args(entry, now) | {"feed": feed_of(entry.source)}

        def apply(db: Database) -> int:
            db.conn.executemany(_UPSERT_ENTRY, rows())
            if count:
                _bump_generation(db)
            return count

        return self._bulk(apply)

    def renew_feed_entries(self, feed: str, expires_at: str | None) -> int:
        """Set a new expiry on every entry of ``feed`` (a verified check found the list current)."""
        expires = iso_utc(parse_iso_utc(expires_at)) if expires_at else None

        def apply(db: Database) -> int:
            cursor = db.execute("UPDATE list_entries SET expires_at = ? WHERE feed = ?", [expires, feed])
            _bump_generation(db)
            return int(cursor.rowcount)

        return self._bulk(apply)

    def feed_entry_counts(self) -> dict[str, int]:
        """Rows per feed name, including expired ones."""
        rows = self._query("SELECT feed, count(*) AS n FROM list_entries WHERE feed <> '' GROUP BY feed")
        return {r["feed"]: int(r["n"]) for r in rows}

    # ----------------------------------------------------------------- feeds

    def feeds(self) -> list[dict[str, Any]]:
        """The ``feeds`` table as dicts (see migration 4 for the columns), by name."""
        return self._query("SELECT * FROM feeds ORDER BY name")

    def feed(self, name: str) -> dict[str, Any] | None:
        rows = self._query("SELECT * FROM feeds WHERE name = ?", [name])
        return rows[0] if rows else None

    def save_feed(self, name: str, **fields: Any) -> None:
        """Insert or update a feed's row; ``url`` is needed when the feed is new."""
        unknown = set(fields) - _FEED_COLUMNS
        if unknown:
            raise ValueError(f"unknown feed field(s): {sorted(unknown)}")

        def apply(db: Database) -> None:
            if db.execute("SELECT 1 FROM feeds WHERE name = ?", [name]).fetchone() is None:
                if "url" not in fields:
                    raise ValueError(f"new feed {name!r} needs a url")
                db.execute("INSERT INTO feeds (name, url, added_at) VALUES (?, ?, ?)",
                           [name, fields["url"], fields.get("added_at") or self._now()])  # fmt: skip
            if fields:
                sets = ", ".join(f"{key} = ?" for key in fields)
                db.execute(f"UPDATE feeds SET {sets} WHERE name = ?", [*fields.values(), name])

        self._bulk(apply)

    def remove_feed(self, name: str) -> bool:
        """Forget a feed and delete every entry it delivered. True if it existed."""

        def apply(db: Database) -> bool:
            existed = db.execute("DELETE FROM feeds WHERE name = ?", [name]).rowcount > 0
            if db.execute("DELETE FROM list_entries WHERE feed = ?", [name]).rowcount:
                _bump_generation(db)
            return existed

        return self._bulk(apply)

    def _entry_args(self, entry: ListEntry, now: str) -> dict[str, Any]:
        problem = entry_problem(entry)
        if problem:
            raise ValueError(f"cannot store list entry {entry.describe()}: {problem}")
        try:
            expires = _normal_expiry(entry.expires_at) if entry.expires_at else None
        except ValueError as exc:
            raise ValueError(f"cannot store list entry {entry.describe()}: bad expiry {entry.expires_at!r}") from exc
        return {
            "list": entry.list.value,
            "match": entry.match.value,
            "value": entry.value,
            "value_end": entry.value_end or "",
            "source": entry.source,
            "note": entry.note,
            "added_at": entry.added_at or now,
            "expires_at": expires,
        }

    def _bulk(self, apply: Callable[[Database], T]) -> T:
        """Run ``apply`` in one write transaction, straight to the database.

        Bulk changes are never spooled (a million-row feed does not belong in a
        JSON-lines file); anything already queued is replayed first so order holds.
        Raises StoreError when the database cannot be written now.
        """
        with self._lock:
            if (self._pending or self._spool_has_data()) and not self.flush_pending():
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

    def lists_generation(self) -> int:
        """Bumped by every list change; the daemon reloads its snapshot when it moves."""
        rows = self._query("SELECT value FROM meta WHERE key = ?", [_GENERATION])
        return int(rows[0]["value"]) if rows else 0

    def load_lists(self, now: datetime) -> NumberLists:
        """Snapshot of unexpired entries, with the generation it was read at (one read transaction)."""
        now_iso = iso_utc(now)
        with self._lock:
            db = self._reader()
            try:
                with db.atomic():
                    generation = self.lists_generation()
                    # Feed rows first: when a feed and a person list the same number, the
                    # person's entry (its note, its expiry) is the one NumberLists keeps.
                    entries: list[ListEntry] = []
                    for where in ("feed <> ''", "feed = ''"):
                        rows = db.execute(
                            f"SELECT {', '.join(_ENTRY_COLUMNS)} FROM list_entries "
                            f"WHERE {where} AND (expires_at IS NULL OR expires_at > ?)",
                            [now_iso],
                        )
                        entries.extend(_entry_from_tuple(r) for r in rows)
            except sqlite3.Error as exc:
                raise StoreError(f"cannot read lists from {self.path}: {exc}") from exc
        lists = NumberLists.build(entries, now_iso, generation=generation)
        for entry, problem in lists.skipped:
            log.warning("ignoring list entry %s: %s", entry.describe(), problem)
        return lists

    # ----------------------------------------------------------------- spool & replay

    def flush_pending(self) -> bool:
        """Replay the spool and in-memory queue now. True if nothing is left pending."""
        with self._lock:
            if self._pending or self._spool_has_data():
                self._flush(batch_tail=None)
            return not self._pending

    def _submit(self, rec: _Record, *, force: bool = False) -> tuple[bool, Any]:
        """Apply ``rec`` after anything pending; on an outage spool it. Returns (applied, result)."""
        with self._lock:
            if force or time.monotonic() >= self._retry_at:
                results = self._flush(batch_tail=rec)
                if results is not None:
                    return True, results.get(rec.rid)
            self._pending.append(rec)
            self._spool_append(rec)
            return False, None

    def _flush(self, batch_tail: _Record | None) -> dict[str, Any] | None:
        """Apply spool file + unfiled memory records (+ ``batch_tail``) in one transaction."""
        if not self._ensure_ready():
            return None
        spool_context = self._spool_locked() if self._spool_has_data() else _nothing()
        try:
            with spool_context as spool:
                filed = _read_spool(spool) if spool is not None else []
                marker = self._db_meta(_SPOOL_MARKER)
                if marker in {r.rid for r in filed}:  # applied before a crash, not yet truncated
                    filed = filed[[r.rid for r in filed].index(marker) + 1 :]
                batch = filed + [r for r in self._pending if not r.filed]
                if batch_tail is not None:
                    batch.append(batch_tail)
                results = self._apply_batch(batch, marker=filed[-1].rid if filed else None)
                if spool is not None:
                    spool.truncate(0)
        except Exception as exc:
            if not _is_transient(exc):
                raise
            self._note_failure(exc)
            return None
        if self._pending or self._failing:
            log.warning("database %s writable again: %d queued record(s) applied", self.path, len(batch))
        self._pending.clear()
        self._failing = False
        self._resolve_provisional()
        return results

    def _apply_batch(self, batch: list[_Record], marker: str | None) -> dict[str, Any]:
        assert self._db is not None
        db, results = self._db, {}
        db.execute("BEGIN IMMEDIATE")
        try:
            for rec in batch:
                try:
                    with db.atomic():  # a savepoint: a bad record is undone alone
                        results[rec.rid] = _APPLY[rec.op](db, rec.args)
                except (sqlite3.Error, KeyError, TypeError) as exc:
                    if _is_transient(exc):
                        raise
                    log.error("dropping a record the database rejects (%s): %s", exc, rec.to_json())
            if marker is not None:
                db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", [_SPOOL_MARKER, marker])
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

    def _spool_append(self, rec: _Record) -> None:
        """Append to the spool file; once that fails, stay in memory to keep order."""
        if any(not r.filed for r in self._pending[:-1]):
            return
        try:
            self.spool_path.parent.mkdir(parents=True, exist_ok=True)
            created = not self.spool_path.exists()
            with self._spool_locked() as spool:
                append_durably(spool, rec.to_json() + "\n")
            if created:
                fsync_dir(self.spool_path.parent)
            rec.filed = True
        except OSError as exc:
            log.error("cannot write spool %s (%s): record kept in memory only", self.spool_path, exc)

    def _spool_has_data(self) -> bool:
        try:
            return self.spool_path.stat().st_size > 0
        except OSError:
            return False

    @contextmanager
    def _spool_locked(self) -> Iterator[Any]:
        """The spool file, opened for append and flock'ed; waits at most busy_timeout."""
        with open(self.spool_path, "a+", encoding="utf-8") as spool:
            deadline = time.monotonic() + self._busy_timeout
            while True:
                try:
                    fcntl.flock(spool, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise TimeoutError(f"spool {self.spool_path} is locked by another process") from None
                    time.sleep(0.01)
            try:
                yield spool
            finally:
                fcntl.flock(spool, fcntl.LOCK_UN)

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
            self._migrate(self._db)
        except (sqlite3.Error, OSError) as exc:
            if not _is_transient(exc):
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

    def _migrate(self, db: Database) -> None:
        version = int(db.execute("PRAGMA user_version").fetchone()[0])
        if version > len(MIGRATIONS):
            raise StoreError(f"{self.path} has schema version {version}; this mamoru knows {len(MIGRATIONS)}")
        for index in range(version, len(MIGRATIONS)):
            db.execute("BEGIN IMMEDIATE")
            try:
                MIGRATIONS[index](db)
                db.execute(f"PRAGMA user_version = {index + 1}")
                db.execute("COMMIT")
            except BaseException:
                db.rollback()
                raise
            log.info("migrated %s to schema version %d", self.path, index + 1)

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
        self._submit(_Record("update_call", {"ref": self._ref(call_id), "fields": fields}))


@contextmanager
def _nothing() -> Iterator[None]:
    yield None


def _read_spool(spool: Any) -> list[_Record]:
    """Records in file order; a torn last line (power cut mid-write) is skipped with a warning."""
    spool.seek(0)
    records = []
    for number, line in enumerate(spool, 1):
        if not line.strip():
            continue
        try:
            records.append(_Record.from_json(line))
        except (ValueError, KeyError) as exc:
            log.warning("skipping unreadable spool line %d (%s): %r", number, exc, line[:200])
    return records


def _recording_from_row(row: dict[str, Any]) -> RecordingRow:
    verdict = Verdict(row["verdict"]) if row["verdict"] else None
    return RecordingRow(row["id"], row["recording"], row["recording_bytes"], row["started_at"], verdict,
                        row["reviewed_at"])  # fmt: skip


def _event_from_row(row: dict[str, Any]) -> EventRow:
    kind = row["kind"]
    known = kind in EventKind._value2member_map_
    return EventRow(
        id=row["id"],
        call_id=row["call_id"],
        at=row["at"],
        kind=EventKind(kind) if known else kind,
        detail=json.loads(row["detail"]),
    )
