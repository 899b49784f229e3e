"""What the call pages show: calls, transcripts with flagged phrases, events and alerts as plain values.

Everything a caller said is attacker-controlled text: the transcript is split into plain-text
pieces here, and only the template (with Jinja's autoescaping) wraps flagged ones in ``<mark>``.
The date, note and paging helpers are shared with pages_lists.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from datetime import datetime, tzinfo
from typing import Any

from blocklist.lists import parse_iso_utc
from blocklist.outbox import VOICE_CHANNEL, AlertKind, DeliveryStatus
from blocklist.store.rows import CallRow, EventRow, FlagRow
from blocklist.store.suggestions import SUGGESTION_NOTE
from screening.core.model import (
    CallState,
    EventKind,
    Language,
    Reason,
    ReviewLabel,
    Verdict,
)
from screening.core.numbers import national_format
from screening.web.i18n import translate

log = logging.getLogger(__name__)

MAX_PAGE = 100_000
WEB_NOTE = "from the web page"  # stored as is; shown translated (see note_text)
WEB_SOURCE = "family"

# --------------------------------------------------------------------------- shared with pages_lists


def local_time(iso: str | None, zone: tzinfo, lang: Language, now: datetime, *, seconds: bool = False) -> str:
    """'今日 14:05', '昨日 9:30', '11月3日(月) 14:05' (with the year when not this year)."""
    if not iso:
        return ""
    try:
        moment = parse_iso_utc(iso).astimezone(zone)
    except ValueError:
        return iso
    today = now.astimezone(zone).date()
    clock = moment.strftime("%H:%M:%S" if seconds else "%H:%M")
    days = (today - moment.date()).days
    if days == 0:
        return translate(lang, "calls.today", time=clock)
    if days == 1:
        return translate(lang, "calls.yesterday", time=clock)
    return translate(lang, "calls.date" if moment.year == today.year else "calls.date_year",
                     weekday=translate(lang, f"calls.weekday.{moment.weekday()}"),
                     month=translate(lang, f"calls.month.{moment.month}"), day=moment.day, year=moment.year,
                     time=clock)  # fmt: skip


def note_text(lang: Language, note: str) -> str:
    """A list entry's note; the page's own default note in the reader's language."""
    if note == SUGGESTION_NOTE:
        return translate(lang, "lists.note.suggested")
    return translate(lang, "calls.web_note") if note == WEB_NOTE else note


def page_number(raw: str | None) -> int:
    """?page=, forgiving: anything odd is page 1, a huge number the last page we would ever show."""
    try:
        return min(max(int(raw or "1"), 1), MAX_PAGE)
    except ValueError:
        return 1


def done_message(lang: Language, raw: str | None, known: dict[str, str]) -> str | None:
    key = known.get(raw or "")
    return translate(lang, key) if key else None


# --------------------------------------------------------------------------- views


@dataclass(frozen=True, slots=True)
class CallView:
    """One call as the log and the call page show it (all text plain; the template escapes)."""

    id: int
    when: str
    started_at: str
    who: str  # the number written the local way, or why there is none
    name: str
    has_number: bool
    e164: str | None
    action: str  # Action value, "" if not decided
    action_text: str
    reason_text: str
    verdict: str  # Verdict value, "" if not analysed
    verdict_text: str
    review: str  # ReviewLabel value or ""
    review_text: str
    state_note: str
    has_recording: bool
    duration: str


_REASON_KEYS = {
    Reason.WITHHELD.value: "calls.who.withheld",
    Reason.OUT_OF_AREA.value: "calls.who.out_of_area",
    Reason.PAYPHONE.value: "calls.who.payphone",
    Reason.SERVICE_CONFLICT.value: "calls.who.service_conflict",
}


def caller_text(row: CallRow, region: str, lang: Language) -> str:
    if row.number_e164:
        return national_format(row.number_e164, region)
    if row.reason_code in _REASON_KEYS:
        return translate(lang, _REASON_KEYS[row.reason_code])
    if row.raw_number:
        return row.raw_number
    return translate(lang, "calls.who.none")


def rule_text(row: CallRow, lang: Language) -> str:
    """Why, in words a relative understands: from the stable rule id, else the stored sentence."""
    rule, _, schedule = (row.rule or "").partition("@schedule:")
    if schedule:  # decided under a [[schedule]]: the usual words, and which schedule
        return rule_text(replace(row, rule=rule), lang) + translate(lang, "calls.rule.schedule", name=schedule)
    head, _, tail = rule.partition(":")
    if head == "blocklist":
        if tail.startswith("feed:"):
            return translate(lang, "calls.rule.blocklist_feed", feed=tail[5:])
        key = f"calls.rule.blocklist_{tail}"
        return translate(lang, key) if translate(lang, key) != key else translate(lang, "calls.rule.blocklist")
    if head in ("international", "international_exception"):
        return translate(lang, f"calls.rule.{head}", where=tail)
    key = f"calls.rule.{head}"
    known = translate(lang, key)
    if known != key:
        return known
    return row.reason or ""


