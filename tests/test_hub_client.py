"""The unit's hub client against a real Mosquitto (TLS, passwords, per-unit ACL) started by the test.

What the household shares reaches the hub, in order, after outages and restarts; what it does not
share never leaves; only commands signed by the hub's key, for this unit, in time and new are done.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from blocklist.store import Store
from screening.core.clock import utc_now
from screening.core.model import Action, CallerID, Category, Decision, ListKind, ReviewLabel, Verdict
from screening.events import CallScreened, EventBus, FraudHeard, LineFault
from screening.hub_client.client import HubClient
from screening.hub_client.home_assistant import state_topic
from screening.hub_client.queue import HubQueue
from screening.hub_client.settings import HubSettings, Share
from screening.hub_wiring import unit_actions
from screening.hubwire import (
    AckResult,
    CallSummary,
    Channel,
    Command,
    CommandAck,
    CommandAction,
    CommandSigner,
    FraudReport,
    Health,
    LineHealth,
    Recording,
    Status,
    decode_message,
    public_key_text,
    topic,
)
from tests.support.mqtt_broker import HubListener, MosquittoBroker
from voice.detector import Detection, Flag
from voice.pipeline import FraudEvent

UNIT = "akita-0001"
OTHER = "akita-0002"
SCAM = "+81355550101"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    b = MosquittoBroker.for_test(tmp_path / "broker", {UNIT: "unit-pw", OTHER: "other-pw"})
    b.start()
    yield b
    b.stop()


@pytest.fixture
def signer() -> CommandSigner:
    return CommandSigner.generate()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    (tmp_path / "unit").mkdir()
    s = Store(tmp_path / "unit" / "mamoru.db")
    s.open()
    yield s
    s.close()


def settings_for(tmp_path: Path, broker: MosquittoBroker, signer: CommandSigner, **changes: object) -> HubSettings:
    credentials = tmp_path / "hub-password"
    credentials.write_text("unit-pw\n")
    credentials.chmod(0o600)
    base = HubSettings(url=broker.url, unit_id=UNIT, credentials_file=credentials, ca_file=broker.ca_file,
                       command_key=public_key_text(signer.public), report_poll_s=0.2)  # fmt: skip
    return replace(base, **changes)  # type: ignore[arg-type]


def client_for(tmp_path: Path, settings: HubSettings, store: Store, *, recordings: Path | None = None) -> HubClient:
    db = store.path
    return HubClient(settings, db.with_name("mamoru.db.hub.db"), db, unit_actions(store, recordings, None, None))


def wait_until(predicate: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def screened(bus: EventBus, call_id: int, number: str | None, action: Action = Action.WARN) -> None:
    decision = Decision(action, "unknown", "not on a list", Category.DOMESTIC)
    bus.publish(CallScreened(call_id, CallerID(raw_number=number, number_e164=number), decision))


def fraud(bus: EventBus, call_id: int, excerpt: str = "還付金があります\nATMへ行ってください") -> None:
    detection = Detection(Verdict.FRAUD, 4.5, (Flag("還付金", "refund", 3.0, "還付金"), Flag("ATM", "atm", 5.0, "ATM")))
    bus.publish(FraudHeard(FraudEvent(call_id, detection, 5.0, utc_now(), excerpt)))


def decoded(listener: HubListener, channel: Channel, count: int, unit: str = UNIT) -> list[object]:
    return [decode_message(channel, p, unit=unit) for p in listener.wait_for(topic(unit, channel), count)]


def health_of(hub: HubListener) -> list[Health]:
    found = (decode_message(Channel.HEALTH, p, unit=UNIT) for p in hub.on(topic(UNIT, Channel.HEALTH)))
    return [m for m in found if isinstance(m, Health)]


# ---- unit → hub -------------------------------------------------------------------------------


def test_calls_health_and_status_reach_the_hub_over_tls(tmp_path: Path, broker: MosquittoBroker,
                                                         signer: CommandSigner, store: Store) -> None:  # fmt: skip
    bus = EventBus()
    with HubListener(broker) as hub, client_for(tmp_path, settings_for(tmp_path, broker, signer), store) as client:
        off = client.subscribe(bus)
        fraud(bus, 7)
        screened(bus, 7, SCAM)
        screened(bus, 8, None, Action.REQUEST_NUMBER)
        bus.publish(LineFault("modem stopped answering"))
        calls = decoded(hub, Channel.CALLS, 2)
        off()
        (status, *_) = decoded(hub, Channel.STATUS, 1)
        # Health is a state: a newer one replaces any still queued, so wait for the one after the fault.
        wait_until(lambda: any(h.line is LineHealth.FAULT for h in health_of(hub)))
        health = health_of(hub)
    first, second = calls
    assert isinstance(first, CallSummary) and isinstance(second, CallSummary)
    assert (first.call_id, first.number, first.action, first.verdict) == (7, SCAM, Action.WARN, Verdict.FRAUD)
    assert first.flags == ("refund", "atm")
    assert first.excerpt == "", "transcripts are not shared by default"
    assert (second.number, second.action, second.verdict) == ("", Action.REQUEST_NUMBER, None)
    assert isinstance(status, Status) and status.online
    assert health[-1].line is LineHealth.FAULT and "line_fault" in health[-1].faults


def test_share_decides_what_leaves_the_home(tmp_path: Path, broker: MosquittoBroker, signer: CommandSigner,
                                            store: Store) -> None:  # fmt: skip
    bus = EventBus()
    health_only = settings_for(tmp_path, broker, signer, share=frozenset({Share.HEALTH}))
    with HubListener(broker) as hub, client_for(tmp_path, health_only, store) as client:
        off = client.subscribe(bus)
        fraud(bus, 1)
        screened(bus, 1, SCAM)
        decoded(hub, Channel.HEALTH, 1)
        wait_until(lambda: len(client.queue) == 0)
        time.sleep(0.5)
        off()
        assert hub.on(topic(UNIT, Channel.CALLS)) == []
    with_transcripts = replace(health_only, share=frozenset({Share.CALLS, Share.TRANSCRIPTS}))
    with HubListener(broker) as hub, client_for(tmp_path, with_transcripts, store) as client:
        off = client.subscribe(bus)
        fraud(bus, 2)
        screened(bus, 2, SCAM)
        (summary,) = decoded(hub, Channel.CALLS, 1)
        off()
    assert isinstance(summary, CallSummary)
    assert summary.excerpt == "還付金があります ATMへ行ってください", "shared, control characters made spaces"


def test_messages_wait_out_a_broker_outage_and_arrive_in_order(tmp_path: Path, broker: MosquittoBroker,
                                                               signer: CommandSigner, store: Store) -> None:  # fmt: skip
    bus = EventBus()
    settings = settings_for(tmp_path, broker, signer, share=frozenset({Share.CALLS}))
    with client_for(tmp_path, settings, store) as client:
        off = client.subscribe(bus)
        wait_until(lambda: client.connected)
        broker.stop()
        wait_until(lambda: not client.connected)
        started = time.monotonic()
        for call_id in range(1, 31):
            screened(bus, call_id, SCAM)
        assert time.monotonic() - started < 5.0, "screening must not wait for the hub (generous bound)"
        assert client.flush() and len(client.queue) == 30
        broker.start()
        with HubListener(broker) as hub:
            calls = decoded(hub, Channel.CALLS, 30, )
        off()
    assert [c.call_id for c in calls if isinstance(c, CallSummary)] == list(range(1, 31))


def test_a_restarted_unit_sends_what_it_had_queued(tmp_path: Path, broker: MosquittoBroker, signer: CommandSigner,
                                                   store: Store) -> None:  # fmt: skip
    bus = EventBus()
    settings = settings_for(tmp_path, broker, signer, share=frozenset({Share.CALLS}))
    broker.stop()
    first = client_for(tmp_path, settings, store)
    with first:
        off = first.subscribe(bus)
        for call_id in (11, 12, 13):
            screened(bus, call_id, SCAM)
        off()
    assert first.published == 0
    broker.start()
    with HubListener(broker) as hub, client_for(tmp_path, settings, store):
        calls = decoded(hub, Channel.CALLS, 3)
    assert [c.call_id for c in calls if isinstance(c, CallSummary)] == [11, 12, 13]


def test_a_family_fraud_review_is_reported_once(tmp_path: Path, broker: MosquittoBroker, signer: CommandSigner,
                                                store: Store) -> None:  # fmt: skip
    started = utc_now()
    call_id = store.begin_call("sim", CallerID(raw_number="0355550101", number_e164=SCAM), started)
    store.set_review(call_id, ReviewLabel.FRAUD, by="hanako")
    settings = settings_for(tmp_path, broker, signer)
    with HubListener(broker) as hub, client_for(tmp_path, settings, store):
        (report,) = decoded(hub, Channel.REPORTS, 1)
    with HubListener(broker) as hub, client_for(tmp_path, settings, store):
        decoded(hub, Channel.HEALTH, 1)
        time.sleep(1.0)
        assert hub.on(topic(UNIT, Channel.REPORTS)) == [], "reported once, not at every start"
    assert isinstance(report, FraudReport) and (report.number, report.call_id) == (SCAM, call_id)
    assert report.id == store.get_call(call_id).call_uid, "queued again after a crash, it is still one report"


def test_the_broker_refuses_a_unit_publishing_as_another(tmp_path: Path, broker: MosquittoBroker,
                                                         signer: CommandSigner, store: Store) -> None:  # fmt: skip
    """Stolen credentials of OTHER publishing under UNIT's id: the ACL drops it, the hub never sees it."""
    with HubListener(broker) as hub, HubListener(broker, subscribe=(), user=OTHER) as thief:
        thief.publish(topic(UNIT, Channel.REPORTS), b'{"forged": true}')
        thief.publish(topic(OTHER, Channel.STATUS), b'{"own": true}')
        hub.wait_for(topic(OTHER, Channel.STATUS))
        assert hub.on(topic(UNIT, Channel.REPORTS)) == []


