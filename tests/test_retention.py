"""voice.retention: age, quota oldest first, unreviewed fraud kept, missing files, hostile paths."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from blocklist.store import Store
from screening.config import RecordingConfig
from screening.core.model import CallerID, EventKind
from voice.retention import RetentionPolicy, apply_retention

NOW = datetime(2024, 6, 30, 12, tzinfo=UTC)
KB = 1000


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "mamoru.db", clock=lambda: NOW, busy_timeout=0.05, retry_interval=0.0) as s:
        yield s


@pytest.fixture
def rec_dir(tmp_path: Path) -> Path:
    path = tmp_path / "recordings"
    path.mkdir()
    return path


def add_recording(store: Store, rec_dir: Path, days_ago: float, size: int, *, verdict: str | None = None,
                  reviewed: bool = False, write: bool = True) -> tuple[int, Path]:  # fmt: skip
    started = NOW - timedelta(days=days_ago)
    call_id = store.begin_call("line1", CallerID(raw_number="0312345678"), started_at=started)
    relpath = f"{started:%Y/%m}/call-{call_id}.wav"
    path = rec_dir / relpath
    if write:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\0" * size)
    store.set_recording(call_id, relpath, size, size / 16000)
    if verdict:
        store.set_detection(call_id, verdict, 0.9, "transcript")
    if reviewed:
        store.mark_reviewed(call_id)
    return call_id, path


def test_policy_from_config() -> None:
    policy = RetentionPolicy.from_config(RecordingConfig(keep_days=30, max_disk_mb=10))
    assert policy == RetentionPolicy(30, 10 * 1024 * 1024)
    with pytest.raises(ValueError):
        RetentionPolicy(-1, 0)


def test_age_rule(store: Store, rec_dir: Path) -> None:
    old, old_path = add_recording(store, rec_dir, days_ago=91, size=KB)
    young, young_path = add_recording(store, rec_dir, days_ago=89, size=KB)
    report = apply_retention(store, rec_dir, RetentionPolicy(keep_days=90, max_bytes=10**9), NOW)
    assert report.deleted == [old] and report.freed_bytes == KB
    assert not old_path.exists() and young_path.exists()
    assert store.get_call(old).recording is None and store.get_call(old).recording_bytes is None
    assert store.get_call(young).recording is not None
    event = store.events_for(old)[-1]
    assert event.kind is EventKind.RECORDING and event.detail["action"] == "deleted"
    assert event.detail["reason"] == "age"
    assert old_path.parent.exists()  # directories are left; cheap, and may be in use


def test_quota_rule_deletes_oldest_first_until_under(store: Store, rec_dir: Path) -> None:
    ids = [add_recording(store, rec_dir, days_ago=10 - i, size=10 * KB)[0] for i in range(5)]
    report = apply_retention(store, rec_dir, RetentionPolicy(keep_days=90, max_bytes=25 * KB), NOW)
    assert report.deleted == ids[:3]
    assert report.freed_bytes == 30 * KB and report.total_bytes == 20 * KB
    assert [r.call_id for r in store.recordings_oldest_first()] == ids[3:]
    again = apply_retention(store, rec_dir, RetentionPolicy(keep_days=90, max_bytes=25 * KB), NOW)
    assert again.deleted == [] and again.freed_bytes == 0


def test_unreviewed_fraud_is_never_deleted(store: Store, rec_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    fraud, fraud_path = add_recording(store, rec_dir, days_ago=400, size=50 * KB, verdict="fraud")
    reviewed, reviewed_path = add_recording(store, rec_dir, days_ago=300, size=10 * KB, verdict="fraud",
                                            reviewed=True)  # fmt: skip
    suspicious, _ = add_recording(store, rec_dir, days_ago=5, size=10 * KB, verdict="suspicious")
    clean, _ = add_recording(store, rec_dir, days_ago=1, size=10 * KB, verdict="clean")
    with caplog.at_level(logging.WARNING, logger="voice.retention"):
        report = apply_retention(store, rec_dir, RetentionPolicy(keep_days=90, max_bytes=20 * KB), NOW)
    assert fraud_path.exists() and report.kept_protected == [fraud]
    assert not reviewed_path.exists()  # reviewed fraud follows the normal rules
    assert report.deleted == [reviewed, suspicious, clean]  # all of it, and still over quota
    assert report.total_bytes == 50 * KB
    assert "over the" in caplog.text and "unreviewed fraud" in caplog.text
    assert store.get_call(fraud).recording is not None

    store.mark_reviewed(fraud)  # a family member listened to it
    report = apply_retention(store, rec_dir, RetentionPolicy(keep_days=90, max_bytes=20 * KB), NOW)
    assert report.deleted == [fraud] and not fraud_path.exists()


def test_missing_file_is_cleared_from_the_row(store: Store, rec_dir: Path) -> None:
    gone, _ = add_recording(store, rec_dir, days_ago=1, size=KB, write=False)
    kept, kept_path = add_recording(store, rec_dir, days_ago=1, size=KB)
    report = apply_retention(store, rec_dir, RetentionPolicy(keep_days=90, max_bytes=10**9), NOW)
    assert report.missing == [gone] and report.deleted == []
    assert store.get_call(gone).recording is None
    assert store.events_for(gone)[-1].detail["action"] == "missing"
    assert kept_path.exists() and store.get_call(kept).recording is not None


def test_unreferenced_files_are_left_alone(store: Store, rec_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    add_recording(store, rec_dir, days_ago=1, size=KB)
    stray = rec_dir / "manual-copy.wav"
    stray.write_bytes(b"\0" * 100 * KB)
    with caplog.at_level(logging.INFO, logger="voice.retention"):
        report = apply_retention(store, rec_dir, RetentionPolicy(keep_days=0, max_bytes=0), NOW)
    assert stray.exists() and report.unreferenced == [stray.resolve()]
    assert "belong to no call" in caplog.text


def test_recording_in_progress_is_skipped(store: Store, rec_dir: Path) -> None:
    call_id = store.begin_call("line1", CallerID(raw_number="031"), started_at=NOW - timedelta(days=400))
    store.set_recording(call_id, "live.wav")  # no sizes yet: being written
    (rec_dir / "live.wav").write_bytes(b"\0" * KB)
    report = apply_retention(store, rec_dir, RetentionPolicy(keep_days=1, max_bytes=0), NOW)
    assert report.deleted == [] and report.unreferenced == []
    assert (rec_dir / "live.wav").exists()


def test_path_traversal_rows_are_rejected(store: Store, rec_dir: Path, tmp_path: Path) -> None:
    """Rows written behind the API's back (or a tampered spool) must not steer a delete outside the dir."""
    victims = [tmp_path / f"victim{i}.wav" for i in range(3)]
    for victim in victims:
        victim.write_bytes(b"\0" * KB)
    (rec_dir / "link").symlink_to(tmp_path)
    ids = [store.begin_call("line1", CallerID(raw_number="031"), started_at=NOW - timedelta(days=400))
           for _ in victims]  # fmt: skip
    paths = ["../victim0.wav", str(victims[1]), "link/victim2.wav"]
    with sqlite3.connect(store.path) as conn:
        for call_id, relpath in zip(ids, paths):
            conn.execute("UPDATE calls SET recording = ?, recording_bytes = ? WHERE id = ?", [relpath, KB, call_id])
    report = apply_retention(store, rec_dir, RetentionPolicy(keep_days=1, max_bytes=0), NOW)
    assert report.rejected == ids and report.deleted == []
    assert all(v.exists() for v in victims)
    assert [store.get_call(i).recording for i in ids] == paths  # left for a person to look at


def test_set_recording_rejects_bad_paths(store: Store) -> None:
    call_id = store.begin_call("line1", CallerID(raw_number="031"))
    for bad in ("/abs.wav", "../x.wav", "a/../../x.wav", "", "."):
        with pytest.raises(ValueError, match="bad recording path"):
            store.set_recording(call_id, bad, 1, 0.1)
