"""The daemon side of signed number feeds: ``FeedTimer`` checks every feed on its own thread.

``blocklist.feeds`` does one check of one feed; this module runs those checks in the
background, writes a verified list only while the line is idle, and keeps the call
loop on its snapshot of the lists while the new one is written and rebuilt.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from blocklist.feed_breadth import BreadthLimits
from blocklist.feeds import DEFAULT_TIMEOUT_S, FeedUpdate, Refusal, update_one
from blocklist.lists import NumberLists
from blocklist.store import Store
from screening.core.clock import utc_now

__all__ = ["FeedTimer"]

log = logging.getLogger("blocklist.feeds")  # the name the feed updates have always logged under


class _Stopping(BaseException):
    """The daemon is stopping: abandon the round (BaseException, so no refusal is recorded)."""


class FeedTimer:
    """Checks every feed every ``interval_s`` on its own thread, with its own Store connection.

    The call loop never waits for it. Network, verification and parsing happen
    here; a verified list is written only once ``line_idle()`` says no call is
    being screened or handled (a big list's write transaction would hold up a
    call's own writes). From just before that write until the new snapshot is
    built here and handed to ``on_lists(lists)``, ``hold_lists(seconds)`` keeps
    the call loop on the snapshot it has, so it never rebuilds a million-entry
    index while a phone rings.
    """

    def __init__(self, db_path: Path, feeds_dir: Path, *, interval_s: float, max_age_days: int,
                 line_idle: Callable[[], bool] | None = None, on_lists: Callable[[NumberLists], None] | None = None,
                 hold_lists: Callable[[float], None] | None = None, first_after_s: float = 60.0,
                 timeout_s: float = DEFAULT_TIMEOUT_S, idle_wait_s: float = 1800.0, hold_s: float = 900.0,
                 busy_timeout_s: float = 10.0, limits: BreadthLimits | None = None,
                 on_refused: Callable[[FeedUpdate], None] | None = None) -> None:
        self.db_path = Path(db_path)
        self.feeds_dir = Path(feeds_dir)
        self.interval_s = interval_s
        self.max_age_days = max_age_days
        self.line_idle = line_idle
        self.on_lists = on_lists
        self.hold_lists = hold_lists  # the call loop keeps its snapshot while we write and rebuild it
        self.hold_s = hold_s  # bound on that: a stuck round must not freeze the daemon's lists
        self.first_after_s = first_after_s
        self.timeout_s = timeout_s
        self.idle_wait_s = idle_wait_s  # a call longer than this does not postpone the check forever
        self.busy_timeout_s = busy_timeout_s
        self.limits = limits
        self.on_refused = on_refused  # a list too broad to apply is someone's business: the runner alerts
        self.checks = 0  # completed rounds (for tests and status)
        self._stop = threading.Event()
        self._wake = threading.Event()  # set by stop() and check_now(): the wait between rounds ends early
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="feed-updates", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the thread to end; a download in progress ends by its own timeout (daemon thread)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def check_now(self) -> None:
        """Run a round at once instead of at the next interval (the hub's "check feeds now")."""
        self._wake.set()

    def _run(self) -> None:
        store = Store(self.db_path, recover_calls=False, busy_timeout=self.busy_timeout_s)
        delay = self.first_after_s
        try:
            while True:
                self._wake.wait(delay)
                if self._stop.is_set():
                    break
                self._wake.clear()
                delay = self.interval_s
                try:
                    self.run_once(store)
                except Exception:  # noqa: BLE001 -- never let one bad round end the updates
                    log.exception("feed updates: round failed; next try in %.0f s", delay)
        except _Stopping:
            log.info("feed updates: stopped before writing a verified list; it is applied on the next start")
        finally:
            store.close()

    def run_once(self, store: Store) -> list[FeedUpdate]:
        results = []
        for row in store.feeds():
            before = store.lists_generation()
            try:
                result = update_one(store, self.feeds_dir, row["name"], max_age_days=self.max_age_days,
                                     timeout_s=self.timeout_s, before_write=self._before_write,
                                     limits=self.limits)  # fmt: skip
                results.append(result)
                if self.on_refused is not None and result.refusal is Refusal.TOO_BROAD:
                    self.on_refused(result)
                if self.on_lists is not None and store.lists_generation() != before:
                    self.on_lists(store.load_lists(utc_now()))  # a million entries take seconds: not on the call loop
            finally:
                if self.hold_lists is not None:
                    self.hold_lists(0)  # offered or not: the call loop may reload again
        self.checks += 1
        return results

    def _before_write(self) -> None:
        """Verified and about to write: wait for an idle line, then keep the call loop on its snapshot."""
        self._wait_idle()
        if self._stop.is_set():
            raise _Stopping
        if self.hold_lists is not None:
            self.hold_lists(self.hold_s)

    def _wait_idle(self) -> None:
        if self.line_idle is None:
            return
        deadline = time.monotonic() + self.idle_wait_s
        while not self.line_idle() and time.monotonic() < deadline and not self._stop.wait(0.5):
            pass
