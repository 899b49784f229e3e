"""`mamoru hub` ingest on a real Mosquitto (TLS, MQTT 5, ACL) and a real PostgreSQL: nothing lost,
nothing doubled, nobody publishing as someone else, and faults of either server survived."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import timedelta

import paho.mqtt.client as mqtt
import pytest

from screening.core.clock import utc_now
from screening.core.model import Action, CallOutcome, Category, Verdict
from screening.hub.servers import HUB_USER
from screening.hub.store import HubStore
from screening.hubwire import CallSummary, Channel, FraudReport, Health, LineHealth, Status, encode_message, topic
from tests.support import hub_servers
from tests.support.hub_servers import HUB_PASSWORD, UNITS, HubListener, HubRig, MosquittoBroker, UnitClient

# The real servers' fixtures (module-level names are how pytest finds them).
broker, pg_cluster, pg_dsn, hub_rig = hub_servers.broker, hub_servers.pg_cluster, hub_servers.pg_dsn, hub_servers.hub_rig

pytestmark = pytest.mark.timeout(300)


def _call(unit: str, call_id: int, number: str = "+81312345678") -> CallSummary:
    return CallSummary(unit, call_id=call_id, started=utc_now(), number=number, category=Category.DOMESTIC,
                       action=Action.SCREEN, outcome=CallOutcome.CALLER_HUNG_UP, verdict=Verdict.FRAUD,
                       excerpt="還付金の手続きです", alerted=True)


def _wait(what: Callable[[], bool], timeout_s: float = 60.0, message: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if what():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting: {message}")


def _count(rig: HubRig, table: str) -> int:
    with HubStore(rig.dsn) as store:
        return store.count(table)


def test_unit_messages_reach_postgresql_once(hub_rig: HubRig) -> None:
    hub_rig.start_hub()
    unit = hub_rig.unit("unit-001")
    call = _call("unit-001", 1)
    assert not unit.publish(call).is_failure
    # The same message again (QoS 1 redelivery after a lost PUBACK looks exactly like this).
    assert not unit.publish(call).is_failure
    unit.publish(Health("unit-001", line=LineHealth.OK, version="0.1.0", disk_free_mb=9000, uptime_s=60))
    unit.publish(Status("unit-001", online=True))
    unit.publish(FraudReport("unit-001", number="+81312345678", call_id=1, heard=utc_now(), phrases=("還付金",)))
    _wait(lambda: _count(hub_rig, "reports") == 1 and _count(hub_rig, "health") == 1, message="messages stored")
    assert _count(hub_rig, "calls") == 1
    with HubStore(hub_rig.dsn) as store:
        fleet = {row["unit"]: row for row in store.fleet()}
    assert fleet["unit-001"]["state"] == "online" and fleet["unit-001"]["version"] == "0.1.0"
    assert hub_rig.hub is not None and hub_rig.hub.ingest.stats.duplicates == 1


def test_the_last_will_marks_a_vanished_unit_offline(hub_rig: HubRig) -> None:
    hub_rig.start_hub()
    unit = hub_rig.unit("unit-002")
    unit.publish(Status("unit-002", online=True))
    _wait(lambda: any(r["state"] == "online" for r in HubStore(hub_rig.dsn).open().fleet()), message="online")
    unit.client.loop_stop()
    unit.client._sock_close()  # the power goes: no DISCONNECT, the broker sends the will
    _wait(lambda: all(r["state"] == "offline" for r in HubStore(hub_rig.dsn).open().fleet()), 90, "offline")


def test_stolen_credentials_cannot_publish_or_listen_as_another_unit(hub_rig: HubRig) -> None:
    hub_rig.start_hub()
    thief = hub_rig.unit("unit-003")
    # unit-003's password, publishing under unit-004's id: the broker refuses it (MQTT 5 PUBACK 0x87).
    reason = thief.publish_raw(topic("unit-004", Channel.CALLS), encode_message(_call("unit-004", 9))[1])
    assert reason.is_failure and "authorized" in str(reason).lower()
    # Its own topic, but a body claiming to be unit-004: the hub refuses it.
    forged = json.loads(encode_message(_call("unit-004", 10))[1])
    assert not thief.publish_raw(topic("unit-003", Channel.CALLS), json.dumps(forged).encode()).is_failure
    # Listening to another unit's commands gets nothing: the broker filters delivery by the ACL.
    thief.client.subscribe(topic("unit-004", Channel.COMMANDS), qos=1)
    _wait(lambda: bool(thief.suback), 20, "SUBACK")
    owner = hub_rig.unit("unit-004")
    owner.client.subscribe(topic("unit-004", Channel.COMMANDS), qos=1)
    _wait(lambda: bool(owner.suback), 20, "owner's SUBACK")
    hub = UnitClient(hub_rig.broker, "unit-004", password=HUB_PASSWORD, username=HUB_USER)
    hub.client._client_id = b"hub-test-sender"
    hub.connect()
    assert not hub.publish_raw(topic("unit-004", Channel.COMMANDS), b"command bytes").is_failure
    _wait(lambda: owner.received == [b"command bytes"], 20, "the owner receives its command")
    time.sleep(0.5)
    assert thief.received == []
    hub.close()
    # And a wrong password does not connect at all.
    stranger = UnitClient(hub_rig.broker, "unit-004", password="guess")
    stranger.connect()
    assert stranger.connect_reason.is_failure and "not authorized" in str(stranger.connect_reason).lower()
    stranger.close()
    _wait(lambda: _count(hub_rig, "rejected") == 1, message="the forged body is recorded as rejected")
    assert _count(hub_rig, "calls") == 0


def test_home_assistant_topics_are_writable_only_under_the_units_own_id(broker: MosquittoBroker) -> None:
    """The hub's production ACL (no test override) carries the Home Assistant lines of docs/hub-unit.md."""
    own = ["mamoru/v1/unit-003/ha", "homeassistant/sensor/mamoru_unit-003/last_caller/config",
           "homeassistant/binary_sensor/mamoru_unit-003/fraud/config"]  # fmt: skip
    foreign = ["mamoru/v1/unit-004/ha", "homeassistant/sensor/mamoru_unit-004/last_caller/config",
               "homeassistant/sensor/mamoru_unit-0031/last_caller/config", "homeassistant/status"]  # fmt: skip
    unit = UnitClient(broker, "unit-003").connect()
    try:
        with HubListener(broker, subscribe=("mamoru/v1/+/ha", "homeassistant/#")) as hub:
            for where in own:
                assert not unit.publish_raw(where, b"{}", retain=True).is_failure, where
            for where in foreign:
                reason = unit.publish_raw(where, b"{}", retain=True)
                assert reason.is_failure and "authorized" in str(reason).lower(), where
            for where in own:
                hub.wait_for(where, 1, 20)
            time.sleep(0.5)
            assert not [t for t, _, _ in hub.messages if t in foreign]
    finally:
        unit.close()


