"""The account pages: one's own password and language, and the installer's list of users."""

from __future__ import annotations

import logging
from dataclasses import replace

from anyio import to_thread
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from screening.web.accounts import (
    MAX_NAME_LENGTH,
    MAX_PASSWORD_LENGTH,
    Account,
    HashBusy,
    NoSuchUser,
    Role,
    UserExists,
    UsersFileError,
    hash_password,
    name_problem,
    password_problems,
    verify_password,
)
from screening.web.i18n import PAGE_LANGUAGES, chosen_page_language
from screening.web.login_throttle import Attempt
from screening.web.sessions import (
    LANG_COOKIE_MAX_AGE,
    User,
    auth_state,
    begin_attempt,
    choice,
    client_host,
    error_page,
    flash,
    form_field,
    require_user,
    save_language,
    set_cookie,
    set_session_cookie,
    start_session,
)
from screening.web.templating import LANG_COOKIE, render

log = logging.getLogger(__name__)

LANGUAGES = [lang.value for lang in PAGE_LANGUAGES]
_ROLES = [role.value for role in Role]


_ACCOUNT_DONE = ("auth.done.password_changed", "auth.done.language_saved")


def _account_page(request: Request, user: User, errors: dict[str, str] | None = None,
                  status_code: int = 200) -> Response:  # fmt: skip
    return render(request, "account.html", {"errors": errors or {}, "done": flash(request, _ACCOUNT_DONE),
                                            "languages": LANGUAGES, "is_installer": user.role is Role.INSTALLER},
                  status_code=status_code)  # fmt: skip


async def account_page(request: Request) -> Response:
    user = require_user(request)
    return _account_page(request, user)


async def account_password(request: Request) -> Response:
    user = require_user(request)
    state = auth_state(request)
    form = await request.form()
    current = form_field(form, "current", MAX_PASSWORD_LENGTH + 1)
    password, password2 = form_field(form, "password"), form_field(form, "password2")
    attempt = begin_attempt(request, user.name)
    if not isinstance(attempt, Attempt):
        return _account_page(request, user, {"current": "auth.error.wrong_current"}, status_code=429)
    account = state.users.find(user.name)
    ok: bool | None = False
    try:
        ok = await to_thread.run_sync(verify_password, account.password_hash if account else None, current)
        ok = ok and account is not None
    except HashBusy:
        ok = None
        return error_page(request, "auth.login.busy", 503)
    finally:
        state.limiter.finish(attempt, ok=ok)
    if not ok or account is None:
        log.warning("web: wrong current password for %s from %s", user.name, client_host(request))
        return _account_page(request, user, {"current": "auth.error.wrong_current"}, status_code=400)
    errors = password_problems(user.name, password, password2)
    if errors:
        return _account_page(request, user, errors, status_code=400)
    try:
        new_hash = await to_thread.run_sync(hash_password, password)
        account = await to_thread.run_sync(
            lambda: state.users.replace_account(user.name, lambda a: replace(a, password_hash=new_hash)))
    except HashBusy:
        return error_page(request, "auth.login.busy", 503)
    except (UsersFileError, OSError) as exc:
        log.error("web: cannot change the password of %s: %s", user.name, exc)
        return error_page(request, "auth.error.file", 503)
    ended = state.sessions.end_user(user.name)
    log.warning("web: %s changed their password; %d session(s) ended", user.name, ended)
    session = start_session(request, account)  # this browser stays logged in, with a new token
    response = RedirectResponse("/account?done=auth.done.password_changed", status_code=303)
    set_session_cookie(request, response, session)
    return response


async def account_language(request: Request) -> Response:
    user = require_user(request)
    form = await request.form()
    chosen = chosen_page_language(form_field(form, "language", 16))
    if chosen is None:
        return _account_page(request, user, {"language": "auth.error.choice"}, status_code=400)
    if not await save_language(request, user, chosen):
        return error_page(request, "auth.error.file", 503)
    response = RedirectResponse("/account?done=auth.done.language_saved", status_code=303)
    set_cookie(response, request, LANG_COOKIE, chosen.value, max_age=LANG_COOKIE_MAX_AGE)
    return response


