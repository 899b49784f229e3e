"""voice.adoption: a recording whose call row was lost gets a call row at start-up, never deleted."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from blocklist.store import Store
from screening.core.model import CallerID, CallState, EventKind
from voice.adoption import ADOPTED_LINE, adopt_orphan_recordings, recording_relpath
from voice.recorder import CallRecorder
from voice.retention import RetentionPolicy
from voice.service import RecordingHousekeeping

WHEN = datetime(2026, 11, 3, 14, 5, 6, tzinfo=UTC)
QUOTA = RetentionPolicy(keep_days=3650, max_bytes=1 << 30)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "mamoru.db", busy_timeout=0.05, retry_interval=0.0) as s:
        yield s


def write_wav(rec_dir: Path, relpath: str, seconds: float = 1.0) -> Path:
    recorder = CallRecorder(rec_dir / relpath, 8000)
    assert recorder.open()
    recorder.write(b"\x01\x00" * int(8000 * seconds))
    recorder.close()
    return rec_dir / relpath


def test_orphan_recording_is_adopted_at_start_not_deleted(store: Store, tmp_path: Path) -> None:
    rec_dir = tmp_path / "recordings"
    kept_id = store.begin_call("modem", CallerID(raw_number="0312345678"), started_at=WHEN)
    kept = recording_relpath(kept_id, WHEN)
    write_wav(rec_dir, kept)
    store.set_recording(kept_id, kept, 16044, 1.0)
    orphan = recording_relpath(41, WHEN)  # call 41's row died with the power
    path = write_wav(rec_dir, orphan, seconds=2.0)

    RecordingHousekeeping(store, rec_dir, QUOTA).at_start()

    assert path.exists()
    rows = [c for c in store.recent_calls() if c.recording == orphan]
    assert len(rows) == 1, "the orphan recording has no call row"
    row = rows[0]
    assert row.line == ADOPTED_LINE and row.state == CallState.INTERRUPTED and row.raw_number is None
    assert row.started_at.startswith("2026-11-03T14:05:06")
    assert row.recording_seconds == pytest.approx(2.0)
    adopted = [e for e in store.events_for(row.id) if e.kind == EventKind.RECORDING]
    assert adopted[-1].detail["action"] == "adopted" and adopted[-1].detail["previous_call_id"] == 41
    assert [c.recording for c in store.recent_calls()].count(kept) == 1  # a referenced file is left as it is


def test_adoption_runs_once_and_takes_any_wav_name(store: Store, tmp_path: Path) -> None:
    rec_dir = tmp_path / "recordings"
    write_wav(rec_dir, "odd-name.wav")
    (rec_dir / "notes.txt").write_text("not a recording")
    first = adopt_orphan_recordings(store, rec_dir)
    assert len(first) == 1
    assert adopt_orphan_recordings(store, rec_dir) == []
    assert store.get_call(first[0]).recording == "odd-name.wav"


def test_no_recordings_dir_is_nothing_to_adopt(store: Store, tmp_path: Path) -> None:
    assert adopt_orphan_recordings(store, tmp_path / "missing") == []
