"""The session middleware: resolves the user, sends everyone to ``/setup`` while no account exists,
limits request bodies and rejects any unsafe request whose CSRF token or Origin does not match,
before a page handler runs.
"""

from __future__ import annotations

import hmac
import html
import logging
from collections.abc import Mapping
from urllib.parse import urlsplit

import anyio
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from screening.web.context import WebContext
from screening.web.i18n import translate
from screening.web.limits import (
    ANONYMOUS_BODY_TIMEOUT_S,
    DRAIN_LIMIT_BYTES,
    MULTIPART,
    USER_BODY_TIMEOUT_S,
    BodyTooLarge,
    ClientGone,
    Sender,
    SpooledBody,
    body_limit,
)
from screening.web.sessions import (
    PRE_SESSION_COOKIE,
    SESSION_COOKIE,
    AuthState,
    Session,
    User,
    cookie_header,
    error_page,
    form_field,
    safe_next,
    state_of,
)
from screening.web.templating import request_language

log = logging.getLogger(__name__)

CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
FIRST_RUN_PATHS = frozenset({"/setup", "/language"})


# ---- middleware ---------------------------------------------------------------------------


def _host_of(url: str) -> str | None:
    """``scheme://host[:port]`` as ``host:port`` with the default port dropped; None if unparsable."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname:
        return None
    default = {"http": 80, "https": 443}.get(parts.scheme)
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    return host if port is None or port == default else f"{host}:{port}"


def _same_origin(headers: Mapping[str, str], scheme: str) -> bool:
    """Origin (else Referer), when sent, must name this server (defence in depth behind the CSRF token)."""
    host = headers.get("host")
    if not host:
        return True
    expected = _host_of(f"{scheme}://{host}")
    origin = headers.get("origin")
    if origin is not None:
        return origin != "null" and _host_of(origin) == expected
    referer = headers.get("referer")
    if referer is not None:
        return _host_of(referer) == expected
    return True


class SessionMiddleware:
    """Resolves the user, sends everyone to /setup before the first account, checks bodies and CSRF."""

    def __init__(self, app: ASGIApp, *, ctx: WebContext) -> None:
        self.app = app
        self.ctx = ctx

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/static/"):
            await self.app(scope, receive, send)
            return
        state = state_of(scope)
        request = Request(scope, receive)
        user, session = self._resolve(state, request)
        new_anonymous: Session | None = None
        if session is None and request.method in ("GET", "HEAD"):
            session = new_anonymous = state.sessions.new_anonymous()
        request_state = scope.setdefault("state", {})
        request_state["user"] = user
        request_state["csrf_token"] = session.csrf if session else ""

        response = self._refuse_or_redirect(state, request, user)
        if response is not None:
            await response(scope, receive, self._with_cookies(send, request, new_anonymous))
            return
        if request.method not in UNSAFE_METHODS:
            await self.app(scope, receive, self._with_cookies(send, request, new_anonymous))
            return
        checked = await self._check_unsafe(request, user, session, receive)
        if isinstance(checked, Response):
            await checked(scope, receive, send)
            return
        try:
            await self.app(scope, checked.replay(receive), self._with_cookies(send, request, new_anonymous))
        finally:
            checked.close()

    def _resolve(self, state: AuthState, request: Request) -> tuple[User | None, Session | None]:
        """(user, session): a valid login first, else the anonymous pre-session."""
        session = state.sessions.get(request.cookies.get(SESSION_COOKIE), anonymous=False)
        if session is not None:
            user = state.user_of(session)
            if user is not None:
                return user, session
        return None, state.sessions.get(request.cookies.get(PRE_SESSION_COOKIE), anonymous=True)

    @staticmethod
    def _refuse_or_redirect(state: AuthState, request: Request, user: User | None) -> Response | None:
        path = request.url.path
        if path not in FIRST_RUN_PATHS and state.users.setup_needed():
            return RedirectResponse("/setup", status_code=303)
        if (user is None and request.method == "GET" and SESSION_COOKIE not in request.cookies
                and request.headers.get("sec-fetch-site") == "cross-site"
                and request.headers.get("sec-fetch-mode") == "navigate"):  # fmt: skip
            # A link from an alert e-mail: SameSite=Strict withholds the login cookie on this first,
            # cross-site request. Reloading from our own page makes it same-site, and the cookie comes.
            return _bounce(request)
        return None

    async def _check_unsafe(self, request: Request, user: User | None, session: Session | None,
                            receive: Receive) -> Response | SpooledBody:  # fmt: skip
        """The CSRF check; the body read (spooled, capped by sender and route) and ready to replay."""
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        sender = Sender.USER if user is not None else Sender.ANONYMOUS if session is not None else Sender.NOBODY
        limit = body_limit(sender, request.url.path, content_type)
        if limit == 0:
            # Decided from the headers alone: not one byte of the body is read (issue 12.9).
            log.info("web: %s %s refused before its body: %s sender, %s", request.method, request.url.path,
                     sender.value, content_type or "no content type")  # fmt: skip
            key, status = ("error.csrf", 403) if sender is Sender.NOBODY else ("auth.unsupported", 415)
            return _closing(error_page(request, key, status))
        declared = request.headers.get("content-length", "")
        # A user's too-large upload is drained for a clean 413 page; an anonymous one is not worth reading.
        if declared.isdigit() and int(declared) > (DRAIN_LIMIT_BYTES if sender is Sender.USER else limit):
            return _closing(error_page(request, "auth.too_large", 413))
        body = SpooledBody(self.ctx.users_path.parent)
        try:
            with anyio.fail_after(USER_BODY_TIMEOUT_S if sender is Sender.USER else ANONYMOUS_BODY_TIMEOUT_S):
                await body.read(receive, limit, drain=sender is Sender.USER)
        except TimeoutError:  # a body trickled in to hold the connection
            body.close()
            return _closing(error_page(request, "auth.too_slow", 408))
        except BodyTooLarge:
            body.close()
            return _closing(error_page(request, "auth.too_large", 413))
        except ClientGone:
            body.close()
            return error_page(request, "error.bad_request", 400)
        refused = await self._csrf_refusal(request, session, content_type, body, receive)
        if refused is not None:
            body.close()
            return refused
        return body

    @staticmethod
    async def _csrf_refusal(request: Request, session: Session | None, content_type: str, body: SpooledBody,
                            receive: Receive) -> Response | None:  # fmt: skip
        if not _same_origin(request.headers, request.url.scheme):
            log.warning("web: %s %s refused: Origin/Referer is another site", request.method, request.url.path)
            return error_page(request, "error.csrf", 403)
        token = request.headers.get(CSRF_HEADER)
        if token is None and content_type in (MULTIPART, "application/x-www-form-urlencoded"):
            try:
                async with Request(request.scope, body.replay(receive)).form() as form:
                    token = form_field(form, CSRF_FIELD, 256)
            except Exception as exc:  # noqa: BLE001 -- any parser failure on hostile input is the client's error
                log.info("web: %s %s: unreadable form: %s", request.method, request.url.path, exc)
                return error_page(request, "error.bad_request", 400)
        if session is None or not token or not hmac.compare_digest(token.encode(), session.csrf.encode()):
            log.info("web: %s %s refused: missing or wrong CSRF token", request.method, request.url.path)
            return error_page(request, "error.csrf", 403)
        return None

    @staticmethod
    def _with_cookies(send: Send, request: Request, new_anonymous: Session | None) -> Send:
        if new_anonymous is None:
            return send
        header = cookie_header(PRE_SESSION_COOKIE, new_anonymous.token, secure=request.url.scheme == "https")

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"set-cookie", header.encode("latin-1"))]
            await send(message)

        return send_with_cookie


def _closing(response: Response) -> Response:
    """A refusal sent before the body was read (or all of it): the connection cannot be reused."""
    response.headers["connection"] = "close"
    return response


def _bounce(request: Request) -> Response:
    target = safe_next(request.url.path + (f"?{request.url.query}" if request.url.query else ""))
    url = html.escape(target, quote=True)
    text = html.escape(translate(request_language(request), "auth.redirecting"))
    body = (f'<!doctype html><html><head><meta charset="utf-8"><meta http-equiv="refresh" content="0; url={url}">'
            f'</head><body><p><a href="{url}">{text}</a></p></body></html>')  # fmt: skip
    return HTMLResponse(body)
