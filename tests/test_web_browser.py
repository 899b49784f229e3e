"""The web page in a real browser: Debian's Chromium driven by Playwright, against the real appliance.

``mamoru run`` screens a virtual modem line and serves the web page in one
process (tests/support/browser.py). The tests do what a family member does
on a phone: set a password on first run, log in, find the call a scripted fraud
caller made, play its recording, block the number, change a rule and see the
next call follow it, switch the language, log out. Security in the browser:
after logout neither the back button nor a direct URL shows a page, and a
family member cannot open the installer's settings.

Screenshots of the main pages at phone and desktop size go to docs/screenshots/
(docs/web.md shows them).

The calls are real: the daemon answers, plays the shipped Japanese warning,
records and transcribes the caller with the Whisper model (``mamoru model
install ja``, cached for the tests). The caller says the commonest Japanese scam
opener (OpenJTalk through a telephone channel), so the call page shows a
Japanese transcript with the flagged phrases highlighted, and the screenshots
in docs/screenshots/ show it.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, Playwright, expect, sync_playwright

from screening.core.model import Language
from screening.web.i18n import translate
from tests.support.browser import (
    INTERNATIONAL_CALLER,
    PHONE,
    UNKNOWN_CALLER,
    UNKNOWN_CALLER_SHOWN,
    Account,
    Appliance,
    CallRow,
    blocked_caller_script,
    browser_page,
    chromium_executable,
    fraud_call_script,
    horizontal_overflow,
    international_call_script,
    login,
    logout,
    screenshot,
    submit,
    withheld_call_script,
)

pytestmark = pytest.mark.timeout(300)

INSTALLER = Account("kazuo", "mamoru-test-pass-1", "installer")
FAMILY = Account("hanako", "hanako-test-pass-2", "family")
JA = Language.JA
EN = Language.EN


def ja(key: str, **values: object) -> str:
    return translate(JA, key, **values)


@pytest.fixture(scope="module")
def pw() -> Iterator[Playwright]:
    chromium_executable()  # fails, saying how to install it, before anything starts
    with sync_playwright() as playwright:
        yield playwright


@pytest.fixture(scope="module")
def appliance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Appliance]:
    """One household's unit for the module; the day's first calls arrive as soon as it runs."""
    pytest.importorskip("faster_whisper", reason="needs the Whisper engine (pip install 'mamoru[ja]')")
    pytest.importorskip("pyopenjtalk", reason="needs pyopenjtalk-plus (the test extra)")
    from tests.support.whisper_model import cached_models_dir, whisper_model_dir

    whisper_model_dir()
    unit = Appliance(tmp_path_factory.mktemp("unit"), models_dir=cached_models_dir()).start()
    try:
        for script in (fraud_call_script(), withheld_call_script(), international_call_script()):
            unit.place_call(script)
        yield unit
    finally:
        unit.stop()


def first_run_setup(page: Page, unit: Appliance, account: Account) -> None:
    """The first visit goes to /setup; a password that breaks the rules is refused next to the field."""
    page.goto(unit.url("/calls"))
    expect(page).to_have_url(re.compile(r"/setup\b"))
    submit(page, "/setup", {"name": account.name, "password": "short", "password2": "short", "language": "ja"})
    expect(page).to_have_url(re.compile(r"/setup\b"))
    expect(page.locator(".field-error").first).to_be_visible()
    assert not unit.users_path.exists(), "a refused password must not create the account"
    submit(page, "/setup", {"name": account.name, "password": account.password, "password2": account.password,
                            "language": "ja"})  # fmt: skip
    expect(page).not_to_have_url(re.compile(r"/setup\b"))
    expect(page.locator('form[action="/logout"]')).to_be_visible()


@pytest.fixture(scope="module")
def installer(appliance: Appliance, pw: Playwright, tmp_path_factory: pytest.TempPathFactory) -> Account:
    """The installer's account on the module's unit, made through the first-run page."""
    with browser_page(pw, tmp_path_factory.mktemp("setup-profile")) as page:
        first_run_setup(page, appliance, INSTALLER)
    return INSTALLER


@pytest.fixture
def page(pw: Playwright, tmp_path: Path) -> Iterator[Page]:
    """A fresh browser (own profile: no cookies) for one test."""
    with browser_page(pw, tmp_path / "profile") as fresh:
        yield fresh


@pytest.fixture
def installer_page(page: Page, appliance: Appliance, installer: Account) -> Page:
    login(page, appliance, installer)
    return page


def fraud_call(unit: Appliance) -> CallRow:
    return unit.wait_for_finished_call(number=UNKNOWN_CALLER)


# ---- first run, login, logout ----------------------------------------------------------


def test_first_run_forces_a_password_then_login_and_logout_work(pw: Playwright, tmp_path: Path) -> None:
    unit = Appliance(tmp_path / "fresh-unit", transcribe=False).start()
    try:
        with browser_page(pw, tmp_path / "profile") as page:
            first_run_setup(page, unit, INSTALLER)
            users = json.loads(unit.users_path.read_text(encoding="utf-8"))
            (user,) = users["users"]
            assert (user["name"], user["role"]) == (INSTALLER.name, "installer")
            assert user["password_hash"].startswith("$argon2id$")
            assert INSTALLER.password not in unit.users_path.read_text(encoding="utf-8")

            page.goto(unit.url("/setup"))  # only ever the first time
            expect(page.locator('form[action="/setup"]')).to_have_count(0)

            logout(page, unit)
            page.goto(unit.url("/calls"))
            expect(page).to_have_url(re.compile(r"/login\b"))
            submit(page, "/login", {"name": INSTALLER.name, "password": "not-the-password"})
            expect(page).to_have_url(re.compile(r"/login\b"))
            expect(page.locator(".notice.bad, .field-error").first).to_be_visible()
            submit(page, "/login", {"name": INSTALLER.name, "password": INSTALLER.password})
            expect(page).to_have_url(re.compile(r"/calls$"))  # back where the visit started
            expect(page.locator("h1")).to_have_text(ja("calls.title"))
            # The login lives in a cookie the page's own scripts could never read, sent only same-site.
            (session,) = [c for c in page.context.cookies() if c["name"] == "mamoru_session"]
            assert session["httpOnly"] and session["sameSite"] == "Strict", session
            assert "mamoru_session" not in page.evaluate("() => document.cookie")
    finally:
        unit.stop()


# ---- the call log, a call, its recording -------------------------------------------------


def test_the_scripted_fraud_call_is_in_the_log_with_its_decision_and_its_recording_plays(
    installer_page: Page, appliance: Appliance
) -> None:
    page = installer_page
    call = fraud_call(appliance)
    assert (call.action, call.rule) == ("warn", "unknown") and call.recording and call.transcript

    page.goto(appliance.url("/calls"))
    link = page.locator(f'a[href="/calls/{call.id}"]').first
    row = page.locator("tr", has=link)
    expect(row).to_contain_text(UNKNOWN_CALLER_SHOWN)
    expect(row).to_contain_text(ja("calls.action.warn"))
    with page.expect_navigation():
        link.click()
    expect(page).to_have_url(re.compile(rf"/calls/{call.id}$"))
    expect(page.locator("main")).to_contain_text(UNKNOWN_CALLER_SHOWN)
    expect(page.locator("main")).to_contain_text(call.transcript.split()[0])
    # Japanese, and what made it fraud is highlighted in the transcript (the first mark is the legend).
    assert any("\u3040" <= c <= "\u30ff" for c in call.transcript), call.transcript
    flagged = page.locator("main p mark.flag")
    expect(flagged.nth(1)).to_be_visible()
    said = call.transcript.replace(" ", "")
    assert all(text and text.replace(" ", "") in said for text in flagged.all_inner_texts()[1:])

    # The player loads the recording through the page's own session and plays it.
    audio = page.locator("audio").first
    expect(audio).to_have_attribute("src", f"/calls/{call.id}/recording")
    duration = audio.evaluate("""a => new Promise((resolve, reject) => {
        const done = () => resolve(a.duration);
        if (a.readyState >= 1) return done();
        a.addEventListener('loadedmetadata', done, {once: true});
        a.addEventListener('error', () => reject(new Error('audio error ' + (a.error && a.error.code))), {once: true});
        a.load();
    })""")
    on_disk = appliance.recordings_dir / call.recording
    assert duration == pytest.approx(on_disk.stat().st_size / 16000, abs=0.5)  # 8 kHz 16-bit mono
    played = audio.evaluate("""a => { a.muted = true; return a.play().then(
        () => new Promise(r => setTimeout(() => { a.pause(); r(a.currentTime); }, 600))); }""")
    assert played > 0

    response = page.request.get(appliance.url(f"/calls/{call.id}/recording"))
    assert response.status == 200 and response.headers["content-type"].startswith("audio/")
    assert response.body() == on_disk.read_bytes()


def test_blocking_from_the_call_page_lists_the_number_and_the_next_call_is_refused(
    installer_page: Page, appliance: Appliance
) -> None:
    page = installer_page
    call = fraud_call(appliance)
    page.goto(appliance.url(f"/calls/{call.id}"))
    submit(page, f"/calls/{call.id}/block")
    expect(page.locator(".notice.ok")).to_be_visible()

    page.goto(appliance.url("/lists?kind=block"))
    expect(page.locator("main")).to_contain_text(UNKNOWN_CALLER_SHOWN)

    # The daemon reads the changed list for the very next call from that number.
    last = appliance.calls()[-1].id
    appliance.place_call(blocked_caller_script())
    again = appliance.wait_for_finished_call(number=UNKNOWN_CALLER, after_id=last)
    assert (again.action, again.rule) == ("block", "blocklist:family"), again  # the family's own list
    page.goto(appliance.url("/calls"))
    expect(page.locator(f'a[href="/calls/{again.id}"]').first).to_be_visible()


def test_a_rule_changed_on_the_settings_page_is_used_on_the_next_call(
    installer_page: Page, appliance: Appliance
) -> None:
    page = installer_page
    before = appliance.wait_for_finished_call(reason="P")
    assert (before.action, before.rule) == ("request_number", "withheld")

    page.goto(appliance.url("/settings"))
    expect(page.locator('select[name="withheld"]')).to_have_value("request_number")
    submit(page, "/settings/rules", {"withheld": "block"})
    expect(page.locator(".notice.ok")).to_be_visible()
    expect(page.locator('select[name="withheld"]')).to_have_value("block")
    config = appliance.config_path.read_text(encoding="utf-8")
    assert tomllib.loads(config)["rules"]["withheld"] == "block"
    assert config.startswith("# mamoru test unit")  # the file's comments are kept

    last = appliance.calls()[-1].id
    appliance.place_call(withheld_call_script())
    after = appliance.wait_for_finished_call(reason="P", after_id=last)
    assert (after.action, after.rule) == ("block", "withheld"), after


# ---- language, logout, roles ---------------------------------------------------------------


def test_language_switches_to_english_and_back(installer_page: Page, appliance: Appliance) -> None:
    page = installer_page
    nav_calls = page.locator('nav a[href="/calls"]')
    expect(nav_calls).to_have_text(ja("nav.calls"))
    page.goto(appliance.url("/account"))
    submit(page, "/account/language", {"language": "en"})
    expect(page.locator("html")).to_have_attribute("lang", "en")
    expect(nav_calls).to_have_text(translate(EN, "nav.calls"))
    page.goto(appliance.url("/calls"))
    expect(page.locator("h1")).to_have_text(translate(EN, "calls.title"))  # it stays English

    page.goto(appliance.url("/account"))
    submit(page, "/account/language", {"language": "ja"})
    expect(page.locator("html")).to_have_attribute("lang", "ja")
    expect(nav_calls).to_have_text(ja("nav.calls"))


def test_after_logout_neither_back_button_nor_direct_url_shows_a_page(
    installer_page: Page, appliance: Appliance
) -> None:
    page = installer_page
    call = fraud_call(appliance)
    page.goto(appliance.url(f"/calls/{call.id}"))
    expect(page.locator("audio")).to_have_count(1)
    logout(page, appliance)

    page.go_back()
    expect(page).to_have_url(re.compile(r"/login\b"))
    expect(page.locator("audio")).to_have_count(0)
    expect(page.locator('input[name="password"]')).to_be_visible()

    for path in (f"/calls/{call.id}", "/calls", "/settings", f"/calls/{call.id}/recording"):
        page.goto(appliance.url(path))
        expect(page).to_have_url(re.compile(r"/login\b"))
        expect(page.locator('input[name="password"]')).to_be_visible()


def test_a_family_member_cannot_open_the_installers_system_settings(
    installer_page: Page, appliance: Appliance, pw: Playwright, tmp_path: Path
) -> None:
    page = installer_page
    page.goto(appliance.url("/users"))
    if page.locator(f'form[action="/users/remove"] input[value="{FAMILY.name}"]').count() == 0:
        submit(page, "/users/add", {"name": FAMILY.name, "password": FAMILY.password, "role": "family",
                                    "language": "ja"})  # fmt: skip
        expect(page.locator(".notice.ok")).to_be_visible()

    with browser_page(pw, tmp_path / "family-profile") as family:
        login(family, appliance, FAMILY)
        response = family.goto(appliance.url("/settings/system"))
        assert response is not None and response.status == 403
        expect(family.locator("main")).to_contain_text(ja("error.forbidden"))
        response = family.goto(appliance.url("/settings"))  # the family's own settings are theirs
        assert response is not None and response.status == 200
        expect(family.locator('form[action="/settings/rules"]')).to_be_visible()


# ---- screenshots -------------------------------------------------------------------------


def test_screenshots_of_the_main_pages(installer_page: Page, appliance: Appliance) -> None:
    """Phone and desktop screenshots for docs/web.md; at phone width nothing scrolls sideways."""
    page = installer_page
    call = fraud_call(appliance)
    appliance.wait_for_finished_call(number=INTERNATIONAL_CALLER)
    pages = {"calls": "/calls", "call": f"/calls/{call.id}", "lists": "/lists?kind=block",
             "settings": "/settings", "health": "/health"}  # fmt: skip
    shots: list[Path] = []
    for name, path in pages.items():
        page.goto(appliance.url(path))
        expect(page.locator("h1")).to_be_visible()
        shots += screenshot(page, name)
        page.set_viewport_size(PHONE)
        assert horizontal_overflow(page) <= 0, f"{path} scrolls sideways on a phone"
    logout(page, appliance)
    shots += screenshot(page, "login")
    assert all(p.stat().st_size > 10_000 for p in shots)
