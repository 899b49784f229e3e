"""voice.recorder: valid WAVs, crash safety (SIGKILL mid-recording), repair, and failing quietly."""

from __future__ import annotations

import logging
import os
import select
import signal
import struct
import subprocess
import sys
import textwrap
import threading
import time
import wave
from datetime import UTC, datetime
from pathlib import Path

import pytest

from blocklist.store import Store
from screening.core.model import CallerID, CallState, EventKind
from voice.recorder import HEADER_BYTES, CallRecorder, repair_interrupted, repair_wav, resolve_recording

REPO = Path(__file__).resolve().parents[1]


def pcm(n_samples: int, start: int = 0) -> bytes:
    """A recognisable ramp: sample i is (start + i) wrapped to int16, so any prefix can be checked."""
    return b"".join(struct.pack("<h", ((start + i) % 65536) - 32768) for i in range(n_samples))


def read_wav(path: Path) -> tuple[wave._wave_params, bytes]:
    with wave.open(str(path), "rb") as w:
        return w.getparams(), w.readframes(w.getnframes())


def header_sizes(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:HEADER_BYTES]
    return struct.unpack_from("<I", head, 4)[0], struct.unpack_from("<I", head, 40)[0]


# --------------------------------------------------------------------------- normal recording


def test_constructor_does_no_io(tmp_path: Path) -> None:
    CallRecorder(tmp_path / "sub" / "call.wav")
    assert list(tmp_path.iterdir()) == []


def test_recording_is_a_valid_wav_with_exactly_the_written_samples(tmp_path: Path) -> None:
    path = tmp_path / "2024" / "06" / "call-1.wav"
    recorder = CallRecorder(path, 8000)
    assert recorder.open()
    announcement, caller = pcm(3000), pcm(12345, start=3000)
    recorder.write(announcement)  # what we played, then what we heard: the call's timeline
    for i in range(0, len(caller), 321):  # odd-sized chunks, as a line delivers them
        recorder.write(caller[i : i + 321])
    info = recorder.close()

    params, frames = read_wav(path)
    assert (params.nchannels, params.sampwidth, params.framerate) == (1, 2, 8000)
    assert frames == announcement + caller
    assert info.path == path
    assert info.bytes == path.stat().st_size == HEADER_BYTES + len(frames)
    assert info.seconds == pytest.approx(15345 / 8000)
    assert not recorder.failed
    assert recorder.close() == info  # idempotent


def test_file_is_playable_after_every_flush_without_close(tmp_path: Path) -> None:
    """What a power cut after a flush leaves: the header already covers all flushed audio."""
    path = tmp_path / "call.wav"
    recorder = CallRecorder(path, 8000)
    recorder.open()
    assert read_wav(path)[1] == b""  # valid from the start
    recorder.write(pcm(4000))  # 0.5 s at 8 kHz: flushed
    recorder.write(pcm(1000, start=4000))  # buffered
    assert recorder.flushed_bytes == 8000
    assert read_wav(path)[1] == pcm(4000)
    assert header_sizes(path) == (36 + 8000, 8000)
    recorder.flush()
    assert read_wav(path)[1] == pcm(5000)
    recorder.close()


def test_concurrent_writes_keep_whole_chunks(tmp_path: Path) -> None:
    """write() is called from the audio thread while the session may flush or close."""
    path = tmp_path / "call.wav"
    recorder = CallRecorder(path, 8000, flush_bytes=1000)
    recorder.open()
    chunks = [bytes([i, i]) * 50 for i in range(1, 9)]

    def writer(chunk: bytes) -> None:
        for _ in range(100):
            recorder.write(chunk)

    threads = [threading.Thread(target=writer, args=(c,)) for c in chunks]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    recorder.close()
    frames = read_wav(path)[1]
    assert len(frames) == 8 * 100 * 100
    assert all(frames[i : i + 100] in chunks for i in range(0, len(frames), 100))


