"""The hub's Mosquitto (``screening.hub.servers.MosquittoBroker``: TLS, MQTT 5, passwords, the contract's
ACL) with what a unit's tests add: Home Assistant discovery under the unit's own node, a hub user
that may read it, and a hub-side listener that records what arrives and sends commands.

The broker keeps its port, users and persistence across ``stop()``/``start()``, so a test can
take it away (an outage) and bring it back with the same sessions.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from screening.hub.servers import HUB_USER
from screening.hub.servers import MosquittoBroker as HubBroker
from screening.hub.servers import make_tls as make_tls_files
from screening.hubwire import PREFIX
from tests.support.ports import free_tcp_port

START_TIMEOUT_S = 10.0
# Beyond the contract's unit_acl_lines(): Home Assistant (docs/hub-unit.md).
HOME_ASSISTANT_ACL = [f"pattern write {PREFIX}/%u/ha", "pattern write homeassistant/+/mamoru_%u/#"]


def make_tls(directory: Path) -> tuple[Path, Path, Path]:
    """(ca.pem, server.pem, server.key) for 127.0.0.1 / localhost."""
    files = make_tls_files(directory)
    return files.ca, files.cert, files.key


@dataclass
class MosquittoBroker(HubBroker):
    """``MosquittoBroker.for_test(dir, {user: password})``; ``hub_user`` is the hub's own account."""

    hub_user: str = HUB_USER

    @classmethod
    def for_test(cls, directory: Path, users: dict[str, str], hub_password: str = "hub-pw") -> MosquittoBroker:
        return cls(directory, free_tcp_port(), {HUB_USER: hub_password, **users})

    def write_config(self) -> None:
        super().write_config()
        acl = self.directory / "acl"
        # The hub's block ends the file: its extra read goes there, the patterns apply to every unit.
        acl.write_text(acl.read_text() + f"topic read {PREFIX}/+/ha\ntopic read homeassistant/#\n"
                       + "\n".join(HOME_ASSISTANT_ACL) + "\n")  # fmt: skip

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
