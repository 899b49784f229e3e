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
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlencode

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.routing import Route

from blocklist.lists import NumberLists
from blocklist.store import Store
from blocklist.store.rows import CallFilter, CallRow, StoreError, relpath_problem
from screening.core.clock import iso_utc, region_zone
from screening.core.model import (
    Action,
    Language,
    ListEntry,
    ListKind,
    MatchKind,
    ReviewLabel,
    Verdict,
)
from screening.core.numbers import clean_digits, region_dialling
from screening.web.call_messages import calls_with_messages, message_event, message_file, message_view
from screening.web.call_views import (
    WEB_NOTE,
    WEB_SOURCE,
    alert_views,
    call_view,
    clock_text,
    done_message,
    event_views,
    local_time,
    page_number,
    transcript_lines,
)
from screening.web.context import WebContext
from screening.web.i18n import translate
from screening.web.sessions import User, require_user
from screening.web.templating import render, request_language

log = logging.getLogger(__name__)

PAGE_SIZE = 30
MAX_QUERY_CHARS = 100
MAX_NOTE_CHARS = 200
MAX_SQLITE_ID = 2**63 - 1
_MIN_NUMBER_DIGITS = 3  # fewer typed digits match too much to be a number search

# flash key in ?done= -> message key; anything else in the query string is never shown
CALL_DONE = {
    "allowed": "calls.done.allowed",
    "blocked": "calls.done.blocked",
    "blocked_still_allowed": "calls.done.blocked_still_allowed",
    "reviewed_fraud": "calls.done.reviewed_fraud",
    "reviewed_not_fraud": "calls.done.reviewed_not_fraud",
}


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
    meta = region_dialling(region)
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
        with_message = calls_with_messages(ctx.store, [r.id for r in rows])
        offers = len(ctx.store.suggestions(datetime.now(UTC)))  # 「家族リストに追加しますか？」 notice
    except StoreError as exc:
        log.error("web: cannot read the call log: %s", exc)
        return render(request, "error.html", {"message": translate(lang, "calls.store_error")}, status_code=503)
    now = datetime.now(UTC)
    zone = region_zone(region)
    filters = {k: v for k, v in chosen.items() if v}

    def link(to_page: int) -> str:
        return "/calls?" + urlencode({**filters, "page": to_page})

    return render(request, "calls.html", {
        "calls": [call_view(r, region, zone, lang, now) for r in rows], "with_message": with_message,
        "chosen": chosen, "filtered": bool(filters), "total": total, "page": page, "pages": pages,
        "prev_url": link(page - 1) if page > 1 else None, "next_url": link(page + 1) if page < pages else None,
        "verdicts": [v.value for v in Verdict], "actions": [a.value for a in Action],
        "done": done_message(lang, request.query_params.get("done"), CALL_DONE), "offers": offers,
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
    lines = transcript_lines(row, events, flags)
    return render(request, "call.html", {
        "call": call_view(row, region, zone, lang, now),
        "message": message_view(row, events, lines, ctx.config().recording.dir, lang),
        "transcript": lines,
        "flags": [{"phrase": f.phrase, "at": clock_text(f.start_s), "category": _category_text(lang, f.category)}
                  for f in flags],
        "score": f"{row.score:.1f}" if row.score is not None else "",
        "reviewed_by": row.reviewed_by or "",
        "reviewed_when": local_time(row.reviewed_at, zone, lang, now) if row.review_label else "",
        "events": event_views(events, zone, lang, now),
        "alerts": alert_views(alerts, zone, lang, now),
        "done": done_message(lang, request.query_params.get("done"), CALL_DONE),
        "note_max": MAX_NOTE_CHARS,
    })  # fmt: skip


def _category_text(lang: Language, category: str) -> str:
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


def message(request: Request) -> Response:
    """The message the caller left, by call id only; the event's path must be inside the messages dir."""
    require_user(request)
    ctx = _ctx(request)
    call_id = _call_id(request)
    try:
        _get_call(ctx.store, call_id)
        event = message_event(ctx.store.events_for(call_id))
    except StoreError as exc:
        log.error("web: cannot read call %d: %s", call_id, exc)
        raise HTTPException(503) from exc
    path = message_file(ctx.config().recording.dir, event)
    if path is None:
        if event is not None and event.detail.get("path"):
            log.warning("web: call %d: message path %r is not a message inside the messages dir; not served",
                        call_id, event.detail.get("path"))  # fmt: skip
        raise HTTPException(404)
    return FileResponse(path, media_type="audio/wav", filename=f"mamoru-message-{call_id}.wav",
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
    Route("/calls/{id:int}/message", message, methods=["GET"]),
    Route("/calls/{id:int}/allow", allow_number, methods=["POST"]),
    Route("/calls/{id:int}/block", block_number, methods=["POST"]),
    Route("/calls/{id:int}/review", review, methods=["POST"]),
]
