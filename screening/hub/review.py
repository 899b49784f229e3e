"""The reviewer's decision on a reported number, and the only way a number leaves the hub: the signed feed.

Approving re-publishes every approved number as the feed's list with ``FeedRepository`` (the same
code as ``mamoru publish numbers``), so units block it at their next feed check and keep their
own rules: the family allowlist still wins on the unit. A number must be in the review queue
(>= 3 households, not an emergency or official number, not decided before) to be approved.
"""

from __future__ import annotations

import logging
from enum import StrEnum
from pathlib import Path

from blocklist.feed_publisher import FeedRepository, PublishResult, feed_file
from screening.core.clock import iso_utc, utc_now
from screening.core.model import ListEntry, ListKind, MatchKind

from .store import HubStore, is_protected_number

log = logging.getLogger(__name__)


class Decision(StrEnum):
    APPROVED = "approved"
    REJECTED = "rejected"


class ReviewError(Exception):
    """The number cannot be decided (not in the queue, protected, decided already)."""


def decide(store: HubStore, number: str, decision: Decision, by: str, feed_repo: Path | None,
           home_region: str = "JP") -> PublishResult | None:
    """Record the decision; an approval publishes the new list (returns the publish result)."""
    if is_protected_number(number):
        raise ReviewError(f"{number} is an emergency or official number: never blocked")
    if number not in {entry.number for entry in store.review_queue()}:
        raise ReviewError(f"{number} is not in the review queue (fewer than 3 households, or decided already)")
    store.decide(number, decision.value, by)
    log.info("reviewer %s %s %s", by, decision.value, number)
    if decision is not Decision.APPROVED:
        return None
    if feed_repo is None:
        raise ReviewError("no feed repository configured: the approval is recorded but not published")
    return publish_approved(store, feed_repo, home_region)


def publish_approved(store: HubStore, feed_repo: Path, home_region: str = "JP") -> PublishResult:
    """Publish every approved number as the feed's list (idempotent: re-run after a failed publish)."""
    numbers = store.approved_numbers()
    now = iso_utc(utc_now(), timespec="seconds")
    entries = [ListEntry(ListKind.BLOCK, MatchKind.EXACT, n, source="hub", note="reported by 3+ households",
                         added_at=now) for n in numbers]  # fmt: skip
    result = FeedRepository(feed_repo).publish_numbers(feed_file(entries, home_region), len(entries))
    store.mark_published(numbers, result.targets_version)
    log.info("published %d reviewed numbers as feed targets v%d", len(entries), result.targets_version)
    return result
