"""Alerts end to end, against REAL local servers on 127.0.0.1: an SMTP server (aiosmtpd) and an
HTTP receiver playing ntfy and a generic JSON webhook. Every wait is bounded."""

from __future__ import annotations

import argparse
import json
import logging
import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

pytest.importorskip("apprise")
aiosmtpd_controller = pytest.importorskip("aiosmtpd.controller")
from aiosmtpd.smtp import AuthResult

from blocklist.outbox import DeliveryStatus, Outbox
from blocklist.store import Store
from screening.alerts import AlertService, AlertWorker, backoff, render
from screening.cli import alerts as alerts_cli
from screening.config import Config, parse_config
from screening.core.model import Action, CallerID, Category, Decision, Verdict
from screening.notify import AppriseNotifier, mask
from tests.support.ports import free_tcp_port
from tests.support.receivers import JSON_PASSWORD, SMTP_PASSWORD, HttpReceiver, SmtpSink, json_url, mail_url
from voice.detector import Detection, Flag
from voice.pipeline import FraudEvent

T0 = datetime(2025, 3, 3, 5, 5, tzinfo=UTC)  # 14:05 in Tokyo


# ---- local receivers --------------------------------------------------------------------


def _authenticate(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
    ok = auth_data.login == b"mamoru" and auth_data.password == SMTP_PASSWORD.encode()
    return AuthResult(success=ok, handled=False)


@pytest.fixture
def smtp() -> Iterator[tuple[SmtpSink, int]]:
    sink, port = SmtpSink(), free_tcp_port()
    controller = aiosmtpd_controller.Controller(sink, hostname="127.0.0.1", port=port, authenticator=_authenticate,
                                                auth_require_tls=False, ready_timeout=5)  # fmt: skip
    controller.start()
    yield sink, port
    controller.stop()


# ---- helpers -------------------------------------------------------------------------------


class FakeClock:
    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


def make_config(relatives: list[dict[str, Any]], **alerts: Any) -> Config:
    return parse_config({"alerts": alerts, "relatives": relatives}, source="test")


def fraud_event(call_id: int = 7, at: datetime = T0) -> FraudEvent:
    flags = (Flag("キャッシュカード", "payment_instruction", 3.2, "キャッシュカード"),
             Flag("暗証番号", "payment_instruction", 5.0, "暗証番号"))  # fmt: skip
    return FraudEvent(call_id, Detection(Verdict.FRAUD, 0.93, flags), 5.0, at, "キャッシュカードと暗証番号を")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "mamoru.db") as s:
        yield s


def service(store: Store, config: Config, clock: Any, timeout_s: float = 2.0) -> AlertService:
    from zoneinfo import ZoneInfo

    return AlertService(store, config, AppriseNotifier(timeout_s=timeout_s), clock, tz=ZoneInfo("Asia/Tokyo"),
                        household="母").open()  # fmt: skip


def statuses(svc: AlertService) -> list[tuple[str, str, str]]:
    return [(a.kind.value, d.relative, d.status.value) for a, ds in svc.outbox.recent(100) for d in ds]


# ---- the point of it all: fast, complete fraud alerts ------------------------------------------


