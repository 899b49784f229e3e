"""The pages before login: first-run setup, login, logout and the language switch."""

from __future__ import annotations

import logging
from dataclasses import replace

from anyio import to_thread
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from screening.core.model import Language
from screening.web.accounts import (
    MAX_NAME_LENGTH,
    MAX_PASSWORD_LENGTH,
    Account,
    HashBusy,
    Role,
    SetupDone,
    UsersFileError,
    hash_password,
    name_problem,
    needs_rehash,
    password_problems,
    verify_password,
)
from screening.web.i18n import chosen_page_language, translate
from screening.web.login_throttle import Attempt
from screening.web.sessions import (
    LANG_COOKIE_MAX_AGE,
    SESSION_COOKIE,
    AuthState,
    auth_state,
    begin_attempt,
    clear_cookie,
    client_host,
    error_page,
    form_field,
    safe_next,
    save_language,
    session_stamp,
    set_cookie,
    set_device_cookie,
    set_session_cookie,
    start_session,
)
from screening.web.templating import LANG_COOKIE, render, request_language

log = logging.getLogger(__name__)


def _language_switch(request: Request) -> dict[str, str]:
    """The other language, for the switch button on pages seen before login."""
    current = request_language(request)
    other = Language.EN if current is Language.JA else Language.JA
    return {"switch_to": other.value, "here": safe_next(request.url.path)}


async def setup_page(request: Request) -> Response:
    state = auth_state(request)
    if not state.users.setup_needed():
        return RedirectResponse("/login", status_code=303)
    if request.method == "GET":
        return render(request, "setup.html", {"errors": {}, "name": "", "language": request_language(request).value,
                                              **_language_switch(request)})  # fmt: skip
    form = await request.form()
    name = form_field(form, "name", 256).strip()
    password, password2 = form_field(form, "password"), form_field(form, "password2")
    language = chosen_page_language(form_field(form, "language", 16))
    errors = password_problems(name, password, password2)
    if problem := name_problem(name):
        errors["name"] = problem
    if language is None:
        errors["language"] = "auth.error.choice"
    if errors:
        return render(request, "setup.html", {"errors": errors, "name": name[:MAX_NAME_LENGTH * 2],
                                              "language": (language or request_language(request)).value,
                                              **_language_switch(request)}, status_code=400)  # fmt: skip
    try:
        password_hash = await to_thread.run_sync(hash_password, password)
    except HashBusy:
        return error_page(request, "auth.login.busy", 503)
    account = Account(name, Role.INSTALLER, password_hash, language)
    try:
        await to_thread.run_sync(lambda: state.users.add(account, first=True))
    except SetupDone:
        return RedirectResponse("/login", status_code=303)
    except (UsersFileError, OSError) as exc:
        log.error("web setup: cannot write the users file: %s", exc)
        return error_page(request, "auth.error.file", 503)
    log.warning("web: first account %r (installer) created from %s", name, client_host(request))
    session = start_session(request, account)
    response = RedirectResponse("/", status_code=303)
    set_session_cookie(request, response, session)
    set_device_cookie(request, response, account.name)
    return response


def _login_form(request: Request, *, status_code: int = 200, notice: str | None = None, bad: bool = True,
                name: str = "", next_url: str = "/", **fill: object) -> Response:  # fmt: skip
    """``notice``: a message key, shown translated (``fill`` fills in its placeholders)."""
    state = auth_state(request)
    if notice is None and state.users.broken:
        notice = "auth.login.broken"
    text = translate(request_language(request), notice, **fill) if notice else None
    values = {"notice": text, "notice_bad": bad, "name": name[:MAX_NAME_LENGTH * 2], "next": next_url,
              **_language_switch(request)}  # fmt: skip
    return render(request, "login.html", values, status_code=status_code)


async def login_page(request: Request) -> Response:
    state = auth_state(request)
    if request.method == "GET":
        next_url = safe_next(request.query_params.get("next"))
        if request.state.user is not None:
            return RedirectResponse(next_url, status_code=303)
        notice = "auth.logged_out" if request.query_params.get("done") == "logged_out" else None
        return _login_form(request, notice=notice, bad=notice is None, next_url=next_url)
    form = await request.form()
    name = form_field(form, "name", 256).strip()
    password = form_field(form, "password", MAX_PASSWORD_LENGTH + 1)
    next_url = safe_next(form_field(form, "next", 2048))
    attempt = begin_attempt(request, name)
    if not isinstance(attempt, Attempt):
        minutes = max(1, -int(-attempt // 60))
        return _login_form(request, status_code=429, notice="auth.login.locked", name=name, next_url=next_url,
                           minutes=minutes)
    account = state.users.find(name) if name else None
    ok: bool | None = False  # anything but a finished check counts as a failure ...
    try:
        ok = await to_thread.run_sync(verify_password, account.password_hash if account else None, password)
        ok = ok and account is not None and len(password) <= MAX_PASSWORD_LENGTH
    except HashBusy:
        ok = None  # ... except a check that never ran (every hash slot busy)
        return _login_form(request, status_code=503, notice="auth.login.busy", name=name, next_url=next_url)
    finally:
        state.limiter.finish(attempt, ok=ok)
    if not ok or account is None:
        log.warning("web login failed for %r from %s", name[:64], client_host(request))
        return _login_form(request, status_code=401, notice="auth.login.failed", name=name, next_url=next_url)
    account = await _rehash_if_needed(state, account, password)
    session = start_session(request, account)
    log.info("web login: %s (%s) from %s", account.name, account.role.value, client_host(request))
    response = RedirectResponse(next_url, status_code=303)
    set_session_cookie(request, response, session)
    set_device_cookie(request, response, account.name)
    return response


async def _rehash_if_needed(state: AuthState, account: Account, password: str) -> Account:
    """argon2 parameters changed since this hash was made: store a fresh hash, keep the sessions."""
    if not needs_rehash(account.password_hash):
        return account
    try:
        new_hash = await to_thread.run_sync(hash_password, password)
        updated = await to_thread.run_sync(
            lambda: state.users.replace_account(account.name, lambda a: replace(a, password_hash=new_hash)))
    except (UsersFileError, OSError, HashBusy) as exc:
        log.warning("web login: could not re-hash the password of %s: %s", account.name, exc)
        return account
    state.sessions.restamp(account.name, session_stamp(account.password_hash), session_stamp(updated.password_hash))
    log.info("web login: password hash of %s upgraded to the current argon2 parameters", account.name)
    return updated


async def logout(request: Request) -> Response:
    state = auth_state(request)
    state.sessions.end(request.cookies.get(SESSION_COOKIE))
    response = RedirectResponse("/login?done=logged_out", status_code=303)
    clear_cookie(response, request, SESSION_COOKIE)
    return response


async def language(request: Request) -> Response:
    """The language switch; for a logged-in user also saved to their account."""
    form = await request.form()
    chosen = chosen_page_language(form_field(form, "language", 16))
    target = safe_next(form_field(form, "next", 2048), "/login")
    response = RedirectResponse(target, status_code=303)
    if chosen is None:
        return response
    user = request.state.user
    if user is not None and not await save_language(request, user, chosen):
        return error_page(request, "auth.error.file", 503)
    set_cookie(response, request, LANG_COOKIE, chosen.value, max_age=LANG_COOKIE_MAX_AGE)
    return response


routes: list[Route] = [
    Route("/setup", setup_page, methods=["GET", "POST"]),
    Route("/login", login_page, methods=["GET", "POST"]),
    Route("/logout", logout, methods=["POST"]),
    Route("/language", language, methods=["POST"]),
]
