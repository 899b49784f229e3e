"""The unit's hub client: tells the hub what the household shares, takes the hub's signed commands.

Screening never waits for the hub: an event handler (on the call loop's thread) only writes a
row into the durable queue (``HubQueue``, a short local SQLite transaction) and wakes the sender
thread. The sender publishes the oldest row at QoS 1 and deletes it after the broker's PUBACK,
one at a time, so the hub sees the unit's messages in order, at least once, whatever happened
in between (broker down, unit restarted, power cut).

MQTT 5 with a persistent session (``clean_start=False`` and a session expiry): commands sent
while the unit was away wait at the broker. The last will, retained on ``…/status``, tells the
hub the unit went away without saying goodbye.
"""

from __future__ import annotations

import logging
import os
import shutil
import ssl
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from screening.core.clock import utc_now
from screening.core.model import CallerID, Decision
from screening.events import CallScreened, EventBus, FraudHeard, LineFault, LineRestored, ModelMissing
from screening.hub_client.commands import CommandDesk, UnitActions
from screening.hub_client.home_assistant import discovery_messages, state_document, state_topic
from screening.hub_client.queue import HubQueue, Queued
from screening.hub_client.settings import HubSettings, Share
from screening.hub_client.wire import Channel, message, public_key_from_hex, topic, valid_unit_id
from voice.pipeline import FraudEvent

log = logging.getLogger(__name__)

EXCERPT_CHARS = 120
REPORTS_MARK = "reports_after_id"
STOP_TIMEOUT_S = 5.0


class HubSetupError(Exception):
    """The hub cannot be used as configured (the message says what to fix); screening goes on without it."""


@dataclass(frozen=True, slots=True)
class UnitState:
    """What the health message reports, gathered by the client from the bus and the disk."""

    line_ok: bool = True
    line_message: str = ""
    speech_model: bool = True
    last_caller: str | None = None  # for Home Assistant (only when the household shares calls)
    fraud: bool = False  # the last call was judged fraud


def software_version() -> str:
    try:
        return metadata.version("mamoru")
    except metadata.PackageNotFoundError:
        return "unknown"