def test_fraud_alert_reaches_every_channel_within_a_second(store: Store, http: HttpReceiver,
                                                           smtp: tuple[SmtpSink, int]) -> None:  # fmt: skip
    sink, smtp_port = smtp
    config = make_config([
        {"name": "Taro", "notify": [json_url(http.port), f"ntfy://127.0.0.1:{http.port}/mamoru", mail_url(smtp_port)]},
        {"name": "Hanako", "notify": [json_url(http.port, "hanako")], "language": "en"},
    ], web_base_url="http://mamoru.local:8080")  # fmt: skip
    svc = AlertService(store, config, AppriseNotifier(timeout_s=3), tz=None, household="母").open()
    worker = AlertWorker(svc, poll_s=0.5)
    worker.start()
    try:
        started = time.monotonic()
        alert = svc.on_fraud(fraud_event(at=datetime.now(UTC)), "03-1234-5678")
        assert alert is not None
        assert http.wait_for("/hook", timeout=3) and http.wait_for("/", count=2, timeout=3)
        assert sink.wait_for(timeout=3)
        latest = max(t for *_, t in http.received) if http.received else started
        assert max(latest, sink.messages[0][1]) - started < 1.0, "every channel of relative #1 within 1 s"
    finally:
        assert worker.stop(timeout=5)
        svc.close()
    (hook,) = http.paths("/hook")
    assert "キャッシュカード" in hook["message"] and "暗証番号" in hook["message"]
    assert "03-1234-5678" in hook["message"] and "母" in hook["message"] and "支払いの指示" in hook["message"]
    assert "http://mamoru.local:8080/calls/7" in hook["message"]
    ntfy = [b for p, b, _ in http.received if b.get("topic") == "mamoru"]
    assert ntfy and "03-1234-5678" in ntfy[0]["message"]
    mail = sink.text()
    assert "キャッシュカード" in mail and "03-1234-5678" in mail
    assert not http.paths("/hanako"), "relative #2 only after escalate_after_minutes without an acknowledgement"


def test_message_per_language() -> None:
    payload = {"at": "2025-03-03T05:05:00.000Z", "caller": "03-1234-5678", "phrases": ["cash card", "PIN"],
               "categories": ["payment_instruction"]}  # fmt: skip
    _, en = render_kind("fraud", payload, "en")
    assert en.startswith("mamoru: your family's home is on a call that sounds like fraud — caller 03-1234-5678, "
                         "heard: cash card, PIN (payment instruction) at 05:05")  # fmt: skip
    _, ko = render_kind("fraud", payload, "ko")
    assert "사기" in ko and "03-1234-5678" in ko and "송금 지시" in ko


def render_kind(kind: str, payload: dict[str, Any], language: str) -> tuple[str, str]:
    from blocklist.outbox import AlertKind
    from screening.core.model import Language

    return render(AlertKind(kind), payload, Language(language), UTC)


# ---- failures and retries --------------------------------------------------------------------


def test_receiver_down_then_up_is_retried_and_delivered(store: Store) -> None:
    clock = FakeClock()
    receiver = HttpReceiver()  # not started: nothing listens on its port
    svc = service(store, make_config([{"name": "Taro", "notify": [json_url(receiver.port)]}]), clock)
    try:
        svc.on_fraud(fraud_event(), "03-1234-5678")
        assert svc.run_pending(clock()) == 0
        assert statuses(svc) == [("fraud", "Taro", "failed")]
        assert svc.run_pending(clock.advance(seconds=5)) == 0, "not before the backoff"
        receiver.start()
        assert svc.run_pending(clock.advance(seconds=5)) == 1
        assert svc.run_pending(clock.advance(minutes=30)) == 0, "sent once, never again"
        assert statuses(svc) == [("fraud", "Taro", "sent")]
    finally:
        svc.close()
        receiver.stop()
    assert len(receiver.received) == 1


def test_server_error_is_retried(store: Store, http: HttpReceiver) -> None:
    clock = FakeClock()
    http.mode = "error"
    svc = service(store, make_config([{"name": "Taro", "notify": [json_url(http.port)]}]), clock)
    try:
        svc.on_fraud(fraud_event(), "03-1234-5678")
        assert svc.run_pending(clock()) == 0
        (_, (delivery,)), = svc.outbox.recent()
        assert delivery.status is DeliveryStatus.FAILED and delivery.attempts == 1 and "500" in delivery.last_error
        http.mode = "ok"
        assert svc.run_pending(clock.advance(seconds=10)) == 1
    finally:
        svc.close()
    assert len(http.received) == 1


