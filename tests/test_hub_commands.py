"""Hub → unit commands through a real Mosquitto: only commands signed by the hub's key, for this
unit, in time and new are done, through the unit's own lists, alerts, recordings and feeds.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

from blocklist.store import Store
from screening.core.clock import utc_now
from screening.core.model import CallerID, ListKind, Verdict
from screening.hub_client.client import HubClient
from screening.hub_client.settings import Share
from screening.hub_wiring import unit_actions
from screening.hubwire import (
    AckResult,
    Channel,
    CommandAction,
    CommandSigner,
    Recording,
    topic,
)
from tests.support import hub_unit
from tests.support.hub_servers import HubListener, MosquittoBroker
from tests.support.hub_unit import (
    OTHER,
    SCAM,
    UNIT,
    acks,
    client_for,
    command,
    decoded,
    settings_for,
    wait_until,
)
from voice.detector import Detection, Flag
from voice.pipeline import FraudEvent

broker, signer, store = hub_unit.broker, hub_unit.signer, hub_unit.store  # fixtures


# ---- hub → unit ----------------------------------------------------------------------------


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