class HubClient:
    """One unit's connection to its hub. Context manager: ``with HubClient(...):`` starts and stops it."""

    def __init__(self, settings: HubSettings, queue_path: Path, db_path: Path, actions: UnitActions, *,
                 clock: Callable[[], datetime] = utc_now) -> None:  # fmt: skip
        if not valid_unit_id(settings.unit_id):
            raise HubSetupError(f"[hub] unit_id {settings.unit_id!r} is not a valid id (letters, digits, . _ -)")
        self.settings = settings
        self.queue = HubQueue(queue_path, limit=settings.queue_limit)
        self.db_path = db_path  # read (never written) for the family's fraud reviews
        self._clock = clock
        self._state = UnitState()
        self._state_lock = threading.Lock()
        self._connected = threading.Event()
        self._wake = threading.Event()
        self._ha_dirty = threading.Event()
        self._stop = threading.Event()
        self._sender: threading.Thread | None = None
        self._mqtt: mqtt.Client | None = None
        self._desk = CommandDesk(settings, actions, self.queue, self._enqueue, clock=clock)
        self.published = 0  # messages the broker acknowledged (for tests and status)

    # ---- life cycle ------------------------------------------------------------------

    def __enter__(self) -> HubClient:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        s = self.settings
        try:
            password = s.credentials_file.read_text(encoding="utf-8").strip()
            key = public_key_from_hex(s.command_key)
        except (OSError, ValueError) as exc:
            raise HubSetupError(f"[hub]: {exc}") from None
        self._desk.key = key
        self.queue.open()
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=s.unit_id, protocol=mqtt.MQTTv5)
        client.username_pw_set(s.unit_id, password)
        if s.tls:
            client.tls_set(ca_certs=str(s.ca_file) if s.ca_file else None, cert_reqs=ssl.CERT_REQUIRED,
                           tls_version=ssl.PROTOCOL_TLS_CLIENT)  # fmt: skip
        client.will_set(topic(s.unit_id, Channel.STATUS), self._status(online=False), qos=1, retain=True)
        client.reconnect_delay_set(min_delay=1, max_delay=60)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = s.session_expiry_s
        self._mqtt = client
        # connect_async: an unreachable broker at start is the normal case to survive, not an error.
        client.connect_async(s.host, s.port, keepalive=s.keepalive_s, clean_start=False, properties=props)
        client.loop_start()
        self._sender = threading.Thread(target=self._run_sender, name="hub-sender", daemon=True)
        self._sender.start()
        log.info("hub: unit %s → %s (sharing %s; %d queued)", s.unit_id, s.url,
                 ", ".join(sorted(x.value for x in s.share)), len(self.queue))  # fmt: skip

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._sender is not None:
            self._sender.join(STOP_TIMEOUT_S)
        if self._mqtt is not None:
            if self._connected.is_set():
                info = self._mqtt.publish(topic(self.settings.unit_id, Channel.STATUS), self._status(online=False),
                                          qos=1, retain=True)  # fmt: skip
                _wait(info, 2.0)
            self._mqtt.disconnect()
            self._mqtt.loop_stop()
        self.queue.close()

    def subscribe(self, bus: EventBus) -> Callable[[], None]:
        """The bus events the hub hears of; returns the function that unsubscribes them all."""
        offs = [bus.subscribe(CallScreened, lambda e: self.on_screened(e.call_id, e.caller, e.decision)),
                bus.subscribe(FraudHeard, lambda e: self.on_fraud(e.fraud)),
                bus.subscribe(LineFault, lambda e: self._line(False, e.message)),
                bus.subscribe(LineRestored, lambda e: self._line(True, e.message)),
                bus.subscribe(ModelMissing, lambda e: self._model_missing())]  # fmt: skip

        def unsubscribe() -> None:
            for off in offs:
                off()

        return unsubscribe

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    # ---- events → queue (the call loop's thread: a local write, never the network) -----

    def on_screened(self, call_id: int, caller: CallerID, decision: Decision) -> None:
        if not self.settings.shares(Share.CALLS):
            return
        body: dict[str, Any] = {"call_id": call_id, "number": caller.number_e164, "withheld_reason":
                                caller.reason.value if caller.reason else None,
                                "decision": {"action": decision.action.value, "rule": decision.rule,
                                             "category": decision.category.value}}  # fmt: skip
        self._enqueue(Channel.CALLS, {"call": body})
        self._update(last_caller=caller.number_e164, fraud=False)

    def on_fraud(self, event: FraudEvent) -> None:
        if not self.settings.shares(Share.CALLS):
            return
        detection = event.detection
        body: dict[str, Any] = {"call_id": event.call_id, "verdict": detection.verdict.value,
                                "score": round(detection.score, 3),
                                "flags": [{"category": f.category, "pattern": f.phrase} for f in detection.flags]}  # fmt: skip
        if self.settings.shares(Share.TRANSCRIPTS):
            body["excerpt"] = event.transcript_excerpt[-EXCERPT_CHARS:]
        self._enqueue(Channel.CALLS, {"fraud": body})
        self._update(fraud=True)

    def _line(self, ok: bool, text: str) -> None:
        self._update(line_ok=ok, line_message=text)
        self.enqueue_health()

    def _model_missing(self) -> None:
        self._update(speech_model=False)
        self.enqueue_health()

    def _update(self, **changes: Any) -> None:
        with self._state_lock:
            self._state = replace(self._state, **changes)
        if self.settings.home_assistant:
            self._ha_dirty.set()
            self._wake.set()

    def enqueue_health(self) -> None:
        if self.settings.shares(Share.HEALTH):
            self._enqueue(Channel.HEALTH, {"health": self.health()})

    def health(self) -> dict[str, Any]:
        with self._state_lock:
            state = self._state
        try:
            disk = shutil.disk_usage(self.db_path.parent)
            free_mb: int | None = disk.free // 2**20
        except OSError:
            free_mb = None
        return {"line": {"ok": state.line_ok, "message": state.line_message}, "speech_model": state.speech_model,
                "disk_free_mb": free_mb, "version": software_version(), "queued": len(self.queue)}  # fmt: skip

    def _enqueue(self, channel: Channel, body: dict[str, Any]) -> None:
        now = self._clock()
        self.queue.put(channel, message(self.settings.unit_id, uuid.uuid4().hex, now, body), now)
        self._wake.set()

    # ---- family-confirmed fraud reports (the web page writes reviews in another process) -

    def poll_reports(self) -> int:
        """Queue a report for each call newly labelled fraud by the family; returns how many."""
        if not self.settings.shares(Share.REPORTS) or not self.db_path.exists():
            return 0
        after = int(self.queue.mark(REPORTS_MARK) or 0)
        import sqlite3  # read-only and short: the store's own connection and lock stay the call loop's

        db = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=2.0)
        try:
            rows = db.execute("SELECT id, number_e164, started_at, reviewed_at FROM calls "
                              "WHERE review_label = 'fraud' AND id > ? ORDER BY id LIMIT 100", (after,)).fetchall()  # fmt: skip
            flags = {row[0]: [r[0] for r in db.execute(
                "SELECT DISTINCT category FROM flags WHERE call_id = ?", (row[0],))] for row in rows}  # fmt: skip
        except sqlite3.OperationalError as exc:  # a store not migrated yet, or busy: next poll
            log.debug("hub: fraud reviews not readable now: %s", exc)
            return 0
        finally:
            db.close()
        for call_id, number, started_at, reviewed_at in rows:
            self._enqueue(Channel.REPORTS, {"report": {"call_id": call_id, "number": number, "started_at": started_at,
                                                       "reviewed_at": reviewed_at, "categories": flags[call_id]}})  # fmt: skip
            self.queue.set_mark(REPORTS_MARK, str(call_id))
        return len(rows)

    # ---- the sender thread -------------------------------------------------------------

    def _run_sender(self) -> None:
        next_health = 0.0
        next_poll = 0.0
        clock = 0.0
        while not self._stop.is_set():
            try:
                if clock >= next_health:
                    self.enqueue_health()
                    next_health = clock + self.settings.health_interval_s
                if clock >= next_poll:
                    self.poll_reports()
                    next_poll = clock + self.settings.report_poll_s
                self._publish_ha_state()
                self._drain()
            except Exception:  # noqa: BLE001 -- the hub is optional: never let one round end it
                log.exception("hub: sender round failed")
            wait = min(next_health, next_poll) - clock
            self._wake.wait(max(0.05, min(wait, 5.0)))
            self._wake.clear()
            clock += max(0.05, min(wait, 5.0))  # an upper bound; good enough for minutes-long periods

    def _drain(self) -> None:
        """Publish queued rows oldest first while connected; each row is deleted after its PUBACK."""
        client = self._mqtt
        while client is not None and self._connected.is_set() and not self._stop.is_set():
            row = self.queue.oldest()
            if row is None:
                return
            if not self._publish_row(client, row):
                return
            self.queue.remove(row.id)
            self.published += 1

    def _publish_row(self, client: mqtt.Client, row: Queued) -> bool:
        info = client.publish(topic(self.settings.unit_id, row.channel), row.payload, qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            return False
        return _wait(info, self.settings.ack_timeout_s)

    def _publish_ha_state(self) -> None:
        """Home Assistant's sensors are retained state, sent straight from here (not queued: stale state is
        no use); the sender thread does it, so the call loop never touches the network."""
        client = self._mqtt
        if client is None or not self._connected.is_set() or not self._ha_dirty.is_set():
            return
        self._ha_dirty.clear()
        with self._state_lock:
            state = self._state
        client.publish(state_topic(self.settings.unit_id),
                       state_document(state.last_caller, state.fraud, not state.line_ok), qos=1, retain=True)  # fmt: skip

    # ---- paho callbacks (paho's network thread) ---------------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: mqtt.ConnectFlags,
                    reason: Any, properties: Any) -> None:  # fmt: skip
        if reason.is_failure:
            log.warning("hub: broker refused the connection: %s", reason)
            return
        s = self.settings
        client.subscribe(topic(s.unit_id, Channel.COMMANDS), qos=1)
        client.publish(topic(s.unit_id, Channel.STATUS), self._status(online=True), qos=1, retain=True)
        if s.home_assistant:
            for config_topic, payload in discovery_messages(s.unit_id):
                client.publish(config_topic, payload, qos=1, retain=True)
            self._ha_dirty.set()
        log.info("hub: connected to %s (session %s)", s.url, "resumed" if flags.session_present else "new")
        self._connected.set()
        self._wake.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: object, flags: object, reason: Any,
                       properties: Any) -> None:  # fmt: skip
        if self._connected.is_set():
            log.warning("hub: disconnected (%s); messages wait in the queue", reason)
        self._connected.clear()

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        if msg.topic != topic(self.settings.unit_id, Channel.COMMANDS):
            log.warning("hub: ignored a message on %s", msg.topic)
            return
        self._desk.handle(bytes(msg.payload))

    def _status(self, *, online: bool) -> bytes:
        return message(self.settings.unit_id, uuid.uuid4().hex, self._clock(),
                       {"online": online, "pid": os.getpid()})  # fmt: skip


def _wait(info: mqtt.MQTTMessageInfo, timeout: float) -> bool:
    try:
        info.wait_for_publish(timeout)
    except (RuntimeError, ValueError):  # not connected any more: the row stays queued
        return False
    return info.is_published()
