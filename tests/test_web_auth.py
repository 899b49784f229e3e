"""Web accounts: first-run setup, login/logout, sessions, rate limiting, roles, languages, the CLI.

Every test talks HTTP (httpx) to a real uvicorn server on 127.0.0.1 (port 0) serving
``create_app`` over a real SQLite file and a real ``web-users.json`` in tmp_path.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Self

import httpx
import pytest

from blocklist.store import Store
from screening.config import load_config
from screening.core.model import Language, Role
from screening.web.accounts import Account, UserFile, hash_password
from screening.web.login_throttle import LoginLimits
from screening.web.server import serve_in_thread
from screening.web.sessions import PRE_SESSION_COOKIE, SESSION_COOKIE, install
from tests.support.cli import run_mamoru
from tests.support.ports import free_tcp_port
from tests.support.web import (
    ADMIN,
    ADMIN_PW,
    CSRF_RE,
    FAMILY,
    FAMILY_PW,
    WebRig,
    csrf_of,
    en,
    is_login_redirect,
    ja,
    logged_in,
    login,
    post,
    set_cookies,
)

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parent.parent
# ---- first run ----------------------------------------------------------------------


def test_first_run_sends_every_page_to_setup(rig: WebRig) -> None:
    client = rig.client()
    for path in ("/", "/login", "/account", "/users", "/calls", "/no-such-page"):
        response = client.get(path)
        assert (response.status_code, response.headers.get("location")) == (303, "/setup"), path
    page = client.get("/setup")
    assert page.status_code == 200 and ja("auth.setup.title") in page.text
    assert not rig.ctx.users_path.exists()


@pytest.mark.parametrize(("fields", "field", "key"), [
    ({"name": "taro", "password": "short1", "password2": "short1"}, "password", "auth.error.too_short"),
    ({"name": "taro-yamada1", "password": "TARO-YAMADA1", "password2": "TARO-YAMADA1"}, "password",
     "auth.error.same_as_name"),
    ({"name": "taro", "password": "long enough 1", "password2": "long enough 2"}, "password2", "auth.error.mismatch"),
    ({"name": "", "password": "long enough 1", "password2": "long enough 1"}, "name", "auth.error.name_required"),
    ({"name": "x" * 40, "password": "long enough 1", "password2": "long enough 1"}, "name", "auth.error.name_invalid"),
    ({"name": "taro", "password": "long enough 1", "password2": "long enough 1", "language": "fr"}, "language",
     "auth.error.choice"),
])  # fmt: skip
def test_setup_refuses_bad_input_next_to_the_field(rig: WebRig, fields: dict[str, str], field: str, key: str) -> None:
    client = rig.client()
    response = client.post("/setup", data={"csrf_token": csrf_of(client, "/setup"), "language": "ja", **fields})
    assert response.status_code == 400
    # the message sits right after its own field, before the next field's label
    after_field = response.text.split(f'name="{field}"', 1)[1]
    assert after_field.index(ja(key)) < re.search("<label|<button", after_field).start()
    assert fields["password"] not in response.text  # a password is never sent back
    assert not rig.ctx.users_path.exists()


def test_setup_creates_the_installer_logs_in_and_closes(rig: WebRig) -> None:
    client = rig.client()
    response = client.post("/setup", data={"csrf_token": csrf_of(client, "/setup"), "name": ADMIN,
                                           "password": ADMIN_PW, "password2": ADMIN_PW, "language": "en"})
    assert (response.status_code, response.headers["location"]) == (303, "/")
    assert SESSION_COOKIE in set_cookies(response)
    account = client.get("/account")
    assert account.status_code == 200 and en("auth.account.you", name=ADMIN, role="Installer") in account.text

    document = json.loads(rig.ctx.users_path.read_text())
    assert rig.ctx.users_path.stat().st_mode & 0o777 == 0o600
    (user,) = document["users"]
    assert document["format"] == "mamoru-web-users/1"
    assert (user["name"], user["role"], user["language"]) == (ADMIN, "installer", "en")
    assert user["password_hash"].startswith("$argon2id$") and ADMIN_PW not in rig.ctx.users_path.read_text()

    # setup is closed for good: a second visitor cannot make themselves installer
    other = rig.client()
    assert other.get("/setup").headers["location"] == "/login"
    token = csrf_of(other, "/login")
    again = other.post("/setup", data={"csrf_token": token, "name": "mallory", "password": "mallory-pass-1",
                                       "password2": "mallory-pass-1", "language": "ja"})
    assert (again.status_code, again.headers["location"]) == (303, "/login")
    assert [u["name"] for u in json.loads(rig.ctx.users_path.read_text())["users"]] == [ADMIN]


def test_damaged_users_file_locks_everyone_out_and_keeps_setup_closed(rig: WebRig) -> None:
    rig.ctx.users_path.write_text('{"format": "mamoru-web-users/1", "users": [', encoding="utf-8")
    client = rig.client()
    page = client.get("/login")
    assert page.status_code == 200 and ja("auth.login.broken") in page.text
    assert client.get("/setup").headers["location"] == "/login"
    assert login(client, ADMIN, ADMIN_PW).status_code == 401


# ---- login, logout, sessions ------------------------------------------------------------


def test_login_wrong_password_unknown_user_and_logout(users_rig: WebRig) -> None:
    client = users_rig.client()
    for name, password in ((FAMILY, "wrong-password"), ("nobody", FAMILY_PW), (FAMILY, "")):
        response = login(client, name, password)
        assert response.status_code == 401
        assert ja("auth.login.failed") in response.text  # the same words whatever was wrong
        assert SESSION_COOKIE not in set_cookies(response)
    assert is_login_redirect(client.get("/account"))

    response = login(client, FAMILY.upper(), FAMILY_PW, next_url="/account")  # names are case-insensitive
    assert (response.status_code, response.headers["location"]) == (303, "/account")
    assert client.get("/account").status_code == 200
    token = client.cookies[SESSION_COOKIE]

    out = client.post("/logout", data={"csrf_token": csrf_of(client, "/account")})
    assert (out.status_code, out.headers["location"]) == (303, "/login?done=logged_out")
    assert 'Max-Age=0' in set_cookies(out)[SESSION_COOKIE]
    assert ja("auth.logged_out") in client.get("/login?done=logged_out").text
    # the server forgot the session: replaying the old cookie does not work
    replay = users_rig.client(cookies={SESSION_COOKIE: token})
    response = replay.get("/account")
    assert (response.status_code, response.headers["location"]) == (303, "/login?next=%2Faccount")


def test_login_page_redirects_a_logged_in_user(users_rig: WebRig) -> None:
    client = logged_in(users_rig, FAMILY, FAMILY_PW)
    response = client.get("/login?next=/account")
    assert (response.status_code, response.headers["location"]) == (303, "/account")


def test_unauthenticated_page_view_comes_back_after_login(users_rig: WebRig) -> None:
    client = users_rig.client()
    response = client.get("/account?x=1")
    assert response.headers["location"] == "/login?next=%2Faccount%3Fx%3D1"
    page = client.get(response.headers["location"])
    assert 'name="next" value="/account?x=1"' in page.text
    assert login(client, FAMILY, FAMILY_PW, next_url="/account?x=1").headers["location"] == "/account?x=1"


def test_cookie_attributes(tmp_path: Path) -> None:
    web = WebRig(tmp_path, config_extra="[web]\nsession_hours = 2\n").start()
    try:
        web.add_user(FAMILY, FAMILY_PW)
        client = web.client()
        pre = set_cookies(client.get("/login"))[PRE_SESSION_COOKIE]
        response = login(client, FAMILY, FAMILY_PW)
        session = set_cookies(response)[SESSION_COOKIE]
        for header in (pre, session):
            attributes = {a.strip().split("=")[0].lower(): a.strip() for a in header.split(";")[1:]}
            assert "httponly" in attributes and attributes["samesite"] == "SameSite=Strict"
            assert attributes["path"] == "Path=/" and "secure" not in attributes  # plain http here
        assert "Max-Age=7200" in session
        token = session.split(";")[0].split("=", 1)[1]
        assert len(token) >= 43  # 32 random bytes
    finally:
        web.close()


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))  # fmt: skip
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))  # fmt: skip
    return cert_path, key_path


def test_cookies_are_secure_over_https(tmp_path: Path) -> None:
    web = WebRig(tmp_path, tls=_self_signed(tmp_path)).start()
    try:
        web.add_user(FAMILY, FAMILY_PW)
        assert web.url.startswith("https://")
        client = web.client(verify=False)
        pre = set_cookies(client.get("/login"))[PRE_SESSION_COOKIE]
        session = set_cookies(login(client, FAMILY, FAMILY_PW))[SESSION_COOKIE]
        assert "; Secure" in pre and "; Secure" in session
    finally:
        web.close()


def test_session_fixation_a_planted_token_is_never_promoted(users_rig: WebRig) -> None:
    client = users_rig.client()
    login_page = client.get("/login")
    pre_token = login_page.cookies[PRE_SESSION_COOKIE]
    planted = "attacker-chosen-token-0123456789abcdefghijklmnop"
    client.cookies.set(SESSION_COOKIE, planted, domain="127.0.0.1")  # as a browser would keep it
    csrf = CSRF_RE.search(login_page.text).group(1)
    response = client.post("/login", data={"csrf_token": csrf, "name": FAMILY, "password": FAMILY_PW})
    assert response.status_code == 303
    new_token = client.cookies[SESSION_COOKIE]
    assert new_token not in (planted, pre_token)
    assert client.get("/account").status_code == 200

    for cookies in ({SESSION_COOKIE: planted}, {SESSION_COOKIE: pre_token}, {PRE_SESSION_COOKIE: pre_token}):
        attacker = users_rig.client(cookies=cookies)
        assert is_login_redirect(attacker.get("/account")), cookies
    # the pre-session (and so its CSRF token) ended at login too
    attacker = users_rig.client(cookies={PRE_SESSION_COOKIE: pre_token})
    assert attacker.post("/login", data={"csrf_token": csrf, "name": FAMILY, "password": FAMILY_PW}).status_code == 403


def test_session_expires_after_session_hours(tmp_path: Path) -> None:
    now = [1_000_000.0]
    web = WebRig(tmp_path, config_extra="[web]\nsession_hours = 1\n").start()
    web.auth = install(web.app, clock=lambda: now[0])  # the server's own clock, moved by the test
    try:
        web.add_user(FAMILY, FAMILY_PW)
        client = logged_in(web, FAMILY, FAMILY_PW)
        now[0] += 3599
        assert client.get("/account").status_code == 200
        now[0] += 2
        assert is_login_redirect(client.get("/account"))
    finally:
        web.close()


def test_removed_user_loses_every_session(users_rig: WebRig) -> None:
    family_phone = logged_in(users_rig, FAMILY, FAMILY_PW)
    family_pc = logged_in(users_rig, FAMILY, FAMILY_PW)
    admin = logged_in(users_rig, ADMIN, ADMIN_PW)
    response = post(admin, "/users/remove", {"name": FAMILY}, token_from="/users")
    assert (response.status_code, response.headers["location"]) == (303, "/users?done=auth.done.user_removed")
    assert ja("auth.done.user_removed") in admin.get(response.headers["location"]).text
    assert is_login_redirect(family_phone.get("/account"))
    assert is_login_redirect(family_pc.get("/account"))
    assert login(users_rig.client(), FAMILY, FAMILY_PW).status_code == 401


def test_users_file_replaced_by_provisioning_is_picked_up(users_rig: WebRig) -> None:
    """`mamoru provision apply` rewrites web-users.json whole: the server follows at once."""
    family = logged_in(users_rig, FAMILY, FAMILY_PW)
    admin = logged_in(users_rig, ADMIN, ADMIN_PW)
    document = json.loads(users_rig.ctx.users_path.read_text())
    new_hash = hash_password("new-family-password")
    document["users"] = [u if u["name"] == ADMIN else {**u, "password_hash": new_hash} for u in document["users"]]
    temp = users_rig.ctx.users_path.with_suffix(".new")
    temp.write_text(json.dumps(document))
    os.replace(temp, users_rig.ctx.users_path)
    assert is_login_redirect(family.get("/account"))  # password changed underneath: session over
    assert admin.get("/account").status_code == 200  # unchanged account keeps its session
    assert login(users_rig.client(), FAMILY, "new-family-password").status_code == 303


def test_password_change_keeps_this_browser_and_ends_the_others(users_rig: WebRig) -> None:
    here = logged_in(users_rig, FAMILY, FAMILY_PW)
    elsewhere = logged_in(users_rig, FAMILY, FAMILY_PW)
    old_token = here.cookies[SESSION_COOKIE]

    wrong = post(here, "/account/password", {"current": "not-my-password", "password": "a-new-password",
                                             "password2": "a-new-password"})  # fmt: skip
    assert wrong.status_code == 400 and ja("auth.error.wrong_current") in wrong.text
    mismatch = post(here, "/account/password", {"current": FAMILY_PW, "password": "a-new-password",
                                                "password2": "another-password"})  # fmt: skip
    assert mismatch.status_code == 400 and ja("auth.error.mismatch") in mismatch.text

    response = post(here, "/account/password", {"current": FAMILY_PW, "password": "a-new-password",
                                                "password2": "a-new-password"})  # fmt: skip
    assert (response.status_code, response.headers["location"]) == (303, "/account?done=auth.done.password_changed")
    assert here.cookies[SESSION_COOKIE] != old_token
    assert ja("auth.done.password_changed") in here.get("/account?done=auth.done.password_changed").text
    assert is_login_redirect(elsewhere.get("/account"))
    assert login(users_rig.client(), FAMILY, FAMILY_PW).status_code == 401
    assert login(users_rig.client(), FAMILY, "a-new-password").status_code == 303


def test_rehash_on_login_when_argon2_parameters_changed(users_rig: WebRig) -> None:
    from argon2 import PasswordHasher

    weak = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash("old-params-password")
    users_rig.users.add(Account("jiro", Role.FAMILY, weak))
    client = logged_in(users_rig, "jiro", "old-params-password")
    stored = users_rig.users.find("jiro").password_hash
    assert stored != weak and PasswordHasher().check_needs_rehash(stored) is False
    assert client.get("/account").status_code == 200  # the re-hash did not end this session
    assert login(users_rig.client(), "jiro", "old-params-password").status_code == 303


# ---- rate limiting ---------------------------------------------------------------------------


def _client_from(rig: WebRig, address: str) -> httpx.Client:
    """A client whose connections come from another loopback address (127.0.0.0/8 is all ours)."""
    return rig.client(transport=httpx.HTTPTransport(local_address=address))


def test_rate_limit_locks_then_unlocks_with_doubling(tmp_path: Path) -> None:
    now = [1_000_000.0]
    web = WebRig(tmp_path, limits=LoginLimits(max_failures=3, lock_s=60.0, max_lock_s=150.0)).start()
    web.auth = install(web.app, limits=web.auth.limiter.limits, clock=lambda: now[0])  # the server's clock
    try:
        web.add_user(FAMILY, FAMILY_PW)

        def attempt(password: str) -> httpx.Response:
            return login(web.client(), FAMILY, password)  # a fresh browser each time: the lock is not a cookie

        def fail_three_times() -> None:
            for _ in range(3):
                assert attempt("wrong-password").status_code == 401

        fail_three_times()
        locked = attempt(FAMILY_PW)  # even the right password waits
        assert locked.status_code == 429 and ja("auth.login.locked", minutes=1) in locked.text
        assert SESSION_COOKIE not in set_cookies(locked)
        now[0] += 61
        assert attempt(FAMILY_PW).status_code == 303  # unlocked; success clears the count

        fail_three_times()  # 60 s
        now[0] += 61
        fail_three_times()  # 120 s
        now[0] += 61
        assert attempt(FAMILY_PW).status_code == 429
        now[0] += 60
        fail_three_times()  # 150 s: the ceiling
        now[0] += 149
        assert ja("auth.login.locked", minutes=1) in attempt(FAMILY_PW).text
        now[0] += 2
        assert attempt(FAMILY_PW).status_code == 303
    finally:
        web.close()


def test_rate_limit_per_name_and_per_address(tmp_path: Path) -> None:
    web = WebRig(tmp_path, limits=LoginLimits(max_failures=3, lock_s=60.0)).start()
    try:
        web.add_user(FAMILY, FAMILY_PW)
        web.add_user("jiro", "jiro-password-1")
        attacker = _client_from(web, "127.0.0.2")
        for _ in range(3):
            assert login(attacker, FAMILY, "guess").status_code == 401
        # the address is locked for every name ...
        assert login(attacker, "jiro", "jiro-password-1").status_code == 429
        # ... but one guessing address never locks the name's owner out (issue 12.12; test_web_hardening.py)
        assert login(_client_from(web, "127.0.0.5"), FAMILY, FAMILY_PW).status_code == 303
        # others are not affected
        assert login(_client_from(web, "127.0.0.3"), "jiro", "jiro-password-1").status_code == 303
        # unknown names count like real ones (a lock tells nothing about who exists)
        spray = _client_from(web, "127.0.0.4")
        for name in ("ghost1", "ghost2", "ghost3"):
            assert login(spray, name, "guess").status_code == 401
        assert login(spray, "jiro", "jiro-password-1").status_code == 429
    finally:
        web.close()


def test_unknown_user_costs_as_much_time_as_a_wrong_password(users_rig: WebRig) -> None:
    client = users_rig.client()
    users_rig.auth.limiter.limits = LoginLimits(max_failures=1000)

    def timed(name: str) -> float:
        token = csrf_of(client)
        start = time.perf_counter()
        client.post("/login", data={"csrf_token": token, "name": name, "password": "wrong-password"})
        return time.perf_counter() - start

    timed("nobody")  # the dummy hash is made on first use
    known = statistics.median(timed(FAMILY) for _ in range(5))
    unknown = statistics.median(timed(f"nobody{i}") for i in range(5))
    assert 0.5 < unknown / known < 2.0, (known, unknown)


# ---- roles ---------------------------------------------------------------------------------


def test_family_cannot_manage_users(users_rig: WebRig) -> None:
    family = logged_in(users_rig, FAMILY, FAMILY_PW)
    assert family.get("/users").status_code == 403
    assert ja("error.forbidden") in family.get("/users").text
    for path, data in (("/users/add", {"name": "eve", "password": "eve-password-1", "role": "installer",
                                       "language": "ja"}), ("/users/remove", {"name": ADMIN})):
        assert post(family, path, data).status_code == 403
    assert [a.name for a in users_rig.users.accounts()] == [ADMIN, FAMILY]


def test_installer_adds_and_removes_users(users_rig: WebRig) -> None:
    admin = logged_in(users_rig, ADMIN, ADMIN_PW)
    page = admin.get("/users")
    assert page.status_code == 200 and FAMILY in page.text and ja("auth.role.installer") in page.text

    bad = post(admin, "/users/add", {"name": FAMILY.upper(), "password": "x", "role": "boss", "language": "ja"},
               token_from="/users")  # fmt: skip
    assert bad.status_code == 400
    for key in ("auth.error.name_taken", "auth.error.too_short", "auth.error.choice"):
        assert ja(key) in bad.text

    added = post(admin, "/users/add", {"name": "jiro", "password": "jiro-password-1", "role": "family",
                                       "language": "en"}, token_from="/users")  # fmt: skip
    assert (added.status_code, added.headers["location"]) == (303, "/users?done=auth.done.user_added")
    jiro = logged_in(users_rig, "jiro", "jiro-password-1")
    assert en("auth.account.title") in jiro.get("/account").text  # his own language

    myself = post(admin, "/users/remove", {"name": ADMIN}, token_from="/users")
    assert myself.status_code == 400 and ja("auth.error.remove_self") in myself.text
    ghost = post(admin, "/users/remove", {"name": "ghost"}, token_from="/users")
    assert ghost.status_code == 404 and ja("auth.error.no_such_user") in ghost.text


def test_flash_messages_only_show_known_keys(users_rig: WebRig) -> None:
    admin = logged_in(users_rig, ADMIN, ADMIN_PW)
    for hostile in ("<script>alert(1)</script>", "auth.login.failed", "error.csrf"):
        page = admin.get("/users", params={"done": hostile})
        assert page.status_code == 200 and "<script>alert" not in page.text
        assert 'class="notice ok"' not in page.text


# ---- language -------------------------------------------------------------------------------


def test_language_per_user_and_for_anonymous_pages(users_rig: WebRig) -> None:
    anonymous = users_rig.client()
    assert ja("auth.login.title") in anonymous.get("/login").text
    switched = anonymous.post("/language", data={"csrf_token": csrf_of(anonymous), "language": "en",
                                                 "next": "/login"})  # fmt: skip
    assert (switched.status_code, switched.headers["location"]) == (303, "/login")
    assert "mamoru_lang=en" in set_cookies(switched)["mamoru_lang"]
    assert en("auth.login.intro") in anonymous.get("/login").text
    assert anonymous.get("/language").status_code == 405  # no state change by GET

    family = logged_in(users_rig, FAMILY, FAMILY_PW)
    assert ja("auth.account.title") in family.get("/account").text
    response = post(family, "/account/language", {"language": "en"})
    assert (response.status_code, response.headers["location"]) == (303, "/account?done=auth.done.language_saved")
    assert en("auth.done.language_saved") in family.get(response.headers["location"]).text
    assert users_rig.users.find(FAMILY).language is Language.EN
    # it follows the account, not the browser
    assert en("auth.account.title") in logged_in(users_rig, FAMILY, FAMILY_PW).get("/account").text
    assert post(family, "/account/language", {"language": "de"}).status_code == 400


# ---- the command line ------------------------------------------------------------------------


def web_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return run_mamoru(*args, stdin=stdin)  # in this process: the same main() the console script runs


def test_cli_passwd_creates_and_changes_users(tmp_path: Path) -> None:
    db = tmp_path / "data" / "mamoru.db"
    users = UserFile(db.parent / "web-users.json")
    first = web_cli("web", "passwd", "admin", "--stdin", "--db", str(db), stdin=f"{ADMIN_PW}\n")
    assert first.returncode == 0, first.stderr
    assert users.find("admin").role is Role.INSTALLER  # the first account can do everything
    assert (db.parent / "web-users.json").stat().st_mode & 0o777 == 0o600

    second = web_cli("web", "--db", str(db), "passwd", "hanako", "--stdin", "--language", "en",
                     stdin=f"{FAMILY_PW}\n")  # fmt: skip
    assert second.returncode == 0, second.stderr
    assert (users.find("hanako").role, users.find("hanako").language) == (Role.FAMILY, Language.EN)

    short = web_cli("web", "passwd", "hanako", "--stdin", "--db", str(db), stdin="short\n")
    assert short.returncode == 1 and en("auth.error.too_short") in short.stderr
    same = web_cli("web", "passwd", "hanako-chan", "--stdin", "--db", str(db), stdin="hanako-chan\n")
    assert same.returncode == 1 and en("auth.error.same_as_name") in same.stderr
    no_tty = web_cli("web", "passwd", "hanako", "--db", str(db), stdin="")
    assert no_tty.returncode == 1 and "--stdin" in no_tty.stderr

    before = users.find("hanako").password_hash
    change = web_cli("web", "passwd", "HANAKO", "--stdin", "--role", "installer", "--db", str(db),
                     stdin="hanako-new-password\n")  # fmt: skip
    assert change.returncode == 0, change.stderr
    account = users.find("hanako")
    assert account.password_hash != before and account.role is Role.INSTALLER
    assert account.language is Language.EN and account.name == "hanako"  # kept


def test_cli_passwd_ends_the_sessions_of_a_running_server(users_rig: WebRig) -> None:
    family = logged_in(users_rig, FAMILY, FAMILY_PW)
    result = web_cli("web", "passwd", FAMILY, "--stdin", "--config", str(users_rig.config_path),
                     stdin="changed-by-cli-1\n")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert is_login_redirect(family.get("/account"))
    assert login(users_rig.client(), FAMILY, "changed-by-cli-1").status_code == 303


def test_cli_passwd_refuses_a_damaged_users_file(tmp_path: Path) -> None:
    db = tmp_path / "mamoru.db"
    (tmp_path / "web-users.json").write_text("not json")
    result = web_cli("web", "passwd", "admin", "--stdin", "--db", str(db), stdin=f"{ADMIN_PW}\n")
    assert result.returncode == 1 and "web-users.json" in result.stderr
    assert (tmp_path / "web-users.json").read_text() == "not json"


def test_mamoru_web_serves_loopback_only_until_a_password_exists(tmp_path: Path) -> None:
    db = tmp_path / "mamoru.db"
    port = free_tcp_port()
    proc = subprocess.Popen([sys.executable, "-m", "screening.cli", "web", "--db", str(db), "--host", "0.0.0.0",
                             "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=ROOT)  # fmt: skip
    try:
        line = proc.stdout.readline()
        assert f"serving http://127.0.0.1:{port}/" in line, (line, proc.stderr.read() if proc.poll() else "")
        response = httpx.get(f"http://127.0.0.1:{port}/calls", timeout=10)
        assert (response.status_code, response.headers["location"]) == (303, "/setup")
        with pytest.raises(httpx.ConnectError):  # bound to 127.0.0.1 alone, not to every address
            httpx.get(f"http://127.0.0.2:{port}/login", timeout=5)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 0, stderr
    assert "no web password is set yet" in stderr and "mamoru web passwd" in stderr


def test_mamoru_web_reports_a_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = web_cli("web", "--db", str(tmp_path / "mamoru.db"), "--port", str(port))
    assert result.returncode == 1
    assert f"cannot serve the web page on 127.0.0.1:{port}" in result.stderr and "Traceback" not in result.stderr


# ---- the server and `mamoru run` ---------------------------------------------------------------


def test_server_stops_within_its_timeout_with_a_client_connected(rig: WebRig) -> None:
    client = rig.client()
    client.get("/setup")  # a kept-alive connection stays open
    started = time.monotonic()
    assert rig.server.stop(timeout=8.0)
    assert time.monotonic() - started < 8.0
    assert not rig.server.running
    with pytest.raises(httpx.TransportError):
        httpx.get(rig.url + "/setup", timeout=3)
    rig.server = serve_in_thread(rig.ctx, "127.0.0.1", 0, app=rig.app)  # the fixture stops this one


def _run_daemon_config(tmp: Path, device: Path, web: str) -> Path:
    path = tmp / "mamoru.toml"
    path.write_text(f"""
