"""The call loop: line events in, one CallSession per offered call.

Runs in the main thread. The line adapter owns its device thread; this loop
only waits on ``next_event`` with a timeout, so a stop request (SIGTERM) is
honoured within a second even when the line is silent.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from blocklist.lists import NumberLists, parse_iso_utc
from blocklist.store import EventKind, Store
from screening.line import (
    CallOffered,
    HandsetOffHook,
    HandsetOnHook,
    LineAdapter,
    LineEvent,
    LineFault,
    LineRestored,
    Ring,
    RingingStopped,
)
from screening.line_jobs import LineJobs
from screening.model import Action, CallerID, Decision
from screening.session import Announcements, CallSession, SessionSettings
from screening.rules import Policy

log = logging.getLogger(__name__)

EVENT_WAIT_S = 0.5  # how often the loop wakes to check for a stop request


@dataclass(slots=True)
class ListCache:
    """The lists snapshot, reloaded only when the store says they changed."""

    store: Store
    _generation: int = -1
    _lists: NumberLists = field(default_factory=NumberLists.empty)
    _swap: threading.Lock = field(default_factory=threading.Lock)
    _held_until: float = 0.0  # monotonic; see hold()

    def current(self) -> NumberLists:
        if self._held_until and self._generation >= 0 and time.monotonic() < self._held_until:
            return self._lists  # a snapshot is being built on another thread: never rebuild it here
        try:
            generation = self.store.lists_generation()
            now = datetime.now(UTC)
            expiry = self._lists.next_expiry
            expired = expiry is not None and now >= parse_iso_utc(expiry)
            if generation != self._generation or expired:
                lists = self.store.load_lists(now)
                with self._swap:
                    if lists.generation >= self._generation:  # a newer one may have been offered meanwhile
                        self._lists, self._generation = lists, lists.generation
                log.info("loaded lists: %d entries (generation %d)", len(lists), lists.generation)
        except Exception:  # noqa: BLE001 -- a broken DB must not stop screening: keep the last snapshot
            log.exception("could not reload lists; screening with the previous snapshot")
        return self._lists

    def hold(self, seconds: float) -> None:
        """Keep the current snapshot for up to ``seconds`` (until ``offer``): another thread is about
        to change the lists and build their snapshot itself. 0 ends the hold."""
        self._held_until = time.monotonic() + seconds if seconds > 0 else 0.0

    def offer(self, lists: NumberLists) -> None:
        """A snapshot built on another thread (after a feed update): the call loop need not rebuild it."""
        with self._swap:
            self._held_until = 0.0
            if lists.generation >= self._generation:
                self._lists, self._generation = lists, lists.generation
                log.info("lists updated in the background: %d entries (generation %d)", len(lists),
                         lists.generation)


@dataclass(slots=True)
class Daemon:
    line: LineAdapter
    store: Store
    policy: Policy
    announcements: Announcements
    settings: SessionSettings = field(default_factory=SessionSettings)
    no_cid_ring: int = 2  # a call still without caller ID on this ring is screened as "no caller ID"
    on_screened: Callable[[int, CallerID, Decision], None] | None = None
    on_line_fault: Callable[[str], None] | None = None  # e.g. a health alert to the family
    on_line_restored: Callable[[str], None] | None = None
    on_tick: Callable[[], None] | None = None  # every loop wake-up (≤ 0.5 s apart): the systemd watchdog
    line_jobs: LineJobs | None = None  # e.g. phoning a relative: runs here, between calls
    housekeeping: Callable[[], None] | None = None  # e.g. recording retention; run between calls
    housekeeping_interval_s: float = 3600.0
    _lists: ListCache | None = None
    _in_call: bool = False  # read by other threads (feed updates wait for an idle line)
    _screened_this_ringing: bool = False
    _last_offered: CallerID | None = None  # to ignore a modem repeating the same caller-ID block
    _session_ended_at: float = 0.0  # monotonic; rings older than this were the screened call's
    calls_screened: int = 0

    def run(self, stop: threading.Event, max_calls: int | None = None) -> None:
        """Screen calls until ``stop`` is set (or ``max_calls`` were screened)."""
        self._cache().current()
        settings = self.settings if self.on_tick is None else replace(self.settings, tick=self.on_tick)
        session = CallSession(self.line, self.store, self.announcements, self.policy, settings)
        log.info("screening on line %s (home region %s)", self.line.name, self.policy.home_region)
        next_housekeeping = time.monotonic() + self.housekeeping_interval_s
        while not stop.is_set():
            if self.on_tick is not None:
                self.on_tick()  # a wedged loop stops these, and systemd restarts the daemon
            if self.housekeeping is not None and time.monotonic() >= next_housekeeping:
                next_housekeeping = time.monotonic() + self.housekeeping_interval_s
                self.housekeeping()
            if max_calls is not None and self.calls_screened >= max_calls:
                break
            try:
                event = self.line.next_event(EVENT_WAIT_S)
            except Exception:  # noqa: BLE001 -- never let one bad event end screening
                log.exception("line %s: reading events failed", self.line.name)
                time.sleep(EVENT_WAIT_S)
                continue
            if event is not None:
                self._handle(event, session)
            elif self.line_jobs is not None and not self._screened_this_ringing:
                self.line_jobs.run_pending()  # the line is idle: nothing rang since the last wait

    def line_idle(self) -> bool:
        """No call being screened or handled, and none ringing (safe to call from any thread)."""
        return not self._in_call and not self._screened_this_ringing

    def hold_lists(self, seconds: float) -> None:
        """The feed updater is about to write: screen with the current snapshot until it offers the next."""
        self._cache().hold(seconds)

    def offer_lists(self, lists: NumberLists) -> None:
        """Swap in a lists snapshot built elsewhere (the feed updater's thread); any thread."""
        self._cache().offer(lists)

    def _cache(self) -> ListCache:
        if self._lists is None:
            self._lists = ListCache(self.store)
        return self._lists

    def _handle(self, event: LineEvent, session: CallSession) -> None:
        match event:
            case CallOffered(caller=caller):
                # A caller-ID block is sent once per call, so a new block is a new call, even
                # if the previous (allowed) call's ringing has not timed out yet.
                if self._screened_this_ringing and caller == self._last_offered:
                    log.debug("duplicate caller ID for a call already screened: %s", caller)
                    return
                if not caller.has_number and caller.reason is None:
                    # A block with neither number nor reason (line noise, a partial block) is not
                    # evidence of a call; a real one without caller ID is screened by ring count.
                    log.warning("caller-ID block without number or reason ignored: %r", caller.raw_lines)
                    return
                self._last_offered = caller
                self._screen(session, caller)
            case Ring(count=count, at=at):
                if at <= self._session_ended_at:
                    return  # queued while we were on the call it belonged to
                if count >= self.no_cid_ring and not self._screened_this_ringing:
                    log.info("ring %d and still no caller ID: screening as no caller ID", count)
                    self._screen(session, CallerID())
            case RingingStopped():
                self._screened_this_ringing = False
                self._last_offered = None
            case HandsetOffHook():
                self.store.add_event(None, EventKind.HANDSET, state="off_hook")
            case HandsetOnHook():
                self.store.add_event(None, EventKind.HANDSET, state="on_hook")
            case LineFault(message=message):
                log.error("line %s fault: %s", self.line.name, message)
                self.store.add_event(None, EventKind.LINE_FAULT, message=message)
                if self.on_line_fault is not None:
                    self.on_line_fault(message)
            case LineRestored(message=message):
                log.info("line %s restored: %s", self.line.name, message)
                self.store.add_event(None, EventKind.LINE_RESTORED, message=message)
                if self.on_line_restored is not None:
                    self.on_line_restored(message)
            case _:
                log.debug("line event ignored: %r", event)

    def _screen(self, session: CallSession, caller: CallerID) -> None:
        assert self._lists is not None
        self._screened_this_ringing = True
        self._in_call = True
        try:
            call_id, decision = session.screen(caller, self._lists.current())
        finally:
            self._in_call = False
        self._session_ended_at = time.monotonic()
        self.calls_screened += 1
        if decision.action is not Action.ALLOW:
            # We answered and hung up: the next RING belongs to a new call.
            self._screened_this_ringing = False
        if self.on_screened is not None:
            self.on_screened(call_id, caller, decision)
