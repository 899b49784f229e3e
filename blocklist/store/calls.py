"""Calls, their events, flagged phrases and recordings: the call aggregate of the store.

Every write goes through the engine's ``_submit``: while the database is locked or
read-only it is spooled and replayed in order, naming a call that is itself only
spooled by its ``call_uid``, so nothing a call produced is lost to an outage.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from blocklist.store.engine import StoreEngine
from blocklist.store.records import FIRST_EVENTS, Record, detail_json, where
from blocklist.store.rows import (
    CallFilter,
    CallRow,
    EventRow,
    FlagRow,
    RecordingRow,
    event_from_row,
    recording_from_row,
    relpath_problem,
)
from screening.core.clock import iso_utc
from screening.core.model import (
    UNFINISHED_STATES,
    CallerID,
    CallState,
    Decision,
    EventKind,
    Verdict,
)

__all__ = ["CallStore"]


class CallStore(StoreEngine):
    """Writes and reads of calls, events, flags and recordings."""

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
            args[FIRST_EVENTS] = [{"at": now, "kind": str(kind), "detail": detail_json(detail)}
                                   for kind, detail in events]
        return self._submit_new_call(uid, args)

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
            FIRST_EVENTS: [{"at": now, "kind": str(EventKind.RECORDING),
                             "detail": detail_json({"action": "adopted", "path": relpath, **detail})}],
        }  # fmt: skip
        return self._submit_new_call(uid, args)

    def _submit_new_call(self, uid: str, args: dict[str, Any]) -> int:
        """Write a new call row; while the database refuses writes, a negative provisional id
        that the spool replay maps to the real one by ``call_uid``."""
        with self._lock:
            applied, call_id = self._submit(Record("begin_call", args))
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
            "detail": detail_json(detail),
        }
        self._submit(Record("add_event", args))

    def get_call(self, call_id: int) -> CallRow:
        """Raises KeyError if there is no such call (yet: a spooled call is not readable)."""
        ref = self._ref(call_id)
        clause, key = where(ref)
        rows = self._query(f"SELECT * FROM calls WHERE {clause}", [key])
        if not rows:
            raise KeyError(call_id)
        return CallRow.from_row(rows[0])

    def recent_calls(self, limit: int = 50, offset: int = 0) -> list[CallRow]:
        """Newest first by row id (arrival order): a Pi without RTC may boot with a wrong clock."""
        rows = self._query("SELECT * FROM calls ORDER BY id DESC LIMIT ? OFFSET ?", [limit, offset])
        return [CallRow.from_row(r) for r in rows]

    def events_for(self, call_id: int) -> list[EventRow]:
        clause, key = where(self._ref(call_id))
        rows = self._query(
            f"SELECT * FROM events WHERE call_id = (SELECT id FROM calls WHERE {clause}) ORDER BY id", [key]
        )
        return [event_from_row(r) for r in rows]

    def calls_with_event(self, kind: EventKind, call_ids: Sequence[int]) -> set[int]:
        """Which of ``call_ids`` (row ids) have at least one event of ``kind``: one query for a page of the log."""
        ids = [i for i in call_ids if i > 0][:1000]  # SQLite's bound-parameter limit is far above a page
        if not ids:
            return set()
        rows = self._query(f"SELECT DISTINCT call_id FROM events WHERE kind = ? AND call_id IN ({', '.join('?' * len(ids))})",
                           [str(kind), *ids])  # fmt: skip
        return {int(r["call_id"]) for r in rows}

    def count_calls(self, where: CallFilter | None = None) -> int:
        clause, params = (where or CallFilter()).where()
        return int(self._query(f"SELECT COUNT(*) AS n FROM calls WHERE {clause}", params)[0]["n"])

    def find_calls(self, where: CallFilter, limit: int = 50, offset: int = 0) -> list[CallRow]:
        """The call log filtered, newest first by row id (as ``recent_calls``), one page of it."""
        clause, params = where.where()
        rows = self._query(f"SELECT * FROM calls WHERE {clause} ORDER BY id DESC LIMIT ? OFFSET ?",
                           [*params, limit, offset])  # fmt: skip
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
        self._submit(Record("add_flags", {"ref": self._ref(call_id), "at": self._now(), "flags": rows}))

    def set_detection(self, call_id: int, verdict: str, score: float, transcript: str,
                      fraud_at: datetime | None = None) -> None:  # fmt: skip
        """Store the detector's verdict. ``fraud_at`` is when the fraud event fired (if it did);
        None leaves an earlier ``fraud_at`` in place, so the end-of-call update cannot erase it."""
        fields: dict[str, Any] = {"verdict": Verdict(verdict).value, "score": float(score), "transcript": transcript}
        if fraud_at is not None:
            fields["fraud_at"] = iso_utc(fraud_at)
        self._update_call(call_id, **fields)

    def flags_for(self, call_id: int) -> list[FlagRow]:
        clause, key = where(self._ref(call_id))
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
        return [recording_from_row(r) for r in rows]