def test_malformed_and_oversized_messages_are_refused_and_counted(hub_rig: HubRig) -> None:
    hub_rig.start_hub()
    unit = hub_rig.unit("unit-005")
    where = topic("unit-005", Channel.CALLS)
    for payload in (b"not json", b"{}", b"\xff" * 10, json.dumps({"v": 1}).encode(), b"[" * 4000, b"x" * 20_000):
        unit.publish_raw(where, payload)
    # Past the broker's own limit the broker drops it (and the sender) before the hub sees it.
    giant = UnitClient(hub_rig.broker, "unit-006").connect()
    giant.client.publish(topic("unit-006", Channel.RECORDINGS), b"x" * 3_300_000, qos=1)
    time.sleep(2.0)
    assert not giant.pubacks
    giant.close()
    assert not unit.publish(_call("unit-005", 1)).is_failure
    _wait(lambda: _count(hub_rig, "calls") == 1 and _count(hub_rig, "rejected") == 6, message="six refused")
    assert _count(hub_rig, "recordings") == 0


def test_a_broker_restart_mid_stream_loses_nothing(hub_rig: HubRig) -> None:
    hub_rig.start_hub()
    unit = hub_rig.unit("unit-006")
    total = 300
    for i in range(total):
        if i == 100:
            hub_rig.broker.restart()  # persistence on: sessions and queued QoS 1 messages survive
        if i == 200:
            assert hub_rig.hub is not None
            hub_rig.hub.stop()  # the hub away too: the broker queues for its persistent session
        unit.client.publish(*_wire(_call("unit-006", i)), qos=1)
    hub_rig.start_hub()
    _wait(lambda: _count(hub_rig, "calls") == total, 120, f"{total} calls stored")
    time.sleep(1.0)
    assert _count(hub_rig, "calls") == total


