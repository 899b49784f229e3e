"""The call log, one call's page, its recording, and the one-click actions on a call.

Everything a caller said is attacker-controlled text: it reaches the page only
through Jinja's autoescaping (the transcript is split into plain-text pieces,
flagged ones wrapped in ``<mark>`` by the template, never by building HTML here).
A recording is found by call id only: the path comes from the call row and must
resolve inside the configured recordings dir.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import phonenumbers
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.routing import Route

from blocklist.lists import NumberLists, parse_iso_utc
from blocklist.outbox import VOICE_CHANNEL, AlertKind, DeliveryStatus
from blocklist.store import Store
from blocklist.store.rows import CallFilter, CallRow, EventRow, FlagRow, StoreError, relpath_problem
from screening.core.clock import iso_utc
from screening.core.model import CallState, EventKind, ReviewLabel, Verdict
from screening.core.model import Action, ListEntry, ListKind, MatchKind, Reason
from screening.core.clock import region_zone
from screening.core.numbers import clean_digits, national_format
from screening.web.auth import User, require_user
from screening.web.context import WebContext
from screening.web.i18n import UiLanguage, register, translate
from screening.web.templating import render, request_language

log = logging.getLogger(__name__)

PAGE_SIZE = 30
MAX_PAGE = 100_000
MAX_QUERY_CHARS = 100
MAX_NOTE_CHARS = 200
MAX_SQLITE_ID = 2**63 - 1
WEB_NOTE = "from the web page"  # stored as is; shown translated (see note_text)
WEB_SOURCE = "family"
_MIN_NUMBER_DIGITS = 3  # fewer typed digits match too much to be a number search

# flash key in ?done= -> message key; anything else in the query string is never shown
CALL_DONE = {
    "allowed": "calls.done.allowed",
    "blocked": "calls.done.blocked",
    "blocked_still_allowed": "calls.done.blocked_still_allowed",
    "reviewed_fraud": "calls.done.reviewed_fraud",
    "reviewed_not_fraud": "calls.done.reviewed_not_fraud",
}


# --------------------------------------------------------------------------- shared with pages_lists


_WEEKDAYS = {UiLanguage.JA: "月火水木金土日", UiLanguage.EN: ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")}
_MONTHS_EN = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def local_time(iso: str | None, zone: tzinfo, lang: UiLanguage, now: datetime, *, seconds: bool = False) -> str:
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
    weekday = _WEEKDAYS[lang][moment.weekday()]
    if lang is UiLanguage.JA:
        year = f"{moment.year}年" if moment.year != today.year else ""
        return f"{year}{moment.month}月{moment.day}日({weekday}) {clock}"
    year = f" {moment.year}" if moment.year != today.year else ""
    return f"{weekday} {moment.day} {_MONTHS_EN[moment.month - 1]}{year} {clock}"


def note_text(lang: UiLanguage, note: str) -> str:
    """A list entry's note; the page's own default note in the reader's language."""
    return translate(lang, "calls.web_note") if note == WEB_NOTE else note


def page_number(raw: str | None) -> int:
    """?page=, forgiving: anything odd is page 1, a huge number the last page we would ever show."""
    try:
        return min(max(int(raw or "1"), 1), MAX_PAGE)
    except ValueError:
        return 1


def done_message(lang: UiLanguage, raw: str | None, known: dict[str, str]) -> str | None:
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


def caller_text(row: CallRow, region: str, lang: UiLanguage) -> str:
    if row.number_e164:
        return national_format(row.number_e164, region)
    if row.reason_code in _REASON_KEYS:
        return translate(lang, _REASON_KEYS[row.reason_code])
    if row.raw_number:
        return row.raw_number
    return translate(lang, "calls.who.none")


def rule_text(row: CallRow, lang: UiLanguage) -> str:
    """Why, in words a relative understands: from the stable rule id, else the stored sentence."""
    rule = row.rule or ""
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


def _duration(seconds: float | None, lang: UiLanguage) -> str:
    if not seconds:
        return ""
    total = round(seconds)
    return translate(lang, "calls.duration", m=total // 60, s=total % 60)


def call_view(row: CallRow, region: str, zone: tzinfo, lang: UiLanguage, now: datetime) -> CallView:
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


def _clock(seconds: float | None) -> str:
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
        lines.append(TranscriptLine(_clock(start_s), _pieces(text, cuts)))
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
}  # fmt: skip