def test_home_assistant_discovery_and_state(tmp_path: Path, broker: MosquittoBroker, signer: CommandSigner,
                                            store: Store) -> None:  # fmt: skip
    bus = EventBus()
    settings = settings_for(tmp_path, broker, signer, home_assistant=True)
    with HubListener(broker) as hub, client_for(tmp_path, settings, store) as client:
        off = client.subscribe(bus)
        node = "homeassistant/{}/mamoru_" + UNIT + "/{}/config"
        configs = {name: json.loads(hub.wait_for(node.format(kind, name))[0])
                   for kind, name in (("sensor", "last_caller"), ("binary_sensor", "fraud"),
                                      ("binary_sensor", "line_problem"))}  # fmt: skip
        fraud(bus, 3)
        screened(bus, 3, SCAM)
        wanted = {"last_caller": SCAM, "fraud": "ON", "line_problem": "OFF"}
        wait_until(lambda: wanted in [json.loads(p) for p in hub.on(state_topic(UNIT))])
        off()
    assert all(c["state_topic"] == state_topic(UNIT) for c in configs.values())
    assert configs["fraud"]["availability_topic"] == topic(UNIT, Channel.STATUS)


# ---- hub → unit -------------------------------------------------------------------------------


def command(action: CommandAction, *, unit: str = UNIT, by: str = "family:hanako", number: str | None = None,
            call_id: int | None = None, issued_ago: timedelta = timedelta(0),
            lifetime: timedelta = timedelta(minutes=10)) -> Command:  # fmt: skip
    issued = utc_now() - issued_ago
    return Command(unit, action, by, number=number, call_id=call_id, issued=issued, expires=issued + lifetime)


