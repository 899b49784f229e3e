"""Messages left by callers in the family's alerts: listed in the digest, urgent when judged fraud.

Real store, real voice pipeline (recorder + detector fed recognised segments), real event bus,
alerts delivered to the real HTTP receiver of tests/support.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from blocklist.store import Store
from screening.alert_wiring import RunningAlerts
from screening.alerts import AlertService, AlertWorker
from screening.config import parse_config
from screening.core.clock import parse_iso_utc
from screening.core.model import Action, CallerID, Category, Decision, EventKind, Prompt
from screening.events import CallScreened, EventBus, FraudHeard
from screening.notify import AppriseNotifier
from tests.support.receivers import HttpReceiver, json_url
from voice.asr import Segment, Word
from voice.detector import PhrasePack
from voice.pipeline import VoiceService

pytestmark = pytest.mark.timeout(60)

TOKYO = ZoneInfo("Asia/Tokyo")
SCREEN = Decision(Action.SCREEN, "unknown", "not on any list", Category.DOMESTIC, Prompt.WARNING)
FRAUD_WORDS = ("警察 の 者 です キャッシュカード が 犯罪 に 使われて います", "暗証番号 を 教えて ください")
CLEAN_WORDS = ("山田 医院 です", "検査 の 結果 の 件 で お電話 ください")


@pytest.fixture
def store(tmp_path: Path) -> Any:
    with Store(tmp_path / "mamoru.db") as s:
        yield s


def alerts(store: Store, http: HttpReceiver, **settings: Any) -> AlertService:
    config = parse_config({"alerts": {"web_base_url": "http://mamoru.local:8080", **settings},
                           "relatives": [{"name": "Taro", "notify": [json_url(http.port)]},
                                         {"name": "Hanako", "notify": [json_url(http.port, "hanako")],
                                          "language": "en"}]}, source="test")  # fmt: skip
    return AlertService(store, config, AppriseNotifier(timeout_s=3), tz=TOKYO, household="母").open()


def screened_call(store: Store, tmp: Path, number: str, words: tuple[str, ...], *, message_s: float | None) -> int:
    """A screened call through the real voice pipeline; ``message_s``: a message of that length was left."""
    call_id = store.begin_call("sim", CallerID(raw_number=number, number_e164=f"+81{number[1:]}"), decision=SCREEN)
    voice = VoiceService(store=store, recordings_dir=tmp / "recordings", pack=PhrasePack.load("ja"), model=None)
    audio = voice.start_call(call_id)
    audio.received(b"\x10\x00" * 8000 * 8)
    for i, text in enumerate(words):
        audio.add_segment(Segment(text, 1.0 + 3 * i, 3.5 + 3 * i, (Word(text.split()[0], 1.0 + 3 * i, 1.4 + 3 * i, 1.0),)))
    if message_s is not None:
        store.add_event(call_id, EventKind.MESSAGE, seconds=message_s, speech_s=message_s - 1,
                        path=str(tmp / "recordings" / "messages" / f"message-{call_id}.wav"))  # fmt: skip
    audio.finish()
    store.finish_call(call_id, "caller_hung_up")
    return call_id


def bodies(http: HttpReceiver, path: str = "/hook") -> list[str]:
    return [json.dumps(body, ensure_ascii=False) for body in http.paths(path)]


def test_the_digest_lists_messages_with_caller_local_time_zone_length_and_link(store: Store, http: HttpReceiver,
                                                                                 tmp_path: Path) -> None:  # fmt: skip
    doctor = screened_call(store, tmp_path, "0312345678", CLEAN_WORDS, message_s=12.4)
    screened_call(store, tmp_path, "0120444555", CLEAN_WORDS, message_s=None)  # hung up: no message
    svc = alerts(store, http)
    try:
        assert svc.digest(datetime.now(UTC)) is not None
        assert svc.run_pending(wait_s=5) == 2  # Taro in Japanese, Hanako in English
    finally:
        svc.close()
    at = next(e.at for e in store.events_for(doctor) if e.kind == EventKind.MESSAGE)
    local = parse_iso_utc(at).astimezone(TOKYO)
    (ja,), (en,) = bodies(http), bodies(http, "/hanako")
    assert "伝言 1件" in ja and f"📩 03-1234-5678 — {local.month}月{local.day}日 {local:%H:%M} JST・12秒" in ja, ja
    assert f"http://mamoru.local:8080/calls/{doctor}" in ja and "0120-444-555" not in ja  # the call without a message is only counted
    assert "1 message(s) left" in en and f"{local.month}/{local.day} {local:%H:%M} JST, 12 s" in en, en
    assert "着信2件" in ja


def test_a_message_judged_fraud_sends_an_urgent_alert_at_once_a_clean_one_waits(store: Store, http: HttpReceiver,
                                                                                 tmp_path: Path) -> None:  # fmt: skip
    fraud = screened_call(store, tmp_path, "0120444555", FRAUD_WORDS, message_s=9.0)
    clean = screened_call(store, tmp_path, "0312345678", CLEAN_WORDS, message_s=6.0)
    assert store.get_call(fraud).verdict is not None and store.get_call(fraud).verdict.value == "fraud"
    # quiet hours all day long: a NORMAL alert would be held, an URGENT one is not
    svc = alerts(store, http, quiet_hours="00:00-23:59")
    bus = EventBus()
    running = RunningAlerts(svc, AlertWorker(svc), store, "JP")  # the worker is not started: sent below
    unsubscribe = running.subscribe(bus)
    try:
        bus.publish(CallScreened(clean, CallerID(number_e164="+81312345678"), SCREEN))
        bus.publish(CallScreened(fraud, CallerID(number_e164="+81120444555"), SCREEN))
        bus.publish(CallScreened(fraud, CallerID(number_e164="+81120444555"), SCREEN))  # once per call
        assert svc.run_pending(wait_s=5) == 1  # relative #1 at once; Hanako after escalate_after_minutes
        (alert,) = [a for a, _ in svc.outbox.recent(10)]
        assert alert.urgency.value == "urgent" and alert.call_id == fraud
    finally:
        unsubscribe()
        svc.close()
    (body,) = bodies(http)
    assert "詐欺の疑いのある伝言" in body and "0120-444-555" in body and "03-1234-5678" not in body, body
    assert "暗証番号" in body and "JST" in body and "9秒" in body and f"/calls/{fraud}" in body
    assert "通話中" not in body  # the call has ended: the caller left a message


def test_fraud_heard_after_the_message_was_left_gives_the_message_alert(store: Store, http: HttpReceiver,
                                                                        tmp_path: Path) -> None:  # fmt: skip
    """Transcription may finish after the caller hung up: FraudHeard then names a call with a message."""
    from screening.core.model import Verdict
    from voice.detector import Detection, Flag
    from voice.pipeline import FraudEvent

    call_id = screened_call(store, tmp_path, "0312345678", CLEAN_WORDS, message_s=7.0)
    live = screened_call(store, tmp_path, "0120444555", CLEAN_WORDS, message_s=None)
    flags = (Flag("還付金", "refund", 4.0, "還付金"),)
    svc = alerts(store, http)
    bus = EventBus()
    running = RunningAlerts(svc, AlertWorker(svc), store, "JP")
    unsubscribe = running.subscribe(bus)
    try:
        now = datetime.now(UTC)
        bus.publish(FraudHeard(FraudEvent(call_id, Detection(Verdict.FRAUD, 0.9, flags), 4.0, now, "還付金")))
        bus.publish(FraudHeard(FraudEvent(live, Detection(Verdict.FRAUD, 0.9, flags), 4.0, now, "還付金")))
        assert svc.run_pending(wait_s=5) == 2
    finally:
        unsubscribe()
        svc.close()
    message_alert, live_alert = sorted(bodies(http), key=lambda b: "伝言" not in b)
    assert "詐欺の疑いのある伝言" in message_alert and "還付金" in message_alert and "7秒" in message_alert
    assert "通話中" in live_alert  # a call without a message is still alerted as a live call
