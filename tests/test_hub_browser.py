"""The hub page in a real browser (Debian's Chromium) at phone size: a relative's list of calls and
the police fleet page with its per-area charts fit a phone without sideways scrolling; the
screenshots go to docs/screenshots/ (hub-family-*.png, hub-fleet-*.png)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from playwright.sync_api import Page, Playwright, sync_playwright

from screening.core.clock import utc_now
from screening.core.model import Action, CallOutcome, Category, Verdict
from screening.hub.store import HubRole, HubStore, add_account
from screening.hub.web import HubWebSettings, hub_app
from screening.hubwire import CallSummary, Health, LineHealth, Status
from screening.web.accounts import hash_password
from tests.support import hub_servers
from tests.support.browser import PHONE, browser_page, chromium_executable, horizontal_overflow, screenshot
from tests.support.ports import free_tcp_port

pg_cluster, pg_dsn = hub_servers.pg_cluster, hub_servers.pg_dsn
pytestmark = pytest.mark.timeout(300)
PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def pw() -> Iterator[Playwright]:
    chromium_executable()  # fails, saying how to install it, before anything starts
    with sync_playwright() as playwright:
        yield playwright


@pytest.fixture
def hub_page(pg_dsn: str) -> Iterator[str]:
    with HubStore(pg_dsn) as store:
        store.migrate()
        for unit, household, area in (("akita-0001", "sato", "akita"), ("akita-0002", "kato", "akita"),
                                      ("setagaya-0001", "suzuki", "setagaya")):  # fmt: skip
            store.register_unit(unit, household, area)
        add_account(store, "hanako", hash_password(PASSWORD), HubRole.FAMILY, household="sato")
        add_account(store, "officer", hash_password(PASSWORD), HubRole.POLICE)
        calls = [
            ("akita-0001", 1, "+81312345678", Category.DOMESTIC, Action.SCREEN, CallOutcome.CALLER_HUNG_UP,
             Verdict.FRAUD, "還付金があるのでATMに行ってください", True),
            ("akita-0001", 2, "", Category.WITHHELD, Action.REQUEST_NUMBER, CallOutcome.CALLER_HUNG_UP, None, "", False),
            ("akita-0001", 3, "+819012345678", Category.DOMESTIC, Action.ALLOW, CallOutcome.CONNECTED, None, "", False),
            ("akita-0002", 1, "+442079460000", Category.INTERNATIONAL, Action.BLOCK, None, None, "", False),
            ("setagaya-0001", 1, "+81662223333", Category.DOMESTIC, Action.SCREEN, CallOutcome.CALLER_HUNG_UP,
             None, "", False),
        ]  # fmt: skip
        store.write([CallSummary(unit, call_id=call_id, started=utc_now(), number=number, category=category,
                                 action=action, outcome=outcome, verdict=verdict, excerpt=excerpt, alerted=alerted)
                     for unit, call_id, number, category, action, outcome, verdict, excerpt, alerted in calls])  # fmt: skip
        store.write([Status("akita-0001", online=True),
                     Health("akita-0002", line=LineHealth.FAULT, version="0.1.0", disk_free_mb=10, uptime_s=5,
                            faults=("modem_missing",))])  # fmt: skip
    port = free_tcp_port()
    app = hub_app(HubWebSettings(pg_dsn, frozenset({"127.0.0.1"}), None, secure_cookies=False))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the hub page did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


def _login(page: Page, url: str, name: str) -> None:
    page.goto(f"{url}/login")
    page.fill("input[name=name]", name)
    page.fill("input[name=password]", PASSWORD)
    page.click("form[action='/login'] button")
    page.wait_for_load_state()


def test_the_hub_page_at_phone_size(pw: Playwright, hub_page: str, tmp_path: Path) -> None:
    with browser_page(pw, tmp_path / "profile", PHONE) as page:
        _login(page, hub_page, "hanako")
        assert page.url.endswith("/family")
        text = page.inner_text("body")
        assert "+81312345678" in text and "詐欺の疑い" in text and "+81662223333" not in text
        assert horizontal_overflow(page) == 0
        screenshot(page, "hub-family")
        page.locator("tr", has_text="+81312345678").locator("a").click()
        assert "還付金があるのでATMに行ってください" in page.inner_text("body")
        assert horizontal_overflow(page) == 0
        page.context.clear_cookies()
        _login(page, hub_page, "officer")
        assert page.url.endswith("/fleet")
        assert page.locator("section.area-charts svg.chart").count() == 4  # two areas × (calls, share hung up)
        assert "+8131" not in page.inner_text("body")
        assert horizontal_overflow(page) == 0, "the fleet page scrolls sideways on a phone"
        screenshot(page, "hub-fleet")