def acks(hub: HubListener) -> list[CommandAck]:
    return [m for m in (decode_message(Channel.ACKS, p, unit=UNIT) for p in hub.on(topic(UNIT, Channel.ACKS)))
            if isinstance(m, CommandAck)]  # fmt: skip


def test_only_signed_fresh_new_commands_for_this_unit_are_done(tmp_path: Path, broker: MosquittoBroker,
                                                               signer: CommandSigner, store: Store) -> None:  # fmt: skip
    commands_in = topic(UNIT, Channel.COMMANDS)
    forger = CommandSigner.generate()
    with HubListener(broker) as hub, client_for(tmp_path, settings_for(tmp_path, broker, signer), store) as client:
        wait_until(lambda: client.connected)
        valid = command(CommandAction.BLOCK, number=SCAM)
        hub.publish(commands_in, forger.sign(command(CommandAction.BLOCK, number="+81355550102")))  # unknown key
        envelope = json.loads(signer.sign(command(CommandAction.BLOCK, number="+81355550103")))
        envelope["payload"] = envelope["payload"][:-4] + "AAA="  # tampered after signing
        hub.publish(commands_in, json.dumps(envelope).encode())
        hub.publish(commands_in, b"\x00not json")
        expired = command(CommandAction.BLOCK, number="+81355550104", issued_ago=timedelta(minutes=30))
        hub.publish(commands_in, signer.sign(expired))
        hub.publish(commands_in, signer.sign(valid))
        hub.publish(commands_in, signer.sign(valid))  # replayed
        assert client.desk is not None
        wait_until(lambda: len(acks(hub)) >= 3)
        done = {a.command: a for a in reversed(acks(hub))}  # the first ack of each command
        blocked = {e.value for e in store.list_entries(ListKind.BLOCK)}
        dropped, refused = client.desk.dropped, client.desk.refused
    assert blocked == {SCAM}
    assert done[valid.id].result is AckResult.DONE
    assert done[expired.id].result is AckResult.REFUSED and done[expired.id].reason == "expired"
    assert [a.reason for a in acks(hub) if a.command == valid.id] == ["", "replayed"]
    assert (dropped, refused) == (3, 2), "forged and garbled: dropped unanswered; authentic: refused with a reason"


