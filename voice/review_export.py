"""``mamoru review-export``: calls people marked fraud / not fraud, as evaluation data for the detector.

Families mark calls on the web page ("it was fraud" / "it was not"). Those labels
are the only ground truth from real lines, so this writes them in the input format
of ``mamoru detect --jsonl`` — one ``{"id", "text", "lang"}`` object per line, plus
``label`` (``fraud`` / ``not_fraud``), ``detector_verdict`` (what the detector said
before the review) and ``reviewed_at`` — so a phrase-pack change can be scored
against them:

    mamoru review-export -o reviewed.jsonl
    mamoru detect --jsonl reviewed.jsonl      # compare each verdict with the label

Calls without a transcript (no speech model, or nothing said) are skipped and counted.
Transcripts are what callers said: the file is personal data, written mode 0600.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from blocklist.store import Store
from blocklist.store.rows import CallRow
from screening.core.model import EventKind

log = logging.getLogger(__name__)


def review_records(store: Store, language: str, rows: list[CallRow] | None = None) -> Iterator[dict[str, Any]]:
    """One record per reviewed call (``rows``, default all of them) with a transcript, oldest first."""
    for row in store.reviewed_calls() if rows is None else rows:
        text = _transcript(store, row)
        if not text or row.review_label is None:
            continue
        yield {"id": row.id, "text": text, "lang": language, "label": row.review_label.value,
               "detector_verdict": _detector_verdict(store, row), "reviewed_at": row.reviewed_at}  # fmt: skip


def _transcript(store: Store, row: CallRow) -> str:
    """The stored transcript; else the live segments (a call cut off before its end-of-call update)."""
    if row.transcript and row.transcript.strip():
        return row.transcript
    texts = [str(e.detail["text"]) for e in store.events_for(row.id)
             if e.kind == EventKind.TRANSCRIPT and isinstance(e.detail.get("text"), str)]  # fmt: skip
    return " ".join(t for t in texts if t)


def _detector_verdict(store: Store, row: CallRow) -> str | None:
    """The verdict before the first review: a fraud mark overwrites the call's verdict column."""
    for event in store.events_for(row.id):
        if event.kind == EventKind.REVIEW:
            verdict = event.detail.get("detector_verdict")
            return verdict if isinstance(verdict, str) else None
    return row.verdict.value if row.verdict else None
