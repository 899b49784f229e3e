"""The call log and call pages against a real server, with calls screened by the real daemon.

A daemon screens calls on the virtual modem (warned and recorded, withheld,
blocked, allowed) into a SQLite file; a separate web server (its own Store on the
same file, as `mamoru web` runs) serves the pages; an httpx client logs in through
the real setup and login forms. Actions taken on the page must change what the
daemon does with the next call.

The web rig (server, accounts, login) is tests/support/web.py, shared with the other web tests.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import threading
import time
import wave
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from blocklist.outbox import AlertKind, NewAlert, NewDelivery, Outbox, Urgency
from blocklist.store import Store
from blocklist.store.rows import CallFilter
from blocklist.store.schema import MIGRATIONS
from firmware.dialects import CADENCE_PERIOD_S, CONEXANT_CX93001, RingCadence
from firmware.modem_line import ModemLine
from firmware.scenarios import CallScript
from firmware.virtual_modem import VirtualModem
from screening.cli import review_export as review_export_cli
from screening.core.clock import region_zone
from screening.core.model import (
    Action,
    CallerID,
    CallState,
    EventKind,
    ListEntry,
    ListKind,
    MatchKind,
    Reason,
    ReviewLabel,
    Verdict,
)
from screening.core.rules import NoLists, Policy, decide
from screening.daemon import Daemon
from screening.session import CallSettings, SessionSettings
from screening.web.call_views import WEB_NOTE, transcript_lines
from screening.web.i18n import missing
from tests.support.web import (
    FAMILY_MEMBER,
    SITE_CONFIG,
    WebRig,
    make_form_accounts,
    post_form,
    signed_in,
    start_site,
)
from voice.announcements import ToneAnnouncements
from voice.asr import Segment, Word
from voice.detector import PhrasePack
from voice.pipeline import VoiceService

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).parent.parent
SCALE = 0.05
UNKNOWN = "0662223333"  # warned and recorded
WARNED_E164 = "+81662223333"
BLOCKED = "0398765432"
FAMILY_NUMBER = "0312345678"
HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'


# --------------------------------------------------------------------------- shared helpers


def wait_until(predicate, timeout: float = 10.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class DaemonRig:
    """The real daemon on the virtual modem, recording warned calls into the site's recordings dir."""

    def __init__(self, tmp: Path) -> None:
        self.modem = VirtualModem(CONEXANT_CX93001, RingCadence.JAPAN, SCALE)
        self.store = Store(tmp / "calls.db", retry_interval=0.05, busy_timeout=1.0)
        self.recordings = tmp / "recordings"
        self.stop_event = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self) -> DaemonRig:
        self.modem.start()
        self.store.open()
        self.store.add_entry(ListEntry(ListKind.ALLOW, MatchKind.EXACT, "+81312345678", source="family",
                                       note="娘の花子"))  # fmt: skip
        self.store.add_entry(ListEntry(ListKind.BLOCK, MatchKind.EXACT, "+81398765432", note="不動産の勧誘"))
        self.line = ModemLine(str(self.modem.device_path), "auto", "JP", RingCadence.JAPAN,
                              ring_gap_s=1.5 * CADENCE_PERIOD_S[RingCadence.JAPAN] * SCALE)  # fmt: skip
        self.line.open()
        voice = VoiceService(store=self.store, recordings_dir=self.recordings, pack=PhrasePack.load("ja"), model=None)
        self.daemon = Daemon(self.line, self.store, CallSettings(Policy(), ToneAnnouncements(), 30.0),
                             SessionSettings(voice=voice))  # fmt: skip
        self.thread = threading.Thread(target=self.daemon.run, args=(self.stop_event,), daemon=True)
        self.thread.start()
        return self

    def call(self, script: CallScript) -> int:
        """Place a call, wait until the daemon has finished its row; returns the call id."""
        before = self.store.count_calls()
        # a pause first, or the daemon hears a new call's rings as the last unanswered call ringing on
        script = replace(script, gap_s=max(script.gap_s, 3 * CADENCE_PERIOD_S[RingCadence.JAPAN]))
        record = self.modem.place_call(script)
        self.modem.wait_for_call_end(record, timeout=30)

        def finished():
            rows = self.store.recent_calls(limit=1)
            done = len(rows) and self.store.count_calls() > before and rows[0].state in (CallState.COMPLETED,
                                                                                      CallState.FAILED)
            # the recording is linked with its size when the session closes it
            return rows[0].id if done and (rows[0].recording is None or rows[0].recording_bytes) else None

        try:
            return int(wait_until(finished, 15, "the daemon to finish the call"))
        except AssertionError:
            raise AssertionError(f"call not finished: {self.store.recent_calls(limit=2)}, {record}") from None

    def stop(self) -> None:
        self.stop_event.set()
        if self.thread is not None:
            self.thread.join(timeout=10)
        self.line.close()
        self.modem.stop()
        self.store.close()


