"""The web page in a process of its own, started and stopped by `mamoru run` (issue 12.10).

Why a process and not a thread of the daemon: whatever the page is made to do (thousands
of connections, huge bodies, a crash in a parser, a leak), it happens to another
process's file descriptors, memory and interpreter lock. The call loop never shares them.
The page needs nothing from the daemon's memory: it reads the store (its own SQLite
connection, WAL), ``status.json`` and the config file, and writes the config file and
the lists, which the daemon already picks up from there. So no socket is needed between
them today; a control socket can come when a page needs to ask the daemon something live.

- The child is ``python -m screening.web.process``, with a high ``oom_score_adj``
  (under memory pressure the kernel ends the page, not screening), ``TMPDIR`` on the data
  partition (multipart spooling must not fill a RAM-backed /tmp), and it ends by itself
  when its parent is gone.
- :class:`WebProcess` starts it, waits for its "listening on port N" over a pipe (with a
  timeout), restarts it with backoff if it dies, and stops it (SIGTERM, then SIGKILL)
  when the daemon stops.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from screening.config import Config, load_config
from screening.log_setup import setup_logging
from screening.web.server import config_file, start_for_daemon

log = logging.getLogger(__name__)

START_TIMEOUT_S = 30.0  # importing starlette + argon2 on a Pi 4 takes a few seconds
STOP_TIMEOUT_S = 10.0
WATCH_INTERVAL_S = 1.0
RESTART_BACKOFF_S = (2.0, 5.0, 15.0, 60.0)
CHILD_OOM_SCORE_ADJ = 800
TMP_DIR_NAME = "web-tmp"


class WebProcess:
    """The web page's child process, kept running in the background until ``stop``."""

    def __init__(self, cfg: Config, db_path: Path, recordings_dir: Path | None) -> None:
        self._cfg = cfg
        self._db_path = db_path
        self._recordings_dir = recordings_dir
        self._child: subprocess.Popen[bytes] | None = None
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self.port: int | None = None
        self.restarts = 0

    @property
    def pid(self) -> int | None:
        return self._child.pid if self._child is not None else None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _command(self, ready_fd: int) -> list[str]:
        command = [sys.executable, "-m", "screening.web.process", "--db", str(self._db_path),
                   "--ready-fd", str(ready_fd), "--parent", str(os.getpid())]  # fmt: skip
        source = config_file(self._cfg)
        if source is not None:
            command += ["--config", str(source)]
        if self._recordings_dir is not None:
            command += ["--recordings", str(self._recordings_dir)]
        return command

    def _spawn(self, timeout: float) -> None:
        tmp = self._db_path.parent / TMP_DIR_NAME
        tmp.mkdir(mode=0o700, exist_ok=True)
        env = {**os.environ, "TMPDIR": str(tmp), "PYTHONUNBUFFERED": "1"}
        read_fd, write_fd = os.pipe()
        try:
            child = subprocess.Popen(self._command(write_fd), pass_fds=(write_fd,), env=env,  # noqa: S603
                                     stdin=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
        finally:
            os.close(write_fd)
        try:
            port = _read_ready(read_fd, child, timeout, self._stop)
        except BaseException:
            _end(child)
            raise
        finally:
            os.close(read_fd)
        with self._lock:
            if self._stop.is_set():  # stopped while it was starting
                _end(child)
                return
            self._child, self.port = child, port
        self._ready.set()
        log.info("web page on %s/ (process %d)", self.url, child.pid)

    def start(self) -> WebProcess:
        """Returns at once: screening never waits for the page (``wait_ready`` does, for whoever needs its port)."""
        self._watcher = threading.Thread(target=self._watch, name="web-process", daemon=True)
        self._watcher.start()
        return self

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> int | None:
        """The port once the page listens; None if it does not within ``timeout``."""
        return self.port if self._ready.wait(timeout) else None

    def _watch(self) -> None:
        """Start the page; one that died (or would not start) is started again, later each time."""
        failures = 0
        started = 0
        while not self._stop.is_set():
            if started or failures:
                if self._stop.wait(RESTART_BACKOFF_S[min(failures, len(RESTART_BACKOFF_S) - 1)]):
                    return
            try:
                self._spawn(START_TIMEOUT_S)
            except (OSError, RuntimeError) as exc:
                if self._stop.is_set():
                    return
                failures += 1
                log.error("web page not started (screening goes on without it): %s", exc)
                continue
            self.restarts, started, failures = started, started + 1, 0
            while not self._stop.wait(WATCH_INTERVAL_S):
                child = self._child
                if child is None or child.poll() is not None:
                    if child is not None:
                        log.error("web page process %d ended with %s; starting it again (screening goes on)",
                                  child.pid, child.returncode)  # fmt: skip
                    break

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> bool:
        """SIGTERM, then SIGKILL after ``timeout``; False if it had to be killed."""
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(WATCH_INTERVAL_S + START_TIMEOUT_S)
        with self._lock:
            child, self._child = self._child, None
        return _end(child, timeout) if child is not None else True


def _read_ready(read_fd: int, child: subprocess.Popen[bytes], timeout: float, stop: threading.Event) -> int:
    """The port the child reports on its ready pipe, or an error when it exits, stays silent or we stop."""
    deadline = time.monotonic() + timeout
    data = b""
    with selectors.DefaultSelector() as selector:
        selector.register(read_fd, selectors.EVENT_READ)
        while b"\n" not in data:
            if stop.is_set():
                raise RuntimeError("stopping before the web page process listened")
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"web page process did not listen within {timeout:.0f} s")
            if selector.select(min(left, 0.5)):
                chunk = os.read(read_fd, 64)
                if not chunk:
                    raise RuntimeError(f"web page process ended before listening (exit {child.wait(5)})")
                data += chunk
    try:
        return int(data.split(b"\n", 1)[0])
    except ValueError:
        raise RuntimeError(f"web page process said {data!r} instead of its port") from None


