"""Issue 12, items 3-5: the modem line must never stop screening.

All on the virtual modem over a real pty (in-process daemon, real store), or
``mamoru run`` as a subprocess: a stray ``DLE H`` on an idle line, a caller-ID
block the modem repeats, and a modem missing when the daemon starts.
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

from firmware.handset_state import HandsetState
from firmware.scenarios import CallScript
from firmware.vmodem.records import CallOutcome
from screening import doctor_text
from screening.alert_wiring import start_alerts
from screening.config import Config, parse_config
from screening.core.model import Action, Language
from screening.doctor import check_line
from screening.events import EventBus
from screening.session import SessionSettings
from screening.status import LineProblem, StatusWriter
from tests.support.daemon import ROOT, DaemonProcess, ModemDaemonRig, daemon_env, off_hook_commands, wait_for
from tests.support.receivers import HttpReceiver, json_url
from tests.support.web import Web, items, ja, running_modem_web

pytestmark = pytest.mark.timeout(90)

STRAY_HANDSET_OFF_HOOK = b"\x10H"  # DLE H: what a noisy line or a confused firmware can print on an idle modem


# ---- item 3: a stray DLE H ---------------------------------------------------------


@pytest.fixture
def web(tmp_path: Path) -> Iterator[Web]:
    yield from running_modem_web(tmp_path)


def test_handset_state_rules() -> None:
    state = HandsetState(ring_grace_s=1.0, stale_after_s=60.0)
    assert state.rang(0.0) is None and state.check(1e6) is None  # on-hook: nothing to doubt
    state.picked_up(10.0)
    assert state.rang(10.5) is None and state.off_hook  # picked up while it rang: that ring proves nothing
    assert state.check(69.0) is None
    assert "off-hook for 60.0 s" in (state.check(70.0) or "")
    assert state.check(500.0) is None  # reported once per pick-up
    assert "rang" in (state.rang(80.0) or "") and not state.off_hook
    state.picked_up(100.0)
    state.put_down()
    assert state.check(1e6) is None


def test_stray_handset_bytes_do_not_stop_screening(tmp_path: Path) -> None:
    with ModemDaemonRig(tmp_path) as rig:
        rig.modem.inject(STRAY_HANDSET_OFF_HOOK)
        wait_for(rig.line.handset_off_hook, 2.0)  # the line believes the household picked up
        first = rig.call(CallScript(nmbr="0398765432", hang_up_after_s=200, max_rings=4))
        second = rig.call(CallScript(nmbr="0398765432", hang_up_after_s=200, max_rings=4))
        # The phone rang, so the handset cannot have been off-hook: both calls are screened.
        assert first.outcome is CallOutcome.ANSWERED and off_hook_commands(first)
        assert second.outcome is CallOutcome.ANSWERED
        rows = rig.wait_calls(2)  # the redial by its number, not "no caller ID" at ring 2
        assert len(rig.store.recent_calls(limit=100)) == 2  # one ringing, one row
        assert [r.action for r in rows] == [Action.BLOCK, Action.BLOCK]
        assert not rig.line.handset_off_hook()


def test_a_stray_handset_state_kept_through_a_reconnect_is_corrected_by_the_next_ring(tmp_path: Path) -> None:
    with ModemDaemonRig(tmp_path) as rig:
        rig.modem.inject(STRAY_HANDSET_OFF_HOOK)
        wait_for(rig.line.handset_off_hook, 2.0)
        rig.modem.vanish()
        time.sleep(0.3)
        rig.modem.reappear()
        wait_for(lambda: rig.line.ping(0.5), 15.0)
        assert rig.line.handset_off_hook()  # after a modem reset nobody knows: the guard stays cautious
        rec = rig.call(CallScript(nmbr="0398765432", hang_up_after_s=200, max_rings=4))
        assert rec.outcome is CallOutcome.ANSWERED and rec.rings <= 1
        assert [r.end_reason for r in rig.wait_calls(1)] == ["announced_and_hung_up"]


def test_a_ringing_while_the_handset_is_believed_up_is_one_row(tmp_path: Path) -> None:
    """The real call-waiting guard still holds: caller ID only (no ring), one row, never answered."""
    with ModemDaemonRig(tmp_path) as rig:
        rig.modem.set_handset(True)
        wait_for(rig.line.handset_off_hook, 2.0)
        # call-waiting: caller ID only, no RING; the household really is on the line
        rec = rig.call(CallScript(nmbr="0398765432", handset_off_hook_at_s=0, max_rings=4))
        assert rec.outcome is CallOutcome.LINE_IN_USE and off_hook_commands(rec) == []
        time.sleep(0.3)
        rows = rig.store.recent_calls(limit=100)
        assert len(rows) == 1 and rows[0].end_reason == "line_in_use"


def test_handset_off_hook_too_long_is_reported(tmp_path: Path) -> None:
    """The phone left off the hook (or a stuck state): status.json says so, for doctor and the health page."""
    with ModemDaemonRig(tmp_path, line_options={"handset_stale_s": 0.3}) as rig:
        rig.modem.inject(STRAY_HANDSET_OFF_HOOK)
        status_path = rig.store.path.parent / "status.json"

        def problem() -> object:
            try:
                return json.loads(status_path.read_text())["line"].get("problem")
            except (OSError, ValueError):
                return None

        wait_for(lambda: problem() == "handset_stuck", 5.0)
        rig.call(CallScript(nmbr="0398765432", hang_up_after_s=200, max_rings=4))
        wait_for(lambda: problem() is None, 5.0)  # the ring showed the handset is down: cleared


def test_handset_off_hook_too_long_alerts_the_family(tmp_path: Path) -> None:
    receiver = HttpReceiver().start()
    config = parse_config({"relatives": [{"name": "Taro", "notify": [json_url(receiver.port, "taro")]}]}, "test")
    try:
        with ModemDaemonRig(tmp_path, line_options={"handset_stale_s": 0.3}, bus=EventBus()) as rig:
            alerts = start_alerts(config, rig.store)
            assert alerts is not None
            try:
                assert rig.daemon.bus is not None
                alerts.subscribe(rig.daemon.bus)  # as the runner wires it: the daemon publishes, alerts hear
                rig.modem.inject(STRAY_HANDSET_OFF_HOOK)
                assert receiver.wait_for("/taro", 1, timeout=10)
                body = json.dumps(receiver.paths("/taro")[0], ensure_ascii=False)
                assert "受話器が上がったまま" in body and "off-hook" in body
            finally:
                alerts.stop()
    finally:
        receiver.stop()


def test_health_page_shows_a_stuck_handset(web: Web) -> None:
    writer = StatusWriter.beside(web.ctx.store.path)
    writer.started()
    assert items(web.get("/health").text)["line"][0] == "ok"
    writer.line_problem(LineProblem.HANDSET_STUCK)
    assert items(web.get("/health").text)["line"] == ("problem", ja("health.line.handset_stuck"))
    writer.line_problem(None)
    assert items(web.get("/health").text)["line"][0] == "ok"


def test_doctor_shows_a_stuck_handset(tmp_path: Path) -> None:
    device = tmp_path / "ttyACM0"
    device.touch()  # present and usable; the doctor asks the running daemon before it probes
    db = tmp_path / "m.db"
    writer = StatusWriter.beside(db)
    writer.started()
    writer.line_problem(LineProblem.HANDSET_STUCK)
    check = check_line(Config().with_overrides(line_uri=f"modem://{device}"), timeout_s=0.5, db_path=db)
    assert check.severity == "problem" and "handset has been off the hook" in check.message
    assert doctor_text.say(check.message, Language.JA).startswith("受話器が長い時間上がったまま")


def test_doctor_names_the_missing_modem(tmp_path: Path) -> None:
    device = tmp_path / "ttyACM0"
    check = check_line(Config().with_overrides(line_uri=f"modem://{device}"), timeout_s=0.5, db_path=tmp_path / "m.db")
    assert check.severity == "problem" and f"modem not found at {device}" in check.fix


def test_health_page_names_the_missing_modem(web: Web) -> None:
    writer = StatusWriter.beside(web.ctx.store.path)
    writer.started()
    writer.line_fault("modem not found at /dev/mamoru-modem")
    line = items(web.get("/health").text)["line"]
    assert line[0] == "problem" and "/dev/mamoru-modem" in line[1] and "モデムが見つかりません" in line[1]


# ---- item 4: a repeated caller-ID block ---------------------------------------------


def test_repeated_caller_id_block_is_one_call(tmp_path: Path) -> None:
    with ModemDaemonRig(tmp_path) as rig:
        script = CallScript(nmbr="0662223333", hang_up_after_s=40, max_rings=4)
        record = rig.modem.place_call(script)
        wait_for(lambda: rig.modem.off_hook, 5.0)  # answered
        assert record.cid_bytes is not None
        rig.modem.inject(record.cid_bytes)  # the modem prints the same block again
        rig.modem.wait_for_call_end(record, 30.0)
        assert record.outcome is CallOutcome.CALLER_HUNG_UP
        time.sleep(0.5)  # a phantom call would be answered within milliseconds of the hang-up
        assert not rig.modem.off_hook
        rows = rig.store.recent_calls(limit=100)
        assert len(rows) == 1, [(r.id, r.rule, r.end_reason) for r in rows]
        assert rows[0].action is Action.WARN


def test_caller_id_block_repeated_before_the_answer_is_one_call(tmp_path: Path) -> None:
    """The modem prints the block twice in a row (no ring between): one call, screened once."""
    with ModemDaemonRig(tmp_path) as rig:
        record = rig.modem.place_call(CallScript(nmbr="0662223333", hang_up_after_s=40, max_rings=4))
        wait_for(lambda: record.cid_bytes is not None, 5.0)
        time.sleep(0.02)  # after the line's quiet gap (5 ms): a block of its own, not one long block
        assert record.cid_bytes is not None
        rig.modem.inject(record.cid_bytes)
        rig.modem.wait_for_call_end(record, 30.0)
        time.sleep(0.5)
        assert not rig.modem.off_hook
        rows = rig.store.recent_calls(limit=100)
        assert len(rows) == 1, [(r.id, r.rule, r.end_reason) for r in rows]


# ---- item 5: no modem when the daemon starts ---------------------------------------------


def _line_status(db: Path) -> dict[str, object] | None:
    try:
        return json.loads((db.parent / "status.json").read_text())["line"]
    except (OSError, ValueError, KeyError):
        return None


def test_run_without_the_modem_keeps_running_and_starts_screening_when_it_appears(tmp_path: Path) -> None:
    device = tmp_path / "mamoru-modem"  # the stable link a udev rule would make; not there yet
    db = tmp_path / "m.db"
    scenario = tmp_path / "calls.toml"
    # the call comes after the longest reconnect backoff (5 s), so the line is back by then
    scenario.write_text('[[call]]\nnmbr = "P"\nhang_up_after_s = 200\ngap_s = 14\n', encoding="utf-8")
    receiver = HttpReceiver().start()
    config = tmp_path / "mamoru.toml"
    config.write_text(f'[voice]\ntranscribe = false\n[web]\nenabled = false\n[recording]\nenabled = false\n'
                      f'[[relatives]]\nname = "Taro"\nnotify = ["{json_url(receiver.port, "taro")}"]\n',
                      encoding="utf-8")
    env = daemon_env(tmp_path)
    run = DaemonProcess(["run", "--line", f"modem://{device}", "--db", str(db)], env, config=config).start()
    emu = None
    try:
        wait_for(lambda: (_line_status(db) or {}).get("state") == "fault", 20)
        status = _line_status(db)
        assert status is not None and f"modem not found at {device}" in str(status["message"])
        assert run.running(), "mamoru run exited without a modem"
        assert receiver.wait_for("/taro", 1, timeout=10)
        assert f"modem not found at {device}" in json.dumps(receiver.paths("/taro")[0], ensure_ascii=False)
        emu = subprocess.Popen([sys.executable, "-m", "screening.cli", "modem", "emulate", "--link", str(device),
                                "--scenario", str(scenario), "--time-scale", "0.5"],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT, env=env)
        wait_for(lambda: (_line_status(db) or {}).get("state") == "ok", 30)
        wait_for(lambda: _count_calls(db) >= 1, 30)
    finally:
        if emu is not None and emu.poll() is None:
            emu.send_signal(signal.SIGTERM)
        code = run.stop(timeout=15)
        if emu is not None:
            emu.wait(timeout=10)
        output = run.output()
        receiver.stop()
    assert code == 0, output
    assert "Traceback" not in output
    events = [r[0] for r in _query(db, "select kind from events where call_id is null")]
    assert "line_fault" in events and "line_restored" in events
    assert [r[0] for r in _query(db, "select rule from calls")] == ["withheld"]


def _query(db: Path, sql: str) -> list[tuple[object, ...]]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def _count_calls(db: Path) -> int:
    try:
        return len(_query(db, "select id from calls"))
    except sqlite3.Error:  # not created yet
        return 0


class _SlowToCloseRecording:
    """A call's audio whose recording takes long to close (a slow SD card): finish() blocks."""

    def __init__(self, close_s: float) -> None:
        self.close_s = close_s

    def start_call(self, call_id: int) -> _SlowToCloseRecording:
        return self

    def played(self, clip: object) -> None:
        pass

    def received(self, pcm16: bytes) -> None:
        pass

    def finish(self) -> None:
        time.sleep(self.close_s)


def test_a_quick_redial_while_the_last_recording_closes_is_still_screened(tmp_path: Path) -> None:
    """The caller ID of a redial queued after we hung up, while the last call's recording was
    still closing, is a new call, not the line repeating the old block."""
    settings = SessionSettings(voice=_SlowToCloseRecording(0.25))  # within the redial's ringing
    with ModemDaemonRig(tmp_path, settings=settings) as rig:
        first = rig.call(CallScript(nmbr="0398765432", hang_up_after_s=200, max_rings=4))
        second = rig.call(CallScript(nmbr="0398765432", hang_up_after_s=200, max_rings=4))
        assert first.outcome is CallOutcome.ANSWERED
        assert second.outcome is CallOutcome.ANSWERED
        rows = rig.wait_calls(2)  # the redial by its number, not "no caller ID" at ring 2
        assert [(r.action, r.rule) for r in rows] == [(Action.BLOCK, "blocklist:local")] * 2
