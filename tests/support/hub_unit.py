"""What the unit's hub tests share: a unit id, fixtures (a real broker, a command signer, a store) and
small helpers to raise events, decode what the hub received and sign commands."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from blocklist.store import Store
from screening.core.clock import utc_now
from screening.core.model import Action, CallerID, Category, Decision, Verdict
from screening.events import CallScreened, EventBus, FraudHeard
from screening.hub_client.client import HubClient
from screening.hub_client.settings import HubSettings
from screening.hub_wiring import unit_actions
from screening.hubwire import (
    Channel,
    Command,
    CommandAck,
    CommandAction,
    CommandSigner,
    Health,
    decode_message,
    public_key_text,
    topic,
)
from tests.support.hub_servers import HubListener, MosquittoBroker
from voice.detector import Detection, Flag
from voice.pipeline import FraudEvent

__all__ = ["OTHER", "SCAM", "UNIT", "acks", "broker", "client_for", "command", "decoded", "fraud", "health_of",
           "screened", "settings_for", "signer", "store", "wait_until"]  # fmt: skip

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


def command(action: CommandAction, *, unit: str = UNIT, by: str = "family:hanako", number: str | None = None,
            call_id: int | None = None, issued_ago: timedelta = timedelta(0),
            lifetime: timedelta = timedelta(minutes=10)) -> Command:  # fmt: skip
    issued = utc_now() - issued_ago
    return Command(unit, action, by, number=number, call_id=call_id, issued=issued, expires=issued + lifetime)


def acks(hub: HubListener) -> list[CommandAck]:
    return [m for m in (decode_message(Channel.ACKS, p, unit=UNIT) for p in hub.on(topic(UNIT, Channel.ACKS)))
            if isinstance(m, CommandAck)]  # fmt: skip
