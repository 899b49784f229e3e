"""The mamoru command line: its ``main`` in this process, and as a real subprocess (the console script's module)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.cli import run_mamoru

pytestmark = pytest.mark.timeout(60)


def mamoru(*args: str, env_config: Path | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``mamoru ARGS`` in this process; the tests named ``*_subprocess`` run the real module as a process."""
    proc = run_mamoru(*args, env={"MAMORU_CONFIG": str(env_config) if env_config is not None else None})
    if check and proc.returncode != 0:
        raise AssertionError(f"mamoru {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def mamoru_subprocess(*args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(Path.home())}
    return subprocess.run([sys.executable, "-m", "screening.cli", *args], capture_output=True, text=True,
                          timeout=50, env=env, cwd=Path(__file__).parent.parent)


def test_the_module_runs_as_a_process_subprocess(tmp_path: Path) -> None:
    proc = mamoru_subprocess("check", "03-1234-5678", "--db", str(tmp_path / "m.db"))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["action"] == "warn"
    bad = mamoru_subprocess("check", "not a number", "--db", str(tmp_path / "m.db"))
    assert bad.returncode != 0 and bad.stderr.startswith("mamoru: ") and "Traceback" not in bad.stderr


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "m.db")


@pytest.fixture
def cfg(tmp_path: Path) -> str:
    path = tmp_path / "mamoru.toml"
    path.write_text('[line]\nhome_region = "JP"\n[rules]\ninternational = "warn"\n', encoding="utf-8")
    return str(path)


def check(db: str, *args: str, config: str | None = None) -> dict:
    extra = ["--config", config] if config else []
    return json.loads(mamoru("check", *args, "--db", db, *extra).stdout)


def test_check_outputs_decision_json(db: str) -> None:
    out = check(db, "03-1234-5678")
    assert out["action"] == "warn" and out["rule"] == "unknown" and out["number_e164"] == "+81312345678"
    assert out["category"] == "domestic" and out["reason"]
    assert check(db, "", "--reason", "P")["action"] == "request_number"
    assert check(db, "", "--reason", "C")["rule"] == "payphone"
    assert check(db, "")["rule"] == "no_caller_id"
    assert check(db, "010-44-20-7946-0000")["action"] == "block"
    assert check(db, "110")["category"] == "official_lookalike"


def test_check_uses_config_and_lists(db: str, cfg: str) -> None:
    assert check(db, "+44 20 7946 0000", config=cfg)["action"] == "warn"
    mamoru("allow", "add", "+44 20 7946 0000", "--note", "son in London", "--db", db)
    out = check(db, "010 44 20 7946 0000", config=cfg)
    assert (out["action"], out["rule"]) == ("allow", "allowlist")
    assert out["matched"]["note"] == "son in London"


def test_block_add_list_remove(db: str) -> None:
    mamoru("block", "add", "０３－９８７６－５４３２", "--note", "fake bank", "--db", db)
    mamoru("block", "add", "050-*", "--source", "police", "--days", "30", "--db", db)
    listed = json.loads(mamoru("block", "list", "--json", "--db", db).stdout)
    assert {(e["match"], e["value"]) for e in listed} == {("exact", "+81398765432"), ("prefix", "+8150")}
    assert next(e for e in listed if e["match"] == "prefix")["expires_at"]
    assert check(db, "0398765432")["rule"] == "blocklist:local"
    assert check(db, "05012345678")["rule"] == "blocklist:police"
    assert "03-9876-5432" in mamoru("block", "list", "--db", db).stdout
    mamoru("block", "remove", "03 9876 5432", "--db", db)
    assert check(db, "0398765432")["rule"] == "unknown"
    missing = mamoru("block", "remove", "03 9876 5432", "--db", db, check=False)
    assert missing.returncode == 1 and "not on the block list" in missing.stderr


@pytest.mark.parametrize("bad", ["hello", "12", "03-1234-5678-9999-0000-1", "0*"])
def test_bad_numbers_get_a_clear_error(db: str, bad: str) -> None:
    proc = mamoru("allow", "add", bad, "--db", db, check=False)
    assert proc.returncode == 1
    assert proc.stderr.startswith("mamoru: ") and bad in proc.stderr
    assert "Traceback" not in proc.stderr


def test_check_rejects_garbage_number(db: str) -> None:
    proc = mamoru("check", "not-a-number", "--db", db, check=False)
    assert proc.returncode == 1 and "not a phone number" in proc.stderr