@dataclass
class ScreenedCalls:
    site: WebRig
    rig: DaemonRig
    warned: int
    withheld: int
    blocked: int
    allowed: int


@pytest.fixture(scope="module")
def screened(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScreenedCalls]:
    tmp = tmp_path_factory.mktemp("screened")
    rig = DaemonRig(tmp).start()
    site = start_site(tmp)
    try:
        warned = rig.call(CallScript(nmbr=UNKNOWN, name="<b>Bank</b>", hang_up_after_s=60))
        withheld = rig.call(CallScript(nmbr="P", hang_up_after_s=200))
        blocked = rig.call(CallScript(nmbr=BLOCKED, hang_up_after_s=200))
        allowed = rig.call(CallScript(nmbr=FAMILY_NUMBER, max_rings=3))
        yield ScreenedCalls(site, rig, warned, withheld, blocked, allowed)
    finally:
        site.close()
        rig.stop()


@pytest.fixture
def rig_config() -> str:
    return SITE_CONFIG


@pytest.fixture
def site(rig: WebRig) -> WebRig:
    """The ``rig`` with an installer and a family member made through the real forms."""
    return make_form_accounts(rig)


def fraud_call(store: Store, recordings: Path, number: str = "0120444555", name: str | None = None) -> int:
    """A call through the real voice pipeline (recorder + streaming detector), fed recognised segments."""
    call_id = store.begin_call("sim", CallerID(raw_number=number, number_e164=f"+81{number[1:]}", name=name))
    voice = VoiceService(store=store, recordings_dir=recordings, pack=PhrasePack.load("ja"), model=None)
    audio = voice.start_call(call_id)
    audio.received(bytes(range(256)) * 64)
    script = [(f"もしもし 警察 の 者 です {HOSTILE}", 0.5, 3.0), ("あなた の キャッシュ", 3.5, 4.5),
              ("カード が 犯罪 に 使われて います 暗証番号 を 教えて ください", 4.6, 8.0)]
    for text, start, end in script:
        audio.add_segment(Segment(text, start, end, (Word(text.split()[0], start, start + 0.4, 1.0),)))
    audio.finish()
    store.finish_call(call_id, "caller_hung_up")
    return call_id


def rows_in_order(html: str) -> list[int]:
    return [int(n) for n in re.findall(r'<tr id="call-(\d+)"', html)]


# --------------------------------------------------------------------------- call log