def test_a_command_for_another_unit_is_refused_even_when_delivered(tmp_path: Path, broker: MosquittoBroker,
                                                                   signer: CommandSigner, store: Store) -> None:  # fmt: skip
    """The ACL keeps others' commands away; the unit checks the id inside the signature all the same."""
    with client_for(tmp_path, settings_for(tmp_path, broker, signer), store) as client:
        assert client.desk is not None
        for_other = signer.sign(command(CommandAction.BLOCK, unit=OTHER, number=SCAM))
        assert client.desk.handle(for_other) is None
        assert client.desk.refused == 1 and store.list_entries(ListKind.BLOCK) == []


def test_the_replay_window_survives_a_restart(tmp_path: Path, broker: MosquittoBroker, signer: CommandSigner,
                                              store: Store) -> None:  # fmt: skip
    settings = settings_for(tmp_path, broker, signer)
    allow = signer.sign(command(CommandAction.ALLOW, number=SCAM))
    with client_for(tmp_path, settings, store) as client:
        assert client.desk is not None and client.desk.handle(allow) is not None
    with client_for(tmp_path, settings, store) as client:
        assert client.desk is not None and client.desk.handle(allow) is None
    assert [e.value for e in store.list_entries(ListKind.ALLOW)] == [SCAM]


def test_a_recording_goes_only_to_the_family_and_only_when_shared(tmp_path: Path, broker: MosquittoBroker,
                                                                  signer: CommandSigner, store: Store) -> None:  # fmt: skip
    recordings = tmp_path / "recordings"
    recordings.mkdir()
    wav = b"RIFF" + bytes(2000)
    (recordings / "call-1.wav").write_bytes(wav)
    call_id = store.begin_call("sim", CallerID(raw_number="0355550101", number_e164=SCAM), utc_now())
    store.set_recording(call_id, "call-1.wav", len(wav), 1.0)
    not_shared = settings_for(tmp_path, broker, signer)
    shared = replace(not_shared, share=frozenset({Share.RECORDINGS}))
    with HubListener(broker) as hub:
        with client_for(tmp_path, not_shared, store, recordings=recordings) as client:
            assert client.desk is not None
            client.desk.handle(signer.sign(command(CommandAction.REQUEST_RECORDING, call_id=call_id)))
        with client_for(tmp_path, shared, store, recordings=recordings) as client:
            assert client.desk is not None
            client.desk.handle(signer.sign(command(CommandAction.REQUEST_RECORDING, call_id=call_id, by="police:sato")))
            asked = command(CommandAction.REQUEST_RECORDING, call_id=call_id)
            client.desk.handle(signer.sign(asked))
            (upload,) = decoded(hub, Channel.RECORDINGS, 1)
            wait_until(lambda: len(acks(hub)) == 3)
    assert isinstance(upload, Recording) and upload.wav == wav and upload.command == asked.id
    reasons = [a.reason for a in acks(hub)]
    assert reasons[0].startswith("recordings are not shared") and reasons[1].startswith("only the household")


