"""The number lists page: block and allow tabs, add / remove, CSV import, export.

Only entries people added are listed one by one (paged); a feed's entries are
shown as a count per feed, read-only, because a police feed can hold a million
numbers. Adding and importing use the same parsers as ``mamoru block|allow``
(``parse_list_spec``, ``blocklist.formats``), so the page and the CLI accept
exactly the same input.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any
from urllib.parse import urlencode

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from blocklist.formats import (
    ImportResult,
    ListFormat,
    detect_format,
    read_entries,
    write_entries,
)
from blocklist.list_records import RowProblem
from blocklist.lists import parse_list_spec
from blocklist.store import Store
from blocklist.store.rows import StoreError
from screening.core.clock import iso_utc, parse_iso_utc, region_zone
from screening.core.model import Action, Language, ListEntry, ListKind, MatchKind
from screening.core.numbers import national_format, region_dialling
from screening.web.call_views import (
    WEB_SOURCE,
    done_message,
    local_time,
    note_text,
    page_number,
)
from screening.web.context import WebContext
from screening.web.i18n import translate
from screening.web.sessions import require_user
from screening.web.templating import render, request_language

log = logging.getLogger(__name__)

PAGE_SIZE = 50
MAX_NOTE_CHARS = 200
MAX_NUMBER_CHARS = 80
MAX_IMPORT_BYTES = 20 * 1024 * 1024  # the auth middleware refuses larger bodies first; this is the backstop
PROBLEMS_SHOWN = 100
IMPORT_FORMATS = (ListFormat.PLAIN, ListFormat.CSV, ListFormat.FTC,  # a feed file belongs to `mamoru feed`
                  ListFormat.VCARD, ListFormat.NCID, ListFormat.CALLATTENDANT)
EXPORT_FORMATS = {ListFormat.CSV: ("csv", "text/csv; charset=utf-8"),
                  ListFormat.PLAIN: ("txt", "text/plain; charset=utf-8"),
                  ListFormat.VCARD: ("vcf", "text/vcard; charset=utf-8")}  # fmt: skip

LIST_DONE = {
    "added": "lists.done.added",
    "removed": "lists.done.removed",
    "not_found": "lists.done.not_found",
    "imported": "lists.done.imported",
}


@dataclass(frozen=True, slots=True)
class EntryView:
    label: str  # as the household writes it: 03-1234-5678, 0120*, 03-1234-0000 〜 03-1234-9999
    match: str
    value: str
    value_end: str
    note: str
    source: str
    added: str
    expires: str
    expired: bool
    own_action: str = ""  # the entry's own action in words ("" = the list's)


def entry_label(entry: ListEntry, region: str) -> str:
    if entry.match is MatchKind.EXACT:
        return national_format(entry.value, region)
    if entry.match is MatchKind.RANGE:
        return f"{national_format(entry.value, region)} 〜 {national_format(entry.value_end or '', region)}"
    meta = region_dialling(region)
    home = f"+{meta.country_code}" if meta is not None else None
    if meta is not None and meta.national_prefix and home and entry.value.startswith(home):
        return f"{meta.national_prefix}{entry.value[len(home):]}*"
    return f"{entry.value}*"


def _source_text(lang: Language, source: str) -> str:
    key = f"lists.source.{source}"
    text = translate(lang, key)
    return text if text != key else source


def _expiry_day(expires_at: str | None, zone: tzinfo) -> date | None:
    """The last local day an entry is in force (it expires at the start of the next)."""
    if not expires_at:
        return None
    try:
        return (parse_iso_utc(expires_at) - timedelta(seconds=1)).astimezone(zone).date()
    except ValueError:
        return None


def _day_text(lang: Language, day: date) -> str:
    if lang is Language.JA:
        return f"{day.year}年{day.month}月{day.day}日"
    return day.isoformat()


def entry_view(entry: ListEntry, region: str, zone: tzinfo, lang: Language, now: datetime) -> EntryView:
    last_day = _expiry_day(entry.expires_at, zone)
    expired = entry.expires_at is not None and entry.expires_at <= iso_utc(now)
    if last_day is None:
        expires = translate(lang, "lists.no_expiry")
    else:
        expires = translate(lang, "lists.expired" if expired else "lists.until", day=_day_text(lang, last_day))
    added = parse_iso_utc(entry.added_at).astimezone(zone).date() if entry.added_at else None
    return EntryView(entry_label(entry, region), entry.match.value, entry.value, entry.value_end or "",
                     note_text(lang, entry.note), _source_text(lang, entry.source),
                     _day_text(lang, added) if added else "", expires, expired,
                     translate(lang, "lists.own_action", action=translate(lang, f"schedule.action.{entry.action.value}"))
                     if entry.action else "")  # fmt: skip


def _ctx(request: Request) -> WebContext:
    return request.app.state.ctx  # type: ignore[no-any-return]


def _kind(raw: Any, *, strict: bool) -> ListKind:
    value = str(raw or "")
    if value in ListKind._value2member_map_:
        return ListKind(value)
    if strict:
        raise HTTPException(400, "kind must be block or allow")
    return ListKind.BLOCK


@dataclass(slots=True)
class AddForm:
    """The add form as typed, and its errors by field (shown next to the field)."""

    number: str = ""
    note: str = ""
    expires: str = ""
    screen: bool = False  # this number's own action: screen (ask the name, the household decides)
    errors: dict[str, str] | None = None


@dataclass(frozen=True, slots=True)
class ImportReport:
    imported: int
    rows: int
    format: str
    problems: list[RowProblem]
    more_problems: int
    error: str  # why nothing was imported, "" otherwise


def lists_page(request: Request) -> Response:
    require_user(request)
    kind = _kind(request.query_params.get("kind"), strict=False)
    done = request.query_params.get("done")
    count = request.query_params.get("n", "")
    extra = {"n": int(count)} if done == "imported" and count.isdigit() and len(count) < 10 else {}
    return _render_lists(request, kind, page_number(request.query_params.get("page")),
                         done_key=done if (done != "imported" or extra) else None, done_values=extra)  # fmt: skip


def _render_lists(request: Request, kind: ListKind, page: int, *, form: AddForm | None = None,
                  report: ImportReport | None = None, done_key: str | None = None,
                  done_values: dict[str, Any] | None = None, status_code: int = 200) -> Response:  # fmt: skip
    ctx, lang = _ctx(request), request_language(request)
    region = ctx.config().line.home_region
    zone = region_zone(region)
    now = datetime.now(UTC)
    try:
        total = ctx.store.count_own_entries(kind)
        pages = max(math.ceil(total / PAGE_SIZE), 1)
        page = min(page, pages)
        entries = ctx.store.own_entries(kind, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE)
        feeds = _feed_views(ctx.store, zone, lang, now) if kind is ListKind.BLOCK else []
    except StoreError as exc:
        log.error("web: cannot read the number lists: %s", exc)
        return render(request, "error.html", {"message": translate(lang, "lists.store_error")}, status_code=503)
    done = done_message(lang, done_key, LIST_DONE)
    if done and done_values:
        done = translate(lang, LIST_DONE[done_key or ""], **done_values)

    def link(to_page: int) -> str:
        return "/lists?" + urlencode({"kind": kind.value, "page": to_page})

    return render(request, "lists.html", {
        "kind": kind.value, "kinds": [k.value for k in (ListKind.BLOCK, ListKind.ALLOW)],
        "entries": [entry_view(e, region, zone, lang, now) for e in entries],
        "total": total, "page": page, "pages": pages,
        "prev_url": link(page - 1) if page > 1 else None, "next_url": link(page + 1) if page < pages else None,
        "feeds": feeds, "form": form or AddForm(), "report": report, "done": done,
        "import_formats": [f.value for f in IMPORT_FORMATS], "export_formats": [f.value for f in EXPORT_FORMATS],
        "note_max": MAX_NOTE_CHARS, "today": datetime.now(zone).date().isoformat(),
    }, status_code=status_code)  # fmt: skip


def _feed_views(store: Store, zone: tzinfo, lang: Language, now: datetime) -> list[dict[str, Any]]:
    """One line per feed: how many numbers, when it was last checked, whether it is failing."""
    counts = store.feed_entry_counts()
    views = []
    for feed in store.feeds():
        views.append({"name": feed["name"], "count": counts.get(feed["name"], 0),
                      "checked": local_time(feed.get("checked_at"), zone, lang, now),
                      "failing": bool(feed.get("error"))})  # fmt: skip
    known = {v["name"] for v in views}
    views += [{"name": name, "count": n, "checked": "", "failing": False} for name, n in counts.items()
              if name not in known]  # fmt: skip
    return views


async def add_entry(request: Request) -> Response:
    require_user(request)
    form = await request.form()
    kind = _kind(form.get("kind"), strict=True)
    typed = AddForm(number=str(form.get("number") or "").strip()[:MAX_NUMBER_CHARS],
                    note=" ".join(str(form.get("note") or "").split())[:MAX_NOTE_CHARS],
                    expires=str(form.get("expires") or "").strip()[:20], screen=form.get("screen") == "1")  # fmt: skip
    ctx, lang = _ctx(request), request_language(request)
    region = ctx.config().line.home_region
    errors: dict[str, str] = {}
    spec: tuple[MatchKind, str, str | None] | None = None
    try:
        spec = parse_list_spec(typed.number, region)
    except ValueError as exc:  # ListSpecError, and a NumberError some odd ranges raise (000..000)
        errors["number"] = translate(lang, "lists.error.number" if typed.number else "lists.error.number_empty")
        log.info("web: list entry %r refused: %s", typed.number, exc)
    expires_at = None
    if typed.expires:
        expires_at = _expiry_from_day(typed.expires, region_zone(region))
        if expires_at is None:
            errors["expires"] = translate(lang, "lists.error.expires")
    if errors or spec is None:
        typed.errors = errors
        return _render_lists(request, kind, 1, form=typed, status_code=400)
    match, value, value_end = spec
    entry = ListEntry(kind, match, value, value_end, source=WEB_SOURCE, note=typed.note, expires_at=expires_at,
                      action=Action.SCREEN if typed.screen else None)  # fmt: skip
    try:
        await run_in_threadpool(ctx.store.add_entry, entry)
    except (StoreError, ValueError) as exc:
        log.error("web: cannot add %s to the %s list: %s", entry.describe(), kind.value, exc)
        raise HTTPException(503) from exc
    log.info("web: %s added to the %s list", entry.describe(), kind.value)
    return RedirectResponse(f"/lists?kind={kind.value}&done=added", status_code=303)


def _expiry_from_day(text: str, zone: tzinfo) -> str | None:
    """A typed last day (YYYY-MM-DD, today or later) -> the start of the next local day, as ISO UTC."""
    try:
        day = date.fromisoformat(text)
    except ValueError:
        return None
    if day < datetime.now(zone).date() or day.year > 9998:
        return None
    return iso_utc(datetime.combine(day + timedelta(days=1), time(0), tzinfo=zone))


async def remove_entry(request: Request) -> Response:
    require_user(request)
    form = await request.form()
    kind = _kind(form.get("kind"), strict=True)
    match = str(form.get("match") or "")
    if match not in MatchKind._value2member_map_:
        raise HTTPException(400, "bad match")
    value, value_end = str(form.get("value") or ""), str(form.get("value_end") or "")
    if not value or len(value) > MAX_NUMBER_CHARS or len(value_end) > MAX_NUMBER_CHARS:
        raise HTTPException(400, "bad value")
    store = _ctx(request).store
    try:
        removed = await run_in_threadpool(lambda: store.remove_entry(kind, MatchKind(match), value, value_end or None,
                                                                     own_only=True))  # fmt: skip
    except StoreError as exc:
        raise HTTPException(503) from exc
    if removed:
        log.info("web: %s%s removed from the %s list", value, f"..{value_end}" if value_end else "", kind.value)
    return RedirectResponse(f"/lists?kind={kind.value}&done={'removed' if removed else 'not_found'}", status_code=303)


async def import_entries(request: Request) -> Response:
    require_user(request)
    form = await request.form()
    kind = _kind(form.get("kind"), strict=True)
    lang = request_language(request)
    upload = form.get("file")
    chosen = str(form.get("format") or "")
    if not isinstance(upload, UploadFile) or not upload.filename:
        return _import_refused(request, kind, translate(lang, "lists.error.no_file"))
    data = await upload.read(MAX_IMPORT_BYTES + 1)
    if len(data) > MAX_IMPORT_BYTES:
        return _import_refused(request, kind, translate(lang, "lists.error.too_big", mb=MAX_IMPORT_BYTES >> 20))
    if not data.strip():
        return _import_refused(request, kind, translate(lang, "lists.error.empty_file"))
    if chosen and chosen not in {f.value for f in IMPORT_FORMATS}:
        raise HTTPException(400, "unknown format")
    fmt = ListFormat(chosen) if chosen else detect_format(data)
    if fmt is ListFormat.FEED:
        return _import_refused(request, kind, translate(lang, "lists.error.feed_file"))
    ctx = _ctx(request)
    region = ctx.config().line.home_region
    source = "ftc" if fmt is ListFormat.FTC else WEB_SOURCE
    try:
        result: ImportResult = await run_in_threadpool(
            lambda: read_entries(data, fmt, kind=kind, home_region=region, source=source))
    except ValueError as exc:  # a row the parsers do not turn into a RowProblem: refuse the file, never a 500
        log.error("web: list import failed on a row: %s", exc)
        return _import_refused(request, kind, translate(lang, "lists.error.unreadable"))
    imported = 0
    if result.entries:
        try:
            imported = await run_in_threadpool(ctx.store.import_entries, result.entries)
        except (StoreError, ValueError) as exc:
            log.error("web: list import refused by the store: %s", exc)
            return _import_refused(request, kind, translate(lang, "lists.error.store"), result)
    log.info("web: imported %d %s entries (%s, %d rows, %d problems)", imported, kind.value, fmt.value,
             result.rows, len(result.problems))  # fmt: skip
    if imported and not result.problems:
        return RedirectResponse(f"/lists?kind={kind.value}&done=imported&n={imported}", status_code=303)
    error = "" if imported else translate(lang, "lists.error.nothing_imported")
    report = ImportReport(imported, result.rows, fmt.value, result.problems[:PROBLEMS_SHOWN],
                          max(len(result.problems) - PROBLEMS_SHOWN, 0), error)  # fmt: skip
    return _render_lists(request, kind, 1, report=report, status_code=200 if imported else 400)


def _import_refused(request: Request, kind: ListKind, error: str, result: ImportResult | None = None) -> Response:
    report = ImportReport(0, result.rows if result else 0, result.format.value if result else "",
                          result.problems[:PROBLEMS_SHOWN] if result else [], 0, error)  # fmt: skip
    return _render_lists(request, kind, 1, report=report, status_code=400)


def export_entries(request: Request) -> Response:
    """A download of the family's own entries (not the feeds': those come from their publisher)."""
    require_user(request)
    kind = _kind(request.query_params.get("kind"), strict=True)
    chosen = request.query_params.get("format", ListFormat.CSV.value)
    fmt = ListFormat(chosen) if chosen in {f.value for f in EXPORT_FORMATS} else None
    if fmt is None:
        raise HTTPException(400, "format must be csv or plain")
    ctx = _ctx(request)
    try:
        entries = ctx.store.own_entries(kind)
    except StoreError as exc:
        raise HTTPException(503) from exc
    data = write_entries(entries, fmt, home_region=ctx.config().line.home_region)
    extension, media_type = EXPORT_FORMATS[fmt]
    name = f"mamoru-{kind.value}-list.{extension}"
    return Response(data, media_type=media_type, headers={"content-disposition": f'attachment; filename="{name}"'})


routes: list[Route] = [
    Route("/lists", lists_page, methods=["GET"]),
    Route("/lists/add", add_entry, methods=["POST"]),
    Route("/lists/remove", remove_entry, methods=["POST"]),
    Route("/lists/import", import_entries, methods=["POST"]),
    Route("/lists/export", export_entries, methods=["GET"]),
]
