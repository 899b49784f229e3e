"""The unit's hub client: tells the hub what the household shares, takes the hub's signed commands.

Screening never waits for the hub, nor for the disk on the hub's behalf: an event handler (on the
call loop's thread) only hands the event to the writer thread (an in-memory queue), which builds
the message (``screening.hubwire``), commits it into the durable queue (``HubQueue``, one SQLite
transaction, ``synchronous=FULL``) within milliseconds, and wakes the sender thread. The sender
publishes the oldest row at QoS 1 and deletes it after the broker's PUBACK, one at a time, so the
hub sees the unit's messages in order, at least once, whatever happened in between (broker down,
unit restarted, power cut); each message's id lets the hub drop a repeat. The one window for a
loss is a power cut in the milliseconds between a call's end and that commit.

MQTT 5 with a persistent session (``clean_start=False`` and a session expiry): commands sent while
the unit was away wait at the broker. The retained ``…/status`` says online; the last will says
offline when the unit vanishes without a goodbye.
"""

from __future__ import annotations

import logging
import queue
import re
import shutil
import sqlite3
import ssl
import threading
import time
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

from screening.config import Config
from screening.core.clock import parse_iso_utc, utc_now
from screening.core.model import CallerID, Decision, Verdict
from screening.events import CallScreened, EventBus, FraudHeard, LineFault, LineRestored, ModelMissing
from screening.hub_client.commands import CommandDesk, UnitActions
from screening.hub_client.home_assistant import discovery_messages, state_document, state_topic
from screening.hub_client.queue import HubQueue
from screening.hub_client.settings import HubSettings, Share
from screening.hubwire import (
    CallSummary,
    Channel,
    CommandVerifier,
    FraudReport,
    Health,
    LineHealth,
    Message,
    ReplayGuard,
    Status,
    WireError,
    encode_message,
    is_valid_unit_id,
    new_message_id,
    public_key_from_text,
    topic,
)
from screening.hubwire.fields import E164, FLAG, MESSAGE_ID
from screening.hubwire.messages import EXCERPT_CHARS
from screening.status import STATUS_FILE_NAME, LineState, StatusError, read_status
from voice.pipeline import FraudEvent

log = logging.getLogger(__name__)

REPORTS_MARK = "reports_after_id"
STOP_TIMEOUT_S = 5.0
STOP_DRAIN_S = 2.0  # on a clean stop; whatever is left waits in the queue for the next start
DB_READ_TIMEOUT_S = 0.2  # a lookup on the call loop's thread: WAL readers never wait for writers, but bound it
HANDOFF_LIMIT = 10_000  # events waiting for the writer; only a disk stalled for minutes fills it
MAX_PENDING_FRAUD = 64  # fraud verdicts waiting for their call to end (one per line slot, in practice)
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")
_NOT_FLAG = re.compile(r"[^a-z0-9_]")


class HubSetupError(Exception):
    """The hub cannot be used as configured (the message says what to fix); screening goes on without it."""


@dataclass(frozen=True, slots=True)
class UnitState:
    """What health and Home Assistant report, gathered from the bus."""

    line: LineHealth = LineHealth.UNKNOWN
    speech_model: str | None = None
    model_missing: bool = False
    last_caller: str | None = None  # only when the household shares calls
    fraud: bool = False  # the last call was judged fraud


def software_version() -> str:
    try:
        return metadata.version("mamoru")
    except metadata.PackageNotFoundError:
        return "unknown"


def flag_name(category: str) -> str:
    """A phrase category as the contract's flag token (lower-case letters, digits, ``_``)."""
    return _NOT_FLAG.sub("_", category.lower())[:32] or "flag"