_USERS_DONE = ("auth.done.user_added", "auth.done.user_removed")


def _users_page(request: Request, user: User, *, errors: dict[str, str] | None = None,
                values: dict[str, str] | None = None, status_code: int = 200) -> Response:  # fmt: skip
    accounts = sorted(auth_state(request).users.accounts(), key=lambda a: (a.role is not Role.INSTALLER, a.name))
    return render(request, "users.html", {
        "accounts": accounts, "me": user.name.casefold(), "errors": errors or {},
        "values": values or {"name": "", "role": Role.FAMILY.value, "language": user.language.value},
        "done": flash(request, _USERS_DONE), "roles": _ROLES, "languages": LANGUAGES,
    }, status_code=status_code)  # fmt: skip


async def users_page(request: Request) -> Response:
    user = require_user(request, Role.INSTALLER)
    return _users_page(request, user)


async def users_add(request: Request) -> Response:
    user = require_user(request, Role.INSTALLER)
    state = auth_state(request)
    form = await request.form()
    name = form_field(form, "name", 256).strip()
    password = form_field(form, "password")
    role = choice(form_field(form, "role", 16), Role)
    chosen = chosen_page_language(form_field(form, "language", 16))
    errors = password_problems(name, password, password, field_name="password")
    if problem := name_problem(name):
        errors["name"] = problem
    elif state.users.find(name) is not None:
        errors["name"] = "auth.error.name_taken"
    if role is None:
        errors["role"] = "auth.error.choice"
    if chosen is None:
        errors["language"] = "auth.error.choice"
    values = {"name": name[:MAX_NAME_LENGTH * 2], "role": role.value if role else "",
              "language": chosen.value if chosen else ""}  # fmt: skip
    if errors:
        return _users_page(request, user, errors=errors, values=values, status_code=400)
    try:
        password_hash = await to_thread.run_sync(hash_password, password)
        await to_thread.run_sync(lambda: state.users.add(Account(name, role, password_hash, chosen)))
    except HashBusy:
        return error_page(request, "auth.login.busy", 503)
    except UserExists:
        return _users_page(request, user, errors={"name": "auth.error.name_taken"}, values=values, status_code=400)
    except (UsersFileError, OSError) as exc:
        log.error("web: cannot add user %r: %s", name, exc)
        return error_page(request, "auth.error.file", 503)
    log.warning("web: %s added user %r (%s)", user.name, name, role.value)
    return RedirectResponse("/users?done=auth.done.user_added", status_code=303)


async def users_remove(request: Request) -> Response:
    user = require_user(request, Role.INSTALLER)
    state = auth_state(request)
    form = await request.form()
    name = form_field(form, "name", 256)
    if name.casefold() == user.name.casefold():
        return _users_page(request, user, errors={"remove": "auth.error.remove_self"}, status_code=400)
    try:
        await to_thread.run_sync(state.users.remove, name)
    except NoSuchUser:
        return _users_page(request, user, errors={"remove": "auth.error.no_such_user"}, status_code=404)
    except (UsersFileError, OSError) as exc:
        log.error("web: cannot remove user %r: %s", name, exc)
        return error_page(request, "auth.error.file", 503)
    ended = state.sessions.end_user(name)
    log.warning("web: %s removed user %r; %d session(s) ended", user.name, name, ended)
    return RedirectResponse("/users?done=auth.done.user_removed", status_code=303)


routes: list[Route] = [
    Route("/account", account_page, methods=["GET"]),
    Route("/account/password", account_password, methods=["POST"]),
    Route("/account/language", account_language, methods=["POST"]),
    Route("/users", users_page, methods=["GET"]),
    Route("/users/add", users_add, methods=["POST"]),
    Route("/users/remove", users_remove, methods=["POST"]),
]
