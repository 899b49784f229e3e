"""People read the unit's local time with its zone; stored and JSON times stay UTC (a new user's report)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from blocklist.store import Store
from screening.config import load_config
from screening.core.clock import iso_utc, local_stamp, parse_iso_utc, region_zone
from screening.core.model import CallerID
from screening.doctor import check_clock, run_checks
from screening.runner import voice_settings_from_config
from voice.service import build_voice

LATE_UTC = datetime(2026, 12, 5, 15, 30, 7, tzinfo=UTC)  # already the 6th in Tokyo


def test_local_stamp_names_the_zone() -> None:
    assert local_stamp(LATE_UTC, region_zone("JP")) == "2026-12-06 00:30:07 JST"
    assert local_stamp(LATE_UTC.replace(tzinfo=None), region_zone("JP"), seconds=False) == "2026-12-06 00:30 JST"
    assert local_stamp(LATE_UTC, region_zone("GB")) == "2026-12-05 15:30:07 GMT"


def test_doctor_tells_the_time_in_the_units_zone(tmp_path: Path) -> None:
    assert "2026-12-06 00:30 JST" in check_clock(LATE_UTC, region_zone("JP")).message
    config = tmp_path / "mamoru.toml"
    config.write_text(f'[line]\nuri = "sim:"\n[store]\ndb = "{tmp_path / "m.db"}"\n[recording]\nenabled = false\n'
                      '[voice]\ntranscribe = false\n', encoding="utf-8")  # fmt: skip
    checks = {c.name: c for c in run_checks(load_config(config, env={}), now=lambda: LATE_UTC)}
    assert "JST" in checks["clock"].message and "UTC" not in checks["clock"].message


def test_recording_folders_are_dated_in_the_units_local_day(tmp_path: Path) -> None:
    config = tmp_path / "mamoru.toml"
    config.write_text('[voice]\ntranscribe = false\nlanguage = "ja"\n', encoding="utf-8")
    store = Store(tmp_path / "calls.db")
    store.open()
    try:
        voice = build_voice(voice_settings_from_config(load_config(config, env={})), store, tmp_path / "rec")
        call_id = store.begin_call("test", CallerID(raw_number="0312345678"))
        audio = voice.start_call(call_id, LATE_UTC)
        audio.finish()
        (row,) = store.recent_calls(limit=1)
        assert row.recording is not None and row.recording.startswith("2026/12/06/"), row.recording
        assert row.recording.endswith("-003007.wav")
    finally:
        store.close()


def test_stored_times_are_one_utc_form() -> None:
    """Every module writes and reads UTC through screening.core.clock: one form, any offset read back."""
    moment = datetime(2026, 12, 5, 15, 30, 7, 123456, tzinfo=UTC)
    assert iso_utc(moment) == "2026-12-05T15:30:07.123Z"
    assert iso_utc(moment, timespec="seconds") == "2026-12-05T15:30:07Z"  # truncated, as bundles are signed
    assert iso_utc(moment.replace(tzinfo=None)) == "2026-12-05T15:30:07.123Z"  # naive is UTC
    assert parse_iso_utc("2026-12-06T00:30:07+09:00") == datetime(2026, 12, 5, 15, 30, 7, tzinfo=UTC)
    assert parse_iso_utc("2026-12-05T15:30:07Z").tzinfo is UTC
    assert parse_iso_utc("2026-12-05T15:30:07") == datetime(2026, 12, 5, 15, 30, 7, tzinfo=UTC)
