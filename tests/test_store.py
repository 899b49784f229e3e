"""blocklist.store: schema, call lifecycle, lists, and not losing records when SQLite says no."""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from blocklist.store import Store
from blocklist.store.rows import StoreError
from blocklist.store.schema import MIGRATIONS
from screening.core.model import (
    Action,
    CallerID,
    CallState,
    Category,
    Decision,
    EventKind,
    ListEntry,
    ListKind,
    MatchKind,
    Prompt,
    Reason,
)

CALLER = CallerID(raw_number="0312345678", number_e164="+81312345678", name="TANAKA", date="0601", time="1002")
WARN = Decision(Action.WARN, "unknown", "Not in the family list.", Category.DOMESTIC, Prompt.WARNING)


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime(2024, 6, 1, 1, 2, 3, 456789, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw: float) -> None:
        self.now += timedelta(**kw)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "mamoru.db"


def make_store(path: Path, clock: FakeClock, **kw: object) -> Store:
    kw.setdefault("busy_timeout", 0.05)
    kw.setdefault("retry_interval", 0.0)
    return Store(path, clock=clock, **kw)  # type: ignore[arg-type]


@pytest.fixture
def store(db_path: Path, clock: FakeClock) -> Iterator[Store]:
    with make_store(db_path, clock) as s:
        yield s


def user_version(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])


# --------------------------------------------------------------------------- schema


def test_constructor_does_no_io(tmp_path: Path) -> None:
    Store(tmp_path / "nowhere" / "x.db")
    assert list(tmp_path.iterdir()) == []


def test_migrates_empty_database_and_reopens_idempotently(db_path: Path, clock: FakeClock) -> None:
    with make_store(db_path, clock) as s:
        call_id = s.begin_call("line1", CALLER)
    assert user_version(db_path) == len(MIGRATIONS)
    with sqlite3.connect(db_path) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"calls", "events", "list_entries", "meta"} <= tables
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with make_store(db_path, clock) as s:
        assert s.get_call(call_id).raw_number == "0312345678"
        assert s.count_calls() == 1
    assert user_version(db_path) == len(MIGRATIONS)


def test_migrations_are_safe_to_rerun(db_path: Path, clock: FakeClock) -> None:
    """A migration interrupted after its DDL but before user_version moved is simply redone."""
    with make_store(db_path, clock) as s:
        s.add_entry(ListEntry(ListKind.BLOCK, MatchKind.EXACT, "+81312345678"))
    with sqlite3.connect(db_path) as conn:
        conn.execute("PRAGMA user_version = 0")
    with make_store(db_path, clock) as s:
        assert len(s.list_entries(ListKind.BLOCK)) == 1
        assert s.lists_generation() == 1
    assert user_version(db_path) == len(MIGRATIONS)


def test_refuses_database_from_newer_version(db_path: Path, clock: FakeClock) -> None:
    with sqlite3.connect(db_path) as conn:
        conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    with pytest.raises(StoreError, match="schema version"):
        make_store(db_path, clock).open()


# --------------------------------------------------------------------------- calls


def test_call_lifecycle(store: Store, clock: FakeClock) -> None:
    call_id = store.begin_call("line1", CALLER)
    row = store.get_call(call_id)
    assert call_id > 0
    assert row.state is CallState.OFFERED
    assert row.started_at == "2024-06-01T01:02:03.456Z"
    assert (row.line, row.number_e164, row.name, row.cid_date, row.cid_time) == (
        "line1", "+81312345678", "TANAKA", "0601", "1002",
    )  # fmt: skip
    assert row.action is None and row.ended_at is None

    store.record_decision(call_id, WARN)
    row = store.get_call(call_id)
    assert row.state is CallState.DECIDED
    assert (row.action, row.category, row.prompt, row.rule) == (
        Action.WARN, Category.DOMESTIC, Prompt.WARNING, "unknown",
    )  # fmt: skip

    store.set_state(call_id, CallState.ACTING)
    assert store.get_call(call_id).state is CallState.ACTING
    clock.advance(seconds=20)
    store.finish_call(call_id, "caller_hung_up")
    row = store.get_call(call_id)
    assert (row.state, row.end_reason, row.ended_at, row.error) == (
        CallState.COMPLETED, "caller_hung_up", "2024-06-01T01:02:23.456Z", None,
    )  # fmt: skip


