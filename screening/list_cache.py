"""The lists snapshot the call path screens with, rebuilt off the call path.

A list edit (``mamoru block add`` in another process, the web page, a feed) bumps
the store's lists generation. Rebuilding the snapshot of a million entries takes
seconds (4.76 s for 1.39 M on a Pi, the phone rang twice), so the call path never
does it: ``current()`` returns the snapshot it has, and when the generation moved
(or the earliest expiry passed) a single background thread reads the lists on its
*own* connection — the call path's store, and its lock, stay free for call rows —
and swaps the new snapshot in. The daemon's idle loop calls ``refresh()`` every
wake-up, so the swap is usually done before the next call rings. Only the very
first load, when there is no snapshot to screen with, is waited for — and, for a
household-sized list, a rebuild already under way, for at most 0.2 s (see ``current``).

A feed update builds its snapshot on its own thread too and ``offer``s it; while it
writes, ``hold`` keeps this cache from starting a rebuild of its own.
"""

from __future__ import annotations

import gc
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

from blocklist.lists import NumberLists
from blocklist.store import Store
from screening.core.clock import parse_iso_utc

__all__ = ["FIRST_LOAD_WAIT_S", "SMALL_LISTS", "SMALL_LISTS_WAIT_S", "ListCache"]

log = logging.getLogger(__name__)

FIRST_LOAD_WAIT_S = 120.0  # a million-entry feed takes seconds to load on a Pi
SMALL_LISTS = 20_000  # built in ~80 ms on the 2-core x86 test machine, ~250 ms on a Pi 4
SMALL_LISTS_WAIT_S = 0.2  # the most a call waits for such a rebuild (then: the previous snapshot)
_BUILD_SWITCH_INTERVAL_S = 0.001
_BUILDER_BUSY_TIMEOUT_S = 10.0  # the builder's reads wait this long for a writer; no call waits on it


@dataclass(slots=True)
class ListCache:
    """The lists snapshot, swapped when the store says they changed; shared by a line's call loops."""

    store: Store
    small_lists: int = SMALL_LISTS  # up to this many entries, a call waits (bounded) for a rebuild under way
    on_build: Callable[[], None] | None = None  # called on the builder thread as it starts (tests)
    _generation: int = -1
    _lists: NumberLists = field(default_factory=NumberLists.empty)
    _swap: threading.Lock = field(default_factory=threading.Lock)
    _held_until: float = 0.0  # monotonic; see hold()
    _loading: threading.Lock = field(default_factory=threading.Lock)  # the first, waited-for load
    _builder: threading.Thread | None = None

    def current(self) -> NumberLists:
        """The snapshot to screen with now. Never rebuilds it on this thread, except the first time.

        A household's own lists (up to ``small_lists`` entries) rebuild in milliseconds, so a call
        that finds a rebuild under way waits for it, at most ``SMALL_LISTS_WAIT_S``: the number
        the family blocked a moment ago is refused on the very next call. Bigger lists (a feed)
        are never waited for.
        """
        if self._generation < 0:
            return self._first_load()
        snapshot = self._lists
        started = self.refresh()
        if len(snapshot) <= self.small_lists and (started or self.rebuilding):
            if self.wait_built(SMALL_LISTS_WAIT_S):
                return self._lists
        return snapshot

    @property
    def rebuilding(self) -> bool:
        builder = self._builder
        return builder is not None and builder.is_alive()

    @property
    def snapshot(self) -> NumberLists:
        """The snapshot as it is now, without checking for changes (status, tests)."""
        return self._lists

    def refresh(self) -> bool:
        """Start a background rebuild if the lists changed or an entry expired. True if one started.

        Cheap (one indexed read of the generation): the idle loop calls it on every wake-up.
        """
        if self._generation < 0 or (self._held_until and time.monotonic() < self._held_until):
            return False
        try:
            generation = self.store.lists_generation()
        except Exception:  # noqa: BLE001 -- a broken DB must not stop screening: keep the last snapshot
            log.exception("could not check the lists generation; screening with the previous snapshot")
            return False
        expiry = self._lists.next_expiry
        expired = expiry is not None and datetime.now(UTC) >= parse_iso_utc(expiry)
        if generation == self._generation and not expired:
            return False
        with self._swap:
            if self._builder is not None and self._builder.is_alive():
                return False  # the next refresh after it ends checks again
            self._builder = threading.Thread(target=self._build, name="lists-rebuild", daemon=True)
            self._builder.start()
        return True

    def wait_built(self, timeout: float) -> bool:
        """Wait for a background rebuild in progress (benchmarks, tests). True when none is running."""
        builder = self._builder
        if builder is None:
            return True
        builder.join(timeout)
        return not builder.is_alive()

    def hold(self, seconds: float) -> None:
        """Keep the current snapshot for up to ``seconds`` (until ``offer``): another thread is about
        to change the lists and build their snapshot itself. 0 ends the hold."""
        self._held_until = time.monotonic() + seconds if seconds > 0 else 0.0

    def offer(self, lists: NumberLists) -> None:
        """A snapshot built on another thread (after a feed update): no rebuild needed here."""
        with self._swap:
            self._held_until = 0.0
        if self._take(lists):
            log.info("lists updated in the background: %d entries (generation %d)", len(lists), lists.generation)

    # ------------------------------------------------------------------ internals

    def _first_load(self) -> NumberLists:
        # Another call loop may be loading it: wait for that one rather than load twice.
        if not self._loading.acquire(timeout=FIRST_LOAD_WAIT_S):
            return self._lists
        try:
            if self._generation < 0:
                lists = self.store.load_lists(datetime.now(UTC))
                self._take(lists)
                log.info("loaded lists: %d entries (generation %d)", len(lists), lists.generation)
        except Exception:  # noqa: BLE001 -- a broken DB must not stop screening: screen with no lists
            log.exception("could not load lists; screening without them until they can be read")
        finally:
            self._loading.release()
        return self._lists

    def _build(self) -> None:
        if self.on_build is not None:
            self.on_build()
        started = time.monotonic()
        # Its own connection: the call path's Store holds one lock for everything it does.
        reader = Store(self.store.path, recover_calls=False, busy_timeout=_BUILDER_BUSY_TIMEOUT_S)
        try:
            with _yielding_build():
                lists = reader.load_lists(datetime.now(UTC))
        except Exception:  # noqa: BLE001 -- keep the last snapshot; the next refresh tries again
            log.exception("could not rebuild the lists; screening with the previous snapshot")
            return
        finally:
            reader.close()
        if self._take(lists):
            log.info("lists rebuilt in the background in %.2f s: %d entries (generation %d)",
                     time.monotonic() - started, len(lists), lists.generation)  # fmt: skip

    def _take(self, lists: NumberLists) -> bool:
        with self._swap:
            if lists.generation < self._generation:
                return False  # a newer one was offered meanwhile
            self._lists, self._generation = lists, lists.generation
            return True


@contextmanager
def _yielding_build() -> Iterator[None]:
    """While a million entries are built on this thread, keep out of the call threads' way.

    No cyclic GC: each full collection would walk the old and the new snapshot (hundreds
    of ms) and stop every thread with it; the entries hold no cycles and reference
    counting still frees everything. A 1 ms GIL switch interval instead of 5 ms: a call
    thread waiting on its SQLite writes gets the interpreter back sooner.
    """
    was_enabled, interval = gc.isenabled(), sys.getswitchinterval()
    gc.disable()
    sys.setswitchinterval(min(interval, _BUILD_SWITCH_INTERVAL_S))
    try:
        yield
    finally:
        sys.setswitchinterval(interval)
        if was_enabled:
            gc.enable()
