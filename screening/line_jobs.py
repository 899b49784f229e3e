"""Work that needs the telephone line, run on the call loop's thread between calls.

A single analog line can do one thing at a time, and the call loop owns it. Other
threads (the alert worker phoning a relative) hand their job over here and wait
for the result; the loop runs it the next time it is idle, which on a fraud call
is right after that call has ended.
"""

from __future__ import annotations

import logging
import queue
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

from screening.core.model import Language

log = logging.getLogger(__name__)

DEFAULT_JOB_TIMEOUT_S = 900.0  # a fraud call may last long; the alert waits for the line


@dataclass(slots=True)
class LineJobs:
    # Wraps each job, e.g. Watchdog.busy(): a phone call to a relative takes minutes with no tick.
    guard: Callable[[], AbstractContextManager[Any]] | None = None
    _queue: queue.Queue[tuple[Callable[[], Any], Future[Any]]] = field(default_factory=queue.Queue)

    def submit(self, job: Callable[[], Any], timeout: float = DEFAULT_JOB_TIMEOUT_S) -> Any:
        """Run ``job`` on the call loop's thread and return its result; TimeoutError if the line never freed."""
        future: Future[Any] = Future()
        self._queue.put((job, future))
        try:
            return future.result(timeout)
        except FutureTimeout:
            future.cancel()
            raise TimeoutError(f"the line was not free within {timeout:.0f} s") from None

    def run_pending(self) -> int:
        """Called by the call loop when idle. Runs every queued job; returns how many ran."""
        ran = 0
        while True:
            try:
                job, future = self._queue.get_nowait()
            except queue.Empty:
                return ran
            if not future.set_running_or_notify_cancel():
                continue  # the submitter gave up waiting
            try:
                with self.guard() if self.guard is not None else nullcontext():
                    result = job()
                future.set_result(result)
            except Exception as exc:  # noqa: BLE001 -- handed back to the submitter
                log.exception("line job failed")
                future.set_exception(exc)
            ran += 1


@dataclass(slots=True)
class QueuedVoiceCaller:
    """The alert service's VoiceCaller: the phone call itself runs on the call loop's thread."""

    jobs: LineJobs
    alerter: Any  # screening.voice_call.VoiceCallAlerter
    timeout_s: float = DEFAULT_JOB_TIMEOUT_S

    def call(self, number: str, message_text: str, language: Language) -> Any:
        return self.jobs.submit(lambda: self.alerter.call(number, message_text, language), self.timeout_s)