def _detail_value(name: str, value: Any, lang: UiLanguage) -> str:
    """A detail value in words where the page has them (verdicts, labels, seconds), else as stored."""
    if name == "verdict" and value in Verdict._value2member_map_:
        return translate(lang, f"calls.verdict.{value}")
    if name == "label" and value in ReviewLabel._value2member_map_:
        return translate(lang, f"calls.review_label.{value}")
    if name == "seconds" and isinstance(value, int | float):
        return translate(lang, "calls.seconds", s=f"{value:.0f}")
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return str(value)


def event_views(events: list[EventRow], zone: tzinfo, lang: UiLanguage, now: datetime) -> list[EventView]:
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


def alert_views(rows: list[tuple[dict[str, Any], list[dict[str, Any]]]], zone: tzinfo, lang: UiLanguage,
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


# --------------------------------------------------------------------------- handlers


def _ctx(request: Request) -> WebContext:
    return request.app.state.ctx  # type: ignore[no-any-return]


def _call_id(request: Request) -> int:
    """The path's id, or 404: ids outside SQLite's range would otherwise be an OverflowError (a 500)."""
    call_id = int(request.path_params["id"])
    if not 1 <= call_id <= MAX_SQLITE_ID:
        raise HTTPException(404)
    return call_id


def _get_call(store: Store, call_id: int) -> CallRow:
    try:
        return store.get_call(call_id)
    except KeyError:
        raise HTTPException(404) from None


def _filter_from(request: Request, region: str) -> tuple[CallFilter, dict[str, str]]:
    """The log's filter from the query string (unknown values are ignored, not errors) and the
    cleaned values, to fill the form and build the paging links."""
    params = request.query_params
    verdict = params.get("verdict", "")
    verdict = verdict if verdict in Verdict._value2member_map_ else ""
    action = params.get("action", "")
    action = action if action in Action._value2member_map_ else ""
    text = " ".join(params.get("q", "").split())[:MAX_QUERY_CHARS]
    where = CallFilter(verdict=Verdict(verdict) if verdict else None, action=Action(action) if action else None,
                       text=text, numbers=number_fragments(text, region))  # fmt: skip
    return where, {"verdict": verdict, "action": action, "q": text}


def number_fragments(text: str, region: str) -> tuple[str, ...]:
    """What a typed (part of a) number looks like in the stored numbers.

    ``03-1234`` -> ``031234`` (as the line sent it) and ``+8131234`` (E.164): the
    national trunk prefix becomes the country code, as parse_number does.
    """
    digits = clean_digits(text)
    body = digits.lstrip("+")
    if len(body) < _MIN_NUMBER_DIGITS or not body.isdigit():
        return ()
    if any(ch.isalpha() for ch in text):
        return ()
    fragments = {digits}
    meta = phonenumbers.PhoneMetadata.metadata_for_region(region)
    trunk = meta.national_prefix if meta is not None else None
    if not digits.startswith("+") and trunk and body.startswith(trunk) and meta is not None:
        fragments.add(f"+{meta.country_code}{body[len(trunk):]}")
    return tuple(sorted(fragments))


def call_log(request: Request) -> Response:
    require_user(request)
    ctx, lang = _ctx(request), request_language(request)
    cfg = ctx.config()
    region = cfg.line.home_region
    where, chosen = _filter_from(request, region)
    page = page_number(request.query_params.get("page"))
    try:
        total = ctx.store.count_calls(where)
        pages = max(math.ceil(total / PAGE_SIZE), 1)
        page = min(page, pages)
        rows = ctx.store.find_calls(where, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE)
    except StoreError as exc:
        log.error("web: cannot read the call log: %s", exc)
        return render(request, "error.html", {"message": translate(lang, "calls.store_error")}, status_code=503)
    now = datetime.now(UTC)
    zone = region_zone(region)
    filters = {k: v for k, v in chosen.items() if v}

    def link(to_page: int) -> str:
        return "/calls?" + urlencode({**filters, "page": to_page})

    return render(request, "calls.html", {
        "calls": [call_view(r, region, zone, lang, now) for r in rows],
        "chosen": chosen, "filtered": bool(filters), "total": total, "page": page, "pages": pages,
        "prev_url": link(page - 1) if page > 1 else None, "next_url": link(page + 1) if page < pages else None,
        "verdicts": [v.value for v in Verdict], "actions": [a.value for a in Action],
        "done": done_message(lang, request.query_params.get("done"), CALL_DONE),
    })  # fmt: skip


def call_page(request: Request) -> Response:
    require_user(request)
    ctx, lang = _ctx(request), request_language(request)
    call_id = _call_id(request)
    region = ctx.config().line.home_region
    try:
        row = _get_call(ctx.store, call_id)
        events = ctx.store.events_for(call_id)
        flags = ctx.store.flags_for(call_id)
        alerts = ctx.store.alert_rows_for_call(call_id)
    except StoreError as exc:
        log.error("web: cannot read call %d: %s", call_id, exc)
        return render(request, "error.html", {"message": translate(lang, "calls.store_error")}, status_code=503)
    now = datetime.now(UTC)
    zone = region_zone(region)
    return render(request, "call.html", {
        "call": call_view(row, region, zone, lang, now),
        "transcript": transcript_lines(row, events, flags),
        "flags": [{"phrase": f.phrase, "at": _clock(f.start_s), "category": _category_text(lang, f.category)}
                  for f in flags],
        "score": f"{row.score:.1f}" if row.score is not None else "",
        "reviewed_by": row.reviewed_by or "",
        "reviewed_when": local_time(row.reviewed_at, zone, lang, now) if row.review_label else "",
        "events": event_views(events, zone, lang, now),
        "alerts": alert_views(alerts, zone, lang, now),
        "done": done_message(lang, request.query_params.get("done"), CALL_DONE),
        "note_max": MAX_NOTE_CHARS,
    })  # fmt: skip


def _category_text(lang: UiLanguage, category: str) -> str:
    key = f"calls.category.{category}"
    text = translate(lang, key)
    return text if text != key else category


def recording(request: Request) -> Response:
    """The call's WAV, by call id only; FileResponse answers Range requests (206) itself."""
    require_user(request)
    ctx = _ctx(request)
    call_id = _call_id(request)
    try:
        row = _get_call(ctx.store, call_id)
    except StoreError as exc:
        log.error("web: cannot read call %d: %s", call_id, exc)
        raise HTTPException(503) from exc
    # Only a finished recording: one still being written changes size while it is sent.
    if not row.recording or row.recording_bytes is None:
        raise HTTPException(404)
    path = _recording_path(ctx.config().recording.dir, row.recording)
    if path is None:
        log.warning("web: call %d: recording path %r is not inside the recordings dir; not served",
                    call_id, row.recording)  # fmt: skip
        raise HTTPException(404)
    if not path.is_file():
        raise HTTPException(404)
    return FileResponse(path, media_type="audio/wav", filename=f"mamoru-call-{call_id}.wav",
                        content_disposition_type="inline")  # fmt: skip


def _recording_path(directory: Path, relpath: str) -> Path | None:
    """``relpath`` under ``directory``, or None if it names anything outside it (links included)."""
    if relpath_problem(relpath):
        return None
    base = directory.resolve()
    path = (base / relpath).resolve()
    return path if path.is_relative_to(base) and path != base else None


async def allow_number(request: Request) -> Response:
    return await _list_action(request, ListKind.ALLOW)


async def block_number(request: Request) -> Response:
    return await _list_action(request, ListKind.BLOCK)


async def _list_action(request: Request, kind: ListKind) -> Response:
    require_user(request)
    ctx = _ctx(request)
    call_id = _call_id(request)
    form = await request.form()
    note = " ".join(str(form.get("note") or "").split())[:MAX_NOTE_CHARS] if kind is ListKind.BLOCK else ""
    done = await run_in_threadpool(_apply_list_action, ctx.store, call_id, kind, note or WEB_NOTE)
    return RedirectResponse(f"/calls/{call_id}?done={done}", status_code=303)


def _apply_list_action(store: Store, call_id: int, kind: ListKind, note: str) -> str:
    """Put the call's number on a list; returns the ``done`` key. Raises HTTPException."""
    row = _get_call(store, call_id)
    if not row.number_e164:
        raise HTTPException(400, "no number")  # withheld & co: the buttons are not even shown
    other = ListKind.ALLOW if kind is ListKind.BLOCK else ListKind.BLOCK
    try:
        store.add_entry(ListEntry(kind, MatchKind.EXACT, row.number_e164, source=WEB_SOURCE, note=note))
        if kind is ListKind.BLOCK:
            # The allowlist wins over the blocklist, so a family entry for the number would void this block.
            store.remove_entry(other, MatchKind.EXACT, row.number_e164)
            now_iso = iso_utc(datetime.now(UTC))
            if NumberLists.build(store.own_entries(ListKind.ALLOW), now_iso).match_allow(row.number_e164):
                return "blocked_still_allowed"  # a prefix or range on the allowlist covers it
            return "blocked"
    except (StoreError, ValueError) as exc:
        log.error("web: call %d: cannot add %s to the %s list: %s", call_id, row.number_e164, kind.value, exc)
        raise HTTPException(503) from exc
    log.info("web: call %d: %s added to the %s list", call_id, row.number_e164, kind.value)
    return "allowed"


async def review(request: Request) -> Response:
    user: User = require_user(request)
    ctx = _ctx(request)
    call_id = _call_id(request)
    form = await request.form()
    label = str(form.get("label") or "")
    if label not in ReviewLabel._value2member_map_:
        raise HTTPException(400, "label must be fraud or not_fraud")
    await run_in_threadpool(_apply_review, ctx.store, call_id, ReviewLabel(label), user.name)
    return RedirectResponse(f"/calls/{call_id}?done=reviewed_{label}", status_code=303)


def _apply_review(store: Store, call_id: int, label: ReviewLabel, by: str) -> None:
    _get_call(store, call_id)
    try:
        store.set_review(call_id, label, by)
    except StoreError as exc:
        raise HTTPException(503) from exc
    log.info("web: call %d marked %s by %s", call_id, label.value, by)


routes: list[Route] = [
    Route("/calls", call_log, methods=["GET"]),
    Route("/calls/{id:int}", call_page, methods=["GET"]),
    Route("/calls/{id:int}/recording", recording, methods=["GET"]),
    Route("/calls/{id:int}/allow", allow_number, methods=["POST"]),
    Route("/calls/{id:int}/block", block_number, methods=["POST"]),
    Route("/calls/{id:int}/review", review, methods=["POST"]),
]


# --------------------------------------------------------------------------- messages

register({
    "ja": {
        "calls.title": "通話の記録",
        "calls.call_title": "通話の詳細",
        "calls.back": "通話の記録に戻る",
        "calls.empty": "まだ電話の記録はありません。",
        "calls.empty_filtered": "条件に合う電話はありません。",
        "calls.count": "{total}件",
        "calls.page_of": "{page} / {pages} ページ",
        "calls.prev": "← 新しい記録",
        "calls.next": "古い記録 →",
        "calls.store_error": "記録を読み出せませんでした。しばらくしてからもう一度お試しください。",
        "calls.today": "今日 {time}",
        "calls.yesterday": "昨日 {time}",
        "calls.duration": "{m}分{s}秒",
        "calls.col.when": "日時",
        "calls.col.who": "相手",
        "calls.col.action": "対応",
        "calls.col.reason": "理由",
        "calls.col.verdict": "詐欺の判定",
        "calls.details": "くわしく見る",
        "calls.filter.title": "電話をさがす",
        "calls.filter.q": "電話番号または名前",
        "calls.filter.verdict": "詐欺の判定",
        "calls.filter.action": "対応",
        "calls.filter.all": "すべて",
        "calls.filter.submit": "さがす",
        "calls.filter.clear": "条件を消す",
        "calls.who.withheld": "非通知",
        "calls.who.out_of_area": "表示圏外",
        "calls.who.payphone": "公衆電話",
        "calls.who.service_conflict": "番号の表示なし（サービス競合）",
        "calls.who.none": "番号の情報なし",
        "calls.action.allow": "電話を鳴らしました",
        "calls.action.warn": "注意のメッセージを流して録音しました",
        "calls.action.request_number": "番号を通知してかけ直すようお願いしました",
        "calls.action.block": "お断りしました（着信拒否）",
        "calls.action.none": "判定の前に終わりました",
        "calls.action.deciding": "判定中",
        "calls.seconds": "{s}秒",
        "calls.review_label.fraud": "詐欺",
        "calls.review_label.not_fraud": "詐欺ではない",
        "calls.filter_action.allow": "鳴らした電話",
        "calls.filter_action.warn": "注意を流した電話",
        "calls.filter_action.request_number": "番号通知をお願いした電話",
        "calls.filter_action.block": "お断りした電話",
        "calls.rule.allowlist": "ご家族が登録した「許可する番号」です",
        "calls.rule.blocklist": "着信拒否の番号リストにある番号です",
        "calls.rule.blocklist_local": "着信拒否の番号リストにある番号です",
        "calls.rule.blocklist_family": "ご家族が着信拒否に登録した番号です",
        "calls.rule.blocklist_ftc": "迷惑電話として届け出のある番号です",
        "calls.rule.blocklist_feed": "配信された迷惑電話リスト（{feed}）にある番号です",
        "calls.rule.withheld": "番号が非通知の電話です",
        "calls.rule.out_of_area": "番号が表示されない電話です（表示圏外）",
        "calls.rule.payphone": "公衆電話からの電話です",
        "calls.rule.service_conflict": "番号が届かなかった電話です（サービス競合）",
        "calls.rule.no_caller_id": "番号の情報が届かなかった電話です",
        "calls.rule.invalid_number": "電話番号として正しくない番号です",
        "calls.rule.international": "海外からの電話です（{where}）",
        "calls.rule.international_exception": "海外（許可している国: {where}）からの電話です",
        "calls.rule.official_lookalike": "警察や消防に見せかけた番号です。本物はこの番号から電話をかけてきません",
        "calls.rule.unknown": "登録されていない番号です",
        "calls.verdict.fraud": "詐欺の疑い",
        "calls.verdict.suspicious": "要注意",
        "calls.verdict.clean": "問題なし",
        "calls.review.fraud": "ご家族が「詐欺」と確認",
        "calls.review.not_fraud": "ご家族が「詐欺ではない」と確認",
        "calls.state.in_progress": "通話中",
        "calls.state.interrupted": "停電などで記録が途中で終わりました",
        "calls.state.failed": "うまく処理できませんでした",
        "calls.state.line_in_use": "受話器が上がっていたため、何もしていません",
        "calls.section.decision": "どう対応したか",
        "calls.section.recording": "録音",
        "calls.section.transcript": "話の内容（自動の文字起こし）",
        "calls.section.flags": "気になる言葉",
        "calls.section.events": "通話の流れ",
        "calls.section.alerts": "ご家族へのお知らせ",
        "calls.section.actions": "この番号をどうしますか",
        "calls.section.review": "この電話は詐欺でしたか",
        "calls.name": "名前",
        "calls.number": "電話番号",
        "calls.when": "日時",
        "calls.listen": "録音を聞く",
        "calls.download": "録音をダウンロード",
        "calls.no_recording": "この電話の録音はありません。",
        "calls.no_transcript": "文字起こしはありません。",
        "calls.flag_legend": "黄色の部分は、詐欺でよく使われる言葉です。",
        "calls.flag_at": "{at} ごろ",
        "calls.score": "判定の点数: {score}",
        "calls.no_alerts": "この電話についてのお知らせはありません。",
        "calls.no_number_actions": "番号が分からない電話なので、許可や着信拒否には登録できません。",
        "calls.allow_button": "この番号を許可する（次から鳴らす）",
        "calls.block_button": "この番号を着信拒否にする",
        "calls.block_note": "メモ（なくてもかまいません）",
        "calls.mark_fraud": "詐欺だった",
        "calls.mark_not_fraud": "詐欺ではなかった",
        "calls.reviewed": "{who}さんが {when} に確認しました。",
        "calls.review_help": "確認の結果は記録され、詐欺を見分ける仕組みの改善に使われます。",
        "calls.web_note": "ウェブ画面から追加",
        "calls.done.allowed": "この番号を「許可する番号」に登録しました。次からは電話が鳴ります。",
        "calls.done.blocked": "この番号を着信拒否にしました。次からはお断りします。",
        "calls.done.blocked_still_allowed":
            "着信拒否に登録しましたが、許可する番号のリスト（番号の範囲）にも入っているため、電話は鳴ります。"
            "番号リストの画面で確認してください。",
        "calls.done.reviewed_fraud": "「詐欺だった」と記録しました。",
        "calls.done.reviewed_not_fraud": "「詐欺ではなかった」と記録しました。",
        "calls.event.offered": "電話がかかってきました",
        "calls.event.decided": "対応を決めました",
        "calls.event.answered": "電話に出ました",
        "calls.event.played": "メッセージを流しました",
        "calls.event.listened": "相手の話を聞いて録音しました",
        "calls.event.hung_up": "電話を切りました",
        "calls.event.handset": "受話器",
        "calls.event.rejected": "電話を鳴らさずにお断りしました",
        "calls.event.household": "家の電話を呼び出しました",
        "calls.event.dtmf": "ボタンが押されました",
        "calls.event.ended": "通話が終わりました",
        "calls.event.error": "エラー",
        "calls.event.line_fault": "回線の異常",
        "calls.event.line_restored": "回線が元に戻りました",
        "calls.event.config": "設定が変わりました",
        "calls.event.recording": "録音を保存しました",
        "calls.event.transcript": "文字起こしが終わりました",
        "calls.event.fraud": "詐欺の疑いを見つけました",
        "calls.event.household_warning": "家の中のスピーカーで注意を流しました",
        "calls.event.review": "ご家族が確認しました",
        "calls.alert.fraud": "詐欺の疑いのお知らせ",
        "calls.alert.repeat_block": "着信拒否の番号から何度も電話",
        "calls.alert.health": "本体の状態のお知らせ",
        "calls.alert.digest": "まとめのお知らせ",
        "calls.alert.test": "テストのお知らせ",
        "calls.alert.other": "お知らせ",
        "calls.alert.acked": "{who}さんが確認しました（{when}）",
        "calls.alert.phone": "電話",
        "calls.delivery.pending": "送信待ち",
        "calls.delivery.sending": "送信中",
        "calls.delivery.sent": "送信しました",
        "calls.delivery.failed": "送れませんでした（あとで送り直します）",
        "calls.delivery.acknowledged": "確認済み",
        "calls.delivery.expired": "送信を取りやめました",
        "calls.col.to": "宛先",
        "calls.col.channel": "連絡方法",
        "calls.col.status": "状態",
        "calls.category.impersonation": "警察・役所・銀行などを名のる",
        "calls.category.family_emergency": "家族を名のって急なお金の話",
        "calls.category.payment_instruction": "お金の支払い・受け渡しの指示",
        "calls.category.refund": "還付金・払い戻しの話",
        "calls.category.refund_prize": "還付金・当選の話",
        "calls.category.legal_overdue": "逮捕・裁判・未払いの話",
        "calls.category.legal_threat": "逮捕・裁判などの脅し",
        "calls.category.secrecy_urgency": "口止め・急がせる",
        "calls.category.secrecy": "口止め",
        "calls.category.urgency": "急がせる",
        "calls.category.investment_romance": "投資・もうけ話・当選",
        "calls.category.investment": "投資・もうけ話",
        "calls.category.ivr_prompt": "自動音声の案内（「1番を押して」など）",
        "calls.category.automated_notice": "自動音声のお知らせ",
        "calls.category.account_threat": "口座やカードが止まるという話",
        "calls.category.callback_request": "折り返し電話をさせる",
        "calls.category.loan_debt": "借金・ローンの話",
        "calls.category.loan": "借金・ローンの話",
        "calls.category.warranty": "保証・契約の話",
    },
    "en": {
        "calls.title": "Calls",
        "calls.call_title": "Call details",
        "calls.back": "Back to the calls",
        "calls.empty": "No calls yet.",
        "calls.empty_filtered": "No calls match.",
        "calls.count": "{total} calls",
        "calls.page_of": "Page {page} of {pages}",
        "calls.prev": "← Newer",
        "calls.next": "Older →",
        "calls.store_error": "The call log cannot be read right now. Please try again shortly.",
        "calls.today": "Today {time}",
        "calls.yesterday": "Yesterday {time}",
        "calls.duration": "{m} min {s} s",
        "calls.col.when": "When",
        "calls.col.who": "Caller",
        "calls.col.action": "What we did",
        "calls.col.reason": "Why",
        "calls.col.verdict": "Fraud check",
        "calls.details": "Details",
        "calls.filter.title": "Find calls",
        "calls.filter.q": "Number or name",
        "calls.filter.verdict": "Fraud check",
        "calls.filter.action": "What we did",
        "calls.filter.all": "All",
        "calls.filter.submit": "Search",
        "calls.filter.clear": "Clear",
        "calls.who.withheld": "Withheld",
        "calls.who.out_of_area": "Out of area",
        "calls.who.payphone": "Payphone",
        "calls.who.service_conflict": "No number (service conflict)",
        "calls.who.none": "No caller ID",
        "calls.action.allow": "Let the phone ring",
        "calls.action.warn": "Played the warning and recorded the call",
        "calls.action.request_number": "Asked the caller to call again with the number shown",
        "calls.action.block": "Refused the call",
        "calls.action.none": "Ended before a decision",
        "calls.action.deciding": "Deciding",
        "calls.seconds": "{s} s",
        "calls.review_label.fraud": "fraud",
        "calls.review_label.not_fraud": "not fraud",
        "calls.filter_action.allow": "Rang",
        "calls.filter_action.warn": "Warned",
        "calls.filter_action.request_number": "Asked for the number",
        "calls.filter_action.block": "Refused",
        "calls.rule.allowlist": "The family allowed this number",
        "calls.rule.blocklist": "The number is on the block list",
        "calls.rule.blocklist_local": "The number is on the block list",
        "calls.rule.blocklist_family": "The family blocked this number",
        "calls.rule.blocklist_ftc": "The number was reported as a nuisance caller",
        "calls.rule.blocklist_feed": "The number is on the shared nuisance list ({feed})",
        "calls.rule.withheld": "The caller withheld the number",
        "calls.rule.out_of_area": "No number shown (out of area)",
        "calls.rule.payphone": "A call from a payphone",
        "calls.rule.service_conflict": "The number did not come through (service conflict)",
        "calls.rule.no_caller_id": "No caller ID came through",
        "calls.rule.invalid_number": "Not a valid phone number",
        "calls.rule.international": "A call from abroad ({where})",
        "calls.rule.international_exception": "A call from an allowed country ({where})",
        "calls.rule.official_lookalike": "The number imitates police or emergency services, who never call from it",
        "calls.rule.unknown": "The number is on no list",
        "calls.verdict.fraud": "Likely fraud",
        "calls.verdict.suspicious": "Suspicious",
        "calls.verdict.clean": "Nothing found",
        "calls.review.fraud": "Family confirmed: fraud",
        "calls.review.not_fraud": "Family confirmed: not fraud",
        "calls.state.in_progress": "In progress",
        "calls.state.interrupted": "The record stopped early (power cut or restart)",
        "calls.state.failed": "Something went wrong handling this call",
        "calls.state.line_in_use": "The phone was in use, so nothing was done",
        "calls.section.decision": "What we did",
        "calls.section.recording": "Recording",
        "calls.section.transcript": "What was said (automatic transcript)",
        "calls.section.flags": "Warning signs",
        "calls.section.events": "Timeline",
        "calls.section.alerts": "Alerts to the family",
        "calls.section.actions": "This number",
        "calls.section.review": "Was this call fraud?",
        "calls.name": "Name",
        "calls.number": "Number",
        "calls.when": "When",
        "calls.listen": "Listen to the recording",
        "calls.download": "Download the recording",
        "calls.no_recording": "This call has no recording.",
        "calls.no_transcript": "No transcript.",
        "calls.flag_legend": "Highlighted words are often used by fraudsters.",
        "calls.flag_at": "at {at}",
        "calls.score": "Score: {score}",
        "calls.no_alerts": "No alerts were sent about this call.",
        "calls.no_number_actions": "This call has no number, so it cannot be allowed or blocked.",
        "calls.allow_button": "Allow this number (ring next time)",
        "calls.block_button": "Block this number",
        "calls.block_note": "Note (optional)",
        "calls.mark_fraud": "It was fraud",
        "calls.mark_not_fraud": "It was not fraud",
        "calls.reviewed": "Checked by {who} on {when}.",
        "calls.review_help": "Your answer is kept and used to improve fraud detection.",
        "calls.web_note": "added on the web page",
        "calls.done.allowed": "The number is now allowed. The phone will ring next time.",
        "calls.done.blocked": "The number is now blocked. It will be refused next time.",
        "calls.done.blocked_still_allowed":
            "The number is blocked, but a range on the allow list also covers it, so the phone will still ring. "
            "Please check the number lists.",
        "calls.done.reviewed_fraud": "Recorded: it was fraud.",
        "calls.done.reviewed_not_fraud": "Recorded: it was not fraud.",
        "calls.event.offered": "Call came in",
        "calls.event.decided": "Decided",
        "calls.event.answered": "Answered",
        "calls.event.played": "Played a message",
        "calls.event.listened": "Listened and recorded",
        "calls.event.hung_up": "Hung up",
        "calls.event.handset": "Handset",
        "calls.event.rejected": "Refused without ringing the phone",
        "calls.event.household": "Rang the household phone",
        "calls.event.dtmf": "Key pressed",
        "calls.event.ended": "Call ended",
        "calls.event.error": "Error",
        "calls.event.line_fault": "Line problem",
        "calls.event.line_restored": "Line back",
        "calls.event.config": "Settings changed",
        "calls.event.recording": "Recording saved",
        "calls.event.transcript": "Transcript finished",
        "calls.event.fraud": "Fraud detected",
        "calls.event.household_warning": "Warned the household on the speaker",
        "calls.event.review": "Checked by the family",
        "calls.alert.fraud": "Fraud alert",
        "calls.alert.repeat_block": "Blocked number keeps calling",
        "calls.alert.health": "Device status alert",
        "calls.alert.digest": "Summary",
        "calls.alert.test": "Test alert",
        "calls.alert.other": "Alert",
        "calls.alert.acked": "Seen by {who} ({when})",
        "calls.alert.phone": "Phone call",
        "calls.delivery.pending": "Waiting",
        "calls.delivery.sending": "Sending",
        "calls.delivery.sent": "Sent",
        "calls.delivery.failed": "Not delivered yet (will retry)",
        "calls.delivery.acknowledged": "Seen",
        "calls.delivery.expired": "Given up",
        "calls.col.to": "To",
        "calls.col.channel": "How",
        "calls.col.status": "Status",
        "calls.category.impersonation": "Pretends to be police, officials or a bank",
        "calls.category.family_emergency": "Pretends to be family needing money",
        "calls.category.payment_instruction": "Tells you to pay or hand over money",
        "calls.category.refund": "Refund story",
        "calls.category.refund_prize": "Refund or prize story",
        "calls.category.legal_overdue": "Arrest, court or unpaid bills",
        "calls.category.legal_threat": "Threats of arrest or court",
        "calls.category.secrecy_urgency": "Secrecy or hurry",
        "calls.category.secrecy": "Asks for secrecy",
        "calls.category.urgency": "Hurries you",
        "calls.category.investment_romance": "Investment, romance or winnings",
        "calls.category.investment": "Investment offer",
        "calls.category.ivr_prompt": "Automated voice (\"press 1\")",
        "calls.category.automated_notice": "Automated notice",
        "calls.category.account_threat": "Says your account or card will be stopped",
        "calls.category.callback_request": "Asks you to call back",
        "calls.category.loan_debt": "Loan or debt",
        "calls.category.loan": "Loan or debt",
        "calls.category.warranty": "Warranty or contract",
    },
})  # fmt: skip