def test_slow_receiver_times_out_and_is_retried(store: Store, http: HttpReceiver) -> None:
    clock = FakeClock()
    http.mode, http.delay = "slow", 2.0
    svc = service(store, make_config([{"name": "Taro", "notify": [json_url(http.port)]}]), clock, timeout_s=0.5)
    try:
        svc.on_fraud(fraud_event(), "03-1234-5678")
        started = time.monotonic()
        assert svc.run_pending(clock()) == 0
        assert time.monotonic() - started < 2.0, "the deadline, not the receiver, decides"
        (_, (delivery,)), = svc.outbox.recent()
        assert delivery.status is DeliveryStatus.FAILED
        http.mode = "ok"
        assert svc.run_pending(clock.advance(seconds=10)) == 1
    finally:
        svc.close()


def test_gives_up_after_retry_max_hours(store: Store) -> None:
    clock = FakeClock()
    svc = service(store, make_config([{"name": "Taro", "notify": [json_url(free_tcp_port())]}], retry_max_hours=1),
                  clock)  # fmt: skip
    try:
        svc.on_health("modem_lost", "the modem stopped answering")
        for _ in range(12):
            svc.run_pending(clock.advance(minutes=15))
        (_, (delivery,)), = svc.outbox.recent()
        assert delivery.status is DeliveryStatus.EXPIRED
    finally:
        svc.close()
    assert [backoff(n).total_seconds() for n in range(1, 8)] == [10, 30, 120, 300, 900, 900, 900]


def test_restart_resumes_pending_without_loss_or_duplicates(store: Store, http: HttpReceiver) -> None:
    clock = FakeClock()
    down = HttpReceiver()
    config = make_config([{"name": "Taro", "notify": [json_url(http.port), json_url(down.port, "down")]}])
    first = service(store, config, clock)
    first.on_fraud(fraud_event(1), "03-1111-1111")  # written, never run: the process "dies" now
    first.on_fraud(fraud_event(2), "03-2222-2222")
    assert first.run_pending(clock()) == 2, "both alerts on the working channel; the other fails"
    first.close()

    down.start()
    second = service(store, config, clock)
    try:
        assert second.run_pending(clock.advance(seconds=10)) == 2, "the failed ones, resumed"
        assert second.run_pending(clock.advance(minutes=10)) == 0
        assert second.on_fraud(fraud_event(1), "03-1111-1111") is None, "dedupe survives restarts"
        assert [s for *_, s in statuses(second)] == ["sent"] * 4
    finally:
        second.close()
        down.stop()
    assert sorted(b["message"][-40:] for b in http.paths("/hook")) == sorted(
        b["message"][-40:] for b in down.paths("/down")
    )
    assert len(http.paths("/hook")) == len(down.paths("/down")) == 2


def test_unsent_alert_written_before_a_crash_is_sent_by_the_next_process(store: Store, http: HttpReceiver) -> None:
    clock = FakeClock()
    config = make_config([{"name": "Taro", "notify": [json_url(http.port)]}])
    first = service(store, config, clock)
    first.on_fraud(fraud_event(), "03-1234-5678")
    (_, (delivery,)), = first.outbox.recent()
    first.outbox.mark_sending(delivery, clock())  # died in mid-send
    first.close()
    second = service(store, config, clock)
    try:
        assert second.run_pending(clock.advance(seconds=1)) == 1, "'sending' at start-up is retried"
    finally:
        second.close()
    assert len(http.received) == 1


# ---- policy --------------------------------------------------------------------------------


def test_dedupe_one_alert_per_call_per_relative(store: Store, http: HttpReceiver) -> None:
    clock = FakeClock()
    config = make_config([{"name": "Taro", "notify": [json_url(http.port)]},
                          {"name": "Hanako", "notify": [json_url(http.port, "hanako")]}], escalate_after_minutes=0)
    svc = service(store, config, clock)
    try:
        assert svc.on_fraud(fraud_event(), "03-1234-5678") is not None
        assert svc.on_fraud(fraud_event(), "03-1234-5678") is None
        assert svc.run_pending(clock()) == 2, "escalate_after_minutes = 0: everyone at once"
    finally:
        svc.close()
    assert len(http.paths("/hook")) == len(http.paths("/hanako")) == 1


