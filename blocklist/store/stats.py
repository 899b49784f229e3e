"""The effectiveness figures' raw facts: one row per call (with what its events say) and per alert.

Read-only queries; the per-month sums, 撃退率 and the CSV are ``screening.stats``. A call's
facts come from the calls table (decision, category, detector verdict, review) and from its
event rows: ``played`` (did the caller hang up during the announcement?), ``challenge``,
``outcome`` and ``message`` (written by the screening call flow), and ``flags``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from blocklist.store.engine import StoreEngine
from screening.core.model import CallOutcome

__all__ = ["AlertFacts", "CallFacts", "StatsStore"]


@dataclass(frozen=True, slots=True)
class CallFacts:
    """What the statistics need to know about one call."""

    started_at: str  # ISO UTC
    action: str  # "" for a call that never got a decision
    category: str
    answered: bool  # an announcement was played (the caller reached mamoru)
    hung_up_in_announcement: bool  # a played prompt ended with the caller hanging up
    challenge_failed: bool  # a robocall challenge event says not passed
    outcome: str | None  # the OUTCOME event's CallOutcome value, if any
    messages: int  # MESSAGE events (messages left)
    fraud: bool  # judged fraud by the detector or marked fraud by a person
    flagged_phrases: int


@dataclass(frozen=True, slots=True)
class AlertFacts:
    created_at: str  # ISO UTC
    kind: str
    acked: bool


_OUTCOMES = {o.value for o in CallOutcome}

# One row per call; the event facts as correlated sub-queries over the (call_id) index.
_CALL_FACTS = """
SELECT c.started_at, COALESCE(c.action, '') AS action, COALESCE(c.category, '') AS category,
  EXISTS (SELECT 1 FROM events e WHERE e.call_id = c.id AND e.kind = 'played') AS answered,
  EXISTS (SELECT 1 FROM events e WHERE e.call_id = c.id AND e.kind = 'played'
          AND json_extract(e.detail, '$.end') = 'caller_hung_up') AS hung_up_in_announcement,
  EXISTS (SELECT 1 FROM events e WHERE e.call_id = c.id AND e.kind = 'challenge'
          AND json_extract(e.detail, '$.passed') IN (0, 'false')) AS challenge_failed,
  (SELECT e.detail FROM events e WHERE e.call_id = c.id AND e.kind = 'outcome'
   ORDER BY e.id DESC LIMIT 1) AS outcome_detail,
  (SELECT count(*) FROM events e WHERE e.call_id = c.id AND e.kind = 'message') AS messages,
  (c.verdict = 'fraud' OR c.review_label = 'fraud') AS fraud,
  (SELECT count(*) FROM flags f WHERE f.call_id = c.id) AS flagged_phrases
FROM calls c WHERE c.started_at >= ? AND c.started_at < ? ORDER BY c.started_at
"""


def _outcome_of(detail: str | None) -> str | None:
    """The CallOutcome an OUTCOME event carries (under ``outcome``, or as its only value)."""
    if not detail:
        return None
    try:
        data: Any = json.loads(detail)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return data if data in _OUTCOMES else None
    value = data.get("outcome")
    if value in _OUTCOMES:
        return str(value)
    return next((str(v) for v in data.values() if isinstance(v, str) and v in _OUTCOMES), None)


class StatsStore(StoreEngine):
    """Reads for ``mamoru stats`` and the statistics page."""

    def call_facts(self, since: str, until: str) -> list[CallFacts]:
        """Calls started in [since, until) (ISO UTC), oldest first."""
        rows = self._query(_CALL_FACTS, [since, until])
        return [CallFacts(
            started_at=r["started_at"], action=r["action"], category=r["category"], answered=bool(r["answered"]),
            hung_up_in_announcement=bool(r["hung_up_in_announcement"]), challenge_failed=bool(r["challenge_failed"]),
            outcome=_outcome_of(r["outcome_detail"]), messages=int(r["messages"]), fraud=bool(r["fraud"]),
            flagged_phrases=int(r["flagged_phrases"]),
        ) for r in rows]  # fmt: skip

    def alert_facts(self, since: str, until: str) -> list[AlertFacts]:
        """Alerts created in [since, until), test alerts left out (they measure nothing)."""
        rows = self._query("SELECT created_at, kind, acked_at IS NOT NULL AS acked FROM alerts "
                           "WHERE created_at >= ? AND created_at < ? AND kind != 'test' ORDER BY created_at",
                           [since, until])  # fmt: skip
        return [AlertFacts(r["created_at"], r["kind"], bool(r["acked"])) for r in rows]
