"""Alerting the family: a son or daughter hears about a fraud call while it is still going.

Flow: a trigger (``on_fraud``, ``on_blocked_call``, ``on_health``, the daily
digest, ``test_alert``) writes one alert and its deliveries (one per relative
and channel) to the outbox *first*, then wakes the :class:`AlertWorker`, whose
``run_pending`` sends what is due, in parallel, each channel on its own
deadline. The database is the queue, so a restart resumes whatever was
pending and nothing is sent twice by design (at-least-once only across a
crash in mid-send).

Policy, all driven by ``[alerts]`` and ``[[relatives]]``:

* fraud alerts are URGENT (never held by quiet hours or the rate limit) and
  escalate: relative #1 (every channel, and a phone call if wired) at once,
  #2 after ``escalate_after_minutes`` if nobody acknowledged, and so on;
* other alerts are NORMAL: they wait out ``quiet_hours`` and count against
  ``max_per_hour`` per relative;
* a failed send is retried with backoff (10 s, 30 s, 2 min, 5 min, then every
  15 min) until ``retry_max_hours`` after the alert, then ``expired``.

Messages are stored as facts (payload) and rendered per relative's language
when sent, so Hanako gets English and Taro Japanese from the same alert.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from typing import TYPE_CHECKING, Any, Self

from blocklist.outbox import (
    VOICE_CHANNEL,
    AlertKind,
    AlertRow,
    DeliveryRow,
    NewAlert,
    NewDelivery,
    Outbox,
    Urgency,
)  # fmt: skip
from screening import i18n
from screening.config import Config, RelativeConfig
from screening.core.clock import iso_utc, parse_iso_utc, utc_now
from screening.core.model import Action, Language
from screening.hub_client.settings import hub_call_url
from screening.message_alerts import digest_messages, message_fraud_facts, render_messages, when_text
from screening.notify import DeliveryResult, Level, Notifier, VoiceCaller, voice_result

if TYPE_CHECKING:
    from blocklist.store import Store
    from voice.pipeline import FraudEvent

__all__ = ["AlertService", "AlertWorker", "ChannelResult", "backoff", "render"]

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
BACKOFF_S = (10, 30, 120, 300, 900)  # then 900 s forever (until retry_max_hours)
SEND_POOL_SIZE = 8
_NOT_RATE_LIMITED = (AlertKind.FRAUD, AlertKind.TEST)
_LEVEL = {AlertKind.FRAUD: Level.FAILURE, AlertKind.REPEAT_BLOCK: Level.WARNING, AlertKind.HEALTH: Level.WARNING,
          AlertKind.DIGEST: Level.INFO, AlertKind.TEST: Level.INFO}  # fmt: skip


def backoff(attempts: int) -> timedelta:
    """Delay before the next try after ``attempts`` failed ones: quick at first (a blip), then patient."""
    return timedelta(seconds=BACKOFF_S[min(max(attempts, 1), len(BACKOFF_S)) - 1])


# ---- messages ------------------------------------------------------------------------

ALERTS_CATALOGUE = "alerts"  # screening/i18n/alerts.<language>.toml


def render(kind: AlertKind, payload: dict[str, Any], language: Language, tz: tzinfo | None,
           household: str | None = None) -> tuple[str, str]:  # fmt: skip
    """(title, body) of an alert in ``language``, from its stored facts."""
    texts = i18n.catalogue(ALERTS_CATALOGUE, language.value)
    # a fraud call that left a message has ended: its own words ("listen to the message"), same urgency
    name = "fraud_message" if kind is AlertKind.FRAUD and payload.get("message") else kind.value
    title, template = texts[f"{name}.title"], texts[f"{name}.body"]
    local = parse_iso_utc(payload["at"]).astimezone(tz)
    sep = texts["separator"]
    values = {
        **{k: v for k, v in payload.items() if isinstance(v, str | int | float)},
        "household": household or texts["household"],
        "time": f"{local:%H:%M}",
        "when": when_text(payload["at"], texts, tz),
        "phrases": sep.join(payload.get("phrases", [])) or "-",
        "categories": sep.join(texts.get(f"category.{c}", c.replace("_", " "))
                               for c in payload.get("categories", [])) or "-",
    }
    body = template.format_map(_Blank(values))
    if kind is AlertKind.DIGEST and payload.get("messages"):
        body += "\n" + "\n".join([texts["digest.messages"].format(count=len(payload["messages"])),
                                   *render_messages(payload["messages"], texts, tz)])
    if payload.get("url"):
        body += "\n" + texts["link"].format(url=payload["url"])
    if payload.get("detail"):
        body += "\n" + str(payload["detail"])
    return title, body


class _Blank(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "?"


# ---- service ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChannelResult:
    """One channel's outcome of ``test_alert`` (what ``mamoru alert test`` prints)."""

    relative: str
    channel: str  # masked
    ok: bool
    error: str | None


