"""Real hub servers for tests: a Mosquitto (TLS, MQTT 5, per-unit passwords, the production ACL) and a
PostgreSQL cluster, both in a temp dir on free ports; a minimal unit client that speaks the wire
contract; and the hub's side for the unit's tests (a listener that records and sends commands).

The broker keeps its port, users and persistence across ``stop()``/``start()``, so a test can
take it away (an outage) and bring it back with the same sessions.

The PostgreSQL cluster is shared by a test session (initdb takes a second or two); every test gets
its own database. As root the cluster runs as ``nobody`` (PostgreSQL refuses root), so its
directory is made under a world-traversable temp dir rather than pytest's root-only tmp_path.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from screening.hub.ingest import BrokerSettings, HubSubscriber, IngestSettings
from screening.hub.servers import HUB_USER, PostgresCluster
from screening.hub.servers import MosquittoBroker as HubBroker
from screening.hubwire import Channel, CommandSigner, Message, Status, encode_message, topic
from tests.support.ports import free_tcp_port

__all__ = ["FollowingUnit", "HUB_PASSWORD", "HubListener", "HubRig", "MosquittoBroker", "PostgresCluster", "UnitClient",
           "broker", "hub_rig", "pg_cluster", "pg_dsn"]  # fmt: skip

HUB_PASSWORD = "hub-" + uuid.uuid4().hex
UNITS = {f"unit-{i:03d}": f"pw-{i:03d}-{uuid.uuid4().hex[:8]}" for i in range(1, 9)}
START_TIMEOUT_S = 10.0


@dataclass
class MosquittoBroker(HubBroker):
    """The hub's broker with what tests need: ``MosquittoBroker.for_test(dir, {user: password})`` on a free
    port, its CA and URL; ``hub_user`` is the hub's own account. The ACL is exactly production's."""

    hub_user: str = HUB_USER

    @classmethod
    def for_test(cls, directory: Path, users: dict[str, str], hub_password: str = "hub-pw") -> MosquittoBroker:
        return cls(directory, free_tcp_port(), {HUB_USER: hub_password, **users})

    @property
    def ca_file(self) -> Path:
        assert self.tls is not None, "start() makes the TLS files"
        return self.tls.ca

    @property
    def url(self) -> str:
        return f"mqtts://127.0.0.1:{self.port}"


class HubListener:
    """The hub's side for tests: a real MQTT 5 client (the hub user) that records what arrives and
    can publish commands to a unit."""

    def __init__(self, broker: MosquittoBroker, *, subscribe: tuple[str, ...] = ("mamoru/v1/#", "homeassistant/#"),
                 user: str | None = None, session: str | None = None) -> None:  # fmt: skip
        """``session``: a client id whose session the broker keeps (as the real hub's), so what arrives while
        this listener is away waits for the next listener with the same id."""
        import threading

        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.broker = broker
        self.messages: list[tuple[str, bytes, bool]] = []  # (topic, payload, retained)
        self._lock = threading.Condition()
        self._ready = threading.Event()
        name = user or broker.hub_user
        self.session = session
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=session or f"test-{name}-{free_tcp_port()}",
                                  protocol=mqtt.MQTTv5)  # fmt: skip
        self.client.username_pw_set(name, broker.users[name])
        self.client.tls_set(ca_certs=str(broker.ca_file))
        self.subscribe_to = subscribe

        def on_connect(client: mqtt.Client, *_: object) -> None:
            for pattern in self.subscribe_to:
                client.subscribe(pattern, qos=1)
            self._ready.set()

        def on_message(client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
            with self._lock:
                self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))
                self._lock.notify_all()

        self.client.on_connect = on_connect
        self.client.on_message = on_message

    def __enter__(self) -> HubListener:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600 if self.session else 0
        self.client.connect("127.0.0.1", self.broker.port, clean_start=self.session is None, properties=props)
        self.client.loop_start()
        if not self._ready.wait(START_TIMEOUT_S):
            raise RuntimeError("hub listener did not connect")
        time.sleep(0.2)  # SUBACKs
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def on(self, topic: str) -> list[bytes]:
        with self._lock:
            return [payload for t, payload, _ in self.messages if t == topic]

    def wait_for(self, topic: str, count: int = 1, timeout: float = 30.0) -> list[bytes]:
        deadline = time.monotonic() + timeout
        with self._lock:
            while len([1 for t, _, _ in self.messages if t == topic]) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{count} message(s) on {topic} not seen in {timeout} s; "
                                       f"saw {sorted({t for t, _, _ in self.messages})}")  # fmt: skip
                self._lock.wait(left)
            return [payload for t, payload, _ in self.messages if t == topic]

    def publish(self, topic: str, payload: bytes, timeout: float = 10.0) -> None:
        info = self.client.publish(topic, payload, qos=1)
        info.wait_for_publish(timeout)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster]:
    base = Path(tempfile.mkdtemp(prefix="mamoru-pg-"))
    base.chmod(0o755)
    cluster = PostgresCluster(base / "cluster", free_tcp_port())
    try:
        with cluster:
            yield cluster
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture()
def pg_dsn(pg_cluster: PostgresCluster) -> str:
    return pg_cluster.create_database("t_" + uuid.uuid4().hex[:12])


@pytest.fixture()
def broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    running = MosquittoBroker(tmp_path / "broker", free_tcp_port(), {HUB_USER: HUB_PASSWORD, **UNITS})
    with running:
        yield running


class UnitClient:
    """A unit's MQTT session as the contract asks: TLS, MQTT 5, persistent session, last will."""

    def __init__(self, broker: MosquittoBroker, unit: str, password: str | None = None,
                 username: str | None = None) -> None:
        self.unit = unit
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=unit, protocol=mqtt.MQTTv5)
        self.client.username_pw_set(username or unit, password if password is not None else UNITS[unit])
        assert broker.tls is not None
        self.client.tls_set(ca_certs=str(broker.tls.ca))
        _, will = encode_message(Status(unit, online=False))
        self.client.will_set(topic(unit, Channel.STATUS), will, qos=1, retain=True)
        self.broker = broker
        self.received: list[bytes] = []
        self.pubacks: dict[int, Any] = {}
        self.suback: list[Any] = []
        self.connect_reason: Any = None
        self._connected = threading.Event()
        self._acked = threading.Condition()
        self.client.on_connect = self._on_connect
        self.client.on_message = lambda _c, _u, m: self.received.append(bytes(m.payload))
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = lambda _c, _u, _m, codes, _p: self.suback.extend(codes)

    def _on_connect(self, _c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self.connect_reason = reason
        self._connected.set()

    def _on_publish(self, _c: Any, _u: Any, mid: int, reason: Any, _p: Any) -> None:
        with self._acked:
            self.pubacks[mid] = reason
            self._acked.notify_all()

    def connect(self, timeout_s: float = 20.0) -> UnitClient:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        self.client.connect("localhost", self.broker.port, 30, clean_start=False, properties=props)
        self.client.loop_start()
        assert self._connected.wait(timeout_s), "no CONNACK"
        return self

    def publish(self, message: Message, timeout_s: float = 20.0) -> Any:
        """Publish at QoS 1 and return the PUBACK reason code (MQTT 5 says 'Not authorized' per message)."""
        channel, payload = encode_message(message)
        return self.publish_raw(topic(self.unit, channel), payload, timeout_s)

    def publish_raw(self, where: str, payload: bytes, timeout_s: float = 20.0, retain: bool = False) -> Any:
        info = self.client.publish(where, payload, qos=1, retain=retain)
        with self._acked:
            assert self._acked.wait_for(lambda: info.mid in self.pubacks, timeout_s), f"no PUBACK for {where}"
            return self.pubacks[info.mid]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@dataclass
class HubRig:
    broker: MosquittoBroker
    dsn: str
    spool: Path
    hub: HubSubscriber | None = None
    units: list[UnitClient] = field(default_factory=list)

    def start_hub(self, signer: CommandSigner | None = None, **ingest: Any) -> HubSubscriber:
        assert self.broker.tls is not None
        self.hub = HubSubscriber(BrokerSettings("localhost", self.broker.port, self.broker.tls.ca, HUB_USER,
                                                HUB_PASSWORD), IngestSettings(self.dsn, self.spool, **ingest), signer)
        return self.hub.start()

    def unit(self, name: str) -> UnitClient:
        client = UnitClient(self.broker, name).connect()
        self.units.append(client)
        return client


@pytest.fixture()
def hub_rig(broker: MosquittoBroker, pg_dsn: str, tmp_path: Path) -> Iterator[HubRig]:
    rig = HubRig(broker, pg_dsn, tmp_path / "spool")
    try:
        yield rig
    finally:
        for unit in rig.units:
            unit.close()
        if rig.hub is not None:
            rig.hub.stop()


def running_as_root() -> bool:
    return os.geteuid() == 0


class FollowingUnit:
    """The hub's feed repository served over HTTP on loopback, and a unit's store following it
    (``add_feed``/``update_feed``, exactly what the daemon's feed timer runs)."""

    def __init__(self, tmp: Path) -> None:
        import functools
        from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

        from blocklist.feed_publisher import FeedRepository
        from blocklist.formats import ListFormat, write_entries
        from blocklist.store import Store

        self.repo = FeedRepository(tmp / "issuer")
        self.repo.init(write_entries([], ListFormat.FEED, home_region="JP"), 0)
        self.www = tmp / "www"
        handler = functools.partial(SimpleHTTPRequestHandler, directory=str(self.www))
        handler.log_message = lambda *_: None  # type: ignore[attr-defined,method-assign]
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.feeds_dir = tmp / "unit" / "feeds"
        self.feeds_dir.parent.mkdir(parents=True)
        self.store = Store(tmp / "unit" / "calls.db", recover_calls=False)
        self.store.open()
        self.sync()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/feed/"

    def sync(self) -> None:
        """Copy what the issuer's web server serves (never the keys)."""
        for sub in ("metadata", "targets"):
            shutil.copytree(self.repo.path / sub, self.www / "feed" / sub, dirs_exist_ok=True)

    def follow(self) -> None:
        from blocklist.feeds import add_feed

        add_feed(self.store, self.feeds_dir, "hub", self.url, (self.repo.metadata_dir / "root.json").read_bytes())

    def update(self) -> Any:
        from blocklist.feeds import update_feed

        return update_feed(self.store, self.feeds_dir, "hub", max_age_days=30)

    def blocked(self, number: str) -> bool:
        from datetime import UTC, datetime

        return self.store.load_lists(datetime.now(UTC)).match_block(number) is not None

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.store.close()
