"""A damaged database never stops screening, is never deleted, and can be salvaged.

Real SQLite files damaged the ways the issue's filer found them (header overwritten,
truncated, emptied to 0 bytes), real ``mamoru run`` on the virtual modem, real
``mamoru store recover`` and ``mamoru doctor`` subprocesses.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from blocklist.recovery import (
    damaged_copies,
    find_damage,
    read_notices,
    salvage,
    set_aside_if_damaged,
)
from blocklist.store import Store
from screening.core.model import Action, CallerID, Category, Decision, ListEntry, ListKind, MatchKind, Prompt
from tests.support.receivers import HttpReceiver, json_url
from tests.support.web import CONFIG, items, ja, running_web, write_config

pytestmark = pytest.mark.timeout(180)

ROOT = Path(__file__).parent.parent
WARN = Decision(Action.WARN, "unknown", "Not in the family list.", Category.DOMESTIC, Prompt.WARNING)
T0 = datetime(2026, 11, 1, 9, tzinfo=UTC)
CALLS = 300


def build_db(path: Path, calls: int = CALLS) -> None:
    """A household's database: lists and many finished calls, checkpointed into the main file."""
    with Store(path) as store:
        store.add_entry(ListEntry(ListKind.ALLOW, MatchKind.EXACT, "+81312345678", source="family", note="娘"))
        store.add_entry(ListEntry(ListKind.BLOCK, MatchKind.EXACT, "+81398765432", note="偽の銀行"))
        for i in range(calls):
            call_id = store.begin_call("modem", CallerID(raw_number=f"06{i:08d}", number_e164=f"+816{i:08d}"),
                                       started_at=T0 + timedelta(minutes=i), decision=WARN)  # fmt: skip
            store.finish_call(call_id, "caller_hung_up")
    con = sqlite3.connect(path)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()


def damage_header(path: Path) -> None:
    with open(path, "r+b") as f:
        f.write(b"\0" * 16)


def truncate_tail(path: Path) -> None:
    os.truncate(path, path.stat().st_size * 3 // 4)


def empty(path: Path) -> None:
    os.truncate(path, 0)


DAMAGE: dict[str, Callable[[Path], None]] = {"header": damage_header, "truncated": truncate_tail, "empty": empty}


def _env(tmp: Path) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if k != "MAMORU_CONFIG"}, "HOME": str(tmp),
            "XDG_STATE_HOME": str(tmp / "state")}