def test_log_shows_the_daemons_calls_newest_first_with_their_decisions(screened: ScreenedCalls) -> None:
    with signed_in(screened.site) as client:
        page = client.get("/calls")
    assert page.status_code == 200
    html = page.text
    ids = [screened.allowed, screened.blocked, screened.withheld, screened.warned]
    assert rows_in_order(html)[:4] == ids  # newest first
    for call_id in ids:
        row = screened.rig.store.get_call(call_id)
        assert f'<tr id="call-{call_id}" data-action="{row.action.value}"' in html
    assert "06-6222-3333" in html and "03-9876-5432" in html and "03-1234-5678" in html  # national format
    assert "非通知" in html  # the withheld call, in words
    assert "お断りしました（着信拒否）" in html and "電話を鳴らしました" in html
    assert "注意のメッセージを流して録音しました" in html and "番号を通知してかけ直すようお願いしました" in html
    assert "&lt;b&gt;Bank&lt;/b&gt;" in html and "<b>Bank</b>" not in html  # caller-ID names are escaped
    assert 'class="optional"' in html  # the reason column hides on a phone


def test_log_times_are_the_units_local_time(site: WebRig) -> None:
    yesterday_noon = datetime.now(region_zone("JP")).replace(hour=12, minute=34) - timedelta(days=1)
    old = datetime(2020, 3, 4, 1, 2, tzinfo=UTC)  # 10:02 in Tokyo
    site.store.begin_call("sim", CallerID(raw_number="0312340000", number_e164="+81312340000"), started_at=old)
    site.store.begin_call("sim", CallerID(raw_number="0312340001", number_e164="+81312340001"),
                          started_at=yesterday_noon)  # fmt: skip
    with signed_in(site) as client:
        html = client.get("/calls").text
    assert "2020年3月4日(水) 10:02" in html and "昨日 12:34" in html
    assert region_zone("JP").key == "Asia/Tokyo"  # type: ignore[attr-defined]


def test_log_filters_by_verdict_action_and_number_or_name(site: WebRig) -> None:
    store = site.store
    fraud = fraud_call(store, site.recordings(), "0120444555", name="SUZUKI")
    plain = store.begin_call("sim", CallerID(raw_number="0662223333", number_e164="+81662223333", name="TANAKA"))
    withheld = store.begin_call("sim", CallerID(reason=Reason.WITHHELD))
    store.record_decision(withheld, decide(CallerID(reason=Reason.WITHHELD), NoLists(), Policy()))
    with signed_in(site) as client:
        def ids(query: str) -> list[int]:
            response = client.get(f"/calls?{query}")
            assert response.status_code == 200
            return rows_in_order(response.text)

        assert ids("") == [withheld, plain, fraud]
        assert ids("verdict=fraud") == [fraud]
        assert ids("action=request_number") == [withheld]
        assert ids("q=06-6222") == [plain]  # typed the local way, stored as 0662223333 / +81662223333
        assert ids("q=%2B81120444") == [fraud]  # E.164 fragment
        assert ids("q=tanaka") == [plain]  # name, any case
        assert ids("q=%25") == []  # LIKE wildcards are literal
        assert ids("verdict=nonsense&action=bogus&page=-3") == [withheld, plain, fraud]  # odd values: no filter
        filtered = client.get("/calls?verdict=clean").text
        assert "条件に合う電話はありません" in filtered


def test_log_pages_thirty_at_a_time(site: WebRig) -> None:
    for n in range(65):
        site.store.begin_call("sim", CallerID(raw_number=f"03123450{n:02d}", number_e164=f"+813123450{n:02d}"))
    with signed_in(site) as client:
        first = client.get("/calls").text
        third = client.get("/calls?page=3").text
        beyond = client.get("/calls?page=99999999999999999999").text
    assert rows_in_order(first) == list(range(65, 35, -1))
    assert 'href="/calls?page=2"' in first and "65件" in first
    assert rows_in_order(third) == list(range(5, 0, -1)) and 'rel="next"' not in third
    assert rows_in_order(beyond) == rows_in_order(third)  # clamped to the last page


# --------------------------------------------------------------------------- call page


