"""Messages a caller left (screen flow) in the family's alerts: the digest lists them, a fraud one is urgent.

The facts are read from the store (the MESSAGE event the screen flow writes, the call's
flags) and kept in the alert's payload; ``render_messages`` words them per relative's
language and the unit's time zone when the alert is sent.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from datetime import tzinfo
from typing import TYPE_CHECKING, Any

from screening.core.clock import parse_iso_utc
from screening.core.model import EventKind, Verdict
from screening.core.numbers import national_format

if TYPE_CHECKING:
    from blocklist.store import Store
    from blocklist.store.rows import CallRow, EventRow

__all__ = ["DIGEST_MESSAGES_MAX", "digest_messages", "message_event", "message_fraud_facts", "render_messages"]

DIGEST_MESSAGES_MAX = 20  # a longer list would bury the summary; the web page has them all


def message_event(events: Sequence[EventRow]) -> EventRow | None:
    found = [e for e in events if e.kind == EventKind.MESSAGE]
    return found[-1] if found else None


def _seconds(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def caller_text(row: CallRow, region: str) -> str:
    if row.number_e164:
        return national_format(row.number_e164, region)
    return row.raw_number or "?"


def message_facts(row: CallRow, event: EventRow, region: str, url: str | None) -> dict[str, Any]:
    """What a relative needs about one message: who, when (UTC, worded locally when sent), how long, where."""
    seconds = _seconds(event.detail.get("seconds"))
    return {"call_id": row.id, "caller": caller_text(row, region), "at": event.at,
            "seconds": round(seconds) if seconds is not None else None, "url": url}  # fmt: skip


def digest_messages(store: Store, calls: Sequence[CallRow], region: str,
                    url_for: Callable[[int], str | None]) -> list[dict[str, Any]]:  # fmt: skip
    """The messages left during the digest's calls, oldest first, at most DIGEST_MESSAGES_MAX."""
    with_message = store.calls_with_event(EventKind.MESSAGE, [c.id for c in calls])
    facts = []
    for row in sorted((c for c in calls if c.id in with_message), key=lambda c: c.id)[:DIGEST_MESSAGES_MAX]:
        event = message_event(store.events_for(row.id))
        if event is not None:
            facts.append(message_facts(row, event, region, url_for(row.id)))
    return facts


def message_fraud_facts(store: Store, call_id: int, region: str, url: str | None,
                        heard: Sequence[tuple[str, str]] = ()) -> dict[str, Any] | None:  # fmt: skip
    """The urgent alert's facts if the call has a message and is judged fraud (``heard``: phrases and
    categories just flagged, when the verdict is not stored yet), else None."""
    try:
        row = store.get_call(call_id)
    except KeyError:
        return None
    event = message_event(store.events_for(call_id))
    if event is None:
        return None
    flags = [(f.phrase, f.category) for f in store.flags_for(call_id)] + list(heard)
    if row.verdict is not Verdict.FRAUD and not heard:
        return None
    facts = message_facts(row, event, region, url)
    facts.update({"message": True, "phrases": list(dict.fromkeys(p for p, _ in flags)),
                  "categories": list(dict.fromkeys(c for _, c in flags))})  # fmt: skip
    return facts


def render_messages(messages: Sequence[dict[str, Any]], texts: Mapping[str, str], tz: tzinfo | None) -> list[str]:
    """One line per message: 「📩 伝言 03-1234-5678 — 12月6日 10:05 JST・12秒」 and its link."""
    lines = []
    for m in messages:
        lines.append(texts["message.line"].format(caller=m.get("caller") or "?", when=when_text(m.get("at"), texts, tz),
                                                  seconds=m.get("seconds") if m.get("seconds") is not None else "?"))
        if m.get("url"):
            lines.append(texts["link"].format(url=m["url"]))
    return lines


def when_text(at: object, texts: Mapping[str, str], tz: tzinfo | None) -> str:
    """Local date, time and zone name (a relative abroad reads the household's time, and knows it)."""
    if not isinstance(at, str):
        return "?"
    try:
        local = parse_iso_utc(at).astimezone(tz)
    except ValueError:
        return "?"
    return texts["message.when"].format(month=local.month, day=local.day, time=f"{local:%H:%M}",
                                        zone=local.tzname() or "")  # fmt: skip