def test_escalation_to_the_next_relative_unless_acknowledged(store: Store, http: HttpReceiver) -> None:
    clock = FakeClock()
    config = make_config([{"name": "Taro", "notify": [json_url(http.port, "taro")]},
                          {"name": "Hanako", "notify": [json_url(http.port, "hanako")]}], escalate_after_minutes=5)
    svc = service(store, config, clock)
    try:
        svc.on_fraud(fraud_event(1), "03-1234-5678")
        assert svc.run_pending(clock()) == 1
        assert svc.run_pending(clock.advance(minutes=4)) == 0
        assert svc.run_pending(clock.advance(minutes=1)) == 1, "nobody acknowledged: relative #2"
        assert len(http.paths("/hanako")) == 1

        second = svc.on_fraud(fraud_event(2), "03-9999-9999")
        assert second is not None and svc.run_pending(clock()) == 1
        assert svc.acknowledge(second.id, "Taro")
        assert svc.run_pending(clock.advance(minutes=6)) == 0, "acknowledged: no escalation"
        kinds = {d.relative: d.status.value for d in svc.outbox.deliveries_for(second.id)}
        assert kinds == {"Taro": "acknowledged", "Hanako": "expired"}
        assert svc.outbox.get_alert(second.id).acked_by == "Taro"
    finally:
        svc.close()
    assert len(http.paths("/hanako")) == 1 and len(http.paths("/taro")) == 2


def test_quiet_hours_hold_health_but_not_fraud(store: Store, http: HttpReceiver) -> None:
    clock = FakeClock(datetime(2025, 3, 3, 14, 0, tzinfo=UTC))  # 23:00 in Tokyo
    config = make_config([{"name": "Taro", "notify": [json_url(http.port)]}], quiet_hours="22:00-07:00")
    svc = service(store, config, clock)
    try:
        svc.on_health("disk_full", "disk 97% full")
        assert svc.run_pending(clock()) == 0, "health waits"
        svc.on_fraud(fraud_event(at=clock()), "03-1234-5678")
        assert svc.run_pending(clock()) == 1, "fraud never waits"
        assert svc.run_pending(clock.advance(hours=7, minutes=59)) == 0, "06:59 still quiet"
        assert svc.run_pending(clock.advance(minutes=1)) == 1, "07:00: the health alert goes"
    finally:
        svc.close()
    assert "disk 97% full" in http.received[1][1]["message"]


def test_rate_limit_per_relative(store: Store, http: HttpReceiver) -> None:
    clock = FakeClock()
    config = make_config([{"name": "Taro", "notify": [json_url(http.port)]}], max_per_hour=2)
    svc = service(store, config, clock)
    try:
        for problem in ("modem_lost", "disk_full", "model_missing"):
            svc.on_health(problem, problem)
        assert svc.run_pending(clock()) == 2
        svc.on_fraud(fraud_event(), "03-1234-5678")
        assert svc.run_pending(clock.advance(minutes=1)) == 1, "fraud is never rate limited"
        assert svc.run_pending(clock.advance(minutes=30)) == 0
        assert svc.run_pending(clock.advance(minutes=30)) == 1, "an hour after the first: budget again"
    finally:
        svc.close()


