"""What the store hands back: call, event, flag and recording rows, list entries, the call-log filter.

Plain frozen data and the pure checks on it (no I/O), so readers (web pages, retention,
review export) can depend on them without pulling in the write path.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from enum import StrEnum
from pathlib import PurePosixPath
from typing import Any

from screening.core.model import (
    Action,
    CallState,
    Category,
    EventKind,
    ListEntry,
    ListKind,
    MatchKind,
    Prompt,
    ReviewLabel,
    Verdict,
)

__all__ = [
    "CALL_INSERTABLE", "CALL_UPDATABLE", "ENTRY_COLUMNS", "FEED_SOURCE_PREFIX", "CallFilter", "CallRow", "EventRow",
    "FlagRow", "RecordingRow", "StoreError", "entry_from_row", "entry_from_tuple", "event_from_row", "feed_of",
    "recording_from_row", "relpath_problem",
]  # fmt: skip


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
            **{k: row[k] for k in CALL_TEXT_FIELDS},
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


CALL_TEXT_FIELDS = (
    "id", "call_uid", "started_at", "line", "raw_number", "number_e164", "name", "reason_code",
    "cid_date", "cid_time", "rule", "reason", "end_reason", "ended_at", "error",
    "recording", "recording_bytes", "recording_seconds", "score", "transcript", "reviewed_at", "fraud_at",
    "reviewed_by",
)  # fmt: skip -- copied as stored; the enum columns are converted in from_row
_RECORDING_FIELDS = frozenset({"recording", "recording_bytes", "recording_seconds"})
_DETECTION_FIELDS = frozenset({"verdict", "score", "transcript", "fraud_at"})
CALL_UPDATABLE = frozenset(
    {"category", "action", "rule", "reason", "prompt", "state", "end_reason", "ended_at", "error", "reviewed_at"}
) | _RECORDING_FIELDS | _DETECTION_FIELDS
CALL_INSERTABLE = frozenset(CALL_TEXT_FIELDS) - {"id"} | CALL_UPDATABLE


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



FEED_SOURCE_PREFIX = "feed:"


def feed_of(source: str) -> str:
    """The feed column for an entry's source: the feed name for ``feed:NAME``, else ''."""
    return source[len(FEED_SOURCE_PREFIX) :] if source.startswith(FEED_SOURCE_PREFIX) else ""


ENTRY_COLUMNS = ("list", "match", "value", "value_end", "source", "note", "added_at", "expires_at", "action")
_LIST_KINDS = {k.value: k for k in ListKind}
_MATCH_KINDS = {k.value: k for k in MatchKind}
_ACTIONS = {k.value: k for k in Action}


def entry_from_tuple(row: tuple[Any, ...]) -> ListEntry:
    """Fast path for load_lists (1 M rows): no dict per row, enum lookup by dict."""
    kind, match, value, value_end, source, note, added_at, expires_at, action = row
    return ListEntry(_LIST_KINDS[kind], _MATCH_KINDS[match], value, value_end or None, source, note, added_at, expires_at,
                     _ACTIONS.get(action))  # an unknown action (a newer version's) falls back to the list's


def entry_from_row(row: dict[str, Any]) -> ListEntry:
    return ListEntry(
        list=ListKind(row["list"]),
        match=MatchKind(row["match"]),
        value=row["value"],
        value_end=row["value_end"] or None,
        source=row["source"],
        note=row["note"],
        added_at=row["added_at"],
        expires_at=row["expires_at"],
        action=_ACTIONS.get(row.get("action") or ""),
    )



def recording_from_row(row: dict[str, Any]) -> RecordingRow:
    verdict = Verdict(row["verdict"]) if row["verdict"] else None
    return RecordingRow(row["id"], row["recording"], row["recording_bytes"], row["started_at"], verdict,
                        row["reviewed_at"])  # fmt: skip


def event_from_row(row: dict[str, Any]) -> EventRow:
    kind = row["kind"]
    known = kind in EventKind._value2member_map_
    return EventRow(
        id=row["id"],
        call_id=row["call_id"],
        at=row["at"],
        kind=EventKind(kind) if known else kind,
        detail=json.loads(row["detail"]),
    )