def test_config_check(tmp_path: Path, cfg: str) -> None:
    assert mamoru("config", "check", "--config", cfg).stdout.strip().endswith("OK")
    bad = tmp_path / "bad.toml"
    bad.write_text('[rules]\nwithheld = "deny"\ncolour = 1\n[line]\nhome_region = "XX"\n', encoding="utf-8")
    proc = mamoru("config", "check", "--config", str(bad), check=False)
    assert proc.returncode == 2
    assert f"{bad}: rules.withheld" in proc.stderr
    assert f"{bad}: rules.colour" in proc.stderr
    assert f"{bad}: line.home_region" in proc.stderr
    # the environment variable is honoured
    env_proc = mamoru("config", "check", env_config=bad, check=False)
    assert env_proc.returncode == 2 and "rules.withheld" in env_proc.stderr


def test_config_check_takes_the_file_as_an_argument(tmp_path: Path, cfg: str) -> None:
    assert mamoru("config", "check", cfg).stdout.strip() == f"{cfg}: OK"
    bad = tmp_path / "bad.toml"
    bad.write_text('[rules]\nwithheld = "deny"\n', encoding="utf-8")
    proc = mamoru("config", "check", str(bad), check=False)
    assert proc.returncode == 2 and f"{bad}: rules.withheld" in proc.stderr


def test_calls_empty_and_json(db: str) -> None:
    proc = mamoru("calls", "--db", db)
    assert "no calls yet" in proc.stdout and f"no database at {db}" in proc.stderr
    assert json.loads(mamoru("calls", "--json", "--db", db).stdout) == []


@pytest.mark.parametrize("command", [["calls"], ["calls", "--json"], ["block", "list"], ["allow", "list", "--json"],
                                     ["block", "export"], ["feed", "list"], ["alerts"]])  # fmt: skip
def test_read_only_commands_never_create_a_database(tmp_path: Path, command: list[str]) -> None:
    db = tmp_path / "state" / "mamoru.db"
    proc = mamoru(*command, "--db", str(db))
    assert not db.exists() and not db.parent.exists(), list(tmp_path.rglob("*"))
    assert f"no database at {db}" in proc.stderr


def test_example_config_is_valid() -> None:
    example = Path(__file__).parent.parent / "deploy" / "mamoru.example.toml"
    assert mamoru("config", "check", "--config", str(example)).returncode == 0


# ---- list import / export (in-process through screening.cli.main, on a real database file) ----

LISTS = Path(__file__).parent / "data" / "lists"


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    from screening.cli import main

    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def decide(capsys: pytest.CaptureFixture[str], db: str, number: str) -> dict:
    code, out, _ = run_cli(capsys, "check", number, "--db", db)
    assert code == 0
    return json.loads(out)


def test_block_import_then_check_blocks(capsys: pytest.CaptureFixture[str], db: str) -> None:
    plain = str(LISTS / "family_plain.txt")
    code, out, err = run_cli(capsys, "block", "import", plain, "--source", "police", "--days", "30", "--db", db)
    assert code == 0
    assert "imported 4 entries into the block list" in out and "(plain, 5 row(s), 1 problem(s))" in out
    assert err.strip() == f"{plain}:7: 'call me maybe': unexpected character(s) 'abcelmy'"
    out = decide(capsys, db, "03-1234-5678")
    assert (out["action"], out["rule"]) == ("block", "blocklist:police")
    assert out["matched"]["note"] == "said he was from the bank"
    assert decide(capsys, db, "0120-444-444")["rule"] == "blocklist:police"
    assert decide(capsys, db, "03-1234-4321")["action"] == "block"  # the range
    listed = json.loads(run_cli(capsys, "block", "list", "--json", "--db", db)[1])
    assert len(listed) == 4 and all(e["expires_at"] for e in listed)


def test_ftc_import_defaults_to_source_ftc(capsys: pytest.CaptureFixture[str], db: str) -> None:
    code, out, _ = run_cli(capsys, "block", "import", str(LISTS / "ftc_dnc_complaints.csv"), "--json", "--db", db)
    report = json.loads(out)
    assert code == 0 and report["format"] == "ftc"
    assert (report["rows"], report["imported"], report["duplicates"], report["problem_count"]) == (11, 7, 2, 2)
    assert [p["line"] for p in report["problems"]] == [5, 7]
    out = decide(capsys, db, "+1 202 555 0143")
    assert out["rule"] == "blocklist:ftc" and out["matched"]["note"].endswith("(robocall)")