# ---- the queue's bound ------------------------------------------------------------------------


def test_a_full_queue_drops_old_call_summaries_before_reports(tmp_path: Path) -> None:
    now = utc_now()
    with HubQueue(tmp_path / "q.db", limit=5) as queue:
        queue.put(Channel.REPORTS, b"report-1", now)
        for n in range(6):
            queue.put(Channel.CALLS, f"call-{n}".encode(), now)
        queue.put(Channel.HEALTH, b"health-1", now)
        queue.put(Channel.HEALTH, b"health-2", now)
        kept = [row.payload for row in queue.pending()]
    assert kept == [b"report-1", b"call-3", b"call-4", b"call-5", b"health-2"]


# ---- family anywhere: alerts link to the hub's page ----------------------------------------


def test_alerts_link_to_the_hub_page_when_it_has_one(store: Store, signer: CommandSigner) -> None:
    from screening.alerts import AlertService
    from screening.config.loader import parse_config
    from screening.notify import AppriseNotifier

    relatives = [{"name": "Taro", "notify": ["json://127.0.0.1:9/hook"]}]
    hub = {"url": "mqtts://hub.example.jp:8883", "unit_id": UNIT, "command_key": public_key_text(signer.public)}
    detection = Detection(Verdict.FRAUD, 4.5, (Flag("還付金", "refund", 3.0, "還付金"),))
    calls = [store.begin_call("sim", CallerID(raw_number="0355550101", number_e164=SCAM), utc_now()) for _ in range(2)]
    links = []
    for call_id, extra in zip(calls, ({}, {"public_url": "https://hub.example.jp/"}), strict=True):
        config = parse_config({"alerts": {"web_base_url": "http://mamoru.local:8080"}, "relatives": relatives,
                               "hub": {**hub, **extra}}, source="test")  # fmt: skip
        svc = AlertService(store, config, AppriseNotifier(timeout_s=1), tz=None, household="母").open()
        try:
            alert = svc.on_fraud(FraudEvent(call_id, detection, 1.0, utc_now(), "還付金"), "03-5555-0101")
            assert alert is not None
            links.append(alert.payload["url"])
        finally:
            svc.close()
    # The hub's page knows a call by its summary's message id, which the unit makes the call's uid.
    assert links == [f"http://mamoru.local:8080/calls/{calls[0]}",
                     f"https://hub.example.jp/family/call/{UNIT}/{store.get_call(calls[1]).call_uid}"]


def test_health_reads_the_daemons_status_file(tmp_path: Path, broker: MosquittoBroker, signer: CommandSigner,
                                              store: Store) -> None:  # fmt: skip
    """The daemon's status.json (what the web page's health view reads) says the line is stuck."""
    from screening.status import STATUS_FILE_NAME, DaemonStatus, LineProblem, LineState

    now = utc_now()
    status = DaemonStatus(LineState.OK, now, "", None, False, "0.1.0", 1, now, LineProblem.HANDSET_STUCK)
    (store.path.parent / STATUS_FILE_NAME).write_text(json.dumps(status.to_json()))
    settings = settings_for(tmp_path, broker, signer)
    with HubListener(broker) as hub, HubClient(settings, tmp_path / "q.db", store.path,
                                               unit_actions(store, None, None, None), model_missing=True):  # fmt: skip
        (health,) = decoded(hub, Channel.HEALTH, 1)
    assert isinstance(health, Health)
    assert health.line is LineHealth.OK and set(health.faults) == {"handset_stuck", "no_speech_model"}