def _duration(seconds: float | None, lang: Language) -> str:
    if not seconds:
        return ""
    total = round(seconds)
    return translate(lang, "calls.duration", m=total // 60, s=total % 60)


def call_view(row: CallRow, region: str, zone: tzinfo, lang: Language, now: datetime) -> CallView:
    action = row.action.value if row.action else ""
    verdict = row.verdict.value if row.verdict else ""
    review = row.review_label.value if row.review_label else ""
    state_note = ""
    in_progress = row.state in (CallState.OFFERED, CallState.DECIDED, CallState.ACTING)
    if in_progress:
        state_note = translate(lang, "calls.state.in_progress")
    elif row.state in (CallState.INTERRUPTED, CallState.FAILED):
        state_note = translate(lang, f"calls.state.{row.state.value}")
    elif row.end_reason == "line_in_use":
        state_note = translate(lang, "calls.state.line_in_use")
    return CallView(
        id=row.id, when=local_time(row.started_at, zone, lang, now), started_at=row.started_at,
        who=caller_text(row, region, lang), name=row.name or "", has_number=bool(row.number_e164),
        e164=row.number_e164, action=action,
        action_text=translate(lang, f"calls.action.{action}" if action else
                              "calls.action.deciding" if in_progress else "calls.action.none"),
        reason_text=rule_text(row, lang), verdict=verdict,
        verdict_text=translate(lang, f"calls.verdict.{verdict}") if verdict else "",
        review=review, review_text=translate(lang, f"calls.review.{review}") if review else "",
        state_note=state_note, has_recording=bool(row.recording and row.recording_bytes),
        duration=_duration(row.recording_seconds, lang),
    )  # fmt: skip


# --------------------------------------------------------------------------- transcript with flags


@dataclass(frozen=True, slots=True)
class Piece:
    text: str
    flag: bool


@dataclass(frozen=True, slots=True)
class TranscriptLine:
    at: str  # "0:12" into the call, "" when unknown
    pieces: tuple[Piece, ...]
    start_s: float | None = None  # audio time, to pick out the message left after the tone


def clock_text(seconds: float | None) -> str:
    if seconds is None:
        return ""
    total = max(int(seconds), 0)
    return f"{total // 60}:{total % 60:02d}"


def transcript_lines(row: CallRow, events: list[EventRow], flags: list[FlagRow]) -> list[TranscriptLine]:
    """The transcript as timed lines with flagged phrases marked.

    The pipeline stores each recognised segment as a TRANSCRIPT event and the whole
    transcript as the segments joined by one space; a flag stores what was said
    (an exact slice of that joined text, possibly across two segments) and the
    audio time where it started. Each flag is looked for from the segment playing
    at its time, so a phrase said twice is marked where it was flagged.
    """
    segments = [(str(e.detail["text"]), _float(e.detail.get("start_s"))) for e in events
                if e.kind == EventKind.TRANSCRIPT and isinstance(e.detail.get("text"), str) and e.detail["text"]]
    if not segments:
        if not row.transcript:
            return []
        segments = [(row.transcript, None)]
    starts, offset = [], 0
    for text, _ in segments:
        starts.append(offset)
        offset += len(text) + 1
    joined = " ".join(text for text, _ in segments)
    marks: list[tuple[int, int]] = []
    for flag in flags:
        phrase = flag.phrase
        if not phrase:
            continue
        begin = 0
        if flag.start_s is not None:
            index = max((i for i, (_, t) in enumerate(segments) if t is not None and t <= flag.start_s + 0.05),
                        default=0)  # fmt: skip
            begin = max(starts[index] - len(phrase), 0)
        found = joined.find(phrase, begin)
        if found < 0:
            found = joined.find(phrase)
        if found >= 0:
            marks.append((found, found + len(phrase)))
    flagged = _merge(marks)
    lines = []
    for (text, start_s), start in zip(segments, starts):
        end = start + len(text)
        cuts = [(max(a, start) - start, min(b, end) - start) for a, b in flagged if a < end and b > start]
        lines.append(TranscriptLine(clock_text(start_s), _pieces(text, cuts), start_s))
    return lines


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def _merge(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for a, b in sorted(spans):
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return merged


def _pieces(text: str, cuts: list[tuple[int, int]]) -> tuple[Piece, ...]:
    pieces, at = [], 0
    for a, b in cuts:
        if a > at:
            pieces.append(Piece(text[at:a], False))
        pieces.append(Piece(text[a:b], True))
        at = b
    if at < len(text):
        pieces.append(Piece(text[at:], False))
    return tuple(pieces)


# --------------------------------------------------------------------------- events and alerts


@dataclass(frozen=True, slots=True)
class EventView:
    when: str
    text: str
    detail: str


# detail keys worth showing per event kind, in words a family reads; internal ids (rule, prompt,
# end reason) stay out of the page — the decision's reason is shown above, and `mamoru calls --json` has them all
_EVENT_DETAIL = {
    EventKind.ERROR: ("message",), EventKind.HANDSET: ("guard", "state"), EventKind.RECORDING: ("action", "seconds"),
    EventKind.FRAUD: ("phrases",), EventKind.REVIEW: ("label", "by"), EventKind.TRANSCRIPT: ("verdict",),
    EventKind.NAME_RECORDED: ("seconds",), EventKind.CHALLENGE: ("passed",),
    EventKind.HOUSEHOLD_DECISION: ("decision",), EventKind.MESSAGE: ("seconds",), EventKind.OUTCOME: ("outcome",),
}  # fmt: skip
_SCREEN_WORDS = frozenset({"connected", "refused", "blocked", "timeout", "screened_out", "message", "caller_hung_up"})


def _detail_value(name: str, value: Any, lang: Language) -> str:
    """A detail value in words where the page has them (verdicts, labels, seconds), else as stored."""
    if name == "verdict" and value in Verdict._value2member_map_:
        return translate(lang, f"calls.verdict.{value}")
    if name == "label" and value in ReviewLabel._value2member_map_:
        return translate(lang, f"calls.review_label.{value}")
    if name in ("decision", "outcome") and value in _SCREEN_WORDS:
        return translate(lang, f"calls.screen.{value}")
    if name == "passed" and isinstance(value, bool):
        return translate(lang, "calls.screen.passed" if value else "calls.screen.failed")
    if name == "seconds" and isinstance(value, int | float):
        return translate(lang, "calls.seconds", s=f"{value:.0f}")
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return str(value)


def event_views(events: list[EventRow], zone: tzinfo, lang: Language, now: datetime) -> list[EventView]:
    views = []
    for event in events:
        if event.kind == EventKind.TRANSCRIPT and "text" in event.detail:
            continue  # the segments are the transcript, shown above
        key = f"calls.event.{event.kind}"
        text = translate(lang, key)
        keys = _EVENT_DETAIL.get(event.kind, ()) if isinstance(event.kind, EventKind) else ()
        parts = [_detail_value(name, event.detail[name], lang) for name in keys
                 if event.detail.get(name) not in (None, "", [])]  # fmt: skip
        views.append(EventView(local_time(event.at, zone, lang, now, seconds=True),
                               text if text != key else str(event.kind), " · ".join(parts)[:200]))  # fmt: skip
    return views


@dataclass(frozen=True, slots=True)
class DeliveryView:
    relative: str
    channel: str  # masked when stored; a phone call is named as such
    status: str  # DeliveryStatus value
    status_text: str
    when: str


@dataclass(frozen=True, slots=True)
class AlertView:
    when: str
    kind_text: str
    acked: str
    deliveries: tuple[DeliveryView, ...]


def alert_views(rows: list[tuple[dict[str, Any], list[dict[str, Any]]]], zone: tzinfo, lang: Language,
                now: datetime) -> list[AlertView]:  # fmt: skip
    views = []
    for alert, deliveries in rows:
        kind = alert["kind"] if alert["kind"] in AlertKind._value2member_map_ else "other"
        acked = ""
        if alert["acked_at"]:
            acked = translate(lang, "calls.alert.acked", who=alert["acked_by"] or "",
                              when=local_time(alert["acked_at"], zone, lang, now))  # fmt: skip
        items = []
        for d in deliveries:
            status = d["status"] if d["status"] in DeliveryStatus._value2member_map_ else "pending"
            channel = translate(lang, "calls.alert.phone") if d["channel_index"] == VOICE_CHANNEL else d["channel"]
            items.append(DeliveryView(d["relative"], channel, status, translate(lang, f"calls.delivery.{status}"),
                                      local_time(d["sent_at"] or d["acked_at"], zone, lang, now)))  # fmt: skip
        views.append(AlertView(local_time(alert["created_at"], zone, lang, now),
                               translate(lang, f"calls.alert.{kind}"), acked, tuple(items)))  # fmt: skip
    return views