def test_repeat_blocked_caller(store: Store, http: HttpReceiver) -> None:
    clock = FakeClock()
    svc = service(store, make_config([{"name": "Taro", "notify": [json_url(http.port)]}]), clock)
    block = Decision(Action.BLOCK, "blocklist:local", "on the blocklist", Category.DOMESTIC)
    try:
        results = []
        for minute in (0, 3, 6, 8):
            at = T0 + timedelta(minutes=minute)
            store.begin_call("sim", CallerID("0312345678", "+81312345678"), at, decision=block)
            results.append(svc.on_blocked_call("+81312345678", at, "03-1234-5678"))
        assert [r is not None for r in results] == [False, False, True, False]
        assert svc.run_pending(clock.advance(minutes=8)) == 1
    finally:
        svc.close()
    assert "3" in http.received[0][1]["message"] and "03-1234-5678" in http.received[0][1]["message"]


def test_locked_database_still_alerts_and_catches_up(store: Store, http: HttpReceiver) -> None:
    clock = FakeClock()
    svc = service(store, make_config([{"name": "Taro", "notify": [json_url(http.port)]}]), clock)
    blocker = sqlite3.connect(store.path, timeout=0.1, isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")  # e.g. a long list import in another process
        alert = svc.on_fraud(fraud_event(), "03-1234-5678")
        assert alert is not None and alert.id < 0, "held in memory"
        assert svc.run_pending(clock()) == 1, "sent anyway"
        blocker.execute("COMMIT")
        assert svc.run_pending(clock.advance(seconds=1)) == 0
        ((row, (delivery,)),) = svc.outbox.recent()
        assert row.id > 0 and delivery.status is DeliveryStatus.SENT, "written to the file once it was free"
    finally:
        blocker.close()
        svc.close()
    assert len(http.received) == 1


# ---- secrets ---------------------------------------------------------------------------------


def test_secrets_never_logged_or_stored(store: Store, http: HttpReceiver, smtp: tuple[SmtpSink, int],
                                        caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    caplog.set_level(logging.DEBUG)
    sink, smtp_port = smtp
    clock = FakeClock()
    dead = free_tcp_port()
    config = make_config([{"name": "Taro", "notify": [json_url(http.port, secret=True), mail_url(smtp_port),
                                                      json_url(dead, secret=True), mail_url(dead)]}])  # fmt: skip
    svc = service(store, config, clock)
    try:
        svc.on_fraud(fraud_event(), "03-1234-5678")
        assert svc.run_pending(clock()) == 2
        svc.run_pending(clock.advance(seconds=10))
        svc.test_alert("Taro")
    finally:
        svc.close()
    assert sink.messages and http.received
    dump = "\n".join(sqlite3.connect(store.path).iterdump())
    for secret in (SMTP_PASSWORD, JSON_PASSWORD):
        assert secret not in caplog.text
        assert secret not in dump
    assert "mamoru:****@127.0.0.1" in dump, "the masked form is what is stored"
    assert mask(mail_url(2525)).startswith("mailto://mamoru:****@127.0.0.1:2525")


# ---- CLI ---------------------------------------------------------------------------------------


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="mamoru")
    alerts_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


def test_cli_alert_test_and_alerts(tmp_path: Path, http: HttpReceiver, capsys: pytest.CaptureFixture[str]) -> None:
    dead = free_tcp_port()
    config = tmp_path / "mamoru.toml"
    config.write_text(f"""
[store]
db = "{tmp_path / 'cli.db'}"

[[relatives]]
name = "Taro"
notify = ["{json_url(http.port, secret=True)}"]

[[relatives]]
name = "Hanako"
notify = ["{json_url(dead, 'x', secret=True)}"]
""", encoding="utf-8")
    assert run_cli(["alert", "test", "--config", str(config), "--to", "Taro"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines() == [f"Taro\tjson://mamoru:****@127.0.0.1:{http.port}/hook\tok"]

    assert run_cli(["alert", "test", "--config", str(config)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("\tok") and lines[1].startswith(f"Hanako\tjson://mamoru:****@127.0.0.1:{dead}/x\tfailed: ")
    assert JSON_PASSWORD not in "".join(lines)

    assert run_cli(["alert", "test", "--config", str(config), "--to", "Nobody"]) == 1
    assert "no relative named 'Nobody'" in capsys.readouterr().out

    assert run_cli(["alerts", "--json", "--config", str(config)]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [a["kind"] for a in listed] == ["test", "test"]
    assert [d["status"] for d in listed[0]["deliveries"]] == ["sent", "expired"]
    assert run_cli(["alerts", "--config", str(config)]) == 0
    assert "Hanako" in capsys.readouterr().out


def test_outbox_refuses_an_unmigrated_database(tmp_path: Path) -> None:
    from blocklist.outbox import OutboxError

    sqlite3.connect(tmp_path / "old.db").execute("CREATE TABLE x (a)")
    with pytest.raises(OutboxError, match="open the Store first"):
        Outbox(tmp_path / "old.db").open()


def test_voice_call_delivery_and_dtmf_acknowledgement(store: Store, http: HttpReceiver) -> None:
    from types import SimpleNamespace

    calls: list[tuple[str, str, str]] = []

    class Caller:
        def call(self, number: str, message_text: str, language: str) -> Any:
            calls.append((number, message_text, language))
            return SimpleNamespace(status="acknowledged", attempts=1, detail="pressed 1")

    clock = FakeClock()
    config = make_config([{"name": "Taro", "notify": [json_url(http.port)], "phone": "090-1234-5678"},
                          {"name": "Hanako", "notify": [json_url(http.port, "hanako")]}])  # fmt: skip
    svc = AlertService(store, config, AppriseNotifier(timeout_s=2), clock, voice_caller=Caller(), tz=UTC).open()
    try:
        alert = svc.on_fraud(fraud_event(), "03-1234-5678")
        assert svc.run_pending(clock()) == 2, "notify URL and the phone call"
        assert calls and calls[0][0] == "+819012345678" and "03-1234-5678" in calls[0][1] and calls[0][2] == "ja"
        assert svc.outbox.get_alert(alert.id).acked_by == "Taro", "DTMF 1 acknowledges"
        assert svc.run_pending(clock.advance(minutes=10)) == 0, "so no escalation to Hanako"
    finally:
        svc.close()


def test_a_feed_refused_as_too_broad_reaches_the_relatives(store: Store, http: HttpReceiver) -> None:
    from blocklist.feeds import FeedOutcome, FeedUpdate, Refusal
    from screening.alert_wiring import RunningAlerts
    from screening.alerts import AlertWorker

    clock = FakeClock()
    svc = service(store, make_config([{"name": "Taro", "notify": [json_url(http.port)]}]), clock)
    try:
        running = RunningAlerts(svc, AlertWorker(svc), store, "JP")  # the worker is not started: sent below
        running.feed_refused_handler()(FeedUpdate("police", FeedOutcome.REFUSED, reason="blocks 90.0% of +81",
                                                  refusal=Refusal.TOO_BROAD))  # fmt: skip
        assert svc.run_pending(clock()) == 1
    finally:
        svc.close()
    ((_, body, _),) = http.received
    assert "police" in json.dumps(body, ensure_ascii=False) and "90.0%" in json.dumps(body, ensure_ascii=False)


def test_alert_times_are_in_the_units_zone_whatever_the_systems(store: Store, http: HttpReceiver,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from screening.alert_wiring import start_alerts

    monkeypatch.setenv("TZ", "Europe/London")  # what a Raspberry Pi image ships with
    time.tzset()
    try:
        cfg = make_config([{"name": "Taro", "notify": [json_url(http.port)]}])
        running = start_alerts(cfg, store)
        assert running is not None
        try:
            running.service.on_health("disk_full", "disk nearly full")
            running.service.run_pending(wait_s=5)
        finally:
            running.stop()
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    (_, body, _), *_ = http.received
    now_tokyo = datetime.now(ZoneInfo("Asia/Tokyo"))
    assert f"{now_tokyo:%H}:" in json.dumps(body, ensure_ascii=False), body