[line]
uri = "modem://{device}"
modem = "conexant"
[rules]
unknown = "allow"
[store]
db = "{tmp / 'data' / 'mamoru.db'}"
[voice]
transcribe = false
models_dir = "{tmp / 'models'}"
[recording]
enabled = false
dir = "{tmp / 'recordings'}"
[feeds]
dir = "{tmp / 'feeds'}"
update_minutes = 0
[web]
{web}
""", encoding="utf-8")  # fmt: skip
    return path


class _ScreeningStarted(logging.Handler):
    """Sees the daemon's "screening on line" log line."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.started = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("screening on line"):
            self.started.set()


class DaemonRun:
    """``run_daemon`` (what `mamoru run` calls) on a virtual modem line, in a thread."""

    def __init__(self, tmp: Path, web: str) -> None:
        from firmware.dialects import CONEXANT_CX93001, RingCadence
        from firmware.virtual_modem import VirtualModem

        # real speed: the daemon's line timing is real time, as on a Pi
        self.modem = VirtualModem(CONEXANT_CX93001, RingCadence.JAPAN, 1.0)
        self.tmp, self.web = tmp, web
        self.stop = threading.Event()
        self.result: list[int] = []
        self._daemon_log = logging.getLogger("screening.daemon")
        self._level = self._daemon_log.level
        self._handler = _ScreeningStarted()

    def __enter__(self) -> Self:
        from screening.runner import run_daemon

        self._daemon_log.setLevel(logging.INFO)
        self._daemon_log.addHandler(self._handler)
        device = self.modem.start()
        cfg = load_config(_run_daemon_config(self.tmp, device, self.web), env={})
        self.db = Path(cfg.store.db)
        self.thread = threading.Thread(target=lambda: self.result.append(run_daemon(cfg, self.stop)), daemon=True)
        self.thread.start()
        assert self._handler.started.wait(30), "the daemon did not start screening"  # a call before would go unseen
        return self

    def screened(self, number: str, timeout: float = 30.0) -> str:
        from firmware.scenarios import CallScript

        self.modem.place_call(CallScript(nmbr=number, max_rings=2, hang_up_after_s=2.0))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.db.exists():
                with Store(self.db, recover_calls=False) as store:
                    rows = [r for r in store.recent_calls(limit=10) if r.action]
                if rows:
                    return f"{rows[0].action}:{rows[0].rule}"
            time.sleep(0.1)
        raise AssertionError("the call was not screened")

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=30)
        self.modem.stop()
        self._daemon_log.removeHandler(self._handler)
        self._daemon_log.setLevel(self._level)
        assert not self.thread.is_alive() and self.result == [0]


