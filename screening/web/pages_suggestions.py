"""「家族リストに追加しますか？」: numbers the household keeps talking to, offered for the allowlist.

A person answers each offer (add / no thanks); nothing is ever added without one. The form only
answers a number that is on offer right now, so it cannot be used to allowlist any other number.
Which calls make an offer: :mod:`blocklist.store.suggestions`.
"""

from __future__ import annotations

import logging

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from blocklist.store.suggestions import SuggestionState
from screening.core.clock import region_zone, utc_now
from screening.core.numbers import national_format
from screening.web.call_views import WEB_SOURCE, local_time
from screening.web.sessions import require_user
from screening.web.settings_common import flash_message, text_field, web_ctx
from screening.web.templating import render, request_language

log = logging.getLogger(__name__)

DONE = {"added": "suggestions.done.added", "dismissed": "suggestions.done.dismissed"}
MAX_NUMBER_CHARS = 20


async def suggestions_page(request: Request) -> Response:
    require_user(request)
    ctx = web_ctx(request)
    region = ctx.config().line.home_region
    zone, now, lang = region_zone(region), utc_now(), request_language(request)
    offers = await run_in_threadpool(ctx.store.suggestions, now)
    rows = [{"number": s.number, "shown": national_format(s.number, region), "calls": s.calls,
             "last": local_time(s.last_at, zone, lang, now)} for s in offers]  # fmt: skip
    return render(request, "suggestions.html", {"offers": rows, "done": flash_message(request, DONE)})


async def _answer(request: Request, state: SuggestionState) -> Response:
    user = require_user(request)
    ctx = web_ctx(request)
    number = text_field(await request.form(), "number", MAX_NUMBER_CHARS)
    offers = await run_in_threadpool(ctx.store.suggestions, utc_now())
    if number not in {s.number for s in offers}:
        raise HTTPException(400)  # not on offer (already answered, or never was)
    await run_in_threadpool(ctx.store.answer_suggestion, number, state, user.name, source=WEB_SOURCE)
    log.info("web: %s answered the family-list offer for %s: %s", user.name, number, state.value)
    done = "added" if state is SuggestionState.ACCEPTED else "dismissed"
    return RedirectResponse(f"/suggestions?done={done}", status_code=303)


async def accept(request: Request) -> Response:
    return await _answer(request, SuggestionState.ACCEPTED)


async def dismiss(request: Request) -> Response:
    return await _answer(request, SuggestionState.DISMISSED)


routes: list[Route] = [
    Route("/suggestions", suggestions_page, methods=["GET"]),
    Route("/suggestions/accept", accept, methods=["POST"]),
    Route("/suggestions/dismiss", dismiss, methods=["POST"]),
]
