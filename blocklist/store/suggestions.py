""""Add to the family list?": numbers the household talks to again and again, offered, never added alone.

Learning, never silently: a number becomes an *offer* when, within ``window_days``, at least
``min_calls`` of its calls show the household really talked to it, and none of its calls was
ever judged or marked fraud or suspicious, or had a flagged phrase. A call counts as talked to when

* the screening flow's ``outcome`` event says ``connected`` (the household took it), or a
  ``household_decision`` event says ``connected``; or
* it was allowed or warned and lasted at least ``long_call_s`` from offer to end (a
  conversation, not a hang-up after the warning).

Only a person's answer is stored (``suggestions`` table): accepting adds an exact allowlist
entry in the same transaction; a dismissed number is never offered again, nor is an accepted
one after someone later removes it from the list. Numbers already on a list are not offered.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from blocklist.store.list_entries import ListStore
from blocklist.store.records import Record
from screening.core.clock import iso_utc
from screening.core.model import ListEntry, ListKind, MatchKind

__all__ = ["SUGGESTION_NOTE", "Suggestion", "SuggestionRules", "SuggestionState", "SuggestionStore"]


class SuggestionState(StrEnum):
    ACCEPTED = "accepted"
    DISMISSED = "dismissed"


@dataclass(frozen=True, slots=True)
class SuggestionRules:
    min_calls: int = 3
    window_days: int = 180
    long_call_s: float = 120.0


@dataclass(frozen=True, slots=True)
class Suggestion:
    number: str  # E.164
    calls: int  # talked-to calls in the window
    last_at: str  # ISO UTC of the latest of them


SUGGESTION_NOTE = "suggested: the household talks to this number"  # stored as is; shown translated

_TALKED_TO = """
SELECT c.number_e164 AS number, count(*) AS calls, max(c.started_at) AS last_at
FROM calls c
WHERE c.number_e164 IS NOT NULL AND c.number_e164 != '' AND c.started_at >= ?
  AND (
    EXISTS (SELECT 1 FROM events e WHERE e.call_id = c.id AND (
            (e.kind = 'outcome' AND json_extract(e.detail, '$.outcome') = 'connected')
         OR (e.kind = 'household_decision' AND json_extract(e.detail, '$.decision') = 'connected')))
    OR (c.action IN ('allow', 'warn') AND c.ended_at IS NOT NULL
        AND (julianday(c.ended_at) - julianday(c.started_at)) * 86400.0 >= ?)
  )
  AND c.number_e164 NOT IN (SELECT number FROM suggestions)
  AND c.number_e164 NOT IN (
    SELECT DISTINCT b.number_e164 FROM calls b WHERE b.number_e164 IS NOT NULL AND (
      b.verdict IN ('fraud', 'suspicious') OR b.review_label = 'fraud'
      OR EXISTS (SELECT 1 FROM flags f WHERE f.call_id = b.id)))
GROUP BY c.number_e164
HAVING count(*) >= ?
ORDER BY calls DESC, last_at DESC
"""


class SuggestionStore(ListStore):
    """Offers to add a number to the allowlist, and the household's answers."""

    def suggestions(self, now: datetime, rules: SuggestionRules = SuggestionRules()) -> list[Suggestion]:
        """Open offers, most talked-to first; numbers on any list (as of ``now``) left out."""
        since = iso_utc(now - timedelta(days=rules.window_days))
        rows = self._query(_TALKED_TO, [since, rules.long_call_s, rules.min_calls])
        lists = self.load_lists(now)
        return [Suggestion(r["number"], int(r["calls"]), r["last_at"]) for r in rows
                if lists.match_allow(r["number"]) is None and lists.match_block(r["number"]) is None]  # fmt: skip

    def answer_suggestion(self, number: str, state: SuggestionState, by: str, *, source: str = "family") -> None:
        """A person's answer; ACCEPTED also adds ``number`` to the allowlist (one transaction)."""
        args: dict[str, object] = {"number": number, "state": SuggestionState(state).value, "by": by,
                                   "at": self._now()}  # fmt: skip
        if state is SuggestionState.ACCEPTED:
            entry = ListEntry(ListKind.ALLOW, MatchKind.EXACT, number, source=source, note=SUGGESTION_NOTE)
            args["entry"] = self._entry_args(entry, self._now())
        self._submit(Record("answer_suggestion", args))

    def suggestion_answers(self) -> dict[str, SuggestionState]:
        return {r["number"]: SuggestionState(r["state"]) for r in self._query("SELECT number, state FROM suggestions")}