def test_call_page_escapes_a_hostile_transcript_and_marks_the_flagged_phrases(site: WebRig) -> None:
    call_id = fraud_call(site.store, site.recordings(), name=HOSTILE)
    flags = site.store.flags_for(call_id)
    assert {f.phrase for f in flags} >= {"警察", "暗証番号"}
    with signed_in(site) as client:
        page = client.get(f"/calls/{call_id}")
    assert page.status_code == 200
    html = page.text
    assert "<script>alert" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;" in html
    assert '<mark class="flag">警察</mark>' in html and '<mark class="flag">暗証番号</mark>' in html
    # a phrase said across two recognised segments is marked in both
    assert '<mark class="flag">キャッシュ</mark>' in html and re.search(r'<mark class="flag">カード[^<]*</mark>', html)
    assert "詐欺の疑い" in html and 'class="verdict-fraud"' in html
    assert f'<audio controls preload="metadata" src="/calls/{call_id}/recording">' in html
    assert "警察・役所・銀行などを名のる" in html  # the flag's category in words


def test_transcript_marks_the_occurrence_at_the_flags_time() -> None:
    """A phrase said twice but flagged once is marked where it was flagged (pure function)."""
    from blocklist.store.rows import CallRow, EventRow, FlagRow

    row = CallRow(1, "u", "2025-01-01T00:00:00.000Z", "sim", None, None, None, None, None, None, None, None, None,
                  None, None, CallState.COMPLETED, None, None, None)  # fmt: skip
    events = [EventRow(1, 1, "t", EventKind.TRANSCRIPT, {"text": "銀行 の 者 です", "start_s": 1.0}),
              EventRow(2, 1, "t", EventKind.TRANSCRIPT, {"text": "銀行 協会 から", "start_s": 9.0})]
    lines = transcript_lines(row, events, [FlagRow(1, 1, "銀行 協会", "impersonation", 9.2, "t")])
    assert [[(p.text, p.flag) for p in line.pieces] for line in lines] == [
        [("銀行 の 者 です", False)], [("銀行 協会", True), (" から", False)]]
    assert [line.at for line in lines] == ["0:01", "0:09"]


def test_recording_is_served_by_call_id_byte_identical_with_ranges(screened: ScreenedCalls) -> None:
    row = screened.rig.store.get_call(screened.warned)
    assert row.recording and row.recording_bytes
    on_disk = (screened.rig.recordings / row.recording).read_bytes()
    with wave.open(str(screened.rig.recordings / row.recording)) as wav:
        assert wav.getnframes() > 0
    with signed_in(screened.site) as client:
        whole = client.get(f"/calls/{row.id}/recording")
        assert whole.status_code == 200 and whole.headers["content-type"] == "audio/wav"
        assert whole.content == on_disk and whole.headers["accept-ranges"] == "bytes"
        part = client.get(f"/calls/{row.id}/recording", headers={"Range": "bytes=0-99"})
        assert part.status_code == 206 and part.content == on_disk[:100]
        assert part.headers["content-range"] == f"bytes 0-99/{len(on_disk)}"
        tail = client.get(f"/calls/{row.id}/recording", headers={"Range": f"bytes={len(on_disk) - 10}-"})
        assert tail.status_code == 206 and tail.content == on_disk[-10:]
        beyond = client.get(f"/calls/{row.id}/recording", headers={"Range": f"bytes={len(on_disk) + 5}-"})
        assert beyond.status_code == 416
        assert client.get(f"/calls/{screened.allowed}/recording").status_code == 404  # never answered
        assert client.get("/calls/999999/recording").status_code == 404
        html = client.get(f"/calls/{screened.allowed}").text
        assert "この電話の録音はありません" in html and "<audio" not in html
    with screened.site.client() as anonymous:
        response = anonymous.get(f"/calls/{row.id}/recording")
        assert response.status_code == 303 and response.headers["location"].startswith("/login")