def test_withheld_call_and_failure(store: Store) -> None:
    call_id = store.begin_call("line1", CallerID(reason=Reason.WITHHELD), started_at=datetime(2024, 1, 1, 9))
    store.finish_call(call_id, "modem_error", error="no carrier")
    row = store.get_call(call_id)
    assert row.reason_code == "P" and row.raw_number is None
    assert row.started_at == "2024-01-01T09:00:00.000Z"  # naive is taken as UTC
    assert row.state is CallState.FAILED and row.error == "no carrier"


def test_unknown_call_ids(store: Store) -> None:
    with pytest.raises(KeyError):
        store.get_call(999)
    with pytest.raises(ValueError, match="unknown call id"):
        store.set_state(-42, CallState.ACTING)


def test_recent_calls_and_count(store: Store) -> None:
    ids = [store.begin_call("line1", CallerID(raw_number=f"031234567{i}")) for i in range(5)]
    assert store.count_calls() == 5
    assert [c.id for c in store.recent_calls()] == ids[::-1]
    assert [c.id for c in store.recent_calls(limit=2, offset=1)] == [ids[3], ids[2]]


def test_events_in_order_with_detail(store: Store) -> None:
    call_id = store.begin_call("line1", CALLER)
    store.add_event(call_id, EventKind.OFFERED, raw=["RING", "NMBR=0312345678"])
    store.add_event(call_id, EventKind.DTMF, digit="1", at_ms=1234)
    store.add_event(call_id, EventKind.ENDED, when=datetime(2024, 1, 1, tzinfo=UTC))  # non-JSON -> str
    store.add_event(None, EventKind.LINE_FAULT, detail="no dial tone")
    events = store.events_for(call_id)
    assert [e.kind for e in events] == [EventKind.OFFERED, EventKind.DTMF, EventKind.ENDED]
    assert events[0].detail == {"raw": ["RING", "NMBR=0312345678"]}
    assert events[1].detail == {"at_ms": 1234, "digit": "1"}
    assert events[2].detail == {"when": "2024-01-01 00:00:00+00:00"}
    assert all(e.call_id == call_id for e in events)
    assert [e.id for e in events] == sorted(e.id for e in events)


def test_crash_leaves_offered_call_which_reopen_marks_interrupted(db_path: Path, clock: FakeClock) -> None:
    """Simulated crash: calls begun but never finished, then the store is opened again."""
    s = make_store(db_path, clock).open()
    finished = s.begin_call("line1", CALLER)
    s.finish_call(finished, "done")
    offered = s.begin_call("line1", CALLER)
    acting = s.begin_call("line1", CALLER)
    s.set_state(acting, CallState.ACTING)
    s.close()  # close() finishes nothing: same rows as a power cut would leave

    clock.advance(minutes=5)
    with make_store(db_path, clock, recover_calls=False) as cli:  # a CLI must not touch calls
        assert cli.get_call(offered).state is CallState.OFFERED
    with make_store(db_path, clock) as daemon:
        for call_id in (offered, acting):
            row = daemon.get_call(call_id)
            assert (row.state, row.end_reason, row.ended_at) == (
                CallState.INTERRUPTED, "interrupted", "2024-06-01T01:07:03.456Z",
            )  # fmt: skip
        assert daemon.get_call(finished).state is CallState.COMPLETED
        new = daemon.begin_call("line1", CALLER)
        assert daemon.get_call(new).state is CallState.OFFERED


# --------------------------------------------------------------------------- lists