def _end(child: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT_S) -> bool:
    if child.poll() is not None:
        return True
    child.send_signal(signal.SIGTERM)
    try:
        child.wait(timeout)
        return True
    except subprocess.TimeoutExpired:
        log.error("web page process %d did not stop within %.0f s: killed", child.pid, timeout)
        child.kill()
        child.wait(5)
        return False


def start_web_process(cfg: Config, db_path: Path, recordings_dir: Path | None) -> WebProcess | None:
    """`mamoru run`: the page in its own process, started in the background; failures are logged, retried."""
    if not cfg.web.enabled:
        return None
    return WebProcess(cfg, db_path, recordings_dir).start()


# ---- the child ------------------------------------------------------------------------------


def _lower_priority() -> None:
    # Not os.nice(): the unit's SystemCallFilter=~@resources ends a process that calls setpriority().
    with contextlib.suppress(OSError):
        Path("/proc/self/oom_score_adj").write_text(str(CHILD_OOM_SCORE_ADJ))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m screening.web.process")
    parser.add_argument("--config")
    parser.add_argument("--db", required=True)
    parser.add_argument("--recordings")
    parser.add_argument("--ready-fd", type=int, required=True)
    parser.add_argument("--parent", type=int, required=True)
    args = parser.parse_args(argv)
    cfg = load_config(Path(args.config) if args.config else None).with_overrides(db=args.db)
    setup_logging(cfg.log.level)
    _lower_priority()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    web = start_for_daemon(cfg, Path(args.db), Path(args.recordings) if args.recordings else None)
    if web is None:
        return 1
    try:
        with os.fdopen(args.ready_fd, "w") as ready:
            ready.write(f"{web.port}\n")
        while not stop.wait(WATCH_INTERVAL_S):
            if os.getppid() != args.parent:
                log.warning("web page: the screening daemon is gone, stopping")
                break
            if not web.running:
                log.error("web page: server thread ended")
                return 1
    finally:
        web.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