def _wait_for_web(url: str, timeout: float = 30.0) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return httpx.get(url, timeout=2)
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError(f"nothing answers on {url}")


def test_run_serves_the_web_page_loopback_only_without_a_password(tmp_path: Path, capfd) -> None:
    port = free_tcp_port()
    with DaemonRun(tmp_path, f'host = "0.0.0.0"\nport = {port}') as run:
        response = _wait_for_web(f"http://127.0.0.1:{port}/calls")
        assert (response.status_code, response.headers["location"]) == (303, "/setup")
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.2:{port}/login", timeout=5)
        assert run.screened("0662223333") == "allow:unknown"
    # said by the page's own process, on the stderr it shares with the daemon
    assert "no web password is set yet" in capfd.readouterr().err
    with pytest.raises(httpx.TransportError):  # stopped with the daemon
        httpx.get(f"http://127.0.0.1:{port}/login", timeout=3)


def test_run_serves_every_address_once_a_password_exists(tmp_path: Path) -> None:
    port = free_tcp_port()
    UserFile(tmp_path / "data" / "web-users.json").add(Account(ADMIN, Role.INSTALLER, hash_password(ADMIN_PW)))
    with DaemonRun(tmp_path, f'host = "0.0.0.0"\nport = {port}'):
        response = _wait_for_web(f"http://127.0.0.2:{port}/calls")
        assert (response.status_code, response.headers["location"]) == (303, "/login?next=%2Fcalls")


def test_run_keeps_screening_when_the_web_port_is_taken(tmp_path: Path, caplog) -> None:
    caplog.set_level("ERROR")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with DaemonRun(tmp_path, f"port = {port}") as run:
            assert run.screened("0662223333") == "allow:unknown"
            # the page starts in its own process, in the background: wait for its failure to be reported
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not any("web page not started" in r.getMessage()
                                                          for r in caplog.records):  # fmt: skip
                time.sleep(0.1)
    assert any("web page not started" in r.getMessage() for r in caplog.records)


def test_run_without_web(tmp_path: Path) -> None:
    port = free_tcp_port()
    with DaemonRun(tmp_path, f"enabled = false\nport = {port}") as run:
        assert run.screened("0662223333") == "allow:unknown"
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{port}/login", timeout=3)