def test_list_upsert_remove_and_generation(store: Store, clock: FakeClock) -> None:
    assert store.lists_generation() == 0
    first = store.add_entry(ListEntry(ListKind.BLOCK, MatchKind.PREFIX, "+81120", note="free dial"))
    assert first.added_at == "2024-06-01T01:02:03.456Z"
    assert store.lists_generation() == 1

    clock.advance(days=1)
    updated = store.add_entry(
        ListEntry(ListKind.BLOCK, MatchKind.PREFIX, "+81120", source="police", note="feed",
                  expires_at="2024-07-01T09:00:00+09:00")  # fmt: skip
    )
    assert (updated.source, updated.note, updated.expires_at) == ("police", "feed", "2024-07-01T00:00:00.000Z")
    assert updated.added_at == first.added_at  # an update keeps when it was first added
    assert store.list_entries(ListKind.BLOCK) == [updated]
    assert store.lists_generation() == 2

    rng = store.add_entry(ListEntry(ListKind.BLOCK, MatchKind.RANGE, "+81312340000", "+81312349999"))
    store.add_entry(ListEntry(ListKind.ALLOW, MatchKind.PREFIX, "+81120"))  # other list: separate row
    assert rng.value_end == "+81312349999"
    assert len(store.list_entries(ListKind.BLOCK)) == 2
    assert len(store.list_entries(ListKind.ALLOW)) == 1

    generation = store.lists_generation()
    assert store.remove_entry(ListKind.BLOCK, MatchKind.PREFIX, "+81120") is True
    assert store.lists_generation() == generation + 1
    assert store.remove_entry(ListKind.BLOCK, MatchKind.PREFIX, "+81120") is False
    assert store.lists_generation() == generation + 1  # nothing changed, nothing to reload
    assert store.remove_entry(ListKind.BLOCK, MatchKind.RANGE, "+81312340000", "+81312349999") is True
    assert store.list_entries(ListKind.BLOCK) == []
    assert [e.match for e in store.list_entries(ListKind.ALLOW)] == [MatchKind.PREFIX]


def test_add_entry_rejects_malformed(store: Store) -> None:
    with pytest.raises(ValueError, match="E.164"):
        store.add_entry(ListEntry(ListKind.BLOCK, MatchKind.EXACT, "03-1234-5678"))
    with pytest.raises(ValueError, match="range"):
        store.add_entry(ListEntry(ListKind.BLOCK, MatchKind.RANGE, "+81312340000"))
    assert store.lists_generation() == 0


def test_load_lists_honours_expiry_and_generation(store: Store, clock: FakeClock) -> None:
    soon = (clock.now + timedelta(hours=1)).isoformat()
    store.add_entry(ListEntry(ListKind.BLOCK, MatchKind.EXACT, "+81311111111", expires_at=soon))
    store.add_entry(ListEntry(ListKind.BLOCK, MatchKind.PREFIX, "+81120"))
    store.add_entry(ListEntry(ListKind.ALLOW, MatchKind.EXACT, "+81312345678"))

    lists = store.load_lists(clock.now)
    assert len(lists) == 3 and lists.generation == 3
    assert lists.match_block("+81311111111") is not None
    assert lists.next_expiry is not None
    assert lists.match_allow("+81312345678") is not None

    later = store.load_lists(clock.now + timedelta(hours=1))
    assert later.match_block("+81311111111") is None
    assert later.match_block("+81120000000") is not None
    assert len(later) == 2


# --------------------------------------------------------------------------- resilience


def spool_lines(store: Store) -> list[dict[str, object]]:
    if not store.spool_path.exists():
        return []
    return [json.loads(line) for line in store.spool_path.read_text().splitlines()]


def run_call(store: Store, number: str) -> int:
    call_id = store.begin_call("line1", CallerID(raw_number=number))
    store.add_event(call_id, EventKind.OFFERED)
    store.record_decision(call_id, WARN)
    store.add_event(call_id, EventKind.DECIDED, action="warn")
    store.finish_call(call_id, "done")
    store.add_event(call_id, EventKind.ENDED)
    return call_id


def assert_call_complete(store: Store, call_id: int, number: str) -> None:
    row = store.get_call(call_id)
    assert (row.raw_number, row.state, row.action) == (number, CallState.COMPLETED, Action.WARN)
    assert [e.kind for e in store.events_for(call_id)] == [EventKind.OFFERED, EventKind.DECIDED, EventKind.ENDED]