def test_a_broker_restart_mid_stream_loses_nothing(tmp_path: Path, broker: MosquittoBroker, signer: CommandSigner,
                                                   store: Store) -> None:  # fmt: skip
    """QoS 1 and delete-after-PUBACK: every summary arrives (a repeat keeps its id), first arrivals in order."""
    bus = EventBus()
    settings = settings_for(tmp_path, broker, signer, share=frozenset({Share.CALLS}))
    with client_for(tmp_path, settings, store) as client:
        off = client.subscribe(bus)
        with HubListener(broker, session="hub-ingest") as hub:
            wait_until(lambda: client.connected)
            for call_id in range(1, 101):
                screened(bus, call_id, SCAM)
                if call_id == 40:
                    broker.stop()
            broker.start()
        with HubListener(broker, session="hub-ingest") as hub_after:  # the hub's session kept what came meanwhile
            wait_until(lambda: len(client.queue) == 0, timeout=60)
            time.sleep(0.5)
        off()
    seen: dict[str, int] = {}
    for payload in hub.on(topic(UNIT, Channel.CALLS)) + hub_after.on(topic(UNIT, Channel.CALLS)):
        summary = decode_message(Channel.CALLS, payload, unit=UNIT)
        assert isinstance(summary, CallSummary)
        seen.setdefault(summary.id, summary.call_id)
    assert sorted(seen.values()) == list(range(1, 101)), "every call summary reached the hub"
    assert list(seen.values()) == sorted(seen.values()), "first arrivals in the order they were queued"


KILLED_UNIT = """
import os, sys
from pathlib import Path
from blocklist.store import Store
from screening.core.model import Action, CallerID, Category, Decision
from screening.hub_client.client import HubClient
from screening.hub_client.settings import HubSettings, Share
from screening.hub_wiring import unit_actions

tmp, url, ca, key = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), sys.argv[4]
store = Store(tmp / "unit" / "mamoru.db")
store.open()
settings = HubSettings(url=url, unit_id="akita-0001", credentials_file=tmp / "hub-password", ca_file=ca,
                       command_key=key, share=frozenset({Share.CALLS}))
client = HubClient(settings, tmp / "unit" / "mamoru.db.hub.db", store.path, unit_actions(store, None, None, None))
client.start()
decision = Decision(Action.WARN, "unknown", "not on a list", Category.DOMESTIC)
for call_id in (21, 22, 23):
    client.on_screened(call_id, CallerID(raw_number="0355550101", number_e164="+81355550101"), decision)
assert client.flush(10.0)  # committed: from here on only the disk has them
print("queued", len(client.queue), flush=True)
os.kill(os.getpid(), 9)  # no goodbye, no close: as near a power cut as a test process gets
"""


def test_messages_queued_before_a_kill_are_sent_after_the_restart(tmp_path: Path, broker: MosquittoBroker,
                                                                  signer: CommandSigner, store: Store) -> None:  # fmt: skip
    import subprocess
    import sys

    settings = settings_for(tmp_path, broker, signer, share=frozenset({Share.CALLS}))
    broker.stop()
    script = tmp_path / "killed_unit.py"
    script.write_text(KILLED_UNIT)
    root = Path(__file__).resolve().parent.parent
    run = subprocess.run([sys.executable, str(script), str(tmp_path), broker.url, str(broker.ca_file),
                          settings.command_key], capture_output=True, text=True, timeout=60, cwd=root,
                         env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})  # fmt: skip
    assert run.returncode == -9 and "queued 3" in run.stdout, run.stderr
    broker.start()
    with HubListener(broker) as hub, client_for(tmp_path, settings, store):
        calls = decoded(hub, Channel.CALLS, 3)
    assert [c.call_id for c in calls if isinstance(c, CallSummary)] == [21, 22, 23]


