"""The unit's hub client against a real Mosquitto (TLS, passwords, per-unit ACL) started by the test.

What the household shares reaches the hub, in order, after outages, broker restarts, unit restarts
and kills; what it does not share never leaves; Home Assistant gets its discovery and state.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

from blocklist.store import Store
from screening.core.clock import utc_now
from screening.core.model import Action, CallerID, ReviewLabel, Verdict
from screening.events import EventBus, LineFault
from screening.hub_client.client import HubClient
from screening.hub_client.home_assistant import state_topic
from screening.hub_client.queue import HubQueue
from screening.hub_client.settings import Share
from screening.hub_wiring import unit_actions
from screening.hubwire import (
    CallSummary,
    Channel,
    CommandSigner,
    FraudReport,
    Health,
    LineHealth,
    Status,
    decode_message,
    topic,
)
from tests.support import hub_unit
from tests.support.hub_servers import HubListener, MosquittoBroker
from tests.support.hub_unit import (
    OTHER,
    SCAM,
    UNIT,
    client_for,
    decoded,
    fraud,
    health_of,
    screened,
    settings_for,
    wait_until,
)

broker, signer, store = hub_unit.broker, hub_unit.signer, hub_unit.store  # fixtures


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
