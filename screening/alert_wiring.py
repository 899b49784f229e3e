"""Connect the alert service to the daemon: fraud events, repeat blocked callers, line faults.

Kept apart from ``runner.py`` so the composition root stays a list of parts.
Phone-call alerts (``screening.voice_call``) run on the call loop's thread
between calls (``screening.line_jobs``): a single analog line does one thing at a time.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

from blocklist.feeds import FeedUpdate
from blocklist.store import Store
from screening.alerts import AlertService, AlertWorker
from screening.config import Config
from screening.core.clock import region_zone
from screening.core.line import LineAdapter
from screening.core.model import Action, CallerID, Decision, EventKind, Prompt
from screening.core.numbers import national_format
from screening.events import (
    CallScreened,
    EventBus,
    FeedRefused,
    FraudHeard,
    HandsetStale,
    LineFault,
    ModelMissing,
    StoreDamaged,
)
from screening.line_jobs import LineJobs, QueuedVoiceCaller
from screening.notify import AppriseNotifier
from screening.relative_join import LiveJoinCaller
from voice.pipeline import FraudEvent

log = logging.getLogger(__name__)

WORKER_STOP_TIMEOUT_S = 5.0
FINAL_FLUSH_S = 10.0
DISK_MIN_FREE_BYTES = 200 * 2**20
DISK_MIN_FREE_FRACTION = 0.05


@dataclass(slots=True)
class RunningAlerts:
    service: AlertService  # wakes its worker itself whenever it queues an alert
    worker: AlertWorker
    store: Store
    home_region: str
    joiner: LiveJoinCaller | None = None  # [alerts] relative_can_join on a SIP line

    def label(self, caller: CallerID | None) -> str:
        if caller is None:
            return "?"
        if caller.number_e164:
            return national_format(caller.number_e164, self.home_region)
        return f"<{caller.reason.name.lower()}>" if caller.reason else (caller.raw_number or "<no caller ID>")

    def has_message(self, call_id: int) -> bool:
        return call_id in self.store.calls_with_event(EventKind.MESSAGE, [call_id])

    def fraud_handler(self):
        def on_fraud(event: FraudEvent) -> None:
            if self.has_message(event.call_id):  # heard in a message (transcribed after the caller hung up)
                heard = [(f.matched, f.category) for f in event.detection.flags]
                self.service.on_message(event.call_id, heard)
                return
            caller = None
            try:
                row = self.store.get_call(event.call_id)
                caller = CallerID(raw_number=row.raw_number, number_e164=row.number_e164)
            except KeyError:
                pass
            if self.joiner is not None:
                self.joiner.note_fraud(event.call_id)
            self.service.on_fraud(event, self.label(caller))

        return on_fraud

    def screened_handler(self):
        def on_screened(call_id: int, caller: CallerID, decision: Decision) -> None:
            if decision.action is Action.BLOCK and caller.number_e164:
                self.service.on_blocked_call(caller.number_e164, datetime.now(UTC), self.label(caller))
            elif self.has_message(call_id):
                self.service.on_message(call_id)  # urgent if the message is judged fraud already

        return on_screened

    def line_fault_handler(self):
        def on_fault(message: str) -> None:
            self.service.on_health("line_fault", f"the telephone line adapter stopped answering: {message}")

        return on_fault

    def handset_stale_handler(self):
        def on_stale(message: str) -> None:
            self.service.on_health("handset_stuck", f"受話器が上がったままになっています。電話機の受話器を確かめてください"
                                                    f"（{message}）")

        return on_stale

    def feed_refused_handler(self):
        def on_refused(update: FeedUpdate) -> None:
            # A feed that would block far too much is refused; someone should ask its issuer why.
            self.service.on_health(f"feed_too_broad:{update.name}",
                                   f"番号リスト「{update.name}」の更新は広すぎるため受け付けず、前のリストを使い続けます。"
                                   f"The number feed {update.name!r} was refused, the old list stays: {update.reason}")

        return on_refused

    def subscribe(self, bus: EventBus) -> Callable[[], None]:
        """Hear the daemon's events on ``bus``; returns the function that stops listening."""
        on_fraud, on_screened = self.fraud_handler(), self.screened_handler()
        on_fault, on_stale, on_refused = self.line_fault_handler(), self.handset_stale_handler(), self.feed_refused_handler()
        unsubscribers = [
            bus.subscribe(FraudHeard, lambda event: on_fraud(event.fraud)),
            bus.subscribe(CallScreened, lambda event: on_screened(event.call_id, event.caller, event.decision)),
            bus.subscribe(LineFault, lambda event: on_fault(event.message)),
            bus.subscribe(HandsetStale, lambda event: on_stale(event.message)),
            bus.subscribe(FeedRefused, lambda event: on_refused(event.update)),
            bus.subscribe(StoreDamaged, lambda event: self.service.on_health("store_damaged", event.message)),
            bus.subscribe(ModelMissing, lambda event: self.service.on_health("model_missing", event.message)),
        ]

        def unsubscribe() -> None:
            for stop_listening in unsubscribers:
                stop_listening()

        return unsubscribe

    def check_disk(self, path: Path) -> None:
        """Health alert when the data partition is nearly full (recordings and the database stop)."""
        try:
            usage = shutil.disk_usage(path)
        except OSError as exc:
            log.warning("cannot check free space on %s: %s", path, exc)
            return
        if usage.free < DISK_MIN_FREE_BYTES or usage.free / usage.total < DISK_MIN_FREE_FRACTION:
            self.service.on_health("disk_full", f"the data disk is nearly full ({usage.free // 2**20} MB free "
                                                f"of {usage.total // 2**20} MB at {path})")

    def stop(self) -> None:
        """Stop the worker, but first send what is due: an alert queued by the last call of a run
        should not wait for the next start (it would, safely, from the outbox)."""
        self.worker.stop(WORKER_STOP_TIMEOUT_S)
        try:
            self.service.run_pending(wait_s=FINAL_FLUSH_S)
        except Exception:  # noqa: BLE001 -- the outbox keeps it for the next start
            log.exception("final alert flush failed; pending alerts stay in the outbox")
        self.service.close()