def test_acknowledge_and_check_feeds_act_on_the_units_own_services(tmp_path: Path, broker: MosquittoBroker,
                                                                   signer: CommandSigner, store: Store) -> None:  # fmt: skip
    """``acknowledge`` stops the escalation of that call's alerts; ``check_feeds`` runs a feed round now."""
    from blocklist.feed_timer import FeedTimer
    from screening.alerts import AlertService
    from screening.config.loader import parse_config
    from screening.notify import AppriseNotifier

    config = parse_config({"relatives": [{"name": "Taro", "notify": ["json://127.0.0.1:9/hook"]}]}, source="test")
    alerts = AlertService(store, config, AppriseNotifier(timeout_s=1), tz=None, household="母").open()
    timer = FeedTimer(store.path, tmp_path / "feeds", interval_s=3600, max_age_days=30, first_after_s=3600)
    detection = Detection(Verdict.FRAUD, 4.5, (Flag("還付金", "refund", 3.0, "還付金"),))
    try:
        alert = alerts.on_fraud(FraudEvent(7, detection, 1.0, utc_now(), "還付金"), "03-5555-0101")
        assert alert is not None
        timer.start()
        actions = unit_actions(store, None, alerts, timer.check_now)
        settings = settings_for(tmp_path, broker, signer)
        with HubListener(broker) as hub, HubClient(settings, tmp_path / "q.db", store.path, actions) as client:
            assert client.desk is not None
            client.desk.handle(signer.sign(command(CommandAction.ACKNOWLEDGE, call_id=7, by="family:hanako")))
            client.desk.handle(signer.sign(command(CommandAction.ACKNOWLEDGE, call_id=8)))  # no alert for it
            client.desk.handle(signer.sign(command(CommandAction.CHECK_FEEDS, by="reviewer:sato")))
            wait_until(lambda: timer.checks == 1, timeout=30)
            wait_until(lambda: len(acks(hub)) == 3)
        acked = alerts.outbox.get_alert(alert.id)
    finally:
        timer.stop()
        alerts.close()
    assert acked is not None and acked.acked_by == "family:hanako"
    assert [(a.result, a.reason) for a in acks(hub)] == [(AckResult.DONE, "1 alert(s)"),
                                                         (AckResult.REFUSED, "no open alert for this call"),
                                                         (AckResult.DONE, "")]  # fmt: skip


LAST_WILL_UNIT = """
import os, sys, time
from pathlib import Path
from screening.hub_client.client import HubClient
from screening.hub_client.commands import UnitActions
from screening.hub_client.settings import HubSettings, Share

tmp, url, ca, key = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), sys.argv[4]
settings = HubSettings(url=url, unit_id="akita-0001", credentials_file=tmp / "hub-password", ca_file=ca,
                       command_key=key, share=frozenset({Share.CALLS}))
nothing = UnitActions(lambda n, b: None, lambda n, b: None, None, lambda c: None, None)
client = HubClient(settings, tmp / "will.hub.db", tmp / "none.db", nothing)
client.start()
deadline = time.monotonic() + 20
while not client.connected and time.monotonic() < deadline:
    time.sleep(0.05)
print("connected" if client.connected else "not connected", flush=True)
time.sleep(0.5)
os.kill(os.getpid(), 9)
"""


def test_a_unit_that_vanishes_is_reported_offline_by_its_last_will(tmp_path: Path, broker: MosquittoBroker,
                                                                   signer: CommandSigner) -> None:  # fmt: skip
    import subprocess
    import sys

    settings = settings_for(tmp_path, broker, signer)
    script = tmp_path / "vanishing_unit.py"
    script.write_text(LAST_WILL_UNIT)
    root = Path(__file__).resolve().parent.parent
    with HubListener(broker) as hub:
        run = subprocess.run([sys.executable, str(script), str(tmp_path), broker.url, str(broker.ca_file),
                              settings.command_key], capture_output=True, text=True, timeout=60, cwd=root,
                             env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})  # fmt: skip
        assert run.stdout.startswith("connected") and run.returncode == -9, run.stderr
        statuses = [m for m in (decode_message(Channel.STATUS, p, unit=UNIT)
                                for p in hub.wait_for(topic(UNIT, Channel.STATUS), 2, 30))]  # fmt: skip
    assert [s.online for s in statuses if isinstance(s, Status)] == [True, False]


# ---- mamoru doctor ------------------------------------------------------------------------------


