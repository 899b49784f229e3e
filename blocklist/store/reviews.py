"""A person's review of a call (mark fraud / not fraud, listened to): the review aggregate.

Kept apart from the detector's verdict so reviewed calls can be exported as evaluation
data; ``set_review`` is one spooled record, so the REVIEW event always says what the
label replaced.
"""

from __future__ import annotations

from datetime import datetime

from blocklist.store.engine import StoreEngine
from blocklist.store.records import Record
from blocklist.store.rows import CallRow
from screening.core.clock import iso_utc
from screening.core.model import ReviewLabel

__all__ = ["ReviewStore"]


class ReviewStore(StoreEngine):
    """Reviews of calls by the family."""

    def mark_reviewed(self, call_id: int, at: datetime | None = None) -> None:
        """A person has looked at (listened to) this call; unreviewed fraud is never deleted."""
        self._update_call(call_id, reviewed_at=iso_utc(at or self._clock()))

    def set_review(self, call_id: int, label: ReviewLabel, by: str, at: datetime | None = None) -> None:
        """A person marks the call fraud / not fraud (also reviewed, so retention may delete it later).

        A fraud mark also sets the verdict, so the log shows it; a REVIEW event keeps the
        detector's verdict as it was, and a later "not fraud" mark restores it. A later
        mark replaces an earlier one.
        """
        self._submit(Record("set_review", {"ref": self._ref(call_id), "label": ReviewLabel(label).value,
                                            "by": by, "at": iso_utc(at or self._clock())}))  # fmt: skip


    def reviewed_calls(self) -> list[CallRow]:
        """Calls a person marked fraud / not fraud, oldest first: the detector's evaluation data."""
        rows = self._query("SELECT * FROM calls WHERE review_label IS NOT NULL ORDER BY id")
        return [CallRow.from_row(r) for r in rows]
