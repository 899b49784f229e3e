"""Watchdog against a real notify socket: a unix datagram socket bound in a tmp dir.

This is exactly what systemd gives a ``Type=notify`` service: ``NOTIFY_SOCKET``
names a datagram socket, ``WATCHDOG_USEC`` the watchdog timeout. We read what
arrives and check what systemd would act on.
"""

from __future__ import annotations

import itertools
import os
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from screening.watchdog import Watchdog, watchdog_interval_s

RECV_TIMEOUT_S = 2.0
REPO = Path(__file__).resolve().parent.parent


class FakeSystemd:
    """The receiving end of NOTIFY_SOCKET; every datagram with its arrival time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(RECV_TIMEOUT_S)

    def receive(self) -> str:
        return self.sock.recv(4096).decode()

    def drain(self, quiet_s: float = 0.2) -> list[tuple[float, str]]:
        """Everything that arrives until the socket has been quiet for ``quiet_s``."""
        got: list[tuple[float, str]] = []
        self.sock.settimeout(quiet_s)
        try:
            while True:
                got.append((time.monotonic(), self.sock.recv(4096).decode()))
        except TimeoutError:
            return got
        finally:
            self.sock.settimeout(RECV_TIMEOUT_S)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def systemd(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSystemd]:
    # Short path: AF_UNIX paths are limited to 108 bytes; pytest's tmp_path can be longer.
    directory = Path(tempfile.mkdtemp(prefix="mamoru-notify-"))
    fake = FakeSystemd(directory / "notify")
    monkeypatch.setenv("NOTIFY_SOCKET", str(fake.path))
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")  # WatchdogSec=30
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    yield fake
    fake.close()
    fake.path.unlink(missing_ok=True)
    directory.rmdir()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_ready_status_stopping_reach_the_socket(systemd: FakeSystemd) -> None:
    dog = Watchdog()
    dog.ready("screening on modem\nline")
    assert systemd.receive().split("\n") == ["READY=1", "STATUS=screening on modem line", "WATCHDOG=1"]
    dog.status("3 calls screened today")
    assert systemd.receive() == "STATUS=3 calls screened today"
    dog.stopping("shutting down")
    assert systemd.receive().split("\n") == ["STOPPING=1", "STATUS=shutting down"]
    dog.close()


def test_beat_is_rate_limited_to_a_third_of_watchdog_sec(systemd: FakeSystemd) -> None:
    clock = Clock()
    dog = Watchdog(clock=clock)
    assert dog.interval_s == pytest.approx(10.0)
    assert dog.beat() is True
    assert systemd.receive() == "WATCHDOG=1"
    sent = []
    for _ in range(40):  # 20 s of loop wake-ups every 0.5 s
        clock.now += 0.5
        sent.append(dog.beat())
    assert sum(sent) == 2  # at t=10 and t=20
    assert [m for _, m in systemd.drain()] == ["WATCHDOG=1", "WATCHDOG=1"]
    dog.close()


def test_ready_counts_as_a_beat(systemd: FakeSystemd) -> None:
    clock = Clock()
    dog = Watchdog(clock=clock)
    dog.ready()
    systemd.receive()
    clock.now += 1
    assert dog.beat() is False
    dog.close()


def test_busy_extends_and_restores_the_deadline(systemd: FakeSystemd) -> None:
    dog = Watchdog(clock=Clock())
    with dog.busy(600, "answered call"):
        assert systemd.receive() == "WATCHDOG_USEC=630000000\nWATCHDOG=1"
    assert systemd.receive() == "WATCHDOG_USEC=30000000\nWATCHDOG=1"
    dog.close()


def test_no_notify_socket_is_a_quiet_no_op(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    made: list[int] = []
    dog = Watchdog(notifier_factory=lambda: made.append(1))  # type: ignore[arg-type,return-value]
    caplog.set_level("DEBUG", logger="screening.watchdog")
    dog.ready("x")
    assert dog.beat() is False
    dog.stopping()
    assert not dog.enabled and made == []
    assert "NOTIFY_SOCKET unset" in caplog.text


def test_constructor_does_no_io(systemd: FakeSystemd) -> None:
    made: list[int] = []

    def factory() -> None:
        made.append(1)
        raise AssertionError("connected")

    Watchdog(notifier_factory=factory)  # type: ignore[arg-type]
    assert made == []


def test_vanished_socket_is_logged_once_and_never_raises(
    systemd: FakeSystemd, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    dog = Watchdog(clock=clock)
    dog.ready()
    systemd.receive()
    systemd.close()
    systemd.path.unlink()
    for _ in range(3):
        clock.now += 20
        assert dog.beat() is False
    assert caplog.text.count("cannot notify systemd") == 1


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "30000000"}, 10.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "42"}, 10.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "43"}, None),  # a child's inherited env
        ({"WATCHDOG_USEC": "nonsense"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
    ],
)
def test_watchdog_interval_from_environment(env: dict[str, str], expected: float | None) -> None:
    assert watchdog_interval_s(env, pid=42) == expected


LOOP = textwrap.dedent(
    """
    import sys, threading, time
    from screening.watchdog import Watchdog

    dog = Watchdog()          # environment set by the parent, as systemd would
    dog.ready("screening")
    stop = threading.Event()
    deadline = time.monotonic() + float(sys.argv[1])
    while time.monotonic() < deadline:  # the call loop: wakes every 20 ms
        dog.beat()
        stop.wait(0.02)
    print("wedged", flush=True)
    time.sleep(float(sys.argv[2]))      # the loop is stuck: no more beat() calls
    """
)


def test_a_wedged_loop_stops_the_heartbeat(systemd: FakeSystemd) -> None:
    """What systemd acts on: beats at the rate-limited cadence, then silence > WatchdogSec."""
    watchdog_sec = 0.3
    env = {**os.environ, "WATCHDOG_USEC": str(int(watchdog_sec * 1_000_000)), "PYTHONPATH": str(REPO)}
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-c", LOOP, "1.0", "1.0"], env=env, cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        first = systemd.receive()
        assert first.startswith("READY=1")
        got = systemd.drain(quiet_s=watchdog_sec * 2)  # stops once the loop is wedged
        wedged_line = proc.stdout.readline() if proc.stdout else ""
    finally:
        proc.wait(timeout=10)
    assert wedged_line.strip() == "wedged"
    assert proc.returncode == 0
    beats = [t for t, m in got if m == "WATCHDOG=1"]
    assert len(beats) >= 5, got  # ~1.0 s / 0.1 s, minus start-up jitter
    gaps = [b - a for a, b in itertools.pairwise(beats)]
    assert min(gaps) >= watchdog_sec / 3 * 0.8  # rate limited: not one per 20 ms wake-up
    assert max(gaps) < watchdog_sec  # systemd stays happy while the loop runs
    # After the last beat nothing came for longer than WatchdogSec: systemd would restart us.
    assert time.monotonic() - beats[-1] > watchdog_sec
    assert beats[-1] - started < 2.0