def test_a_recording_path_leading_outside_the_recordings_dir_is_not_served(site: WebRig, tmp_path: Path) -> None:
    secret = tmp_path / "secret.wav"
    secret.write_bytes(b"RIFF not yours")
    site.recordings().mkdir(parents=True, exist_ok=True)
    (site.recordings() / "link.wav").symlink_to(secret)
    linked = site.store.begin_call("sim", CallerID(raw_number="0312345678"))
    site.store.set_recording(linked, "link.wav", 14, 0.1)
    missing_file = site.store.begin_call("sim", CallerID(raw_number="0312345679"))
    site.store.set_recording(missing_file, "2025/01/01/gone.wav", 100, 1.0)
    with signed_in(site) as client:
        assert client.get(f"/calls/{linked}/recording").status_code == 404
        assert client.get(f"/calls/{missing_file}/recording").status_code == 404
        for path in ("/calls/0", "/calls/99999999999999999999999", "/calls/99999999999999999999999/recording",
                     "/calls/-1", "/calls/abc"):
            response = client.get(path)
            assert response.status_code == 404, path
            assert "Traceback" not in response.text


# --------------------------------------------------------------------------- actions


def test_block_then_allow_from_the_call_page_changes_the_daemons_next_decision(screened: ScreenedCalls) -> None:
    rig, call_id = screened.rig, screened.warned
    with signed_in(screened.site) as client:
        page = client.get(f"/calls/{call_id}").text
        assert f'action="/calls/{call_id}/block"' in page and f'action="/calls/{call_id}/allow"' in page
        response = post_form(client, f"/calls/{call_id}", f"/calls/{call_id}/block", {"note": ""})
        assert response.status_code == 303 and response.headers["location"] == f"/calls/{call_id}?done=blocked"
        assert "着信拒否にしました" in client.get(response.headers["location"]).text
        entry = rig.store.load_lists(datetime.now(UTC)).match_block(WARNED_E164)
        assert entry is not None and (entry.source, entry.note) == ("family", WEB_NOTE)
        again = rig.call(CallScript(nmbr=UNKNOWN, hang_up_after_s=200))
        assert (rig.store.get_call(again).action, rig.store.get_call(again).rule) == (Action.BLOCK, "blocklist:family")

        response = post_form(client, f"/calls/{again}", f"/calls/{again}/allow", {})
        assert response.status_code == 303 and response.headers["location"] == f"/calls/{again}?done=allowed"
        third = rig.call(CallScript(nmbr=UNKNOWN, max_rings=3))
        assert rig.store.get_call(third).action is Action.ALLOW
        # the lists page shows the family's entry with the page's note in words
        lists = client.get("/lists?kind=allow").text
        assert "06-6222-3333" in lists and "ウェブ画面から追加" in lists

        response = post_form(client, f"/calls/{third}", f"/calls/{third}/block", {"note": "銀行を名のる詐欺"})
        assert response.headers["location"] == f"/calls/{third}?done=blocked"
        fourth = rig.call(CallScript(nmbr=UNKNOWN, hang_up_after_s=200))
        assert rig.store.get_call(fourth).action is Action.BLOCK  # blocking took the number off the allowlist
        assert rig.store.load_lists(datetime.now(UTC)).match_block(WARNED_E164).note == "銀行を名のる詐欺"


def test_withheld_calls_offer_no_number_actions(screened: ScreenedCalls) -> None:
    call_id = screened.withheld
    generation = screened.rig.store.lists_generation()
    with signed_in(screened.site) as client:
        page = client.get(f"/calls/{call_id}").text
        assert "/allow" not in page and "/block" not in page and "番号が分からない電話なので" in page
        for action in ("allow", "block"):
            response = post_form(client, f"/calls/{call_id}", f"/calls/{call_id}/{action}", {})
            assert response.status_code == 400 and "Traceback" not in response.text
    assert screened.rig.store.lists_generation() == generation