def test_existing_file_is_never_overwritten(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "call.wav"
    path.write_bytes(b"someone's evidence")
    recorder = CallRecorder(path)
    with caplog.at_level(logging.ERROR, logger="voice.recorder"):
        assert recorder.open() is False
    recorder.write(pcm(100))
    info = recorder.close()
    assert recorder.failed and "cannot create recording" in caplog.text
    assert path.read_bytes() == b"someone's evidence"
    assert (info.bytes, info.seconds) == (0, 0.0)


# --------------------------------------------------------------------------- failures never reach the call


def test_unwritable_directory_marks_recorder_failed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The parent is a regular FILE: mkdir/create fail even as root (chmod would not)."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    recorder = CallRecorder(blocker / "2024" / "call.wav")
    with caplog.at_level(logging.ERROR, logger="voice.recorder"):
        assert recorder.open() is False
        recorder.write(pcm(8000))
        recorder.flush()
        info = recorder.close()
    assert recorder.failed
    assert "call continues without recording" in caplog.text
    assert (info.bytes, info.seconds) == (0, 0.0)
    assert recorder.dropped_bytes == 16000


def test_disk_full_mid_call_keeps_what_was_flushed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    path = tmp_path / "call.wav"
    recorder = CallRecorder(path, 8000)
    recorder.open()
    recorder.write(pcm(4000))  # exactly one flush
    assert recorder.flushed_bytes == 8000

    real_pwrite = os.pwrite

    def full_after_a_bit(fd: int, data: bytes, offset: int) -> int:
        if offset >= HEADER_BYTES:  # audio: half of it fits, then ENOSPC
            if len(data) > 100:
                return real_pwrite(fd, bytes(data)[:100], offset)
            raise OSError(28, "No space left on device")
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", full_after_a_bit)
    with caplog.at_level(logging.ERROR, logger="voice.recorder"):
        recorder.write(pcm(4000, start=4000))  # flush fails
        recorder.write(pcm(4000, start=8000))  # dropped quietly
        info = recorder.close()
    monkeypatch.undo()
    assert recorder.failed and "disk full" in caplog.text
    assert read_wav(path)[1] == pcm(4000)  # the partial write was cut back off
    assert info.bytes == HEADER_BYTES + 8000 and info.seconds == 0.5
    assert recorder.dropped_bytes == 16000


# --------------------------------------------------------------------------- crash safety

_CHILD = textwrap.dedent(
    """
    import struct, sys, time
    sys.path.insert(0, sys.argv[2])
    from voice.recorder import CallRecorder

    def pcm(n, start):
        return b"".join(struct.pack("<h", ((start + i) % 65536) - 32768) for i in range(n))

    rec = CallRecorder(sys.argv[1], 8000, flush_bytes=1600)
    rec.open()
    sent, reported = 0, 0
    while True:  # until SIGKILL
        rec.write(pcm(160, sent))  # 20 ms frames, like a modem delivers
        sent += 160
        if rec.flushed_bytes != reported:
            reported = rec.flushed_bytes
            print(reported, flush=True)
        time.sleep(0.001)
    """
)


def read_line(proc: subprocess.Popen[str], deadline: float) -> str:
    assert proc.stdout is not None
    remaining = deadline - time.monotonic()
    ready, _, _ = select.select([proc.stdout], [], [], max(0.0, remaining))
    if not ready:
        raise TimeoutError("recording child did not report a flush in time")
    return proc.stdout.readline()


def test_sigkill_mid_recording_leaves_a_repairable_file(tmp_path: Path) -> None:
    path = tmp_path / "call.wav"
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(path), str(REPO)],
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    last_flushed = 0
    try:
        deadline = time.monotonic() + 30
        while last_flushed < 20 * 1600:  # a couple of seconds of audio, many flushes
            line = read_line(proc, deadline)
            assert line, "recording child exited early"
            last_flushed = int(line)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL

    info = repair_wav(path)
    assert info is not None
    params, frames = read_wav(path)
    assert params.framerate == 8000 and params.sampwidth == 2
    assert len(frames) >= last_flushed
    assert frames == pcm(len(frames) // 2)  # everything up to the last flush, in order, nothing else
    assert info.bytes == path.stat().st_size and info.seconds == len(frames) / 16000
    assert header_sizes(path) == (path.stat().st_size - 8, len(frames))


def test_repair_cuts_a_torn_half_sample_and_fixes_stale_sizes(tmp_path: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    path = tmp_path / "call.wav"
    recorder = CallRecorder(path, 8000)
    recorder.open()
    recorder.write(pcm(4000))
    recorder.close()
    with open(path, "ab") as f:  # audio written but header not yet patched, then a torn sample
        f.write(pcm(300, start=4000) + b"\x7f")
    with caplog.at_level(logging.WARNING, logger="voice.recorder"):
        info = repair_wav(path)
    assert "repaired recording" in caplog.text
    assert info is not None and info.seconds == 4300 / 8000
    assert read_wav(path)[1] == pcm(4300)
    assert path.stat().st_size == HEADER_BYTES + 8600

    caplog.clear()
    mtime = path.stat().st_mtime_ns
    with caplog.at_level(logging.WARNING, logger="voice.recorder"):
        assert repair_wav(path) == info  # already consistent: nothing written
    assert "repaired" not in caplog.text and path.stat().st_mtime_ns == mtime


def test_repair_of_header_only_file_and_header_with_zero_sizes(tmp_path: Path) -> None:
    path = tmp_path / "call.wav"
    CallRecorder(path).open()  # crash right after open
    info = repair_wav(path)
    assert info is not None and (info.bytes, info.seconds) == (HEADER_BYTES, 0.0)
    with open(path, "ab") as f:
        f.write(pcm(800))
    assert read_wav(path)[1] == b""  # header says 0 ...
    assert repair_wav(path) is not None
    assert read_wav(path)[1] == pcm(800)  # ... until repaired


@pytest.mark.parametrize("content", [b"", b"hello, not audio", b"RIFF\x00\x00\x00\x00AVI LIST", b"RIFF"])
def test_non_wav_file_is_left_alone(tmp_path: Path, content: bytes, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "call.wav"
    path.write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="voice.recorder"):
        assert repair_wav(path) is None
    assert path.read_bytes() == content
    assert "not repairing" in caplog.text


def test_repair_of_missing_file_returns_none(tmp_path: Path) -> None:
    assert repair_wav(tmp_path / "nope.wav") is None


def test_resolve_recording_stays_inside_the_dir(tmp_path: Path) -> None:
    root = tmp_path / "rec"
    root.mkdir()
    (root / "escape").symlink_to(tmp_path)
    assert resolve_recording(root, "2024/06/a.wav") == root.resolve() / "2024/06/a.wav"
    for bad in ("/etc/passwd", "../x.wav", "2024/../../x.wav", "", ".", "escape/x.wav"):
        assert resolve_recording(root, bad) is None, bad


# --------------------------------------------------------------------------- start-up repair driven by the store


def test_repair_interrupted_uses_the_store(tmp_path: Path) -> None:
    db, recordings = tmp_path / "mamoru.db", tmp_path / "rec"

    def clock() -> datetime:
        return datetime(2024, 6, 1, tzinfo=UTC)

    s = Store(db, clock=clock, busy_timeout=0.05, retry_interval=0.0).open()
    crashed, gone, junk, done = (s.begin_call("line1", CallerID(raw_number=f"03{i}")) for i in range(4))
    for call_id, name in ((crashed, "a.wav"), (gone, "b.wav"), (junk, "c.wav"), (done, "d.wav")):
        s.set_recording(call_id, name)  # "being written"
    recorder = CallRecorder(recordings / "a.wav")
    recorder.open()
    recorder.write(pcm(4000))  # flushed ...
    with open(recordings / "a.wav", "ab") as f:
        f.write(pcm(100, start=4000))  # ... plus a write the header does not cover yet
    (recordings / "c.wav").write_bytes(b"garbage")
    finished = CallRecorder(recordings / "d.wav")
    finished.open()
    info_d = finished.close()
    s.set_recording(done, "d.wav", info_d.bytes, info_d.seconds)
    s.close()  # crash: calls never finished

    with Store(db, clock=clock) as s2:
        assert s2.get_call(crashed).state is CallState.INTERRUPTED
        assert [r.call_id for r in s2.unfinished_recordings()] == [crashed, gone, junk]
        (info,) = repair_interrupted(s2, recordings)
        assert read_wav(recordings / "a.wav")[1] == pcm(4100)
        row = s2.get_call(crashed)
        assert (row.recording, row.recording_bytes, row.recording_seconds) == ("a.wav", info.bytes, 4100 / 8000)
        assert s2.events_for(crashed)[-1].kind is EventKind.RECORDING
        assert s2.get_call(gone).recording is None
        assert (s2.get_call(junk).recording, s2.get_call(junk).recording_bytes) == ("c.wav", 7)
        assert s2.unfinished_recordings() == []  # repaired once, not on every start-up
