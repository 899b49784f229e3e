"""The hub page: family anywhere, the police fleet view, the reviewer's queue. Server-rendered, no JavaScript.

Same defences as the unit page, reusing its pieces where they fit: argon2 password hashes
(``screening.web.accounts``), a Host allow-list (``host_name_of``), CSRF tokens on every form
plus a same-origin check, HttpOnly SameSite=Strict cookies holding only a random token, login
throttling per account. Roles are enforced on every route and in every query: a family account
only ever reads rows joined to its own household; the police role has no route that returns a
call, a number or audio. Japanese first (``screening/i18n/hub.*.toml``).
"""

from __future__ import annotations

import csv
import hmac
import io
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from anyio import to_thread
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from screening import i18n
from screening.core.clock import local_stamp, region_zone, utc_now
from screening.hubwire import Command, CommandAction, is_valid_unit_id
from screening.hubwire.fields import E164
from screening.web.accounts import verify_password
from screening.web.hostcheck import host_name_of

from .charts import area_charts, month_window
from .review import Decision, ReviewError, decide
from .store import HubAccount, HubRole, HubStore, find_account

log = logging.getLogger(__name__)

T = TypeVar("T")
COOKIE = "mamoru_hub"
PRE_COOKIE = "mamoru_hub_pre"
SESSION_HOURS = 12
MAX_FAILURES = 5
FAILURE_WINDOW_S = 900.0
MAX_SESSIONS = 20_000


@dataclass(frozen=True, slots=True)
class HubWebSettings:
    dsn: str
    allowed_hosts: frozenset[str]
    feed_repo: Path | None = None
    home_region: str = "JP"
    secure_cookies: bool = True  # behind TLS (the hub is reached from the internet); False only on loopback tests


@dataclass
class HubSession:
    token: str
    csrf: str
    expires: float
    account: HubAccount | None = None


