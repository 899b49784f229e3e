"""From the broker into PostgreSQL without losing a message: subscriber, batch writer, on-disk spool.

The MQTT client (paho-mqtt 2.x, MQTT 5, persistent session, QoS 1, manual acks) hands each
message to one writer thread. The writer stores a batch in one transaction and only then sends
the PUBACKs. While the database is down a batch goes to the spool (fsynced files) and is acked
from there; the spool is replayed, in order, once the database answers again. Until a message is
acked the broker keeps it (also across a broker restart: persistence is on) and redelivers it on
reconnect. Inserts are idempotent, so a crash between storing and acking only costs a duplicate
delivery that the database ignores.
"""

from __future__ import annotations

import base64
import itertools
import json
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from screening.core.files import atomic_write_bytes
from screening.hubwire import (
    Channel,
    Command,
    CommandSigner,
    Message,
    WireError,
    decode_message,
    hub_subscriptions,
    parse_topic,
    topic,
)

from .store import HubStore

log = logging.getLogger(__name__)

SESSION_EXPIRY_S = 7 * 24 * 3600  # the broker keeps the hub's queue for a week offline
RECEIVE_MAXIMUM = 4000  # unacked QoS 1 messages the broker may have in flight to the hub


@dataclass(frozen=True, slots=True)
class BrokerSettings:
    host: str
    port: int
    ca_file: Path
    username: str
    password: str = field(repr=False)
    client_id: str = "mamoru-hub"
    keepalive_s: int = 30


@dataclass(frozen=True, slots=True)
class IngestSettings:
    dsn: str
    spool_dir: Path
    batch_max: int = 500
    batch_wait_s: float = 0.05
    db_retry_s: float = 2.0


@dataclass(frozen=True, slots=True)
class Raw:
    """One delivery as it came off the wire: acked only once stored or spooled."""

    mid: int
    qos: int
    topic: str
    payload: bytes


@dataclass
class IngestStats:
    stored: int = 0
    duplicates: int = 0
    rejected: int = 0
    spooled: int = 0
    replayed: int = 0
    db_failures: int = 0