class AlertService:
    """Turns events into alerts in the outbox and sends them; see the module docstring.

    ``open()`` connects to the outbox (no I/O in the constructor); ``close()`` waits
    for sends in flight at most ``close_timeout_s``.
    """

    def __init__(
        self,
        store: Store,
        config: Config,
        notifier: Notifier,
        clock: Clock = utc_now,
        *,
        voice_caller: VoiceCaller | None = None,
        tz: tzinfo | None = None,
        household: str | None = None,
        close_timeout_s: float = 15.0,
    ) -> None:
        self._store = store
        self._config = config
        self._alerts = config.alerts
        self._notifier = notifier
        self._clock = clock
        self._voice_caller = voice_caller
        self._tz = tz  # None: the system's local time zone (quiet hours, digest, times in messages)
        self._household = household
        self._close_timeout_s = close_timeout_s
        self._outbox: Outbox | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._in_flight: set[Future[None]] = set()
        self._state = threading.Lock()
        self.wake = threading.Condition()  # notified when an alert is written or a send finishes
        self._generation = 0  # bumped with every notify, so a waiter never misses one

    # ---- lifecycle ------------------------------------------------------------------

    def open(self) -> AlertService:
        self._store.count_calls()  # the Store connects (and migrates) lazily; the outbox needs schema 3
        self._outbox = Outbox(self._store.path).open()
        self._pool = ThreadPoolExecutor(SEND_POOL_SIZE, thread_name_prefix="alert-send")
        return self

    def close(self) -> None:
        """Wait (bounded) for sends in flight, so their results are recorded, then disconnect."""
        with self._state:
            in_flight = set(self._in_flight)
        wait(in_flight, timeout=self._close_timeout_s)
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        if self._outbox is not None:
            self._outbox.close()
        self._outbox, self._pool = None, None

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def outbox(self) -> Outbox:
        if self._outbox is None:
            raise RuntimeError("AlertService is not open")
        return self._outbox

    def reconfigure(self, config: Config) -> None:
        """Relatives and [alerts] changed (the web settings page): used from the next alert on.

        Alerts already in the outbox keep their planned deliveries; their URLs are looked up
        by relative name at send time, so a changed address is used on the next retry.
        """
        with self._state:
            self._config, self._alerts = config, config.alerts

    # ---- triggers -------------------------------------------------------------------

    def on_fraud(self, event: FraudEvent, caller_label: str) -> AlertRow | None:
        """A call was just judged fraud: alert now (None if disabled or already alerted for this call)."""
        if not self._alerts.fraud or not self._config.relatives:
            return None
        flags = event.detection.flags
        payload = {
            "at": iso_utc(event.raised_at), "call_id": event.call_id, "caller": caller_label,
            "phrases": list(dict.fromkeys(f.matched for f in flags)),
            "categories": list(dict.fromkeys(f.category for f in flags)),
            "score": round(float(event.detection.score), 3), "audio_time_s": round(event.audio_time_s, 1),
            "excerpt": event.transcript_excerpt[-200:], "url": self._call_url(event.call_id),
        }  # fmt: skip
        return self._create(AlertKind.FRAUD, Urgency.URGENT, f"fraud:call:{event.call_id}", payload,
                            call_id=event.call_id, escalate=True)  # fmt: skip

    def on_message(self, call_id: int, heard: Sequence[tuple[str, str]] = ()) -> AlertRow | None:
        """A call ended with a message (or fraud was heard in one that did): urgent if it is judged fraud,
        once per call; other messages wait for the digest. ``heard``: (phrase, category) just flagged."""
        if not self._alerts.fraud or not self._config.relatives:
            return None
        facts = message_fraud_facts(self._store, call_id, self._config.line.home_region, self._call_url(call_id),
                                    heard)  # fmt: skip
        if facts is None:
            return None
        return self._create(AlertKind.FRAUD, Urgency.URGENT, f"fraud:message:{call_id}", facts, call_id=call_id,
                            escalate=True)  # fmt: skip

    def on_blocked_call(self, number_e164: str, when: datetime, caller_label: str | None = None) -> AlertRow | None:
        """After each BLOCK decision: alert once when the same number tried N times in M minutes."""
        count_needed, minutes = self._alerts.repeat_block_count, self._alerts.repeat_block_minutes
        if count_needed == 0 or not self._config.relatives:
            return None
        since = when - timedelta(minutes=minutes)
        count = self._blocked_calls_since(number_e164, since)
        prefix = f"repeat_block:{number_e164}:"
        if count < count_needed or self.outbox.exists_since(prefix, since):
            return None
        payload = {"at": iso_utc(when), "caller": caller_label or number_e164, "number": number_e164,
                   "count": count, "minutes": minutes}  # fmt: skip
        return self._create(AlertKind.REPEAT_BLOCK, Urgency.NORMAL, prefix + iso_utc(when), payload)

    def _blocked_calls_since(self, number_e164: str, since: datetime) -> int:
        """From the call log (newest first, stops at ``since``); a flood beyond 500 rows counts as 500."""
        floor, count = iso_utc(since), 0
        for call in self._store.recent_calls(limit=500):
            if call.started_at < floor:
                break
            if call.number_e164 == number_e164 and call.action is Action.BLOCK:
                count += 1
        return count

    def on_health(self, problem_key: str, message: str) -> AlertRow | None:
        """The appliance is unhealthy (``modem_lost``, ``disk_full``, ``model_missing`` …); once per problem per day."""
        if not self._alerts.health or not self._config.relatives:
            return None
        now = self._clock()
        day = now.astimezone(self._tz).date().isoformat()
        payload = {"at": iso_utc(now), "problem": problem_key, "message": message}
        return self._create(AlertKind.HEALTH, Urgency.NORMAL, f"health:{problem_key}:{day}", payload)

    def digest(self, now: datetime) -> AlertRow | None:
        """The daily summary of the last 24 h of calls; once per local day."""
        if not self._config.relatives:
            return None
        since = iso_utc(now - timedelta(hours=24))
        calls = [c for c in self._store.recent_calls(limit=1000) if c.started_at >= since]
        payload = {
            "at": iso_utc(now), "total": len(calls),
            "blocked": sum(c.action is Action.BLOCK for c in calls),
            "warned": sum(c.action is Action.WARN for c in calls),
            "fraud": sum(c.verdict is not None and c.verdict.value == "fraud" for c in calls),
            "messages": digest_messages(self._store, calls, self._config.line.home_region, self._call_url),
        }  # fmt: skip
        day = now.astimezone(self._tz).date().isoformat()
        return self._create(AlertKind.DIGEST, Urgency.NORMAL, f"digest:{day}", payload)

    def test_alert(self, to: str | None = None) -> list[ChannelResult]:
        """Send a test through every channel (of ``to``, or everyone) now; one attempt, no retries.

        Raises KeyError if ``to`` names no configured relative.
        """
        relatives = self._config.relatives
        if to is not None:
            relatives = tuple(r for r in relatives if r.name.casefold() == to.casefold())
            if not relatives:
                raise KeyError(to)
        now = self._clock()
        key = f"test:{iso_utc(now)}:{threading.get_ident()}:{id(object())}"
        alert = self._create(AlertKind.TEST, Urgency.URGENT, key, {"at": iso_utc(now)}, relatives=relatives,
                             wake=False)  # fmt: skip
        if alert is None:
            return []
        outcomes: list[tuple[DeliveryRow, DeliveryResult]] = []
        for delivery in self.outbox.deliveries_for(alert.id):
            self.outbox.mark_sending(delivery, now)  # a worker in this process must not pick it up too
            result = self._send(alert, delivery)
            self._record(alert, delivery, result, retry=False)
            outcomes.append((delivery, result))
        return [ChannelResult(d.relative, d.channel, r.ok, r.error) for d, r in outcomes]

    def acknowledge(self, alert_id: int, relative: str) -> bool:
        """``relative`` has seen the alert (web page, DTMF 1 on the voice call): stop escalating."""
        acked = self.outbox.acknowledge(alert_id, relative, self._clock())
        if acked:
            log.info("alert %d acknowledged by %s", alert_id, relative)
        return acked

    # ---- writing alerts ---------------------------------------------------------------

    def _create(self, kind: AlertKind, urgency: Urgency, key: str, payload: dict[str, Any], *,
                call_id: int | None = None, escalate: bool = False,
                relatives: Sequence[RelativeConfig] | None = None, wake: bool = True) -> AlertRow | None:  # fmt: skip
        now = self._clock()
        subject, body = render(kind, payload, self._config.voice.language, self._tz, self._household)
        deliveries = self._plan(kind, now, escalate, self._config.relatives if relatives is None else relatives)
        row = self.outbox.add(NewAlert(kind, urgency, key, subject, body, payload, call_id), deliveries, now)
        if row is None:
            log.debug("alert %s already exists", key)
            return None
        log.info("alert %d (%s, %s) queued for %d channel(s)", row.id, kind.value, urgency.value, len(deliveries))
        if wake:
            self._notify()
        return row

    def _plan(self, kind: AlertKind, now: datetime, escalate: bool,
              relatives: Sequence[RelativeConfig]) -> list[NewDelivery]:  # fmt: skip
        """One delivery per relative and channel; with escalation, relative #k waits k steps."""
        step_delay = timedelta(minutes=self._alerts.escalate_after_minutes)
        deliveries: list[NewDelivery] = []
        for step, relative in enumerate(relatives):
            at = now + step_delay * step if escalate else now
            step_no = step if escalate else 0
            for index, url in enumerate(relative.notify):
                deliveries.append(NewDelivery(relative.name, self._notifier.mask(url), index, step_no, at))
            if kind is AlertKind.FRAUD and relative.phone and self._alerts.voice_call and self._voice_caller:
                deliveries.append(NewDelivery(relative.name, f"tel:{relative.phone}", VOICE_CHANNEL, step_no, at))
        return deliveries

    def _call_url(self, call_id: int) -> str | None:
        # The hub's page reaches a relative anywhere; the unit's own page only inside the house.
        hub = self._config.hub
        if hub.url and hub.public_url and hub.unit_id:
            try:
                call_uid: str | None = self._store.get_call(call_id).call_uid
            except KeyError:  # spooled while the database is busy: the family's page instead
                call_uid = None
            return hub_call_url(hub.public_url, hub.unit_id, call_uid)
        base = self._alerts.web_base_url
        return f"{base}/calls/{call_id}" if base else None

    def _notify(self) -> None:
        with self.wake:
            self._generation += 1
            self.wake.notify_all()

    # ---- dispatching -------------------------------------------------------------------

    def run_pending(self, now: datetime | None = None, wait_s: float | None = None) -> int:
        """Send every delivery due at ``now``; returns how many were sent successfully.

        Sends run in parallel on the pool; this waits for them at most ``wait_s``
        (None: until they finish, each bounded by the notifier's deadline). A send
        still running afterwards records its own result when it ends.
        """
        now = now or self._clock()
        self.outbox.flush()
        self._maybe_digest(now)
        futures: list[Future[bool]] = []
        this_cycle: dict[str, set[int]] = {}  # relative -> alerts submitted now (not yet "sent" in the DB)
        for alert, delivery in self.outbox.due(now):
            if self._hold(alert, delivery, now, this_cycle.setdefault(delivery.relative, set())):
                continue
            this_cycle[delivery.relative].add(alert.id)
            self.outbox.mark_sending(delivery, now)
            futures.append(self._submit(alert, delivery))
        if not futures:
            return 0
        done, _ = wait(futures, timeout=wait_s)
        return sum(1 for f in done if not f.cancelled() and f.exception() is None and f.result())

    def _hold(self, alert: AlertRow, delivery: DeliveryRow, now: datetime, this_cycle: set[int]) -> bool:
        """True if this delivery must not go now (and it has been expired or postponed as needed)."""
        created = parse_iso_utc(alert.created_at)
        if now - created > timedelta(hours=self._alerts.retry_max_hours):
            self.outbox.mark_expired(delivery, f"not delivered within {self._alerts.retry_max_hours} h"
                                     + (f": {delivery.last_error}" if delivery.last_error else ""))  # fmt: skip
            return True
        if alert.urgency is Urgency.NORMAL and self._in_quiet_hours(now):
            return True  # stays due; goes out at the end of the quiet hours
        if alert.kind not in _NOT_RATE_LIMITED:
            until = self._rate_limited_until(alert, delivery, now, this_cycle)
            if until is not None:
                log.info("alert %d to %s held by the rate limit until %s", alert.id, delivery.relative, until)
                self.outbox.postpone(delivery, until)
                return True
        return False

    def _in_quiet_hours(self, now: datetime) -> bool:
        quiet = self._alerts.quiet_hours
        return quiet is not None and quiet.contains(now.astimezone(self._tz).time())

    def _rate_limited_until(self, alert: AlertRow, delivery: DeliveryRow, now: datetime,
                            this_cycle: set[int]) -> datetime | None:  # fmt: skip
        """When the relative's hourly budget frees up, or None if this alert may go now.

        Counts alerts, not channels: the second channel of an alert already sent is free.
        """
        limit = self._alerts.max_per_hour
        hour_ago = now - timedelta(hours=1)
        limited = [k for k in AlertKind if k not in _NOT_RATE_LIMITED]
        sent = self.outbox.sent_since(delivery.relative, hour_ago, limited)
        if alert.id in this_cycle or len(sent) + len(this_cycle) < limit:
            return None
        if any(d.relative == delivery.relative and d.sent_at for d in self.outbox.deliveries_for(alert.id)):
            return None
        if len(sent) < limit:  # the budget went to alerts being sent right now
            return now + timedelta(minutes=1)
        return parse_iso_utc(sent[-limit]) + timedelta(hours=1, seconds=1)

    def _submit(self, alert: AlertRow, delivery: DeliveryRow) -> Future[bool]:
        if self._pool is None:
            raise RuntimeError("AlertService is not open")

        def job() -> bool:
            result = self._send(alert, delivery)
            self._record(alert, delivery, result, retry=True)
            return result.ok

        future = self._pool.submit(job)
        with self._state:
            self._in_flight.add(future)  # type: ignore[arg-type]
        future.add_done_callback(self._done)
        return future

    def _done(self, future: Future[Any]) -> None:
        with self._state:
            self._in_flight.discard(future)
        self._notify()

    def _send(self, alert: AlertRow, delivery: DeliveryRow) -> DeliveryResult:
        """One attempt over one channel, rendered in the relative's language."""
        relative = next((r for r in self._config.relatives if r.name == delivery.relative), None)
        if relative is None:
            return DeliveryResult(False, "relative no longer in the config")
        language = relative.language or self._config.voice.language
        title, body = render(alert.kind, alert.payload, language, self._tz, self._household)
        if delivery.channel_index == VOICE_CHANNEL:
            if self._voice_caller is None or not relative.phone:
                return DeliveryResult(False, "no voice caller / phone configured")
            return voice_result(self._voice_caller.call(relative.phone, body, language))
        if delivery.channel_index >= len(relative.notify):
            return DeliveryResult(False, "channel no longer in the config")
        try:
            return self._notifier.send(relative.notify[delivery.channel_index], title, body, _LEVEL[alert.kind])
        except Exception as exc:
            log.exception("notifier failed on %s", delivery.channel)
            return DeliveryResult(False, f"{type(exc).__name__}")

    def _record(self, alert: AlertRow, delivery: DeliveryRow, result: DeliveryResult, *, retry: bool) -> None:
        now = self._clock()
        attempts = delivery.attempts + 1
        if result.ok:
            self.outbox.mark_sent(delivery, now)
            log.info("alert %d (%s) delivered to %s via %s", alert.id, alert.kind.value, delivery.relative,
                     delivery.channel)  # fmt: skip
            if result.acknowledged:
                self.acknowledge(alert.id, delivery.relative)
            return
        error = result.error or "failed"
        retry_at = now + backoff(attempts)
        deadline = parse_iso_utc(alert.created_at) + timedelta(hours=self._alerts.retry_max_hours)
        if not retry or retry_at > deadline:
            self.outbox.mark_expired(delivery, error)
            log.error("alert %d to %s via %s given up: %s", alert.id, delivery.relative, delivery.channel, error)
            return
        self.outbox.mark_failed(delivery, error, retry_at)
        log.warning("alert %d to %s via %s failed (attempt %d, retry at %s): %s", alert.id, delivery.relative,
                    delivery.channel, attempts, iso_utc(retry_at), error)  # fmt: skip

    def _maybe_digest(self, now: datetime) -> None:
        at = self._alerts.daily_digest
        local = now.astimezone(self._tz)
        if at is not None and local.time() >= at and not self.outbox.exists(f"digest:{local.date().isoformat()}"):
            self.digest(now)

    def seconds_until_due(self, now: datetime) -> float | None:
        """How long the worker may sleep before something becomes due (None: nothing pending)."""
        nxt = self.outbox.next_due_at()
        return None if nxt is None else max(0.0, (parse_iso_utc(nxt) - now).total_seconds())

    def now(self) -> datetime:
        return self._clock()

    def changes(self) -> int:
        """A counter bumped by every wake-up: wait for it to move instead of sleeping blind."""
        with self.wake:
            return self._generation


class AlertWorker:
    """Runs ``run_pending`` on its own thread: at once on a new alert, otherwise every ``poll_s``."""

    def __init__(self, service: AlertService, poll_s: float = 2.0) -> None:
        self._service = service
        self._poll_s = poll_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="alert-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop and join; False if the thread did not end within ``timeout``."""
        self._stop.set()
        with self._service.wake:
            self._service.wake.notify_all()
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        while not self._stop.is_set():
            seen = self._service.changes()
            try:
                self._service.run_pending(wait_s=0)
                sleep = self._poll_s
                due_in = self._service.seconds_until_due(self._service.now())
                if due_in is not None:
                    sleep = min(sleep, max(due_in, 0.05))
            except Exception:
                log.exception("alert dispatcher cycle failed")
                sleep = self._poll_s
            self._wait(seen, sleep)

    def _wait(self, seen: int, timeout: float) -> None:
        """Sleep until stopped, woken (a new alert, a finished send) or ``timeout``."""

        def woken() -> bool:
            return self._stop.is_set() or self._service.changes() != seen

        with self._service.wake:
            self._service.wake.wait_for(woken, timeout=timeout)
