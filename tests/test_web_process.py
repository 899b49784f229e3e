"""The web page runs in a process of its own, started, restarted and stopped by the daemon (issue 12.10)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from screening.config import load_config
from screening.web.process import RESTART_BACKOFF_S, START_TIMEOUT_S, WebProcess
from tests.support.ports import free_tcp_port

pytestmark = pytest.mark.timeout(120)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _page_answers(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/setup", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def test_the_page_lives_in_its_own_process_is_restarted_and_stopped(tmp_path: Path) -> None:
    port = free_tcp_port()
    config = tmp_path / "mamoru.toml"
    config.write_text(f'[store]\ndb = "{tmp_path / "mamoru.db"}"\n[web]\nport = {port}\n', encoding="utf-8")
    cfg = load_config(config, env={})
    web = WebProcess(cfg, tmp_path / "mamoru.db", None).start()
    try:
        assert web.wait_ready(START_TIMEOUT_S) == port
        first = web.pid
        assert first is not None and first != os.getpid()
        assert _page_answers(port)
        assert (tmp_path / "web-tmp").is_dir()  # the child's TMPDIR: on the data partition
        assert int(Path(f"/proc/{first}/oom_score_adj").read_text()) > 0  # the kernel ends the page first

        os.kill(first, signal.SIGKILL)  # a crash of the page ...
        deadline = time.monotonic() + RESTART_BACKOFF_S[0] + START_TIMEOUT_S
        while time.monotonic() < deadline and not (web.pid not in (None, first) and _page_answers(port)):
            time.sleep(0.2)
        assert web.pid not in (None, first) and _page_answers(port), "the page was not started again"
        assert web.restarts == 1
    finally:
        second = web.pid
        assert web.stop()
    assert second is not None and not _alive(second)
    assert not _page_answers(port)


def test_stopping_while_the_page_starts_is_quick_and_leaves_no_process(tmp_path: Path) -> None:
    config = tmp_path / "mamoru.toml"
    config.write_text(f'[store]\ndb = "{tmp_path / "mamoru.db"}"\n[web]\nport = {free_tcp_port()}\n', encoding="utf-8")
    web = WebProcess(load_config(config, env={}), tmp_path / "mamoru.db", None).start()
    time.sleep(0.2)  # spawned, still importing
    started = time.monotonic()
    assert web.stop()
    assert time.monotonic() - started < 5.0
    assert web.pid is None
    assert not [p for p in Path(f"/proc/{os.getpid()}/task").glob("*/children")
                if p.read_text().strip()], "a web page process was left behind"