class HubClient:
    """One unit's connection to its hub. Context manager: ``with HubClient(...):`` starts and stops it."""

    def __init__(self, settings: HubSettings, queue_path: Path, db_path: Path, actions: UnitActions, *,
                 speech_model: str | None = None, model_missing: bool = False,
                 clock: Callable[[], datetime] = utc_now) -> None:  # fmt: skip
        if not is_valid_unit_id(settings.unit_id):
            raise HubSetupError(f"[hub] unit_id {settings.unit_id!r}: lower-case letters, digits and '-' (3 to 63)")
        self.settings = settings
        self.queue = HubQueue(queue_path, limit=settings.queue_limit)
        self.guard_path = queue_path.with_name(queue_path.name + ".replay.json")
        self.db_path = db_path  # read (never written) for call start times, alerts and fraud reviews
        self.actions = actions
        self._clock = clock
        # ModelMissing is published before the hub starts: the root says so here instead.
        self._state = UnitState(speech_model=speech_model, model_missing=model_missing)
        self._state_lock = threading.Lock()
        self._fraud: dict[int, FraudEvent] = {}  # call id -> its verdict, until the call ends
        self._connected = threading.Event()
        self._wake = threading.Event()
        self._ha_dirty = threading.Event()
        self._stop = threading.Event()
        self._started = time.monotonic()
        self._sender: threading.Thread | None = None
        # Event handlers hand their work to the writer thread: the call loop never waits for a disk commit.
        self._inbox: queue.Queue[Callable[[], Message | None]] = queue.Queue(maxsize=HANDOFF_LIMIT)
        self._writer_stop = threading.Event()
        self._writer: threading.Thread | None = None
        self.handoff_dropped = 0
        self._mqtt: mqtt.Client | None = None
        self.desk: CommandDesk | None = None
        self.published = 0  # messages the broker acknowledged (for status and tests)

    # ---- life cycle ------------------------------------------------------------------

    def __enter__(self) -> HubClient:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        s = self.settings
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=s.unit_id, protocol=mqtt.MQTTv5)
        try:  # a bad file or an unwritable queue means no hub link: never a daemon that does not start
            password = s.credentials_file.read_text(encoding="utf-8").strip()
            key = public_key_from_text(s.command_key)
            if s.tls:
                client.tls_set(ca_certs=str(s.ca_file) if s.ca_file else None, cert_reqs=ssl.CERT_REQUIRED,
                               tls_version=ssl.PROTOCOL_TLS_CLIENT)  # fmt: skip
            self.queue.open()
        except (OSError, ValueError, sqlite3.Error, ssl.SSLError) as exc:
            self.queue.close()
            raise HubSetupError(f"[hub]: {exc}") from None
        verifier = CommandVerifier(s.unit_id, [key], ReplayGuard.load(self.guard_path))
        self.desk = CommandDesk(s, self.actions, verifier, self.guard_path, self.enqueue, clock=self._clock)
        client.username_pw_set(s.unit_id, password)
        client.will_set(topic(s.unit_id, Channel.STATUS), self._status(online=False), qos=1, retain=True)
        client.reconnect_delay_set(min_delay=1, max_delay=60)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = s.session_expiry_s
        self._mqtt = client
        # connect_async: a broker unreachable at start is the normal case to live with, not an error.
        client.connect_async(s.host, s.port, keepalive=s.keepalive_s, clean_start=False, properties=props)
        client.loop_start()
        self._writer = threading.Thread(target=self._run_writer, name="hub-writer", daemon=True)
        self._writer.start()
        self._sender = threading.Thread(target=self._run_sender, name="hub-sender", daemon=True)
        self._sender.start()
        log.info("hub: unit %s → %s (sharing %s; %d queued)", s.unit_id, s.url,
                 ", ".join(sorted(x.value for x in s.share)), len(self.queue))  # fmt: skip

    def stop(self) -> None:
        self._writer_stop.set()  # what was handed off still goes to disk first
        if self._writer is not None:
            self._writer.join(STOP_TIMEOUT_S)
        self._wake.set()
        deadline = time.monotonic() + STOP_DRAIN_S  # connected: a moment to send the last call's summary
        while self._connected.is_set() and len(self.queue) and time.monotonic() < deadline:
            time.sleep(0.02)
        self._stop.set()
        self._wake.set()
        if self._sender is not None:
            self._sender.join(STOP_TIMEOUT_S)
        client = self._mqtt
        if client is not None:
            if self._connected.is_set():  # a goodbye: the hub shows "stopped", not "vanished"
                _wait(client.publish(topic(self.settings.unit_id, Channel.STATUS), self._status(online=False),
                                     qos=1, retain=True), 2.0)  # fmt: skip
            self._connected.clear()
            client.disconnect()
            client.loop_stop()
        self.queue.close()

    def subscribe(self, bus: EventBus) -> Callable[[], None]:
        """The bus events the hub hears of; returns the function that unsubscribes them all."""
        offs = [bus.subscribe(FraudHeard, lambda e: self.on_fraud(e.fraud)),
                bus.subscribe(CallScreened, lambda e: self.on_screened(e.call_id, e.caller, e.decision)),
                bus.subscribe(LineFault, lambda e: self._line(LineHealth.FAULT)),
                bus.subscribe(LineRestored, lambda e: self._line(LineHealth.OK)),
                bus.subscribe(ModelMissing, lambda e: self._update(model_missing=True, speech_model=None))]  # fmt: skip

        def unsubscribe() -> None:
            for off in offs:
                off()

        return unsubscribe

    def reconfigure(self, cfg: Config) -> None:
        """A changed settings file: what is shared applies from the next event; the link itself needs a restart."""
        hub = cfg.hub
        if (hub.url, hub.unit_id, hub.credentials_file, hub.command_key) != (
                self.settings.url, self.settings.unit_id, self.settings.credentials_file, self.settings.command_key):
            log.warning("hub: the [hub] link settings changed; they apply at the next start of mamoru")
        if hub.share != self.settings.share:
            log.info("hub: now sharing %s", ", ".join(sorted(x.value for x in hub.share)) or "nothing")
            self.settings = replace(self.settings, share=hub.share)
            if self.desk is not None:
                self.desk.settings = self.settings

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    # ---- events → queue (the call loop's thread: an in-memory hand-off, never the disk or the network) -----

    def on_fraud(self, event: FraudEvent) -> None:
        """Kept until the call ends: the call summary carries the verdict (the call ends after it)."""
        with self._state_lock:  # the voice thread adds, the call loop takes
            if len(self._fraud) >= MAX_PENDING_FRAUD:
                self._fraud.pop(next(iter(self._fraud)))
            self._fraud[event.call_id] = event
        self._update(fraud=True)

    def on_screened(self, call_id: int, caller: CallerID, decision: Decision) -> None:
        with self._state_lock:
            fraud = self._fraud.pop(call_id, None)
        if not self.settings.shares(Share.CALLS):
            return
        number = caller.number_e164 if caller.number_e164 and E164.fullmatch(caller.number_e164) else ""
        ended = self._clock()

        def summary() -> Message:  # on the writer thread: the store read and the commit stay off the call loop
            call_uid, started, alerted = self._call_facts(call_id)
            # The call's own uid as the message id: the hub's page for the call is known before it is sent
            # (alerts link to it during the call), and a resent summary is still one row at the hub.
            message_id = call_uid if call_uid and MESSAGE_ID.fullmatch(call_uid) else new_message_id()
            return CallSummary(self.settings.unit_id, id=message_id, call_id=call_id, started=started or ended,
                               number=number,
                               category=decision.category, action=decision.action,
                               verdict=fraud.detection.verdict if fraud else None,
                               flags=_flags(fraud), excerpt=self._excerpt(fraud), alerted=alerted)  # fmt: skip

        self._hand_off(summary)
        self._update(last_caller=number or None, fraud=fraud is not None and fraud.detection.verdict is Verdict.FRAUD)

    def _hand_off(self, build: Callable[[], Message | None]) -> None:
        """To the writer thread; a full hand-off (the disk stalled for thousands of events) drops, logged."""
        try:
            self._inbox.put_nowait(build)
        except queue.Full:
            self.handoff_dropped += 1
            log.warning("hub: writer behind (%d waiting): an event was not queued", self._inbox.qsize())

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every handed-off event is in the durable queue; False if that took longer than ``timeout``."""
        deadline = time.monotonic() + timeout
        while self._inbox.unfinished_tasks:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    def _run_writer(self) -> None:
        """Builds and commits what the event handlers handed off, in order; after stop, until the inbox is empty."""
        while not (self._writer_stop.is_set() and self._inbox.empty()):
            try:
                build = self._inbox.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                message = build()
                if message is not None:
                    self.enqueue(message)
            except Exception:  # noqa: BLE001 -- one bad event must not end the hub link
                log.exception("hub: an event could not be queued")
            finally:
                self._inbox.task_done()

    def _excerpt(self, fraud: FraudEvent | None) -> str:
        if fraud is None or not self.settings.shares(Share.TRANSCRIPTS):
            return ""
        return _CONTROL.sub(" ", fraud.transcript_excerpt)[-EXCERPT_CHARS:]

    def _call_facts(self, call_id: int) -> tuple[str | None, datetime | None, bool]:
        """The call's uid, when it started and whether the family was alerted, from the store (read-only)."""
        try:
            db = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=DB_READ_TIMEOUT_S)
        except sqlite3.Error:
            return None, None, False
        try:
            row = db.execute("SELECT call_uid, started_at FROM calls WHERE id = ?", (call_id,)).fetchone()
            alerts = db.execute("SELECT count(*) FROM alerts WHERE call_id = ?", (call_id,)).fetchone()
            if row is None:
                return None, None, bool(alerts and alerts[0])
            return row[0], (parse_iso_utc(row[1]) if row[1] else None), bool(alerts and alerts[0])
        except (sqlite3.Error, ValueError) as exc:  # spooled call, busy file: the summary goes without
            log.debug("hub: call %d facts not readable: %s", call_id, exc)
            return None, None, False
        finally:
            db.close()

    def _line(self, line: LineHealth) -> None:
        self._update(line=line)
        self.enqueue_health()

    def _update(self, **changes: Any) -> None:
        with self._state_lock:
            self._state = replace(self._state, **changes)
        if self.settings.home_assistant:
            self._ha_dirty.set()
            self._wake.set()

    def enqueue_health(self) -> None:
        if self.settings.shares(Share.HEALTH):
            self._hand_off(self.health)

    def health(self) -> Health:
        """From the bus events heard, completed by the daemon's ``status.json`` (what the web page's health
        view reads too): the line as the daemon last wrote it, and whether a person should look at it."""
        with self._state_lock:
            state = self._state
        try:
            free_mb = shutil.disk_usage(self.db_path.parent).free // 2**20
        except OSError:
            free_mb = 0
        line, problem = state.line, None
        try:
            status = read_status(self.db_path.parent / STATUS_FILE_NAME)
        except StatusError:
            status = None
        if status is not None and not status.stale(self._clock()):
            if line is LineHealth.UNKNOWN:
                line = LineHealth.FAULT if status.line_state is LineState.FAULT else LineHealth.OK
            problem = status.line_problem
        faults = [name for name, on in (("line_fault", line is LineHealth.FAULT),
                                        ("no_speech_model", state.model_missing),
                                        (problem.value if problem else "", problem is not None)) if on]  # fmt: skip
        return Health(self.settings.unit_id, line=line, version=software_version()[:40], disk_free_mb=free_mb,
                      uptime_s=int(time.monotonic() - self._started), speech_model=state.speech_model,
                      faults=tuple(faults))  # fmt: skip

    def enqueue(self, msg: Message) -> None:
        """Encode (the contract's own check) and queue; a message the hub would refuse is logged, not queued."""
        try:
            channel, payload = encode_message(msg)
        except WireError as exc:
            log.error("hub: %s not queued: %s", type(msg).__name__, exc)
            return
        self.queue.put(Channel(channel), payload, self._clock())
        self._wake.set()

    # ---- family-confirmed fraud reports (the web page writes reviews in another process) -

    def poll_reports(self) -> int:
        """Queue a report for each call newly labelled fraud by the family; returns how many."""
        if not self.settings.shares(Share.REPORTS) or not self.db_path.exists():
            return 0
        after = int(self.queue.mark(REPORTS_MARK) or 0)
        try:
            db = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=2.0)
            try:
                rows = db.execute("SELECT id, number_e164, started_at, call_uid FROM calls WHERE review_label = 'fraud' "
                                  "AND id > ? ORDER BY id LIMIT 100", (after,)).fetchall()  # fmt: skip
                phrases = {row[0]: [r[0] for r in db.execute(
                    "SELECT DISTINCT category FROM flags WHERE call_id = ? LIMIT 10", (row[0],))] for row in rows}  # fmt: skip
            finally:
                db.close()
        except sqlite3.Error as exc:  # a store not migrated yet, or busy: the next poll
            log.debug("hub: fraud reviews not readable now: %s", exc)
            return 0
        sent = 0
        for call_id, number, started_at, call_uid in rows:
            if number and E164.fullmatch(number):  # a call without a number protects nobody else
                # The call's uid as the id: a report queued again after a crash is still one report at the hub.
                message_id = call_uid if call_uid and MESSAGE_ID.fullmatch(call_uid) else new_message_id()
                self.enqueue(FraudReport(self.settings.unit_id, id=message_id, number=number, call_id=call_id,
                                         heard=parse_iso_utc(started_at),
                                         phrases=tuple(p[:64] for p in phrases[call_id])))  # fmt: skip
                sent += 1
            self.queue.set_mark(REPORTS_MARK, str(call_id))
        return sent

    # ---- the sender thread -------------------------------------------------------------

    def _run_sender(self) -> None:
        next_health = next_poll = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            try:
                if now >= next_health:
                    self.enqueue_health()
                    next_health = now + self.settings.health_interval_s
                if now >= next_poll:
                    self.poll_reports()
                    next_poll = now + self.settings.report_poll_s
                self._publish_ha_state()
                self._drain()
            except Exception:  # noqa: BLE001 -- the hub is optional: one bad round must not end it
                log.exception("hub: sender round failed")
            self._wake.wait(max(0.05, min(next_health, next_poll) - time.monotonic()))
            self._wake.clear()

    def _drain(self) -> None:
        """Publish queued rows oldest first while connected; each row is deleted after its PUBACK."""
        client = self._mqtt
        while client is not None and self._connected.is_set() and not self._stop.is_set():
            row = self.queue.oldest()
            if row is None:
                return
            info = client.publish(topic(self.settings.unit_id, row.channel), row.payload, qos=1)
            if info.rc != mqtt.MQTT_ERR_SUCCESS or not _wait(info, self.settings.ack_timeout_s):
                return  # the row stays; paho resends what was in flight when the session resumes
            self.queue.remove(row.id)
            self.published += 1

    def _publish_ha_state(self) -> None:
        """Home Assistant's sensors are retained state, sent straight (not queued: stale state is no use)."""
        client = self._mqtt
        if client is None or not self._connected.is_set() or not self._ha_dirty.is_set():
            return
        self._ha_dirty.clear()
        with self._state_lock:
            state = self._state
        client.publish(state_topic(self.settings.unit_id),
                       state_document(state.last_caller, state.fraud, state.line is LineHealth.FAULT),
                       qos=1, retain=True)  # fmt: skip

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
            log.warning("hub: connection lost (%s); messages wait in the queue", reason)
        self._connected.clear()

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        if msg.topic != topic(self.settings.unit_id, Channel.COMMANDS) or self.desk is None:
            log.warning("hub: ignored a message on %s", msg.topic)
            return
        self.desk.handle(bytes(msg.payload))

    def _status(self, *, online: bool) -> bytes:
        return encode_message(Status(self.settings.unit_id, online=online))[1]


def _flags(fraud: FraudEvent | None) -> tuple[str, ...]:
    if fraud is None:
        return ()
    names = dict.fromkeys(flag_name(f.category) for f in fraud.detection.flags)
    return tuple(n for n in names if FLAG.fullmatch(n))[:16]


def _wait(info: mqtt.MQTTMessageInfo, timeout: float) -> bool:
    try:
        info.wait_for_publish(timeout)
    except (RuntimeError, ValueError):  # not connected any more: the row stays queued
        return False
    return info.is_published()
