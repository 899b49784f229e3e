"""The daemon, run two ways: in-process on the virtual modem over a real pty (``ModemDaemonRig``), and
as the ``mamoru`` command in a subprocess (``DaemonProcess``; ``daemon_env`` for its environment)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Self

from blocklist.store import Store
from blocklist.store.rows import CallRow
from firmware.dialects import CADENCE_PERIOD_S, CONEXANT_CX93001, RingCadence
from firmware.modem_line import ModemLine
from firmware.scenarios import CallScript
from firmware.virtual_modem import VirtualModem
from screening.core.model import CallState, ListEntry, ListKind, MatchKind
from screening.core.rules import Policy
from screening.daemon import Daemon
from screening.events import EventBus
from screening.session import CallSettings, SessionSettings
from voice.announcements import ToneAnnouncements

log = logging.getLogger(__name__)

SCALE = 0.05  # virtual-modem time: 20x faster than a real line
ROOT = Path(__file__).resolve().parent.parent.parent


class ModemDaemonRig:
    """A running daemon on a virtual modem, with its store."""

    def __init__(self, tmp: Path, dialect=CONEXANT_CX93001, cadence=RingCadence.JAPAN,
                 line_options: dict[str, Any] | None = None, settings: SessionSettings | None = None,
                 policy: Policy | None = None, call_timeout_s: float = 30.0, bus: EventBus | None = None) -> None:
        self.modem = VirtualModem(dialect, cadence, SCALE)
        self.policy = policy or Policy()
        self.call_timeout_s = call_timeout_s
        self.settings = settings or SessionSettings()
        self.bus = bus
        self.store = Store(tmp / "calls.db", retry_interval=0.05, busy_timeout=0.2)
        self.cadence = cadence
        self.line_options = line_options or {}
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None

    def __enter__(self) -> ModemDaemonRig:
        self.modem.start()
        self.store.open()
        self.store.add_entry(ListEntry(ListKind.ALLOW, MatchKind.EXACT, "+81312345678", source="family"))
        self.store.add_entry(ListEntry(ListKind.BLOCK, MatchKind.EXACT, "+81398765432"))
        self.line = ModemLine(str(self.modem.device_path), "auto", "JP", self.cadence,
                              ring_gap_s=1.5 * CADENCE_PERIOD_S[self.cadence] * SCALE, **self.line_options)
        self.line.open()
        self.daemon = Daemon(self.line, self.store, CallSettings(self.policy, ToneAnnouncements(), self.call_timeout_s),
                             self.settings, self.bus)
        self.thread = threading.Thread(target=self.daemon.run, args=(self.stop,), daemon=True)
        self.thread.start()
        return self

    def call(self, script: CallScript, timeout: float = 30.0):
        record = self.modem.place_call(script)
        return self.modem.wait_for_call_end(record, timeout=timeout)

    def wait_calls(self, n: int, timeout: float = 10.0) -> list:
        return finished_calls(self.store, n, timeout)

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(timeout=10)
        self.line.close()
        self.modem.stop()
        self.store.close()


def off_hook_commands(record: Any) -> list[str]:
    """The commands of a virtual-modem call record that took the line off hook (voice answer, data answer)."""
    return [c for _, c in record.commands if c.upper().replace(" ", "") in ("AT+VLS=1", "ATA")]


def daemon_env(tmp: Path) -> dict[str, str]:
    """The environment for a ``mamoru`` subprocess: no config from the caller, home and state in ``tmp``."""
    return {**{k: v for k, v in os.environ.items() if k != "MAMORU_CONFIG"}, "HOME": str(tmp),
            "XDG_STATE_HOME": str(tmp / "state")}


def wait_for(predicate: Callable[[], object], timeout: float) -> None:
    """Poll ``predicate`` every 50 ms until it is true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


class DaemonProcess:
    """``python -m screening.cli ARGS`` in a subprocess, its output (stdout and stderr) collected line by
    line as it runs, stopped with SIGTERM as systemd does.

    ``config`` adds ``--config PATH`` after the arguments; ``env`` defaults to ``daemon_env`` of the
    config's directory (no config from the caller, home and state beside the test's files).
    """

    def __init__(self, args: Sequence[str], env: dict[str, str] | None = None, *, config: Path | None = None) -> None:
        self.args = [*args, *(["--config", str(config)] if config is not None else [])]
        if env is None:
            assert config is not None, "give env or config"
            env = daemon_env(config.parent)
        self.env = env
        self.lines: list[str] = []
        self._lines_changed = threading.Condition()
        self.proc: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None

    def start(self, ready: str | None = None, timeout: float = 30.0) -> Self:
        """Start it and, with ``ready``, wait until a line of its output contains it."""
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "screening.cli", *self.args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=self.env, cwd=ROOT)  # fmt: skip
        self._reader = threading.Thread(target=self._read, args=(self.proc,), daemon=True)
        self._reader.start()
        if ready is not None and not self.wait_log(ready, timeout):
            raise AssertionError(f"daemon not ready ({ready!r}) within {timeout:.0f} s:\n{self.log_text()}")
        return self

    def __enter__(self) -> Self:
        return self if self.proc is not None else self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            with self._lines_changed:
                self.lines.append(line.rstrip("\n"))
                self._lines_changed.notify_all()

    def wait_log(self, needle: str, timeout: float) -> bool:
        """True once a line contains ``needle``; False after ``timeout`` or if the process ended first."""
        with self._lines_changed:
            return self._lines_changed.wait_for(
                lambda: any(needle in line for line in self.lines)
                or (self.proc is not None and self.proc.poll() is not None), timeout,
            ) and any(needle in line for line in self.lines)

    def log_text(self) -> str:
        with self._lines_changed:
            return "\n".join(self.lines[-80:])

    def output(self) -> str:
        """Everything it printed so far (after ``stop``/``kill``: everything)."""
        with self._lines_changed:
            return "\n".join(self.lines)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, then kill after ``timeout`` s; the exit code (None if never started)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                log.error("daemon did not stop on SIGTERM, killing it:\n%s", self.log_text())
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._drain()
        return self.proc.returncode

    def kill(self) -> int | None:
        """SIGKILL (a power cut, as far as the daemon can tell); the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._drain()
        return self.proc.returncode

    def _drain(self, timeout: float = 5.0) -> None:
        """Wait for the reader to reach the end of the output, so ``output()`` is complete."""
        if self._reader is not None:
            self._reader.join(timeout)


def finished_calls(store: Store, n: int, timeout: float = 10.0) -> list[CallRow]:
    """The store's calls, oldest first, once at least ``n`` exist and all of them are finished."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = store.recent_calls(limit=100)
        if len(rows) >= n and all(r.state in (CallState.COMPLETED, CallState.FAILED) for r in rows):
            return list(reversed(rows))
        time.sleep(0.02)
    raise AssertionError(f"expected {n} finished calls, have {store.recent_calls(limit=100)}")