def test_strict_import_writes_nothing(capsys: pytest.CaptureFixture[str], db: str) -> None:
    code, out, err = run_cli(capsys, "block", "import", str(LISTS / "excel_sjis.csv"), "--strict", "--db", db)
    assert code == 1 and out == ""
    assert ":4: " in err and "nothing imported: 1 problem(s) and --strict" in err
    assert decide(capsys, db, "03-1234-5678")["rule"] == "unknown"
    code, out, _ = run_cli(capsys, "block", "import", str(LISTS / "excel_sjis.csv"), "--db", db)
    assert code == 0 and "imported 3 entries" in out
    assert decide(capsys, db, "03-1234-5678")["matched"]["note"] == "還付金詐欺"


def test_import_with_no_valid_row_fails(capsys: pytest.CaptureFixture[str], tmp_path: Path, db: str) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_text("".join(f"not a number {i}\n" for i in range(25)), encoding="utf-8")
    code, out, err = run_cli(capsys, "allow", "import", str(bad), "--db", db)
    assert code == 1 and out == ""
    lines = err.splitlines()
    assert lines[0].startswith(f"{bad}:1: ") and lines[19].startswith(f"{bad}:20: ")
    assert lines[20] == "… and 5 more" and lines[21] == f"mamoru: nothing imported: no valid entries in {bad}"
    code, _, err = run_cli(capsys, "allow", "import", str(tmp_path / "missing.csv"), "--db", db)
    assert code == 1 and "cannot read" in err


def test_import_refuses_feed_sources_and_allow_feeds(capsys: pytest.CaptureFixture[str], db: str) -> None:
    code, _, err = run_cli(capsys, "block", "import", str(LISTS / "family_plain.txt"), "--source", "feed:police",
                           "--db", db)  # fmt: skip
    assert code == 1 and "belong to signed feeds" in err
    code, _, err = run_cli(capsys, "allow", "import", str(LISTS / "police.feed.csv"), "--db", db)
    assert code == 1 and "block entries only" in err


def test_export_then_import_round_trips(capsys: pytest.CaptureFixture[str], tmp_path: Path, db: str) -> None:
    for args in (["block", "add", "03-9876-5432", "--note", "架空請求, \"bank\"", "--days", "10"],
                 ["block", "add", "0120*", "--source", "police"],
                 ["block", "add", "03-1234-0000..03-1234-9999", "--note", "two\nlines"],
                 ["allow", "add", "+44 20 7946 0000", "--note", "son in London"]):  # fmt: skip
        assert run_cli(capsys, *args, "--db", db)[0] == 0
    other = str(tmp_path / "other.db")
    for kind in ("block", "allow"):
        exported = tmp_path / f"{kind}.csv"
        code, _, err = run_cli(capsys, kind, "export", "-o", str(exported), "--db", db)
        assert code == 0 and f"to {exported}" in err
        assert run_cli(capsys, kind, "import", str(exported), "--db", other)[0] == 0
        before = json.loads(run_cli(capsys, kind, "list", "--json", "--db", db)[1])
        after = json.loads(run_cli(capsys, kind, "list", "--json", "--db", other)[1])
        assert after == before and before
    code, out, _ = run_cli(capsys, "block", "export", "--format", "plain", "--db", db)
    assert code == 0 and out.splitlines() == ["03-9876-5432  # 架空請求, \"bank\"", "0120*",
                                              "03-1234-0000..03-1234-9999  # two lines"]  # fmt: skip
    feed = tmp_path / "block.feed.csv"
    assert run_cli(capsys, "block", "export", "--format", "feed", "-o", str(feed), "--db", db)[0] == 0
    assert feed.read_bytes().startswith(b"number,reason,expires\r\n")
    code, _, err = run_cli(capsys, "allow", "export", "--format", "feed", "--db", db)
    assert code == 1 and "block entries only" in err


def test_import_from_stdin_subprocess(db: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "screening.cli", "block", "import", "-", "--db", db],
                          input="number,reason\n03-1111-2222,from a pipe\nnope,x\n", capture_output=True, text=True,
                          timeout=50, cwd=Path(__file__).parent.parent, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "imported 1 entry into the block list from stdin (csv" in proc.stdout
    assert proc.stderr.startswith("stdin:3: 'nope'")
    assert check(db, "03-1111-2222")["matched"]["note"] == "from a pipe"


# ---- output that reaches a terminal (issue 12, item 15) ----

HOSTILE_NUMBER = "\x1b]0;owned\x07\x1b[2J\x9b31m\u202e0120"  # retitle, clear screen, C1 CSI, right-to-left