def test_blocking_a_number_an_allowed_range_covers_says_so(site: WebRig) -> None:
    site.store.add_entry(ListEntry(ListKind.ALLOW, MatchKind.PREFIX, "+81662", source="family", note="大阪の親戚"))
    call_id = site.store.begin_call("sim", CallerID(raw_number=UNKNOWN, number_e164=WARNED_E164))
    with signed_in(site) as client:
        response = post_form(client, f"/calls/{call_id}", f"/calls/{call_id}/block", {})
        assert response.headers["location"] == f"/calls/{call_id}?done=blocked_still_allowed"
        assert "許可する番号のリスト（番号の範囲）にも入っているため" in client.get(response.headers["location"]).text
    assert site.store.load_lists(datetime.now(UTC)).match_block(WARNED_E164) is not None


def test_actions_need_login_csrf_and_post(screened: ScreenedCalls) -> None:
    call_id = screened.warned
    generation = screened.rig.store.lists_generation()
    with screened.site.client() as anonymous:
        response = anonymous.post(f"/calls/{call_id}/block", data={"csrf_token": "x"})
        assert response.status_code in (303, 403)
    with signed_in(screened.site) as client:
        assert client.post(f"/calls/{call_id}/block", data={}).status_code == 403  # no CSRF token
        assert client.get(f"/calls/{call_id}/block").status_code == 405  # never a state change by GET
        assert post_form(client, "/calls", "/calls/424242/block", {}).status_code == 404
    assert screened.rig.store.lists_generation() == generation


def test_marking_fraud_and_not_fraud_is_stored_shown_and_restores_the_detectors_verdict(site: WebRig) -> None:
    store = site.store
    call_id = store.begin_call("sim", CallerID(raw_number="0662220000", number_e164="+81662220000"))
    store.set_detection(call_id, "suspicious", 1.5, "お金 を 振り込んで")
    with signed_in(site) as client:
        response = post_form(client, f"/calls/{call_id}", f"/calls/{call_id}/review", {"label": "fraud"})
        assert response.status_code == 303 and response.headers["location"] == f"/calls/{call_id}?done=reviewed_fraud"
        row = store.get_call(call_id)
        assert (row.review_label, row.reviewed_by, row.verdict) == (ReviewLabel.FRAUD, FAMILY_MEMBER[0], Verdict.FRAUD)
        assert row.reviewed_at
        log = client.get("/calls?verdict=fraud").text
        assert rows_in_order(log) == [call_id] and "ご家族が「詐欺」と確認" in log
        page = client.get(f"/calls/{call_id}?done=reviewed_fraud").text
        assert "「詐欺だった」と記録しました" in page and f"{FAMILY_MEMBER[0]}さんが" in page

        response = post_form(client, f"/calls/{call_id}", f"/calls/{call_id}/review", {"label": "not_fraud"})
        assert response.headers["location"] == f"/calls/{call_id}?done=reviewed_not_fraud"
        row = store.get_call(call_id)
        assert (row.review_label, row.verdict) == (ReviewLabel.NOT_FRAUD, Verdict.SUSPICIOUS)
        reviews = [e.detail for e in store.events_for(call_id) if e.kind == EventKind.REVIEW]
        assert [(d["label"], d["detector_verdict"]) for d in reviews] == [("fraud", "suspicious"),
                                                                          ("not_fraud", "suspicious")]
        bad = post_form(client, f"/calls/{call_id}", f"/calls/{call_id}/review", {"label": "maybe"})
        assert bad.status_code == 400 and store.get_call(call_id).review_label is ReviewLabel.NOT_FRAUD
        assert "done=<script>" not in client.get(f"/calls/{call_id}?done=<script>").text


