"""Every write to the call database as a record: ``{"rid", "op", "args"}`` and one apply function per op.

A record is what the engine applies in a transaction or, during an outage, appends
to the spool; so ``args`` must be JSON and must name a call by ``call_uid`` when it
has no row id yet. Column names in ``args`` come from the spool file too, and are
checked against the known columns before they reach SQL.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlite_utils import Database

from blocklist.store.rows import (
    CALL_INSERTABLE,
    CALL_UPDATABLE,
    entry_from_row,
    feed_of,
)
from blocklist.store.schema import LISTS_GENERATION
from screening.core.model import (
    UNFINISHED_STATES,
    CallState,
    EventKind,
    ListEntry,
    ReviewLabel,
    Verdict,
)

__all__ = ["APPLY", "FIRST_EVENTS", "UPSERT_ENTRY", "Record", "bump_generation", "detail_json", "is_transient",
           "where"]  # fmt: skip

log = logging.getLogger(__name__)

FIRST_EVENTS = "_events"  # begin_call's own events, written in the same transaction as the row


@dataclass(slots=True)
class Record:
    """One mutation, as applied to the DB or written to the spool."""

    op: str
    args: dict[str, Any]
    rid: str = field(default_factory=lambda: uuid.uuid4().hex)
    filed: bool = False  # appended to the spool file

    def to_json(self) -> str:
        return json.dumps({"rid": self.rid, "op": self.op, "args": self.args}, ensure_ascii=False)

    @classmethod
    def from_json(cls, line: str) -> Record:
        data = json.loads(line)
        return cls(op=data["op"], args=data["args"], rid=data["rid"], filed=True)


def is_transient(exc: BaseException) -> bool:
    """Outage (locked, read-only, I/O, cannot open) -> retry later; anything else is a bad record."""
    return isinstance(exc, (sqlite3.OperationalError, OSError)) or type(exc) is sqlite3.DatabaseError


def where(ref: dict[str, Any]) -> tuple[str, Any]:
    return ("id = ?", ref["id"]) if "id" in ref else ("call_uid = ?", ref["uid"])


def _apply_begin_call(db: Database, args: dict[str, Any]) -> int:
    args = dict(args)
    events = args.pop(FIRST_EVENTS, [])
    if not set(args) <= CALL_INSERTABLE:  # column names come from the spool file
        raise sqlite3.IntegrityError(f"unknown call columns: {sorted(set(args) - CALL_INSERTABLE)}")
    cursor = db.execute(
        f"INSERT OR IGNORE INTO calls ({', '.join(args)}) VALUES ({', '.join('?' * len(args))})",
        list(args.values()),
    )
    call_id = int(db.execute("SELECT id FROM calls WHERE call_uid = ?", [args["call_uid"]]).fetchone()[0])
    if cursor.rowcount:  # not on an idempotent replay
        for event in events:
            _apply_add_event(db, {**event, "ref": {"id": call_id}})
    return call_id


def detail_json(detail: dict[str, Any]) -> str:
    return json.dumps(detail, ensure_ascii=False, default=str, sort_keys=True)


def _apply_update_call(db: Database, args: dict[str, Any]) -> None:
    fields: dict[str, Any] = args["fields"]
    if not set(fields) <= CALL_UPDATABLE:
        raise sqlite3.IntegrityError(f"not updatable: {sorted(set(fields) - CALL_UPDATABLE)}")
    clause, key = where(args["ref"])
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
    clause, key = where(ref)
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
               [call_id, args["at"], EventKind.REVIEW.value, detail_json(detail)])  # fmt: skip


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


def bump_generation(db: Database) -> None:
    db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = ?", [LISTS_GENERATION])



UPSERT_ENTRY = (
    "INSERT INTO list_entries (list, match, value, value_end, source, note, added_at, expires_at, feed, action) "
    "VALUES (:list, :match, :value, :value_end, :source, :note, :added_at, :expires_at, :feed, :action) "
    "ON CONFLICT(list, match, value, value_end, feed) DO UPDATE SET "
    "source = excluded.source, note = excluded.note, expires_at = excluded.expires_at, action = excluded.action"
)



def _apply_add_entry(db: Database, args: dict[str, Any]) -> ListEntry:
    args = {"action": "", **args, "feed": feed_of(args["source"])}  # a spooled record from before schema 7
    db.execute(UPSERT_ENTRY, args)
    bump_generation(db)
    row = db.execute(
        "SELECT * FROM list_entries WHERE list = ? AND match = ? AND value = ? AND value_end = ? AND feed = ?",
        [args["list"], args["match"], args["value"], args["value_end"], args["feed"]],
    )
    return entry_from_row(dict(zip([c[0] for c in row.description], row.fetchone())))


def _apply_remove_entry(db: Database, args: dict[str, Any]) -> bool:
    """Removes the entry whatever its origin (a feed's copy comes back with that feed's next
    version), or with ``own_only`` only the one a person added."""
    own = " AND feed = ''" if args.get("own_only") else ""
    cursor = db.execute(
        f"DELETE FROM list_entries WHERE list = ? AND match = ? AND value = ? AND value_end = ?{own}",
        [args["list"], args["match"], args["value"], args["value_end"]],
    )
    if cursor.rowcount:
        bump_generation(db)
    return cursor.rowcount > 0


_SUGGESTION_STATES = ("accepted", "dismissed")


def _apply_answer_suggestion(db: Database, args: dict[str, Any]) -> None:
    """A person's answer to "add to the family list?"; an acceptance adds the allowlist entry in the
    same transaction, so the list never holds a number whose offer still shows, nor the reverse."""
    if args["state"] not in _SUGGESTION_STATES:  # from the spool file: drop it, never crash
        raise sqlite3.IntegrityError(f"unknown suggestion state {args['state']!r}")
    db.execute("INSERT INTO suggestions (number, state, decided_at, decided_by) VALUES (?, ?, ?, ?) "
               "ON CONFLICT(number) DO UPDATE SET state = excluded.state, decided_at = excluded.decided_at, "
               "decided_by = excluded.decided_by", [args["number"], args["state"], args["at"], args["by"]])  # fmt: skip
    if args.get("entry"):
        _apply_add_entry(db, args["entry"])


APPLY: dict[str, Callable[[Database, dict[str, Any]], Any]] = {
    "begin_call": _apply_begin_call,
    "update_call": _apply_update_call,
    "add_event": _apply_add_event,
    "add_flags": _apply_add_flags,
    "set_review": _apply_set_review,
    "recover": _apply_recover,
    "add_entry": _apply_add_entry,
    "remove_entry": _apply_remove_entry,
    "answer_suggestion": _apply_answer_suggestion,
}

