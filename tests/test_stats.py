"""Effectiveness statistics: a scripted month of calls written through the store's own API, then the
figures checked on the page, in ``mamoru stats --json`` and in the survey CSV."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import pytest

from blocklist.outbox import AlertKind, NewAlert, Outbox, Urgency
from blocklist.store import Store
from screening.cli import main
from screening.core.line import EndReason
from screening.core.model import Action, CallerID, CallOutcome, Category, Decision, EventKind, Prompt, Reason
from screening.stats import CSV_COLUMNS, Period, build_report, parse_period
from screening.web.stats_charts import Series, bar_chart, stacked_bars
from tests.support.web import Web, ja, running_web, write_config

JST = timezone(timedelta(hours=9))
ZONE = JST


def at(day: int, hour: int, month: int = 11) -> datetime:
    return datetime(2026, month, day, hour, tzinfo=JST).astimezone(UTC)


def decision(action: Action, category: Category = Category.DOMESTIC) -> Decision:
    prompt = {Action.ALLOW: None, Action.WARN: Prompt.WARNING, Action.SCREEN: Prompt.WARNING,
              Action.REQUEST_NUMBER: Prompt.NUMBER_REQUEST, Action.BLOCK: Prompt.NUMBER_BLOCKED}[action]  # fmt: skip
    return Decision(action, action.value, "scripted", category, prompt)


def a_call(store: Store, when: datetime, action: Action, *, category: Category = Category.DOMESTIC,
           played: EndReason | None = None, challenge: bool | None = None, outcome: CallOutcome | None = None,
           message: bool = False, fraud_flags: int = 0) -> int:  # fmt: skip
    """One call as the daemon writes it: the row with its decision, then its step events."""
    caller = CallerID(raw_number="0312345678", number_e164="+81312345678") if category is not Category.WITHHELD \
        else CallerID(reason=Reason.WITHHELD)
    call_id = store.begin_call("sim", caller, started_at=when, decision=decision(action, category),
                               events=((EventKind.OFFERED, {}), (EventKind.DECIDED, {"rule": action.value})))
    if played is not None:
        store.add_event(call_id, EventKind.ANSWERED)
        store.add_event(call_id, EventKind.PLAYED, prompt="warning", clip="warning.wav", end=played.value)
    if challenge is not None:
        store.add_event(call_id, EventKind.CHALLENGE, passed=challenge, key="3" if challenge else None)
    if message:
        store.add_event(call_id, EventKind.MESSAGE, seconds=12.5, path="messages/1.wav")
    if outcome is not None:
        store.add_event(call_id, EventKind.OUTCOME, outcome=outcome.value)
    if fraud_flags:
        store.set_detection(call_id, "fraud", 0.97, "還付金があります", fraud_at=when)
        store.add_flags(call_id, [("還付金", "refund", 1.0 + i) for i in range(fraud_flags)])
    if played is not None:
        store.add_event(call_id, EventKind.HUNG_UP)
    store.finish_call(call_id, played.value if played else "allowed_to_ring")
    return call_id


def script_november(store: Store) -> None:
    """November 2026 (JST), and a call either side of it."""
    for i in range(10):  # family: rang through
        a_call(store, at(1 + i, 10), Action.ALLOW)
    for i in range(20):  # warned and answered: 7 hung up during the warning
        end = EndReason.CALLER_HUNG_UP if i < 7 else EndReason.COMPLETED
        a_call(store, at(2 + i, 14), Action.WARN, played=end, fraud_flags=2 if i == 10 else 0)
    a_call(store, at(3, 9), Action.WARN)  # household on the line: never answered, not in the rate
    screened = [  # (end of the warning, challenge passed?, outcome, message left)
        (EndReason.CALLER_HUNG_UP, None, CallOutcome.CALLER_HUNG_UP, False),
        (EndReason.CALLER_HUNG_UP, None, CallOutcome.CALLER_HUNG_UP, False),
        (EndReason.COMPLETED, False, CallOutcome.SCREENED_OUT, False),
        (EndReason.COMPLETED, False, CallOutcome.SCREENED_OUT, False),
        (EndReason.COMPLETED, False, CallOutcome.SCREENED_OUT, False),
        (EndReason.COMPLETED, True, CallOutcome.CALLER_HUNG_UP, False),  # hung up at the name prompt
        (EndReason.COMPLETED, True, CallOutcome.CONNECTED, False),
        (EndReason.COMPLETED, True, CallOutcome.CONNECTED, False),
        (EndReason.COMPLETED, True, CallOutcome.MESSAGE, True),
        (EndReason.COMPLETED, True, CallOutcome.REFUSED, True),
    ]
    for i, (end, passed, outcome, message) in enumerate(screened):
        a_call(store, at(5 + i, 20), Action.SCREEN, played=end, challenge=passed, outcome=outcome, message=message,
               fraud_flags=1 if i == 9 else 0)  # fmt: skip
    for i in range(5):
        a_call(store, at(10 + i, 11), Action.BLOCK, category=Category.INTERNATIONAL, played=EndReason.COMPLETED)
    for i in range(3):
        a_call(store, at(15 + i, 11), Action.REQUEST_NUMBER, category=Category.WITHHELD, played=EndReason.COMPLETED)
    a_call(store, datetime(2026, 11, 1, 0, 30, tzinfo=JST), Action.ALLOW)  # = 31 Oct UTC: still November here
    a_call(store, datetime(2026, 10, 31, 23, 30, tzinfo=JST), Action.BLOCK, played=EndReason.COMPLETED)  # October
    a_call(store, datetime(2026, 12, 1, 0, 30, tzinfo=JST), Action.WARN, played=EndReason.CALLER_HUNG_UP)  # December


def alerts_for_november(db: Path) -> None:
    with Outbox(db) as outbox:
        ids = []
        for n, kind in enumerate((AlertKind.FRAUD, AlertKind.FRAUD, AlertKind.REPEAT_BLOCK, AlertKind.TEST)):
            row = outbox.add(NewAlert(kind, Urgency.URGENT, f"k{n}", "件名", "本文", {}), [], now=at(12 + n, 15))
            assert row is not None
            ids.append(row.id)
        assert outbox.acknowledge(ids[0], "Hanako", at(12, 16))
        assert outbox.acknowledge(ids[2], "Hanako", at(14, 16))
        assert outbox.acknowledge(ids[3], "Hanako", at(15, 16))  # a test alert: not counted at all


# November's figures, from the script above.
NOVEMBER = {"calls": 50, "allow": 11, "warn": 21, "screen": 10, "request_number": 3, "block": 5,
            "warned_or_screened": 30, "repelled": 13, "repel_rate": 43.3, "messages": 2, "fraud_calls": 2,
            "flagged_phrases": 3, "alerts": 3, "alerts_acknowledged": 2}  # fmt: skip


@pytest.fixture
def web(tmp_path: Path) -> Iterator[Web]:
    for rig in running_web(tmp_path, write_config(tmp_path)):
        script_november(rig.ctx.store)
        alerts_for_november(rig.ctx.store.path)
        yield rig


def test_period_parsing() -> None:
    today = date(2026, 12, 6)
    assert parse_period(None, None, today) == Period(date(2026, 1, 1), today)
    assert parse_period("2026-11", "2026-11", today) == Period(date(2026, 11, 1), date(2026, 11, 30))
    assert parse_period("2024-02", "2024-02", today).last == date(2024, 2, 29)
    assert parse_period("2026-11-15", "2026-12", today).months() == ["2026-11", "2026-12"]
    for since, until in (("2026-13", None), ("yesterday", None), ("2026-12", "2026-11"), ("2000-01", "2026-01")):
        with pytest.raises(ValueError):
            parse_period(since, until, today)


def test_report_counts_the_scripted_month(tmp_path: Path) -> None:
    with Store(tmp_path / "mamoru.db", recover_calls=False) as store:
        script_november(store)
        alerts_for_november(store.path)
        report = build_report(store, Period(date(2026, 10, 1), date(2026, 12, 31)), ZONE)
    october, november, december = report.months
    got = november.as_dict()
    flat = {**got, **got["by_action"]}
    assert {k: flat[k] for k in NOVEMBER} == NOVEMBER
    assert got["by_category"]["international"] == 5 and got["by_category"]["withheld"] == 3
    assert got["outcomes"] == {"connected": 2, "refused": 1, "screened_out": 3, "message": 1, "caller_hung_up": 3}
    assert (october.calls, october.repel_rate) == (1, None)  # a refused caller was not warned
    assert (december.calls, december.repelled, december.repel_rate) == (1, 1, 100.0)
    assert report.total.calls == 52 and report.total.repelled == 14


def test_a_month_without_warned_callers_has_no_rate(tmp_path: Path) -> None:
    with Store(tmp_path / "mamoru.db", recover_calls=False) as store:
        a_call(store, at(3, 10), Action.ALLOW)
        (month,) = build_report(store, Period(date(2026, 11, 1), date(2026, 11, 30)), ZONE).months
    assert month.calls == 1 and month.repel_rate is None


def _cells(page: str, month: str) -> dict[str, str]:
    row = re.search(rf'<tr data-month="{month}".*?</tr>', page, re.S)
    assert row is not None, month
    return {col: " ".join(re.sub(r"<.*?>", " ", text).split()) for col, text in
            re.findall(r'<td data-col="(\w+)">(.*?)</td>', row[0], re.S)}  # fmt: skip


def test_page_shows_the_figures_and_charts(web: Web) -> None:
    page = web.get("/stats", params={"from": "2026-10", "to": "2026-12"})
    assert page.status_code == 200
    text = page.text
    assert ja("stats.title") in text and ja("nav.stats") in text
    cells = _cells(text, "2026-11")
    assert cells["calls"] == "50" and cells["warn"] == "21" and cells["screen"] == "10"
    assert cells["repel_rate"] == "43.3% (13/30)"
    assert (cells["messages"], cells["fraud_calls"], cells["alerts"], cells["alerts_acknowledged"]) == ("2", "2", "3", "2")
    # charts are inline SVG drawn on the server: November's repel-rate bar and stacked decision bars
    assert '<svg xmlns="http://www.w3.org/2000/svg"' in text and "<script" not in text
    assert re.search(r'data-key="repel_rate" data-month="2026-11" data-value="43.3"', text)
    assert re.search(r'data-key="screen" data-month="2026-11" data-value="10"', text)
    assert 'href="/stats.csv?from=2026-10-01&amp;to=2026-12-31"' in text


def test_page_needs_login_and_checks_the_period(web: Web, tmp_path: Path) -> None:
    assert web.get("/stats", params={"from": "2026-13"}).status_code == 400
    assert ja("stats.bad_period") in web.get("/stats", params={"from": "2026-12", "to": "2026-11"}).text
    with web.client.__class__(base_url=web.server.url, follow_redirects=False) as stranger:
        assert stranger.get("/stats").status_code == 303
        assert stranger.get("/stats.csv").status_code == 303


def test_csv_export_for_a_survey(web: Web) -> None:
    response = web.get("/stats.csv", params={"from": "2026-11", "to": "2026-11"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert "attachment" in response.headers["content-disposition"]
    assert response.content.startswith(b"\xef\xbb\xbf")  # BOM: Excel reads it as UTF-8
    rows = list(csv.reader(io.StringIO(response.content.decode("utf-8-sig"))))
    header, november, total = rows
    assert header[:2] == ["月", "着信数"] and len(header) == len(CSV_COLUMNS)
    assert "撃退率(%)" in header
    row = dict(zip(CSV_COLUMNS, november, strict=True))
    assert row["month"] == "2026-11" and row["calls"] == "50" and row["repel_rate"] == "43.3"
    assert (row["warned_or_screened"], row["repelled"], row["messages"]) == ("30", "13", "2")
    assert (row["alerts"], row["alerts_acknowledged"], row["outcome_screened_out"]) == ("3", "2", "3")
    assert total[0] == "合計" and total[1] == "50"


def test_cli_json_and_csv(web: Web, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out_csv = tmp_path / "survey.csv"
    assert web.config_path is not None
    code = main(["stats", "--config", str(web.config_path), "--json", "--from", "2026-11", "--to", "2026-11",
                 "--csv", str(out_csv)])  # fmt: skip
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    assert data["time_zone"] == "Asia/Tokyo" and data["generated_at"].endswith("Z")
    (november,) = data["months"]
    flat = {**november, **november["by_action"]}
    assert {k: flat[k] for k in NOVEMBER} == NOVEMBER
    assert out_csv.read_bytes().startswith(b"\xef\xbb\xbf\xe6\x9c\x88")  # BOM, then 月


def test_cli_refuses_a_bad_period(web: Web, capsys: pytest.CaptureFixture[str]) -> None:
    assert web.config_path is not None
    assert main(["stats", "--config", str(web.config_path), "--from", "soon"]) == 1
    assert "not a date" in capsys.readouterr().err


def test_chart_labels_are_escaped_and_empty_months_draw_nothing() -> None:
    svg = stacked_bars("<b>", ["2026-11"], [Series("x", "<script>", (2.0,))])
    assert "<script>" not in svg and "&lt;script&gt;" in svg and "&lt;b&gt;" in svg
    assert "<rect x" not in bar_chart("rate", ["2026-11"], [None], "%", top=100.0)
