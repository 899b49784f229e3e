"""The one atomic-replace recipe: old bytes or new ones, never half, whatever happens meanwhile."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from screening.core.files import DEFAULT_MODE, atomic_write_bytes, atomic_write_text, fsync_dir, staged_file

ROOT = Path(__file__).resolve().parents[1]


def _siblings(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir())


def test_writes_a_new_file_with_the_default_mode(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    atomic_write_bytes(target, b"{}\n")
    assert target.read_bytes() == b"{}\n"
    assert target.stat().st_mode & 0o777 == DEFAULT_MODE
    assert _siblings(target) == ["state.json"]  # no temp file left behind


def test_replaces_keeping_the_mode_unless_told(tmp_path: Path) -> None:
    target = tmp_path / "users.toml"
    target.write_text("old")
    target.chmod(0o600)
    atomic_write_text(target, "新しい")
    assert target.read_text(encoding="utf-8") == "新しい"
    assert target.stat().st_mode & 0o777 == 0o600  # a private file stays private
    atomic_write_text(target, "again", mode=0o640)
    assert target.stat().st_mode & 0o777 == 0o640


def test_not_durable_still_replaces(tmp_path: Path) -> None:
    target = tmp_path / "status.json"
    atomic_write_bytes(target, b"1", durable=False)
    atomic_write_bytes(target, b"2", durable=False)
    assert target.read_bytes() == b"2"
    assert _siblings(target) == ["status.json"]


def test_staged_file_can_be_validated_and_abandoned(tmp_path: Path) -> None:
    target = tmp_path / "mamoru.toml"
    target.write_bytes(b"good")
    with pytest.raises(ValueError), staged_file(target, b"bad") as temp:
        assert temp.parent == target.parent and temp.read_bytes() == b"bad"
        raise ValueError("the loader refused it")
    assert target.read_bytes() == b"good"
    assert _siblings(target) == ["mamoru.toml"]
    with staged_file(target, b"better") as temp:
        assert target.read_bytes() == b"good"  # nothing is live before the block ends
    assert target.read_bytes() == b"better"
    assert not temp.exists()


def test_a_failed_write_leaves_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "feed.json"
    target.write_bytes(b"old")
    with pytest.raises(TypeError):
        atomic_write_bytes(target, "not bytes")  # type: ignore[arg-type]
    assert target.read_bytes() == b"old"
    assert _siblings(target) == ["feed.json"]


def test_a_kill_mid_write_leaves_the_old_file(tmp_path: Path) -> None:
    """SIGKILL while the new bytes are half on disk: the target still holds every old byte."""
    target = tmp_path / "blocklist.json"
    old = b"old contents\n" * 1000
    target.write_bytes(old)
    child = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from screening.core.files import staged_file
        with staged_file(Path({str(target)!r}), b"new" * 1_000_000):
            print("staged", flush=True)
            time.sleep(60)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", child], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "staged"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert target.read_bytes() == old


def test_fsync_dir_tolerates_a_missing_directory(tmp_path: Path) -> None:
    fsync_dir(tmp_path)
    fsync_dir(tmp_path / "gone")  # logged, not raised: the file itself was synced
