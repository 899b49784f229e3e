"""Power cut on a real ext4 filesystem: nothing a finished call wrote may be lost.

The filesystem is a loop-mounted ext4 image mounted ``errors=remount-ro``; the cut is
ext4's own ``/sys/fs/ext4/<dev>/trigger_fs_error``, which aborts the journal exactly as
an I/O error would: everything not yet committed to the journal (i.e. not fsync'ed)
is gone after the fsck. Needs root and a loop device; skipped with the reason otherwise.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from blocklist.store import Store
from screening.core.model import Action, CallerID, CallState, Category, Decision, Prompt
from voice.adoption import adopt_orphan_recordings
from voice.pipeline import VoiceService
from voice.recorder import repair_interrupted
from voice.retention import RetentionPolicy, apply_retention

CMD_TIMEOUT_S = 30
WARN = Decision(Action.WARN, "unknown", "Not in the family list.", Category.DOMESTIC, Prompt.WARNING)
SECOND = b"\x10\x00" * 8000  # 1 s of 8 kHz PCM16


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "needs root to mount a loop device"
    if not Path("/dev/loop-control").exists():
        return "no loop device support (/dev/loop-control missing)"
    for tool in ("mkfs.ext4", "e2fsck", "mount", "umount", "findmnt"):
        if shutil.which(tool) is None:
            return f"{tool} not installed"
    return None


pytestmark = pytest.mark.skipif(_why_not() is not None, reason=_why_not() or "")


def _run(*cmd: str, ok: tuple[int, ...] = (0,)) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=CMD_TIMEOUT_S, check=False)
    assert done.returncode in ok, f"{cmd}: {done.returncode} {done.stderr}"


class Ext4:
    def __init__(self, image: Path, mnt: Path) -> None:
        self.image, self.mnt = image, mnt

    def mount(self) -> None:
        _run("mount", "-o", "loop,errors=remount-ro", str(self.image), str(self.mnt))

    def power_cut(self) -> None:
        """Abort the journal: the filesystem goes read-only, uncommitted writes are lost."""
        source = subprocess.run(["findmnt", "-no", "SOURCE", str(self.mnt)], capture_output=True, text=True,
                                timeout=CMD_TIMEOUT_S, check=True).stdout.strip()  # fmt: skip
        trigger = Path("/sys/fs/ext4", Path(source).name, "trigger_fs_error")
        if not trigger.exists():
            pytest.skip(f"this kernel has no {trigger}")
        trigger.write_text("mamoru power-cut test\n")

    def fsck_and_remount(self) -> None:
        _run("umount", str(self.mnt))
        _run("e2fsck", "-fy", str(self.image), ok=(0, 1))  # 1: errors corrected, as after a real cut
        self.mount()


@pytest.fixture
def ext4(tmp_path: Path) -> Iterator[Ext4]:
    image, mnt = tmp_path / "fs.img", tmp_path / "mnt"
    mnt.mkdir()
    with open(image, "wb") as f:
        f.truncate(64 * 1024 * 1024)
    _run("mkfs.ext4", "-q", "-F", str(image))
    fs = Ext4(image, mnt)
    tried = subprocess.run(["mount", "-o", "loop,errors=remount-ro", str(image), str(mnt)], capture_output=True,
                           text=True, timeout=CMD_TIMEOUT_S, check=False)  # fmt: skip
    if tried.returncode != 0:
        pytest.skip(f"cannot mount a loop device here: {tried.stderr.strip()}")
    try:
        yield fs
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=CMD_TIMEOUT_S, check=False)


def _call(store: Store, voice: VoiceService, number: str) -> int:
    caller = CallerID(raw_number=number, number_e164="+81" + number[1:])
    call_id = store.begin_call("modem", caller, decision=WARN)
    audio = voice.start_call(call_id)
    audio.received(SECOND)
    audio.finish()
    store.finish_call(call_id, "caller_hung_up")
    return call_id


def test_power_cut_keeps_finished_and_spooled_calls_and_every_recording(ext4: Ext4) -> None:
    db, recordings = ext4.mnt / "mamoru.db", ext4.mnt / "recordings"
    store = Store(db, busy_timeout=0.05, retry_interval=0.0).open()
    voice = VoiceService(store, recordings, pack=None, model=None)
    # The last checkpoint: schema on disk, everything before this point durable.
    side = sqlite3.connect(db)
    side.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    side.close()
    os.sync()

    for i in range(3):
        _call(store, voice, f"031234567{i}")
    # A call in progress when the power goes: its row and its recording so far must survive.
    in_flight = store.begin_call("modem", CallerID(raw_number="0398765432", number_e164="+81398765432"),
                                 decision=WARN)  # fmt: skip
    in_flight_audio = voice.start_call(in_flight)
    in_flight_audio.received(SECOND)
    # Another writer holds the database: the next two calls go to the spool.
    locker = sqlite3.connect(db, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    spooled = [_call(store, voice, f"066666666{i}") for i in range(2)]
    assert all(call_id < 0 for call_id in spooled), "the database lock did not force the spool"
    assert store.pending_count > 0

    ext4.power_cut()
    in_flight_audio.finish()  # the process lives on for a moment: nothing it writes reaches the disk
    locker.close()
    store.close()  # nothing it does now reaches the disk
    ext4.fsck_and_remount()

    with Store(db) as after:
        repair_interrupted(after, recordings)  # what start-up does, in this order
        adopted = adopt_orphan_recordings(after, recordings)
        calls = after.recent_calls(limit=20)
        report = apply_retention(after, recordings, RetentionPolicy(keep_days=365, max_bytes=1 << 30),
                                 datetime.now(UTC))  # fmt: skip
        numbers = {c.raw_number: c for c in calls}
        assert {f"031234567{i}" for i in range(3)} <= numbers.keys(), "a finished call's row was lost"
        assert {f"066666666{i}" for i in range(2)} <= numbers.keys(), "a spooled call was lost"
        for i in range(3):
            row = numbers[f"031234567{i}"]
            assert row.state == CallState.COMPLETED
            assert row.recording and (recordings / row.recording).stat().st_size > 44
        assert adopted == [], "a recording had lost its call row"
        assert report.unreferenced == [], f"orphaned recordings: {report.unreferenced}"
        cut = numbers["0398765432"]
        assert cut.state == CallState.INTERRUPTED and cut.recording and (recordings / cut.recording).exists()
        for i in range(2):
            assert numbers[f"066666666{i}"].state == CallState.COMPLETED and numbers[f"066666666{i}"].recording