def test_doctor_says_what_is_wrong_with_the_hub_link_in_japanese(tmp_path: Path, signer: CommandSigner) -> None:
    from screening import doctor
    from screening.config.loader import parse_config
    from screening.core.model import Language
    from screening.doctor_text import format_report, untranslated
    from screening.hub_client.queue import queue_path_for

    db = tmp_path / "mamoru.db"
    password = tmp_path / "hub-password"
    hub = {"url": "mqtts://hub.example.jp:8883", "unit_id": UNIT, "command_key": public_key_text(signer.public)}

    def check(**extra: object) -> doctor.Check:
        cfg = parse_config({"hub": {**hub, **extra}}, source="test")
        return doctor.check_hub(cfg, db, utc_now())

    incomplete = doctor.check_hub(parse_config({"hub": {"url": hub["url"]}}, source="test"), db, utc_now())
    unreadable = check(credentials_file=str(password))
    password.write_text("unit-pw\n")
    good = check(credentials_file=str(password))
    with HubQueue(queue_path_for(db), limit=100) as queue:
        queue.put(Channel.HEALTH, b"{}", utc_now() - timedelta(hours=2))
    waiting = check(credentials_file=str(password))
    assert (incomplete.severity, unreadable.severity, good.severity, waiting.severity) == (
        "problem", "problem", "ok", "warning")
    assert "credentials_file, command_key" in incomplete.message
    assert "1 messages for the hub have waited" in waiting.message
    findings = [incomplete, unreadable, good, waiting]
    assert not [t for f in findings for t in (f.message, f.fix) if untranslated(t)]
    assert "見守りセンター" in format_report(findings, Language.JA)
    assert "hub" not in [c.name for c in doctor.run_checks(parse_config({}, source="test"), db_path=db)]


def test_a_broken_hub_setting_leaves_screening_running(tmp_path: Path, signer: CommandSigner, store: Store,
                                                        caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    """A missing password file (bundle not applied yet) or a half-filled [hub]: logged, no hub, no crash."""
    from screening.config.loader import parse_config
    from screening.hub_wiring import run_hub

    key = public_key_text(signer.public)
    for hub in ({"url": "mqtts://hub.example.jp", "unit_id": UNIT, "command_key": key,
                 "credentials_file": str(tmp_path / "not-there")},
                {"url": "mqtts://hub.example.jp", "unit_id": UNIT},
                {"url": "mqtts://hub.example.jp", "unit_id": UNIT, "command_key": key,
                 "credentials_file": str(store.path), "ca_file": str(tmp_path / "no-ca.pem")}):  # fmt: skip
        with run_hub(parse_config({"hub": hub}, source="test"), store, store.path, None, EventBus()) as client:
            assert client is None
    errors = [r.getMessage() for r in caplog.records if r.name == "screening.hub_wiring" and r.levelname == "ERROR"]
    assert len(errors) == 3 and "not-there" in errors[0] and "command_key" in errors[1], errors


def test_narrowing_share_in_the_settings_file_applies_to_the_next_call(tmp_path: Path, broker: MosquittoBroker,
                                                                        signer: CommandSigner, store: Store) -> None:  # fmt: skip
    """The web settings page or an editor changes ``share``: the daemon's reloader tells the running client."""
    from screening.config.loader import parse_config

    bus = EventBus()
    settings = settings_for(tmp_path, broker, signer, share=frozenset({Share.CALLS}))
    hub_table = {"url": broker.url, "unit_id": UNIT, "command_key": settings.command_key,
                 "credentials_file": str(settings.credentials_file)}  # fmt: skip
    with HubListener(broker) as hub, client_for(tmp_path, settings, store) as client:
        off = client.subscribe(bus)
        screened(bus, 1, SCAM)
        decoded(hub, Channel.CALLS, 1)
        client.reconfigure(parse_config({"hub": {**hub_table, "share": ["health"]}}, source="test"))
        screened(bus, 2, SCAM)
        client.reconfigure(parse_config({"hub": {**hub_table, "share": ["calls"]}}, source="test"))
        screened(bus, 3, SCAM)
        calls = decoded(hub, Channel.CALLS, 2)
        off()
    assert [c.call_id for c in calls if isinstance(c, CallSummary)] == [1, 3]