class Spool:
    """Batches the database could not take, one fsynced file each, replayed oldest first."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._seq = itertools.count()

    def append(self, batch: list[Raw]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        lines = [json.dumps({"t": r.topic, "p": base64.b64encode(r.payload).decode("ascii")}) for r in batch]
        name = f"{time.time_ns():020d}-{next(self._seq):08d}-{uuid.uuid4().hex[:8]}.spool"
        atomic_write_bytes(self.directory / name, ("\n".join(lines) + "\n").encode("ascii"), mode=0o600)

    def files(self) -> list[Path]:
        try:
            return sorted(self.directory.glob("*.spool"))
        except OSError:
            return []

    @staticmethod
    def read(path: Path) -> list[Raw]:
        batch: list[Raw] = []
        for line in path.read_text(encoding="ascii").splitlines():
            if line:
                item = json.loads(line)
                batch.append(Raw(0, 0, item["t"], base64.b64decode(item["p"])))
        return batch


class Ingest:
    """The writer thread: ``submit`` from the MQTT thread, ``ack`` called once a batch is durable."""

    def __init__(self, settings: IngestSettings, ack: Callable[[Raw], None]) -> None:
        self.settings = settings
        self._ack = ack
        self._queue: queue.Queue[Raw] = queue.Queue()
        self.spool = Spool(settings.spool_dir)
        self.store = HubStore(settings.dsn)
        self.stats = IngestStats()
        self._db_ok = False
        self._next_db_try = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def submit(self, raw: Raw) -> None:
        self._queue.put(raw)

    def start(self) -> None:
        self._connect_db()
        self._thread = threading.Thread(target=self._run, name="hub-ingest", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        self.store.close()

    def _connect_db(self) -> None:
        try:
            self.store.close()
            self.store.open()
            self.store.migrate()
            self._db_ok = True
        except psycopg.Error as exc:
            self._db_ok = False
            self._next_db_try = time.monotonic() + self.settings.db_retry_s
            log.warning("hub database unavailable (%s): spooling to %s", exc, self.settings.spool_dir)

    def _take_batch(self) -> list[Raw]:
        try:
            first = self._queue.get(timeout=0.2)
        except queue.Empty:
            return []
        batch = [first]
        deadline = time.monotonic() + self.settings.batch_wait_s
        while len(batch) < self.settings.batch_max:
            remaining = deadline - time.monotonic()
            try:
                batch.append(self._queue.get(timeout=max(remaining, 0)) if remaining > 0 else self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _run(self) -> None:
        while not self._stop.is_set() or not self._queue.empty():
            try:
                self._turn()
            except Exception:  # noqa: BLE001 -- the writer must outlive any one bad turn; unacked messages come back
                log.exception("hub ingest turn failed; carrying on")
                time.sleep(self.settings.db_retry_s)

    def _turn(self) -> None:
        """One batch: stored or spooled, then acked (an exception leaves it unacked: the broker keeps it)."""
        batch = self._take_batch()
        if not self._db_ok and time.monotonic() >= self._next_db_try:
            self._connect_db()
        if self._db_ok:
            self._replay()
        if batch:
            if not (self._db_ok and not self.spool.files() and self._store(batch)):
                self.spool.append(batch)
                self.stats.spooled += len(batch)
            for raw in batch:
                self._ack(raw)

    def _decode(self, batch: list[Raw]) -> tuple[list[Message], list[tuple[str | None, str, str]]]:
        messages: list[Message] = []
        rejected: list[tuple[str | None, str, str]] = []
        for raw in batch:
            where = parse_topic(raw.topic)
            if where is None or not where[1].from_unit:
                rejected.append((None, raw.topic, "not a unit topic"))
                continue
            try:
                messages.append(decode_message(where[1], raw.payload, unit=where[0]))
            except WireError as exc:
                rejected.append((where[0], raw.topic, str(exc)))
        return messages, rejected

    def _store(self, batch: list[Raw]) -> bool:
        """True once the batch is committed; False (database marked down) if it must be spooled."""
        messages, rejected = self._decode(batch)
        try:
            try:
                new = self.store.write(messages)
            except psycopg.OperationalError:
                raise
            except psycopg.Error as exc:
                # Not the connection: one message the database will never take must not block the rest.
                log.warning("batch refused by the database (%s); storing one by one", exc.__class__.__name__)
                new = self._one_by_one(messages, rejected)
            for unit, where, reason in rejected:
                log.warning("refused a message on %s: %s", where, reason)
                self.store.reject(unit, where, reason)
        except psycopg.Error as exc:
            self.stats.db_failures += 1
            self._db_ok = False
            self._next_db_try = time.monotonic() + self.settings.db_retry_s
            log.warning("hub database write failed (%s): spooling", exc.__class__.__name__)
            return False
        self.stats.stored += new
        self.stats.duplicates += len(messages) - new
        self.stats.rejected += len(rejected)
        return True

    def _one_by_one(self, messages: list[Message], rejected: list[tuple[str | None, str, str]]) -> int:
        new = 0
        for message in messages:
            try:
                new += self.store.write([message])
            except psycopg.OperationalError:
                raise
            except psycopg.Error as exc:
                rejected.append((message.unit, f"{message.unit}/{message.KIND}", f"database refused: {exc}"[:300]))
        return new

    def _replay(self) -> None:
        for path in self.spool.files():
            if self._stop.is_set() and not self._db_ok:
                return
            try:
                batch = Spool.read(path)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                # Spool files are written atomically, so this is outside damage: keep it for a person, go on.
                log.error("spool file %s unreadable (%s): set aside as .bad", path.name, exc)
                path.rename(path.with_suffix(".bad"))
                continue
            if not self._store(batch):
                return
            path.unlink()
            self.stats.replayed += len(batch)
            log.info("replayed %d spooled messages from %s", len(batch), path.name)


class HubSubscriber:
    """The hub's MQTT session: receives into ``Ingest``, publishes signed commands."""

    def __init__(self, broker: BrokerSettings, ingest: IngestSettings, signer: CommandSigner | None = None) -> None:
        self.broker = broker
        self.signer = signer
        self.ingest = Ingest(ingest, self._ack)
        self.connected = threading.Event()
        self._client: mqtt.Client | None = None

    def _make_client(self) -> mqtt.Client:
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.broker.client_id,
                             protocol=mqtt.MQTTv5, manual_ack=True)  # fmt: skip
        client.username_pw_set(self.broker.username, self.broker.password)
        client.tls_set(ca_certs=str(self.broker.ca_file))
        client.reconnect_delay_set(1, 15)
        client.max_inflight_messages_set(200)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        return client

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            log.error("broker refused the hub: %s", reason)
            return
        client.subscribe([(t, mqtt.SubscribeOptions(qos=1)) for t in hub_subscriptions()])
        self.connected.set()
        log.info("hub connected to %s:%d", self.broker.host, self.broker.port)

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self.connected.clear()
        log.warning("hub disconnected from the broker (%s); reconnecting", reason)

    def _on_message(self, _c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        self.ingest.submit(Raw(message.mid, message.qos, message.topic, bytes(message.payload)))

    def _ack(self, raw: Raw) -> None:
        if raw.qos > 0 and self._client is not None:
            self._client.ack(raw.mid, raw.qos)

    def start(self, timeout_s: float = 30.0) -> HubSubscriber:
        self.ingest.start()
        self._client = self._make_client()
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = SESSION_EXPIRY_S
        # Acks wait for the batch's commit: the window must hold several batches or the DB round trip caps throughput.
        properties.ReceiveMaximum = RECEIVE_MAXIMUM
        self._client.connect_async(self.broker.host, self.broker.port, self.broker.keepalive_s,
                                   clean_start=False, properties=properties)  # fmt: skip
        self._client.loop_start()
        if not self.connected.wait(timeout_s):
            log.warning("hub not connected to the broker after %.0f s; still trying", timeout_s)
        return self

    def send(self, command: Command, timeout_s: float = 10.0) -> None:
        """Sign, record and publish a command (QoS 1); the unit's ack arrives on commands/ack."""
        if self.signer is None or self._client is None:
            raise RuntimeError("this hub has no command key or no broker session")
        data = self.signer.sign(command)
        with HubStore(self.ingest.settings.dsn) as store:
            store.record_command(command)
        info = self._client.publish(topic(command.unit, Channel.COMMANDS), data, qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            # paho keeps QoS 1 messages while reconnecting; the command's expiry bounds how late it may act.
            log.warning("broker unreachable: command %s to %s queued until it is back", command.id[:8], command.unit)
            return
        try:
            info.wait_for_publish(timeout_s)
        except (RuntimeError, ValueError) as exc:
            log.warning("command %s to %s not confirmed by the broker: %s", command.id[:8], command.unit, exc)

    def stop(self) -> None:
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
        self.ingest.stop()

    def __enter__(self) -> HubSubscriber:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
