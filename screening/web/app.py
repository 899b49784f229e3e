"""The ASGI application: pages from each module, auth, security headers, error pages."""

from __future__ import annotations

import logging
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from screening.web import (
    pages_accounts,
    pages_announcements,
    pages_calls,
    pages_health,
    pages_lists,
    pages_login,
    pages_relatives,
    pages_rules,
    pages_stats,
    pages_suggestions,
    pages_system,
)
from screening.web.context import WebContext
from screening.web.hostcheck import HostCheck
from screening.web.i18n import translate
from screening.web.middleware import SessionMiddleware
from screening.web.sessions import LoginRequired, login_url, require_user
from screening.web.templating import render, request_language

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"

# No script at all, nothing from elsewhere, never framed: the page works without JavaScript.
SECURITY_HEADERS = {
    b"content-security-policy": b"default-src 'self'; script-src 'none'; object-src 'none'; "
    b"frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    b"x-content-type-options": b"nosniff",
    b"referrer-policy": b"same-origin",
    b"x-frame-options": b"DENY",
    b"cache-control": b"no-store",
}


class SecurityHeaders:
    """Adds SECURITY_HEADERS to every HTTP response (pure ASGI: works for streamed audio too)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in SECURITY_HEADERS.items() if k not in present]
                message["headers"] = list(message.get("headers", [])) + extra
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    lang = request_language(request)
    key = {404: "error.not_found", 403: "error.forbidden"}.get(exc.status_code, "error.bad_request")
    return render(request, "error.html", {"message": translate(lang, key)}, status_code=exc.status_code)


async def _login_required(request: Request, exc: Exception) -> Response:
    return RedirectResponse(login_url(request), status_code=303)


async def _home(request: Request) -> Response:
    require_user(request)
    return RedirectResponse("/calls", status_code=303)


def create_app(ctx: WebContext) -> Starlette:
    """One app per server; ``ctx.store`` must already be open."""
    routes = [
        Route("/", _home),
        *pages_login.routes,
        *pages_accounts.routes,
        *pages_calls.routes,
        *pages_lists.routes,
        *pages_rules.routes,
        *pages_relatives.routes,
        *pages_announcements.routes,
        *pages_system.routes,
        *pages_health.routes,
        *pages_stats.routes,
        *pages_suggestions.routes,
        Mount("/static", StaticFiles(directory=str(STATIC_DIR)), name="static"),
    ]
    app = Starlette(
        routes=routes,
        # HostCheck first: a rebound name (DNS rebinding) gets nothing, not even a pre-session.
        middleware=[Middleware(HostCheck, config=ctx.config), Middleware(SecurityHeaders),
                    Middleware(SessionMiddleware, ctx=ctx)],
        exception_handlers={HTTPException: _http_error, LoginRequired: _login_required},
    )
    app.state.ctx = ctx
    return app