def mamoru(tmp: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "screening.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=_env(tmp), cwd=ROOT)  # fmt: skip


# --------------------------------------------------------------------------- detection


def test_a_healthy_database_and_a_new_install_are_not_damage(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    assert find_damage(db) is None  # not there yet: a new install
    build_db(db, calls=3)
    assert find_damage(db) is None
    assert set_aside_if_damaged(db) is None and db.exists()


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_each_damage_is_found(tmp_path: Path, kind: str) -> None:
    db = tmp_path / "m.db"
    build_db(db)
    DAMAGE[kind](db)
    assert find_damage(db)


# --------------------------------------------------------------------------- mamoru run


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_run_sets_a_damaged_database_aside_and_keeps_screening(tmp_path: Path, kind: str) -> None:
    db = tmp_path / "m.db"
    build_db(db)
    DAMAGE[kind](db)
    damaged_bytes = db.read_bytes()

    run = mamoru(tmp_path, "run", "--line", "sim:?time_scale=0.05", "--db", str(db))

    assert run.returncode == 0, run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    assert "データベース" in run.stderr and "damaged" in run.stderr  # said loudly, Japanese first
    copies = damaged_copies(db)
    assert len(copies) == 1 and copies[0].read_bytes() == damaged_bytes, "the damaged file was not kept as it was"
    calls = json.loads(mamoru(tmp_path, "calls", "--json", "--db", str(db)).stdout)
    assert len(calls) == 8, "the demo calls were not screened into a fresh database"
    [notice] = read_notices(db)
    assert notice.moved_to == copies[0] and notice.problem

    doctor = mamoru(tmp_path, "doctor", "--db", str(db), "--json", timeout=60)
    checks = {c["name"]: c for c in json.loads(doctor.stdout)["checks"]}
    assert checks["database"]["severity"] == "problem"
    assert "壊れ" in checks["database"]["message"] and "mamoru store recover" in checks["database"]["fix"]


# --------------------------------------------------------------------------- recover


@pytest.mark.parametrize("kind", ["header", "truncated"])
def test_store_recover_salvages_what_sqlite_can_read(tmp_path: Path, kind: str) -> None:
    db = tmp_path / "m.db"
    build_db(db)
    DAMAGE[kind](db)
    notice = set_aside_if_damaged(db)
    assert notice is not None and not db.exists()
    moved = notice.moved_to
    with Store(db) as fresh:  # screening went on meanwhile
        fresh.begin_call("modem", CallerID(raw_number="0311112222"), decision=WARN)

    out = mamoru(tmp_path, "store", "recover", "--db", str(db), "--json", timeout=120)

    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout)
    recovered = Path(report["database"])
    assert recovered.exists() and moved.exists(), "recover must never delete the damaged file"
    with Store(recovered, read_only=True, recover_calls=False) as store:
        numbers = {c.raw_number for c in store.recent_calls(limit=1000)}
        block = store.list_entries(ListKind.BLOCK)
    if kind == "header":
        assert len(numbers) == CALLS and [e.note for e in block] == ["偽の銀行"]
    else:  # the cut-off tail is gone, the rest is back
        assert 0 < len(numbers) <= CALLS and report["unreadable"]
    assert report["tables"]["calls"] == len(numbers)
    assert read_notices(db) == [], "a recovered copy still shows as needing recovery"


def test_salvage_skips_rows_it_cannot_read_and_says_how_many(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    build_db(db)
    truncate_tail(db)
    report = salvage(db, tmp_path / "out.db")
    assert report.tables["calls"] > 0
    assert report.unreadable, "a truncated file must report what could not be read"


# --------------------------------------------------------------------------- health page


def test_the_health_page_says_the_records_were_set_aside(tmp_path: Path) -> None:
    db = tmp_path / "data" / "mamoru.db"
    db.parent.mkdir(parents=True)
    build_db(db, calls=3)
    damage_header(db)
    assert set_aside_if_damaged(db) is not None
    web_run = running_web(tmp_path, write_config(tmp_path, CONFIG))
    web = next(web_run)
    try:
        shown = items(web.get("/health").text)
        assert shown["database"] == ("problem", ja("health.database.damaged"))
        assert "壊れていた" in shown["database"][1]
    finally:
        web_run.close()


# --------------------------------------------------------------------------- alert


def test_the_family_is_alerted_that_the_records_were_set_aside(tmp_path: Path) -> None:
    receiver = HttpReceiver().start()
    try:
        cfg = tmp_path / "mamoru.toml"
        cfg.write_text(f'[[relatives]]\nname = "Hanako"\nnotify = ["{json_url(receiver.port, "hanako")}"]\n'
                       f'[recording]\ndir = "{tmp_path / "rec"}"\n', encoding="utf-8")  # fmt: skip
        db = tmp_path / "m.db"
        build_db(db, calls=3)
        damage_header(db)
        run = mamoru(tmp_path, "run", "--config", str(cfg), "--db", str(db), "--line", "sim:?time_scale=0.05")
        assert run.returncode == 0, run.stderr[-3000:]
        assert receiver.wait_for("/hanako", 1, timeout=10), run.stderr[-3000:]
        bodies = [json.dumps(b, ensure_ascii=False) for b in receiver.paths("/hanako")]
        assert any("通話の記録が壊れていた" in b for b in bodies), bodies
    finally:
        receiver.stop()