def _wire(message: CallSummary) -> tuple[str, bytes]:
    channel, payload = encode_message(message)
    return topic(message.unit, channel), payload


def test_the_database_down_loses_nothing(hub_rig: HubRig, pg_cluster: hub_servers.PostgresCluster) -> None:
    hub = hub_rig.start_hub(db_retry_s=0.5)
    unit = hub_rig.unit("unit-007")
    unit.publish(_call("unit-007", 0))
    _wait(lambda: _count(hub_rig, "calls") == 1, message="first call")
    pg_cluster.stop()
    try:
        for i in range(1, 151):
            unit.client.publish(*_wire(_call("unit-007", i)), qos=1)
        _wait(lambda: hub.ingest.stats.spooled == 150, 60, "spooled while the database is down")
        assert hub.ingest.spool.files()
        # The hub itself goes down too: the acked messages live only in the spool on disk now.
        hub.stop()
    finally:
        pg_cluster.start()
    restarted = hub_rig.start_hub(db_retry_s=0.5)
    _wait(lambda: _count(hub_rig, "calls") == 151, 60, "replayed by the restarted hub")
    assert not restarted.ingest.spool.files() and restarted.ingest.stats.replayed == 150


def test_a_flood_of_reports_from_one_household_blocks_nothing(hub_rig: HubRig) -> None:
    hub_rig.start_hub()
    flooder = hub_rig.unit("unit-008")
    for i in range(60):
        flooder.client.publish(*_wire_report("unit-008", "+81345678901", i), qos=1)
    with HubStore(hub_rig.dsn) as store:
        _wait(lambda: store.count("reports") == 60, message="flood stored")
        assert store.review_queue() == []
        # Three different households: now it is worth a reviewer's look.
        for unit in ("unit-001", "unit-002"):
            hub_rig.unit(unit).publish_raw(*_wire_report(unit, "+81345678901", 1))
        _wait(lambda: store.count("reports") == 62, message="two more households")
        queue = store.review_queue()
        assert [(q.number, q.households, q.reports) for q in queue] == [("+81345678901", 3, 62)]
        assert queue[0].phrases[0] == "未納料金"
        # The police station's number, however often reported, never reaches the queue.
        for unit in ("unit-001", "unit-002", "unit-008"):
            client = next(u for u in hub_rig.units if u.unit == unit)
            client.publish_raw(*_wire_report(unit, "+81335810110", 2))
        _wait(lambda: store.count("reports") == 65, message="police-station reports")
        assert [q.number for q in store.review_queue()] == ["+81345678901"]


def _wire_report(unit: str, number: str, call_id: int) -> tuple[str, bytes]:
    report = FraudReport(unit, number=number, call_id=call_id, heard=utc_now() - timedelta(minutes=call_id),
                         phrases=("未納料金", "裁判"))
    channel, payload = encode_message(report)
    return topic(unit, channel), payload


def test_units_are_known_by_their_passwords() -> None:
    assert all(len(p) > 10 for p in UNITS.values())
    assert mqtt.MQTTv5 == 5


def test_a_damaged_spool_file_is_set_aside_and_ingest_goes_on(hub_rig: HubRig) -> None:
    hub_rig.spool.mkdir(parents=True)
    (hub_rig.spool / "00000000000000000001-00000000-deadbeef.spool").write_text("not json at all\n")
    hub = hub_rig.start_hub()
    unit = hub_rig.unit("unit-001")
    assert not unit.publish(_call("unit-001", 1)).is_failure
    _wait(lambda: _count(hub_rig, "calls") == 1, message="stored despite the damaged spool file")
    assert not hub.ingest.spool.files() and list(hub_rig.spool.glob("*.bad"))
