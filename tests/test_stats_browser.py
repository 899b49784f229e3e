"""The statistics and suggestions pages in real Chromium on a phone-sized screen: nothing scrolls
sideways but the table's own box, the charts fit, and a suggestion is accepted by tapping the button."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, Playwright, sync_playwright

from tests.support.browser import PHONE, browser_page, chromium_executable, horizontal_overflow
from tests.support.web import Web, ja, running_web, write_config
from tests.test_stats import alerts_for_november, script_november
from tests.test_suggestions import FRIEND, Clock, talk


@pytest.fixture(scope="module")
def pw() -> Iterator[Playwright]:
    chromium_executable()  # fails, saying how to install it, before anything starts
    with sync_playwright() as playwright:
        yield playwright


@pytest.fixture
def web(tmp_path: Path) -> Iterator[Web]:
    for rig in running_web(tmp_path, write_config(tmp_path)):
        script_november(rig.ctx.store)
        alerts_for_november(rig.ctx.store.path)
        clock = Clock()
        for day in range(3):
            talk(rig.ctx.store, clock, FRIEND, datetime.now(UTC) - timedelta(days=3 - day))
        yield rig


def _logged_in(context: BrowserContext, web: Web) -> None:
    """The test client's logged-in session, handed to the browser."""
    context.add_cookies([{"name": c.name, "value": c.value or "", "url": web.server.url}
                         for c in web.client.cookies.jar])  # fmt: skip


def test_statistics_page_fits_a_phone(pw: Playwright, web: Web, tmp_path: Path) -> None:
    with browser_page(pw, tmp_path / "profile", PHONE) as page:
        _logged_in(page.context, web)
        page.goto(f"{web.server.url}/stats?from=2026-01&to=2026-11")  # before the suggestion fixture's calls
        assert page.locator("h1").inner_text() == ja("stats.title")
        assert page.locator("#stats-repel-rate").inner_text() == "43.3%"
        assert horizontal_overflow(page) == 0  # the page itself never scrolls sideways
        for chart in page.locator("svg.chart").all():
            box = chart.bounding_box()
            assert box is not None and 0 < box["width"] <= PHONE["width"]
        table_box = page.locator(".scroll").bounding_box()
        assert table_box is not None and table_box["width"] <= PHONE["width"]
        # a bar's figure is in its title: what a long press or a screen reader gives
        bar_title = page.locator('rect[data-key="repel_rate"][data-month="2026-11"] title')
        assert bar_title.text_content() == "2026-11: 43.3%"
        with page.expect_download() as download:
            page.locator("#stats-csv").click()
        saved = tmp_path / "survey.csv"
        download.value.save_as(saved)
        assert saved.read_bytes().startswith(b"\xef\xbb\xbf")


def test_a_suggestion_is_accepted_by_tapping(pw: Playwright, web: Web, tmp_path: Path) -> None:
    with browser_page(pw, tmp_path / "profile", PHONE) as page:
        _logged_in(page.context, web)
        page.goto(f"{web.server.url}/calls")
        page.locator("#suggestions-notice a").click()
        assert page.locator("h1").inner_text() == "家族リストに追加しますか？"
        assert horizontal_overflow(page) == 0
        page.locator(f'li[data-number="{FRIEND}"] button', has_text=ja("suggestions.accept")).click()
        assert page.locator(".notice.ok").inner_text() == ja("suggestions.done.added")
        assert web.ctx.store.load_lists(datetime.now(UTC)).match_allow(FRIEND) is not None