def start_alerts(cfg: Config, store: Store, line: LineAdapter | None = None,
                 jobs: LineJobs | None = None) -> RunningAlerts | None:
    """None when no relative is configured: nothing to send, nothing to start.

    With a line and the call loop's job queue, relatives with a ``phone`` are also
    phoned (after the fraud call has ended: the loop runs the call between calls).
    """
    if not cfg.relatives:
        log.info("no relatives configured: alerts off")
        return None
    voice_caller = None
    if line is not None and jobs is not None and cfg.alerts.voice_call and any(r.phone for r in cfg.relatives):
        from screening.voice_call import DialingLine, VoiceCallAlerter
        from voice.speech import render_message

        voice_caller = QueuedVoiceCaller(jobs, VoiceCallAlerter(cast(DialingLine, line), render_message,
                                                                home_region=cfg.line.home_region))
    joiner = None
    if voice_caller is not None and cfg.alerts.relative_can_join and hasattr(line, "endpoint"):
        # SIP carries a second call: phone the relative during the fraud call, so they can join it.
        from voice.announcements import PromptLibrary

        joiner = LiveJoinCaller(line, voice_caller, render_message,
                                # in the household's language: the elderly person hears it
                                lambda _: PromptLibrary(cfg.voice.language).clip_for(Prompt.FAMILY_JOINED),
                                store, home_region=cfg.line.home_region)
    # The unit's zone (not the system's, which a Pi image leaves unset): times in messages, quiet hours.
    service = AlertService(store, cfg, AppriseNotifier(), voice_caller=joiner or voice_caller,
                           tz=region_zone(cfg.line.home_region)).open()
    worker = AlertWorker(service)
    worker.start()
    log.info("alerts on for %s", ", ".join(r.name for r in cfg.relatives))
    return RunningAlerts(service, worker, store, cfg.line.home_region, joiner)