def _hostile_call(db: str) -> None:
    from blocklist.store import Store
    from screening.core.model import Action, CallerID, Category, Decision

    store = Store(Path(db), recover_calls=False)
    store.open()
    try:
        store.begin_call("sim", CallerID(raw_number=HOSTILE_NUMBER),
                         decision=Decision(Action.WARN, "unknown", "reason \x1b[5m blink", Category.INVALID))
    finally:
        store.close()


def _no_controls(text: str) -> bool:
    return not any(ch in text for ch in ("\x1b", "\x07", "\x9b", "\u202e"))


def test_calls_never_send_a_callers_control_characters_to_the_terminal(db: str) -> None:
    _hostile_call(db)
    out = mamoru("calls", "--db", db).stdout
    assert _no_controls(out) and "\\x1b]0;owned\\x07" in out, out
    assert json.loads(mamoru("calls", "--json", "--db", db).stdout)[0]["raw_number"] == HOSTILE_NUMBER


def test_run_prints_and_logs_a_callers_number_escaped(capsys: pytest.CaptureFixture[str]) -> None:
    import logging

    from screening.core.model import Action, CallerID, Category, Decision
    from screening.log_setup import setup_logging
    from screening.runner import _demo_printer

    _demo_printer("JP")(7, CallerID(raw_number=HOSTILE_NUMBER), Decision(Action.WARN, "unknown", "r", Category.INVALID))
    out = capsys.readouterr().out
    assert _no_controls(out) and "\\x1b[2J" in out, out
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers.clear()
    try:
        setup_logging("info")
        logging.getLogger("mamoru.test").warning("caller %s\nsecond line", HOSTILE_NUMBER)
    finally:
        root.handlers[:] = saved
    err = capsys.readouterr().err
    assert _no_controls(err) and "\\x1b]0;owned" in err and "\nsecond line" in err, err


def test_calls_show_local_time_with_its_zone_and_json_keeps_utc(db: str) -> None:
    from datetime import UTC, datetime

    from blocklist.store import Store
    from screening.core.model import CallerID

    store = Store(Path(db), recover_calls=False)
    store.open()
    try:
        store.begin_call("sim", CallerID(raw_number="0312345678"), datetime(2026, 12, 5, 15, 30, 7, tzinfo=UTC))
    finally:
        store.close()
    assert "2026-12-06 00:30:07 JST" in mamoru("calls", "--db", db).stdout
    assert json.loads(mamoru("calls", "--json", "--db", db).stdout)[0]["started_at"].endswith("Z")


def test_feed_list_shows_local_time(db: str) -> None:
    from blocklist.store import Store

    store = Store(Path(db), recover_calls=False)
    store.open()
    try:
        store.save_feed("police", url="https://feeds.example/", added_at="2026-12-01T00:00:00Z",
                        checked_at="2026-12-05T15:30:07Z")  # fmt: skip
    finally:
        store.close()
    assert "checked 2026-12-06 00:30:07 JST" in mamoru("feed", "list", "--db", db).stdout
    assert json.loads(mamoru("feed", "list", "--json", "--db", db).stdout)[0]["checked_at"] == "2026-12-05T15:30:07Z"


def test_alerts_show_local_time(db: str) -> None:
    from datetime import UTC, datetime

    from blocklist.store import Store
    from screening.alerts import AlertService
    from screening.config import parse_config
    from screening.notify import AppriseNotifier

    config = parse_config({"relatives": [{"name": "Taro", "notify": ["json://127.0.0.1:9/x"]}]}, source="test")
    with Store(Path(db)) as store:
        service = AlertService(store, config, AppriseNotifier(), lambda: datetime(2026, 12, 5, 15, 30, 7, tzinfo=UTC))
        service.open()
        service.on_health("disk_full", "disk nearly full")
        service.close()
    assert "#1 2026-12-06 00:30:07 JST health" in mamoru("alerts", "--db", db).stdout
    assert json.loads(mamoru("alerts", "--json", "--db", db).stdout)[0]["created_at"].endswith("Z")


def test_run_reports_a_line_that_cannot_be_built_as_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    import signal

    from screening import runner
    from screening.cli import main

    def no_line(*_args: object, **_kwargs: object) -> int:
        raise runner.LineSetupError("line sip://127.0.0.1:5099 needs pjsua2, which is not installed")

    monkeypatch.setattr(runner, "run_daemon", no_line)
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}  # cmd_run installs its own
    try:
        assert main(["run", "--line", "sip://127.0.0.1:5099", "--db", str(tmp_path / "m.db")]) == 1
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)
    assert capsys.readouterr().err.strip().endswith("mamoru: line sip://127.0.0.1:5099 needs pjsua2, which is not installed")
