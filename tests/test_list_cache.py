"""screening.list_cache: a list edit never makes a call wait for the lists to be rebuilt.

``mamoru block add`` (another process) or the web page (another thread, its own store)
bumps the lists generation; the call path keeps screening with the snapshot it has
while the new one is built on a background thread with its own connection, then
swapped in. Only the very first load (no snapshot yet) is waited for.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from blocklist.lists import NumberLists
from blocklist.store import Store
from firmware.scenarios import CallScript
from screening.core.model import Action, ListEntry, ListKind, MatchKind
from screening.daemon import ListCache
from tests.support.daemon import ModemDaemonRig

WAIT_S = 10.0
NUMBER_A, NUMBER_B, NUMBER_C = "+81312340001", "+81312340002", "+81312340003"


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "mamoru.db"


@pytest.fixture
def daemon_store(db: Path) -> Iterator[Store]:
    with Store(db, busy_timeout=0.5) as store:
        yield store


def cli_add(db: Path, number: str) -> None:
    """What ``mamoru block add`` does: its own process, its own connection."""
    with Store(db, recover_calls=False) as cli:
        cli.add_entry(ListEntry(ListKind.BLOCK, MatchKind.EXACT, number))


def wait_for(cache: ListCache, number: str) -> NumberLists:
    assert cache.wait_built(WAIT_S), "the background rebuild never finished"
    lists = cache.current()
    assert lists.match_block(number) is not None
    return lists


def test_an_edit_is_swapped_in_the_background_and_the_call_path_keeps_its_snapshot(db: Path,
                                                                                    daemon_store: Store) -> None:
    cli_add(db, NUMBER_A)
    cache = ListCache(daemon_store, small_lists=0)  # as with a feed's million entries: never waited for
    first = cache.current()  # the first load is waited for: nothing to screen with before it
    assert first.match_block(NUMBER_A) is not None
    cli_add(db, NUMBER_B)
    during = cache.current()
    assert during is first, "the call path rebuilt the lists itself"
    assert during.match_block(NUMBER_B) is None
    after = wait_for(cache, NUMBER_B)
    assert after is not first and after.generation > first.generation


def test_a_household_sized_list_is_current_for_the_very_next_call(db: Path, daemon_store: Store) -> None:
    """Blocked from the web page a moment ago: the next call is refused (a short, bounded wait for
    the background rebuild, never a rebuild on the call's thread)."""
    cli_add(db, NUMBER_A)
    cache = ListCache(daemon_store)
    built_on: list[str] = []
    cache.on_build = lambda: built_on.append(threading.current_thread().name)
    first = cache.current()
    cli_add(db, NUMBER_B)
    assert cache.current().match_block(NUMBER_B) is not None
    assert built_on == ["lists-rebuild"] and cache.current() is not first


def test_the_idle_loop_starts_the_rebuild_before_any_call(db: Path, daemon_store: Store) -> None:
    cli_add(db, NUMBER_A)
    cache = ListCache(daemon_store, small_lists=0)
    first = cache.current()
    assert cache.refresh() is False  # nothing changed: no rebuild
    cli_add(db, NUMBER_B)
    assert cache.refresh() is True
    wait_for(cache, NUMBER_B)
    assert cache.current() is not first


def test_edits_during_a_rebuild_end_in_the_newest_snapshot(db: Path, daemon_store: Store) -> None:
    cache = ListCache(daemon_store)
    cache.current()
    cli_add(db, NUMBER_A)
    cache.refresh()
    cli_add(db, NUMBER_B)
    cli_add(db, NUMBER_C)
    for _ in range(3):  # each idle wake-up checks again; a rebuild in flight is not doubled
        assert cache.wait_built(WAIT_S)
        cache.refresh()
    lists = wait_for(cache, NUMBER_C)
    assert lists.match_block(NUMBER_A) and lists.match_block(NUMBER_B)
    assert lists.generation == daemon_store.lists_generation()


def test_the_rebuild_does_not_hold_the_call_paths_store(db: Path, daemon_store: Store) -> None:
    """The snapshot is read on its own connection: the call path's store stays free for call rows."""
    cache = ListCache(daemon_store)
    cache.current()
    cli_add(db, NUMBER_A)
    held: list[bool] = []

    def free() -> None:
        held.append(daemon_store._lock.acquire(blocking=False))
        if held[-1]:
            daemon_store._lock.release()

    cache.on_build = free
    cache.refresh()
    wait_for(cache, NUMBER_A)
    assert held == [True]


def test_many_loops_share_one_rebuild(db: Path, daemon_store: Store) -> None:
    cache = ListCache(daemon_store)
    cache.current()
    cli_add(db, NUMBER_A)
    started = []
    threads = [threading.Thread(target=lambda: started.append(cache.refresh())) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT_S)
    assert started.count(True) <= 1  # one build at a time (a second only if the first already ended)
    wait_for(cache, NUMBER_A)


def test_a_running_daemon_swaps_a_cli_edit_in_before_the_next_call_rings(tmp_path: Path) -> None:
    """The idle loop notices the edit and the snapshot is rebuilt while the line is quiet, so the
    very next call from that number is blocked — without the call ever rebuilding the lists."""
    with ModemDaemonRig(tmp_path) as rig:
        cache = rig.daemon.list_cache()
        deadline = time.monotonic() + WAIT_S
        while cache.snapshot.generation == 0 and time.monotonic() < deadline:
            time.sleep(0.05)  # the daemon's first load (the rig added two entries)
        cli_add(rig.store.path, "+81662223333")
        while cache.snapshot.match_block("+81662223333") is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert cache.snapshot.match_block("+81662223333") is not None, "the idle loop never swapped the edit in"
        rig.call(CallScript(nmbr="0662223333", hang_up_after_s=200))
        assert rig.wait_calls(1)[0].action is Action.BLOCK