def test_locked_database_spools_then_replays(store: Store, db_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Another connection holds BEGIN EXCLUSIVE beyond busy_timeout while a call comes in."""
    before = run_call(store, "0311111111")
    other = sqlite3.connect(db_path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        with caplog.at_level(logging.ERROR, logger="blocklist.store"):
            during = run_call(store, "0322222222")
            store.add_entry(ListEntry(ListKind.BLOCK, MatchKind.EXACT, "+81322222222"))
        assert during < 0  # provisional handle, still usable for every later update
        assert "database is locked" in caplog.text
        assert store.pending_count == 7
        assert [r["op"] for r in spool_lines(store)] == [
            "begin_call", "add_event", "update_call", "add_event", "update_call", "add_event", "add_entry",
        ]  # fmt: skip
        assert not store.flush_pending()  # still locked: stays queued
    finally:
        other.execute("ROLLBACK")
        other.close()

    after = run_call(store, "0333333333")  # the next write replays the queue first, in order
    assert store.pending_count == 0
    assert spool_lines(store) == []
    for call_id, number in ((before, "0311111111"), (during, "0322222222"), (after, "0333333333")):
        assert_call_complete(store, call_id, number)
    assert store.get_call(during).id > before
    assert store.get_call(after).id > store.get_call(during).id
    assert store.count_calls() == 3
    assert store.lists_generation() == 1


def test_spool_survives_crash_and_is_replayed_by_next_process(db_path: Path, clock: FakeClock) -> None:
    s = make_store(db_path, clock).open()
    other = sqlite3.connect(db_path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    finished = run_call(s, "0322222222")
    unfinished = s.begin_call("line1", CallerID(raw_number="0344444444"))
    other.execute("ROLLBACK")
    other.close()
    # crash: no close(), no flush; the spool file is all that is left
    with make_store(db_path, clock) as s2:
        rows = {r.raw_number: r for r in s2.recent_calls()}
        assert rows["0322222222"].state is CallState.COMPLETED
        assert len(s2.events_for(rows["0322222222"].id)) == 3
        assert rows["0344444444"].state is CallState.INTERRUPTED  # recovery runs after the replay
        assert s2.spool_path.stat().st_size == 0
    assert finished < 0 and unfinished < 0


def test_replay_is_idempotent_after_crash_before_truncate(store: Store, db_path: Path, clock: FakeClock) -> None:
    other = sqlite3.connect(db_path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    run_call(store, "0322222222")
    spooled = store.spool_path.read_text()
    other.execute("ROLLBACK")
    other.close()
    assert store.flush_pending()
    store.spool_path.write_text(spooled)  # as if we died between COMMIT and truncate
    store.close()
    with make_store(db_path, clock) as again:
        assert again.count_calls() == 1
        (row,) = again.recent_calls()
        assert len(again.events_for(row.id)) == 3


def test_read_only_database_spools(db_path: Path, clock: FakeClock) -> None:
    """Opened with read_only=True, i.e. SQLite URI mode=ro: SQLite itself refuses every write,
    which (unlike chmod 0444) also holds when the tests run as root. Stands in for an SD card
    the kernel remounted read-only."""
    with make_store(db_path, clock) as s:
        before = run_call(s, "0311111111")
    ro = make_store(db_path, clock, read_only=True).open()
    during = run_call(ro, "0322222222")
    assert during < 0
    assert ro.get_call(before).state is CallState.COMPLETED  # reads still work
    with pytest.raises(KeyError):
        ro.get_call(during)  # spooled, not yet readable
    ro.close()
    assert len(spool_lines(ro)) > 0
    with make_store(db_path, clock) as rw:
        assert rw.count_calls() == 2
        (row,) = [r for r in rw.recent_calls() if r.raw_number == "0322222222"]
        assert row.state is CallState.COMPLETED
        assert len(rw.events_for(row.id)) == 3


def test_unopenable_database_path_runs_on_spool(tmp_path: Path, clock: FakeClock) -> None:
    """The database path is a directory: SQLite cannot open it, even as root."""
    db_path = tmp_path / "mamoru.db"
    db_path.mkdir()
    s = make_store(db_path, clock).open()
    call_id = run_call(s, "0322222222")
    assert call_id < 0
    with pytest.raises(StoreError):
        s.recent_calls()
    db_path.rmdir()  # fixed by the user
    assert s.flush_pending()
    assert_call_complete(s, call_id, "0322222222")
    s.set_state(call_id, CallState.COMPLETED)  # the provisional handle now maps to the real row
    s.close()


def test_unwritable_spool_keeps_records_in_memory(tmp_path: Path, clock: FakeClock,
                                                  caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    """Database and spool both unusable (a regular file where the spool dir should be)."""
    db_path = tmp_path / "mamoru.db"
    db_path.mkdir()
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    s = make_store(db_path, clock, spool_dir=blocker / "spool").open()
    with caplog.at_level(logging.ERROR, logger="blocklist.store"):
        call_id = run_call(s, "0322222222")
    assert "kept in memory only" in caplog.text
    assert s.pending_count == 7  # recover + the call's six records
    db_path.rmdir()
    assert s.flush_pending()
    assert_call_complete(s, call_id, "0322222222")
    s.close()


def test_bad_spool_lines_do_not_block_the_queue(db_path: Path, clock: FakeClock,
                                                caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    store = make_store(db_path, clock)
    good = {"rid": "a" * 32, "op": "add_event", "args": {"ref": None, "at": "x", "kind": "config", "detail": "{}"}}
    poison = {"rid": "b" * 32, "op": "no_such_op", "args": {}}
    store.spool_path.write_text(json.dumps(poison) + "\n" + json.dumps(good) + "\n" + '{"rid": "torn')
    with caplog.at_level(logging.WARNING, logger="blocklist.store"):
        store.open()
    assert "dropping a record" in caplog.text and "unreadable spool line 3" in caplog.text
    assert store.spool_path.stat().st_size == 0
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("SELECT kind FROM events").fetchall() == [("config",)]
    store.close()


def test_retry_interval_skips_busy_wait_during_outage(db_path: Path, clock: FakeClock) -> None:
    """During an outage a ringing phone must not pay busy_timeout on every write."""
    s = make_store(db_path, clock, busy_timeout=0.5, retry_interval=3600).open()
    other = sqlite3.connect(db_path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        s.begin_call("line1", CALLER)  # pays the busy wait once
        start = datetime.now()
        for _ in range(5):
            s.add_event(None, EventKind.CONFIG)
        assert datetime.now() - start < timedelta(seconds=0.5)
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert s.flush_pending()  # explicit flush ignores the interval
    assert s.count_calls() == 1
    s.close()


def test_spool_location(tmp_path: Path, clock: FakeClock) -> None:
    """Next to the database by default; spool_dir for when that filesystem may go read-only."""
    assert make_store(tmp_path / "m.db", clock).spool_path == tmp_path / "m.db.spool.jsonl"
    run = tmp_path / "run"
    assert make_store(tmp_path / "m.db", clock, spool_dir=run).spool_path == run / "m.db.spool.jsonl"


# --------------------------------------------------------------------------- schema 2: recordings, detection, review


CALL_COLUMNS_V2 = {"recording", "recording_bytes", "recording_seconds", "verdict", "score", "transcript",
                   "reviewed_at", "fraud_at"}  # fmt: skip


def columns(path: Path, table: str) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}


def test_migration_2_on_a_fresh_database(db_path: Path, clock: FakeClock) -> None:
    with make_store(db_path, clock):
        pass
    assert user_version(db_path) == len(MIGRATIONS)
    assert CALL_COLUMNS_V2 <= columns(db_path, "calls")
    assert columns(db_path, "flags") == {"id", "call_id", "phrase", "category", "start_s", "at"}
    with sqlite3.connect(db_path) as conn:
        query = "SELECT sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
        indexes = {r[0] for r in conn.execute(query)}
    assert any("flags" in sql and "call_id" in sql for sql in indexes)


def test_upgrade_from_v1_in_place(db_path: Path, clock: FakeClock) -> None:
    """A database written by the previous release (only migration 1) keeps its calls and gains the new columns."""
    from sqlite_utils import Database

    conn = sqlite3.connect(db_path, isolation_level=None)
    MIGRATIONS[0](Database(conn))
    conn.execute("PRAGMA user_version = 1")
    conn.execute("INSERT INTO calls (call_uid, started_at, line, state, raw_number, action) "
                 "VALUES ('u1', '2024-01-01T00:00:00.000Z', 'line1', 'completed', '0311111111', 'warn')")  # fmt: skip
    conn.close()
    assert CALL_COLUMNS_V2.isdisjoint(columns(db_path, "calls"))

    with make_store(db_path, clock) as s:
        old = s.get_call(1)
        assert (old.raw_number, old.action, old.state) == ("0311111111", Action.WARN, CallState.COMPLETED)
        assert (old.recording, old.verdict, old.score, old.reviewed_at) == (None, None, None, None)
        s.set_detection(1, "clean", 0.1, "hello")
        assert s.get_call(1).verdict == "clean"
    assert user_version(db_path) == len(MIGRATIONS)
    assert CALL_COLUMNS_V2 <= columns(db_path, "calls")


def test_recording_detection_review_api(store: Store, clock: FakeClock) -> None:
    call_id = store.begin_call("line1", CALLER, decision=WARN)
    store.set_recording(call_id, "2024/06/call-1.wav")  # recorder opened: "being written"
    row = store.get_call(call_id)
    assert (row.recording, row.recording_bytes, row.recording_seconds) == ("2024/06/call-1.wav", None, None)

    store.add_flags(call_id, [("계좌 이체", "transfer", 12.5), ("검찰청", "authority", 3.0)])
    store.add_flags(call_id, [])  # nothing to write
    fraud_time = datetime(2024, 6, 1, 10, 2, 30, tzinfo=UTC)
    store.set_detection(call_id, "fraud", 0.93, "검찰청 입니다 계좌 이체", fraud_at=fraud_time)
    store.set_detection(call_id, "fraud", 0.97, "검찰청 입니다 계좌 이체 하세요")  # end of call: keeps fraud_at
    store.set_recording(call_id, "2024/06/call-1.wav", 96044, 6.0)
    store.finish_call(call_id, "caller_hung_up")

    row = store.get_call(call_id)
    assert (row.recording_bytes, row.recording_seconds) == (96044, 6.0)
    assert (row.verdict, row.score, row.transcript) == ("fraud", 0.97, "검찰청 입니다 계좌 이체 하세요")
    assert row.fraud_at == "2024-06-01T10:02:30.000Z" and row.reviewed_at is None
    assert row.as_dict()["verdict"] == "fraud" and json.dumps(row.as_dict(), ensure_ascii=False)
    flags = store.flags_for(call_id)
    assert [(f.phrase, f.category, f.start_s) for f in flags] == [
        ("계좌 이체", "transfer", 12.5), ("검찰청", "authority", 3.0),
    ]  # fmt: skip
    assert all(f.call_id == call_id and f.at == "2024-06-01T01:02:03.456Z" for f in flags)

    (rec,) = store.recordings_oldest_first()
    assert (rec.call_id, rec.relpath, rec.bytes, rec.verdict, rec.protected) == (
        call_id, "2024/06/call-1.wav", 96044, "fraud", True,
    )  # fmt: skip
    clock.advance(days=2)
    store.mark_reviewed(call_id)
    assert store.get_call(call_id).reviewed_at == "2024-06-03T01:02:03.456Z"
    assert store.recordings_oldest_first()[0].protected is False
    store.mark_reviewed(call_id, at=datetime(2024, 6, 4, tzinfo=UTC))
    assert store.get_call(call_id).reviewed_at == "2024-06-04T00:00:00.000Z"

    store.clear_recording(call_id)
    row = store.get_call(call_id)
    assert (row.recording, row.recording_bytes, row.recording_seconds) == (None, None, None)
    assert store.recordings_oldest_first() == []
    assert row.verdict == "fraud"  # the verdict and transcript outlive the audio


def test_detection_rejects_unknown_verdict(store: Store) -> None:
    call_id = store.begin_call("line1", CALLER)
    with pytest.raises(ValueError):
        store.set_detection(call_id, "scam", 1.0, "")
    assert store.get_call(call_id).verdict is None


def test_unfinished_recordings_are_those_a_crash_left(db_path: Path, clock: FakeClock) -> None:
    s = make_store(db_path, clock).open()
    crashed = s.begin_call("line1", CALLER)
    s.set_recording(crashed, "a.wav")
    completed = s.begin_call("line1", CALLER)
    s.set_recording(completed, "b.wav", 44, 0.0)
    s.finish_call(completed, "done")
    s.close()  # crash
    with make_store(db_path, clock) as s2:
        live = s2.begin_call("line1", CALLER)
        s2.set_recording(live, "c.wav")  # this process's call in progress: not "unfinished"
        assert [r.call_id for r in s2.unfinished_recordings()] == [crashed]


def test_voice_writes_are_spooled_and_replayed_when_locked(store: Store, db_path: Path, clock: FakeClock) -> None:
    """A fraud call while another connection holds the database: verdict, flags, recording all survive."""
    earlier = store.begin_call("line1", CALLER)
    store.set_recording(earlier, "old.wav", 44, 0.0)
    other = sqlite3.connect(db_path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        call_id = store.begin_call("line1", CALLER, decision=WARN)
        assert call_id < 0
        store.set_recording(call_id, "new.wav")
        store.add_flags(call_id, [("검찰청", "authority", 3.0)])
        store.set_detection(call_id, "fraud", 0.9, "검찰청", fraud_at=clock.now)
        store.add_event(call_id, EventKind.FRAUD, score=0.9)
        store.set_recording(call_id, "new.wav", 8044, 0.5)
        store.mark_reviewed(earlier)
        store.clear_recording(earlier)
        assert [r["op"] for r in spool_lines(store)] == [
            "begin_call", "update_call", "add_flags", "update_call", "add_event", "update_call",
            "update_call", "update_call",
        ]  # fmt: skip
        assert all(r["args"]["ref"] == {"uid": r["args"]["ref"]["uid"]} for r in spool_lines(store)[1:6])
    finally:
        other.execute("ROLLBACK")
        other.close()
    store.close()  # or a crash: the spool file is what carries the records over

    with make_store(db_path, clock) as again:
        (row,) = [r for r in again.recent_calls() if r.id != earlier]
        assert (row.recording, row.recording_bytes, row.verdict, row.fraud_at) == (
            "new.wav", 8044, "fraud", "2024-06-01T01:02:03.456Z",
        )  # fmt: skip
        assert [(f.phrase, f.start_s) for f in again.flags_for(row.id)] == [("검찰청", 3.0)]
        assert EventKind.FRAUD in [e.kind for e in again.events_for(row.id)]
        old = again.get_call(earlier)
        assert old.recording is None and old.reviewed_at == "2024-06-01T01:02:03.456Z"
        assert again.spool_path.stat().st_size == 0


def test_flags_for_unknown_call_are_dropped_not_blocking(db_path: Path, clock: FakeClock,
                                                        caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    s = make_store(db_path, clock)
    bad = {"rid": "c" * 32, "op": "add_flags",
           "args": {"ref": {"uid": "nope"}, "at": "x", "flags": [["a", "b", 1.0]]}}  # fmt: skip
    good = {"rid": "d" * 32, "op": "add_event", "args": {"ref": None, "at": "x", "kind": "config", "detail": "{}"}}
    s.spool_path.write_text(json.dumps(bad) + "\n" + json.dumps(good) + "\n")
    with caplog.at_level(logging.ERROR, logger="blocklist.store"):
        s.open()
    assert "dropping a record" in caplog.text
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM flags").fetchone()[0] == 0
        assert conn.execute("SELECT kind FROM events").fetchall() == [("config",)]
    s.close()


# --------------------------------------------------------------------------- feeds (migration 4)


def _feed_entry(number: str, feed: str = "police", note: str = "fraud") -> ListEntry:
    return ListEntry(ListKind.BLOCK, MatchKind.EXACT, number, source=f"feed:{feed}", note=note)


def test_feed_entries_replace_atomically_and_keep_hand_made_entries(store: Store) -> None:
    own = store.add_entry(ListEntry(ListKind.BLOCK, MatchKind.EXACT, "+81312345678", note="pestered grandma"))
    assert store.replace_feed_entries("police", [_feed_entry("+81312345678"), _feed_entry("+81398765432")]) == 2
    assert store.feed_entry_counts() == {"police": 2}
    lists = store.load_lists(datetime(2024, 6, 2, tzinfo=UTC))
    assert lists.match_block("+81312345678") == own  # the family's own note wins over the feed's
    assert lists.match_block("+81398765432").source == "feed:police"

    generation = store.lists_generation()
    assert store.replace_feed_entries("police", [_feed_entry("+81300000000")]) == 1
    assert store.lists_generation() > generation
    lists = store.load_lists(datetime(2024, 6, 2, tzinfo=UTC))
    assert lists.match_block("+81398765432") is None  # gone with the new version
    assert lists.match_block("+81312345678") == own  # never touched by a feed update


def test_bad_feed_entry_writes_nothing(store: Store) -> None:
    store.replace_feed_entries("police", [_feed_entry("+81398765432")])
    bad = ListEntry(ListKind.BLOCK, MatchKind.EXACT, "0312345678", source="feed:police")
    with pytest.raises(ValueError, match="not an E.164"):
        store.replace_feed_entries("police", [_feed_entry("+81300000000"), bad])
    with pytest.raises(ValueError, match="expected 'feed:police'"):
        store.replace_feed_entries("police", [_feed_entry("+81300000000", feed="other")])
    with pytest.raises(ValueError, match="not an E.164"):
        store.import_entries([ListEntry(ListKind.BLOCK, MatchKind.EXACT, "+81300000001"), bad])
    assert store.feed_entry_counts() == {"police": 1}
    assert store.list_entries(ListKind.BLOCK)[0].value == "+81398765432"


def test_feed_rows_renewal_and_removal(store: Store, clock: FakeClock) -> None:
    store.save_feed("police", url="https://feeds.example/police/")
    store.replace_feed_entries("police", [_feed_entry("+81398765432")])
    assert store.renew_feed_entries("police", "2024-09-01T00:00:00Z") == 1
    assert store.list_entries(ListKind.BLOCK)[0].expires_at == "2024-09-01T00:00:00.000Z"
    store.save_feed("police", version=3, entries=1, checked_at="2024-06-01T00:00:00Z")
    row = store.feed("police")
    assert row is not None and (row["url"], row["version"], row["entries"]) == ("https://feeds.example/police/", 3, 1)
    with pytest.raises(ValueError, match="needs a url"):
        store.save_feed("other", version=1)
    with pytest.raises(ValueError, match="unknown feed field"):
        store.save_feed("police", password="x")
    assert store.remove_feed("police") is True
    assert store.feeds() == [] and store.list_entries(ListKind.BLOCK) == []
    assert store.remove_feed("police") is False


def test_migration_4_keeps_existing_entries(db_path: Path, clock: FakeClock) -> None:
    with make_store(db_path, clock) as s:
        s.add_entry(ListEntry(ListKind.BLOCK, MatchKind.EXACT, "+81312345678", source="feed:old"))
    conn = sqlite3.connect(db_path)
    conn.execute("DROP INDEX idx_list_entries_key")
    conn.execute("CREATE UNIQUE INDEX idx_old ON list_entries (list, match, value, value_end)")
    conn.execute("DROP TABLE feeds")
    conn.execute("PRAGMA user_version = 3")
    conn.commit()
    conn.close()
    with make_store(db_path, clock) as s:
        assert s.feed_entry_counts() == {"old": 1}
        s.add_entry(ListEntry(ListKind.BLOCK, MatchKind.EXACT, "+81312345678", note="mine"))
        assert len(s.list_entries(ListKind.BLOCK)) == 2
    assert user_version(db_path) == len(MIGRATIONS)


# A database written by the store before it became a package (schema 5: a reviewed fraud call
# with its events, flag and recording; a person's and a feed's list entry; a feed row; an alert
# with its delivery). Its tables, migration numbers and meta keys must keep meaning the same.
SCHEMA5_DB = Path(__file__).parent / "data" / "store" / "schema5.db"


def test_a_database_from_the_single_module_store_opens_unchanged(tmp_path: Path, clock: FakeClock) -> None:
    from blocklist.outbox import AlertKind, Outbox

    path = tmp_path / "calls.db"
    path.write_bytes(SCHEMA5_DB.read_bytes())
    with make_store(path, clock) as s:
        assert user_version(path) == len(MIGRATIONS)
        (call,) = s.recent_calls()
        assert (call.number_e164, call.state, call.end_reason) == ("+81312345678", CallState.COMPLETED, "remote_hangup")
        assert (call.verdict, call.review_label, call.reviewed_by) == ("fraud", "fraud", "hanako")
        assert (call.recording, call.recording_bytes) == ("2026/12/01/call-1.wav", 32044)
        assert [e.kind for e in s.events_for(call.id)] == [EventKind.OFFERED, EventKind.HUNG_UP, EventKind.REVIEW]
        assert [(f.phrase, f.start_s) for f in s.flags_for(call.id)] == [("振り込んで", 1.5)]
        assert [e.value for e in s.own_entries(ListKind.BLOCK)] == ["+81501234567"]
        assert s.feed_entry_counts() == {"police": 1}
        assert s.feed("police")["version"] == 3
        generation = s.lists_generation()
        assert generation > 0 and s.load_lists(clock()).generation == generation
        ((alert, deliveries),) = s.alert_rows_for_call(call.id)
        assert (alert["dedupe_key"], [d["relative"] for d in deliveries]) == (f"fraud:{call.id}", ["hanako"])
        s.add_entry(ListEntry(ListKind.ALLOW, MatchKind.EXACT, "+81311112222"))  # and it takes writes
        assert s.lists_generation() == generation + 1
    outbox = Outbox(path).open()
    try:
        ((row, _),) = outbox.recent()
        assert row.kind is AlertKind.FRAUD and row.call_id == call.id
    finally:
        outbox.close()