def test_call_page_lists_the_alerts_sent_with_each_deliverys_status(site: WebRig) -> None:
    call_id = fraud_call(site.store, site.recordings())
    now = datetime.now(UTC)
    with Outbox(site.root / "calls.db") as outbox:
        alert = outbox.add(NewAlert(AlertKind.FRAUD, Urgency.URGENT, f"fraud:{call_id}", "詐欺の疑い", "本文", {},
                                    call_id=call_id),
                           [NewDelivery("花子", "json://h...o/", 0, 0, now),
                            NewDelivery("一郎", "mailto://i...o@example.com", 0, 1, now)], now)  # fmt: skip
        assert alert is not None
        first, second = outbox.deliveries_for(alert.id)
        outbox.mark_sent(first, now)
        outbox.mark_failed(second, "connection refused", now + timedelta(minutes=1))
    with signed_in(site) as client:
        html = client.get(f"/calls/{call_id}").text
    assert "詐欺の疑いのお知らせ" in html
    assert re.search(r'<tr class="delivery-sent"><td>花子</td><td class="optional">json://h\.\.\.o/</td><td>送信しました',
                     html)  # fmt: skip
    assert re.search(r'<tr class="delivery-failed"><td>一郎</td>.*送れませんでした', html)
    assert "connection refused" not in html  # errors may carry a channel's details: status only


# --------------------------------------------------------------------------- store, export, messages


def test_migration_5_upgrades_a_version_4_database_in_place(tmp_path: Path) -> None:
    import sqlite3

    from sqlite_utils import Database

    path = tmp_path / "old.db"
    db = Database(sqlite3.connect(path, isolation_level=None))
    for migration in MIGRATIONS[:4]:
        migration(db)
    db.execute("PRAGMA user_version = 4")
    db.execute("INSERT INTO calls (call_uid, started_at, line, state, verdict) "
               "VALUES ('u1', '2025-01-01T00:00:00.000Z', 'sim', 'completed', 'fraud')")  # fmt: skip
    db.conn.close()
    with Store(path, recover_calls=False) as store:
        row = store.get_call(1)
        assert (row.verdict, row.review_label, row.reviewed_by) == (Verdict.FRAUD, None, None)
        store.set_review(1, ReviewLabel.NOT_FRAUD, "taro")
        assert store.get_call(1).review_label is ReviewLabel.NOT_FRAUD
        assert store.count_calls(CallFilter(verdict=Verdict.FRAUD)) == 1
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)


def test_reviewed_calls_export_for_mamoru_detect(site: WebRig, tmp_path: Path) -> None:
    fraud = fraud_call(site.store, site.recordings())
    benign = site.store.begin_call("sim", CallerID(raw_number="0312345678", number_e164="+81312345678"))
    site.store.set_detection(benign, "clean", 0.0, "お 母さん 元気 ? 週末 に 帰る ね")
    no_text = site.store.begin_call("sim", CallerID(raw_number="0312345670", number_e164="+81312345670"))
    with signed_in(site) as client:
        for call_id, label in ((fraud, "fraud"), (benign, "not_fraud"), (no_text, "not_fraud")):
            post_form(client, f"/calls/{call_id}", f"/calls/{call_id}/review", {"label": label})
    parser = argparse.ArgumentParser()
    review_export_cli.register(parser.add_subparsers())
    out = tmp_path / "reviewed.jsonl"
    args = parser.parse_args(["review-export", "--config", str(site.config_path), "-o", str(out)])
    assert args.func(args) == 0
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [(r["id"], r["label"], r["lang"]) for r in records] == [(fraud, "fraud", "ja"), (benign, "not_fraud", "ja")]
    assert records[0]["detector_verdict"] == "fraud" and HOSTILE in records[0]["text"]
    assert out.stat().st_mode & 0o777 == 0o600
    detect = subprocess.run([sys.executable, "-m", "screening.cli", "detect", "--jsonl", str(out)], cwd=ROOT,
                            capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert detect.returncode == 0, detect.stderr
    verdicts = {r["id"]: r["verdict"] for r in map(json.loads, detect.stdout.splitlines())}
    assert verdicts == {fraud: "fraud", benign: "clean"}


def test_every_page_message_exists_in_japanese_and_english() -> None:
    assert not missing()
