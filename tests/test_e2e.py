"""End to end: the daemon screening calls on the virtual modem over a real pty.

In-process tests drive ``Daemon`` + ``ModemLine`` + ``VirtualModem`` with a real
store; subprocess tests run the ``mamoru`` command exactly as a user would.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from blocklist.store import Store
from firmware.dialects import USR_5637, RingCadence
from firmware.scenarios import CallScript
from firmware.vmodem.records import CallOutcome
from screening.core.model import Action, CallState
from tests.support.daemon import ROOT, DaemonProcess, ModemDaemonRig, daemon_env, off_hook_commands, wait_for

pytestmark = pytest.mark.timeout(90)



@pytest.fixture
def rig(tmp_path: Path) -> Iterator[ModemDaemonRig]:
    with ModemDaemonRig(tmp_path) as r:
        yield r


def test_blocked_caller_is_answered_before_the_phone_rings_twice(rig: ModemDaemonRig) -> None:
    rec = rig.call(CallScript(nmbr="0398765432", hang_up_after_s=200))
    assert rec.outcome is CallOutcome.ANSWERED
    assert rec.rings <= 1, "household phone rang past the first ring"
    assert len(rec.played_audio) > 4000  # the announcement really went down the line
    row = rig.wait_calls(1)[0]
    assert (row.action, row.rule, row.end_reason) == (Action.BLOCK, "blocklist:local", "announced_and_hung_up")
    kinds = [e.kind for e in rig.store.events_for(row.id)]
    assert kinds[:2] == ["offered", "decided"] and "answered" in kinds and "hung_up" in kinds


def test_allowlisted_family_rings_and_nothing_is_played(rig: ModemDaemonRig) -> None:
    rec = rig.call(CallScript(nmbr="0312345678", max_rings=3))
    assert rec.outcome is CallOutcome.GAVE_UP and rec.rings == 3
    assert off_hook_commands(rec) == [] and rec.played_audio == b""
    assert rig.wait_calls(1)[0].action is Action.ALLOW


def test_withheld_gets_number_request_and_unknown_gets_warning_then_stays_on(rig: ModemDaemonRig) -> None:
    withheld = rig.call(CallScript(nmbr="P", hang_up_after_s=200))
    unknown = rig.call(CallScript(nmbr="0662223333", hang_up_after_s=60))
    assert withheld.outcome is CallOutcome.ANSWERED
    assert unknown.outcome is CallOutcome.CALLER_HUNG_UP  # we stayed on the call until the caller left
    rows = rig.wait_calls(2)
    assert [(r.action, r.prompt.value) for r in rows] == [(Action.REQUEST_NUMBER, "number_request"),
                                                          (Action.WARN, "warning")]
    assert rows[1].end_reason == "caller_hung_up"
    # the two prompts are different audio
    assert withheld.played_audio[:2000] != unknown.played_audio[:2000]


def test_call_waiting_guard_never_answers_into_a_conversation(rig: ModemDaemonRig) -> None:
    rig.modem.set_handset(True)
    time.sleep(0.1)
    rec = rig.call(CallScript(nmbr="0398765432", handset_off_hook_at_s=0, max_rings=2))
    assert rec.outcome is CallOutcome.LINE_IN_USE
    assert off_hook_commands(rec) == [] and rec.played_audio == b""
    row = rig.wait_calls(1)[0]
    assert row.action is Action.BLOCK and row.end_reason == "line_in_use"  # decided and logged, not acted on


def test_no_caller_id_service_is_screened_on_the_second_ring(tmp_path: Path) -> None:
    with ModemDaemonRig(tmp_path, USR_5637, RingCadence.NORTH_AMERICA) as rig:
        rec = rig.call(CallScript(raw_cid_lines=(), hang_up_after_s=1))
        assert rec.rings == 2 and off_hook_commands(rec)
        row = rig.wait_calls(1)[0]
        assert (row.rule, row.action) == ("no_caller_id", Action.WARN)


def test_garbage_on_the_line_is_survived(rig: ModemDaemonRig) -> None:
    rig.modem.inject(b"\x00\xff\xfe garbage \r\nNMBR = \r\n\x10z\r\nDATE = 9999\r\n" + bytes(range(256)))
    time.sleep(0.2)
    rig.call(CallScript(nmbr="0398765432", hang_up_after_s=200))
    assert rig.wait_calls(1)[-1].action is Action.BLOCK


def test_locked_database_loses_no_call_record(rig: ModemDaemonRig) -> None:
    blocker = sqlite3.connect(rig.store.path, timeout=0.1)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        rec = rig.call(CallScript(nmbr="0398765432", hang_up_after_s=200))
        assert rec.outcome is CallOutcome.ANSWERED  # screening went on without the database
    finally:
        blocker.rollback()
        blocker.close()
    rig.call(CallScript(nmbr="P", hang_up_after_s=200))
    rows = rig.wait_calls(2)
    assert [(r.action, r.rule) for r in rows] == [(Action.BLOCK, "blocklist:local"), (Action.REQUEST_NUMBER, "withheld")]


def test_modem_vanishes_and_comes_back_then_screens_again(rig: ModemDaemonRig) -> None:
    rig.modem.vanish()
    time.sleep(0.5)
    rig.modem.reappear()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not rig.line.ping(0.5):
        time.sleep(0.1)
    rig.call(CallScript(nmbr="0398765432", hang_up_after_s=200))
    rows = rig.wait_calls(1)
    assert rows[0].action is Action.BLOCK
    events = [r[0] for r in
              sqlite3.connect(rig.store.path).execute("select kind from events where call_id is null")]
    assert "line_fault" in events and "line_restored" in events


# ---- the command, as a user runs it ------------------------------------------------


def test_demo_command_screens_the_scripted_calls(tmp_path: Path) -> None:
    db = tmp_path / "demo.db"
    proc = subprocess.run([sys.executable, "-m", "screening.cli", "run", "--line", "sim:?time_scale=0.05",
                           "--db", str(db)], capture_output=True, text=True, timeout=120, env=daemon_env(tmp_path),
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(subprocess.run([sys.executable, "-m", "screening.cli", "calls", "--json", "--db", str(db)],
                                    capture_output=True, text=True, timeout=30, cwd=ROOT).stdout)
    got = [(c["action"], c["rule"], c["state"]) for c in reversed(out)]
    assert got == [
        ("allow", "allowlist", "completed"),
        ("block", "blocklist:local", "completed"),
        ("request_number", "withheld", "completed"),
        ("block", "international:+44", "completed"),
        ("warn", "out_of_area", "completed"),
        ("warn", "payphone", "completed"),
        ("warn", "official_lookalike", "completed"),
        ("warn", "unknown", "completed"),
    ]
    # A first-time user reads words, not ids; no schema-migration chatter, no ERROR for an optional model.
    for words in ("そのまま鳴らす / rings", "お断り / refused", "番号通知をお願い", "非通知 / withheld",
                  "表示圏外 / out of area", "公衆電話 / payphone", "international call from +44"):  # fmt: skip
        assert words in proc.stdout, proc.stdout
    for developer_word in ("REQUEST_NUMBER", "<out_of_area>", "announced_and_hung_up", "caller_hung_up",
                           "allowed_to_ring"):  # fmt: skip
        assert developer_word not in proc.stdout, proc.stdout
    assert "schema version" not in proc.stderr, proc.stderr
    model_lines = [line for line in proc.stderr.splitlines() if "voice.service" in line]
    assert model_lines and all(" WARNING " in line for line in model_lines), proc.stderr  # not an ERROR


def test_sigterm_stops_the_daemon_cleanly_and_a_killed_call_is_marked_interrupted(tmp_path: Path) -> None:
    scenario = tmp_path / "calls.toml"
    scenario.write_text('[[call]]\nnmbr = "0662223333"\nhang_up_after_s = 600\n', encoding="utf-8")
    db = tmp_path / "m.db"
    emu = subprocess.Popen([sys.executable, "-m", "screening.cli", "modem", "emulate", "--no-calls"],
                           stdout=subprocess.PIPE, text=True, cwd=ROOT, env=daemon_env(tmp_path))
    try:
        device = emu.stdout.readline().strip()
        assert device
        config = tmp_path / "mamoru.toml"  # recordings in the test's own dir, never the host's /var/lib
        config.write_text(f'[recording]\ndir = "{tmp_path / "recordings"}"\n', encoding="utf-8")
        run = DaemonProcess(["run", "--line", f"modem://{device}", "--db", str(db)], config=config).start()
        wait_for(lambda: db.exists() and _count(db, "select count(*) from events") >= 0, 20)
        time.sleep(1.0)
        assert run.stop(timeout=10) == 0, run.output()
    finally:
        emu.send_signal(signal.SIGTERM)
        emu.wait(timeout=10)

    # A daemon killed mid-call (-9) leaves the row; the next start marks it interrupted.
    run = DaemonProcess(["run", "--line", f"sim:?time_scale=0.05&scenario={scenario}", "--db", str(db)],
                        daemon_env(tmp_path)).start()  # fmt: skip
    try:
        wait_for(lambda: _count(db, "select count(*) from calls where state = 'acting'") == 1, 30)
        time.sleep(0.3)
    finally:
        run.kill()
    with Store(db) as store:
        rows = store.recent_calls()
    assert rows[0].state is CallState.INTERRUPTED and rows[0].action is Action.WARN


def _count(db: Path, sql: str) -> int:
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        try:
            return con.execute(sql).fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return -1


def test_wedged_modem_is_power_cycled_after_failed_reconnects(rig: ModemDaemonRig) -> None:
    """The modem vanishes and does not come back by itself; after 3 failed reconnects the line
    cuts its USB power (here: a cycler whose power cycle brings the virtual device back, as a real
    one re-enumerates) and screening resumes. Real sysfs/uhubctl: tests/test_usb_power.py."""

    class ReplugOnPowerCycle:
        def __init__(self) -> None:
            self.cycles = 0

        def power_cycle(self, timeout: float) -> str:
            self.cycles += 1
            rig.modem.reappear()
            return "cycled"

    cycler = ReplugOnPowerCycle()
    rig.line.power_cycler = cycler
    rig.modem.vanish()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not (cycler.cycles and rig.line.ping(0.5)):
        time.sleep(0.1)
    assert cycler.cycles == 1
    rig.call(CallScript(nmbr="0398765432", hang_up_after_s=200))
    assert rig.wait_calls(1)[0].action is Action.BLOCK