@dataclass
class _Sessions:
    by_token: dict[str, HubSession] = field(default_factory=dict)
    failures: dict[str, list[float]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self, token: str | None) -> HubSession | None:
        with self.lock:
            session = self.by_token.get(token or "")
            if session is not None and session.expires < time.time():
                del self.by_token[session.token]
                return None
            return session

    def new(self, account: HubAccount | None, hours: float) -> HubSession:
        session = HubSession(secrets.token_urlsafe(32), secrets.token_urlsafe(32), time.time() + hours * 3600, account)
        with self.lock:
            if len(self.by_token) >= MAX_SESSIONS:
                # A flood of login-page visits must not grow memory: drop expired, then the oldest anonymous ones.
                now = time.time()
                self.by_token = {k: v for k, v in self.by_token.items() if v.expires >= now}
                anonymous = [k for k, v in self.by_token.items() if v.account is None]
                for token in anonymous[: max(len(self.by_token) - MAX_SESSIONS // 2, 0)]:
                    del self.by_token[token]
            self.by_token[session.token] = session
        return session

    def end(self, token: str | None) -> None:
        with self.lock:
            self.by_token.pop(token or "", None)

    def throttled(self, name: str) -> bool:
        now = time.time()
        with self.lock:
            recent = [t for t in self.failures.get(name, []) if now - t < FAILURE_WINDOW_S]
            self.failures[name] = recent
            return len(recent) >= MAX_FAILURES

    def failed(self, name: str) -> None:
        with self.lock:
            self.failures.setdefault(name, []).append(time.time())


class HostAllowList:
    """Refuse any Host not configured (DNS rebinding, stray virtual hosts)."""

    def __init__(self, app: ASGIApp, allowed: frozenset[str]) -> None:
        self.app = app
        self.allowed = allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = dict(scope.get("headers") or [])
            host = host_name_of(headers.get(b"host", b"").decode("latin-1"))
            if host is None or host not in self.allowed:
                await PlainTextResponse("このホスト名では開けません。 / Host not allowed.\n", 400)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _t(key: str, lang: str = "ja", **values: object) -> str:
    return i18n.lookup("hub", lang, key, **values)


class HubPages:
    def __init__(self, settings: HubWebSettings, send_command: Callable[[Command], None] | None) -> None:
        self.settings = settings
        self.send_command = send_command
        self.sessions = _Sessions()
        self.env = Environment(loader=PackageLoader("screening.hub", "templates"), autoescape=select_autoescape())
        self.env.globals["t"] = _t
        self.zone = region_zone(settings.home_region)
        self.env.filters["local"] = lambda v: local_stamp(v, self.zone) if isinstance(v, datetime) else ""

    # ----------------------------------------------------------------- plumbing

    async def db(self, fn: Callable[[HubStore], T]) -> T:
        def run() -> T:
            with HubStore(self.settings.dsn) as store:
                return fn(store)

        return await to_thread.run_sync(run)

    def render(self, request: Request, name: str, status: int = 200, **values: Any) -> HTMLResponse:
        session: HubSession | None = request.scope.get("hub_session")
        html = self.env.get_template(name).render(session=session, account=session.account if session else None,
                                                  **values)  # fmt: skip
        response = HTMLResponse(html, status)
        response.headers["Content-Security-Policy"] = "default-src 'none'; style-src 'self' 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "same-origin"
        response.headers["Cache-Control"] = "no-store"
        return response

    def error(self, request: Request, key: str, status: int) -> HTMLResponse:
        return self.render(request, "error.html", status, message=_t(key))

    def _cookie(self, response: Response, name: str, value: str, max_age: int | None) -> None:
        response.set_cookie(name, value, max_age=max_age, httponly=True, samesite="strict",
                            secure=self.settings.secure_cookies, path="/")  # fmt: skip

    def user(self, request: Request, *roles: HubRole) -> HubAccount | Response:
        session = self.sessions.get(request.cookies.get(COOKIE))
        if session is None or session.account is None:
            return RedirectResponse("/login", 303)
        request.scope["hub_session"] = session
        if session.account.role not in roles:
            return self.error(request, "error.forbidden", 403)
        return session.account

    async def form(self, request: Request) -> dict[str, str] | Response:
        """The POSTed form once its CSRF token and origin check out."""
        origin = request.headers.get("origin")
        if origin is not None and host_name_of(origin.split("://", 1)[-1]) not in self.settings.allowed_hosts:
            return self.error(request, "error.csrf", 403)
        form = await request.form(max_files=0, max_fields=20)
        values = {k: v for k, v in form.items() if isinstance(v, str) and len(v) <= 4096}
        session: HubSession | None = request.scope.get("hub_session") or self.sessions.get(request.cookies.get(PRE_COOKIE))
        if session is None or not hmac.compare_digest(values.get("csrf", ""), session.csrf):
            return self.error(request, "error.csrf", 403)
        return values

    # ----------------------------------------------------------------- login

    async def login_page(self, request: Request) -> Response:
        pre = self.sessions.new(None, 0.5)
        request.scope["hub_session"] = pre
        response = self.render(request, "login.html", failed=request.query_params.get("failed") == "1")
        self._cookie(response, PRE_COOKIE, pre.token, 1800)
        return response

    async def login(self, request: Request) -> Response:
        values = await self.form(request)
        if isinstance(values, Response):
            return values
        name, password = values.get("name", "")[:64], values.get("password", "")
        if self.sessions.throttled(name):
            return self.error(request, "error.throttled", 429)
        account = await self.db(lambda s: find_account(s, name))
        ok = await to_thread.run_sync(verify_password, account.password_hash if account else None, password)
        if not ok or account is None:
            self.sessions.failed(name)
            return RedirectResponse("/login?failed=1", 303)
        self.sessions.end(request.cookies.get(PRE_COOKIE))
        session = self.sessions.new(account, SESSION_HOURS)  # always a new token: no fixation
        response = RedirectResponse("/", 303)
        self._cookie(response, COOKIE, session.token, SESSION_HOURS * 3600)
        log.info("hub login: %s (%s)", account.name, account.role.value)
        return response

    async def logout(self, request: Request) -> Response:
        account = self.user(request, *HubRole)
        if isinstance(account, Response):
            return account
        values = await self.form(request)
        if isinstance(values, Response):
            return values
        self.sessions.end(request.cookies.get(COOKIE))
        response = RedirectResponse("/login", 303)
        response.delete_cookie(COOKIE, path="/")
        return response

    async def home(self, request: Request) -> Response:
        account = self.user(request, *HubRole)
        if isinstance(account, Response):
            return account
        return RedirectResponse({HubRole.FAMILY: "/family", HubRole.POLICE: "/fleet",
                                 HubRole.REVIEWER: "/review"}[account.role], 303)  # fmt: skip

    # ----------------------------------------------------------------- family

    async def family(self, request: Request) -> Response:
        account = self.user(request, HubRole.FAMILY)
        if isinstance(account, Response):
            return account
        household = account.household or ""
        calls = await self.db(lambda s: s.household_calls(household))
        return self.render(request, "family.html", calls=calls, sent=request.query_params.get("sent"))

    async def call(self, request: Request) -> Response:
        account = self.user(request, HubRole.FAMILY)
        if isinstance(account, Response):
            return account
        unit, message_id = request.path_params["unit"], request.path_params["id"]
        household = account.household or ""
        row = await self.db(lambda s: s.household_call(household, unit, message_id))
        if row is None:
            return self.error(request, "error.not_found", 404)
        has_audio = await self.db(lambda s: s.recording(unit, row["call_id"]) is not None)
        return self.render(request, "call.html", call=row, has_audio=has_audio)

    async def recording(self, request: Request) -> Response:
        account = self.user(request, HubRole.FAMILY)
        if isinstance(account, Response):
            return account
        unit, message_id = request.path_params["unit"], request.path_params["id"]
        household = account.household or ""
        row = await self.db(lambda s: s.household_call(household, unit, message_id))
        wav = await self.db(lambda s: s.recording(unit, row["call_id"])) if row else None
        if wav is None:
            return self.error(request, "error.not_found", 404)
        return Response(wav, media_type="audio/wav", headers={"Cache-Control": "no-store"})

    async def call_action(self, request: Request) -> Response:
        """acknowledge / block / allow / request_recording: checked against the household, then signed."""
        account = self.user(request, HubRole.FAMILY)
        if isinstance(account, Response):
            return account
        values = await self.form(request)
        if isinstance(values, Response):
            return values
        unit, message_id, action = request.path_params["unit"], request.path_params["id"], request.path_params["action"]
        household = account.household or ""
        row = await self.db(lambda s: s.household_call(household, unit, message_id))
        if row is None or not is_valid_unit_id(unit):
            return self.error(request, "error.not_found", 404)
        by = f"family:{account.name}"
        if action == "acknowledge":
            command = Command(unit, CommandAction.ACKNOWLEDGE, by, call_id=row["call_id"])
            await self.db(lambda s: s.acknowledge(unit, message_id, by))
        elif action in ("block", "allow"):
            if not E164.fullmatch(row["number"] or ""):
                return self.error(request, "error.no_number", 400)
            command = Command(unit, CommandAction(action), by, number=row["number"])
        elif action == "recording":
            command = Command(unit, CommandAction.REQUEST_RECORDING, by, call_id=row["call_id"])
        else:
            return self.error(request, "error.not_found", 404)
        if self.send_command is not None:
            await to_thread.run_sync(self.send_command, command)
        return RedirectResponse(f"/family/call/{unit}/{message_id}?sent={action}", 303)

    # ----------------------------------------------------------------- police

    async def fleet(self, request: Request) -> Response:
        account = self.user(request, HubRole.POLICE)
        if isinstance(account, Response):
            return account
        area = account.area or request.query_params.get("area") or None
        units = await self.db(lambda s: s.fleet(area))
        month = request.query_params.get("month") or utc_now().strftime("%Y-%m")
        start, end = _month_bounds(month)
        figures = await self.db(lambda s: s.area_figures(start, end))
        figures = [f for f in figures if area is None or f["area"] == area]
        if request.url.path.endswith(".csv"):
            return _csv_response(units, figures)
        counts = {state: sum(1 for u in units if u["state"] == state) for state in ("online", "offline", "faulty")}
        months, first, last_end = month_window(start)
        history = await self.db(lambda s: s.area_months(first, last_end))
        charts = area_charts([r for r in history if area is None or r["area"] == area], months, _t)
        return self.render(request, "fleet.html", units=units, figures=figures, counts=counts, area=area or "",
                           month=start.strftime("%Y-%m"), charts=charts)  # fmt: skip

    # ----------------------------------------------------------------- reviewer

    async def review(self, request: Request) -> Response:
        account = self.user(request, HubRole.REVIEWER)
        if isinstance(account, Response):
            return account
        queue = await self.db(lambda s: s.review_queue())
        return self.render(request, "review.html", queue=queue, done=request.query_params.get("done"))

    async def review_decide(self, request: Request) -> Response:
        account = self.user(request, HubRole.REVIEWER)
        if isinstance(account, Response):
            return account
        values = await self.form(request)
        if isinstance(values, Response):
            return values
        number, verdict = values.get("number", ""), request.path_params["decision"]
        if verdict not in {d.value for d in Decision} or not E164.fullmatch(number):
            return self.error(request, "error.not_found", 404)
        try:
            await self.db(lambda s: decide(s, number, Decision(verdict), f"reviewer:{account.name}",
                                           self.settings.feed_repo, self.settings.home_region))  # fmt: skip
        except ReviewError as exc:
            log.warning("review refused: %s", exc)
            return self.error(request, "error.review", 409)
        return RedirectResponse(f"/review?done={verdict}", 303)


def _month_bounds(month: str) -> tuple[datetime, datetime]:
    try:
        start = datetime.strptime(month, "%Y-%m").replace(tzinfo=UTC)
    except ValueError:
        start = utc_now().replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
    return start, end


def _csv_response(units: list[dict[str, Any]], figures: list[dict[str, Any]]) -> Response:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["section", "unit_or_area", "state_or_category", "last_seen_or_calls", "hung_up", "fraud_flags",
                     "alerts", "alerts_acknowledged"])  # fmt: skip
    for u in units:
        writer.writerow(["unit", u["unit"], u["state"], u["last_seen"].isoformat() if u["last_seen"] else "", "", "", "",
                         ""])  # fmt: skip
    for f in figures:
        writer.writerow(["area", f["area"], f["category"], f["calls"], f["hung_up"], f["fraud_flags"], f["alerts"],
                         f["alerts_acknowledged"]])  # fmt: skip
    return Response(out.getvalue(), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": "attachment; filename=mamoru-fleet.csv"})  # fmt: skip


def hub_app(settings: HubWebSettings, send_command: Callable[[Command], None] | None = None) -> ASGIApp:
    pages = HubPages(settings, send_command)
    routes = [
        Route("/", pages.home),
        Route("/login", pages.login_page, methods=["GET"]),
        Route("/login", pages.login, methods=["POST"]),
        Route("/logout", pages.logout, methods=["POST"]),
        Route("/family", pages.family),
        Route("/family/call/{unit}/{id:str}", pages.call),
        Route("/family/call/{unit}/{id:str}/recording.wav", pages.recording),
        Route("/family/call/{unit}/{id:str}/{action}", pages.call_action, methods=["POST"]),
        Route("/fleet", pages.fleet),
        Route("/fleet.csv", pages.fleet),
        Route("/review", pages.review),
        Route("/review/{decision}", pages.review_decide, methods=["POST"]),
    ]
    return HostAllowList(Starlette(routes=routes), settings.allowed_hosts)
