"""The daemon's status file and the health page: real files, a real server and the daemon on the virtual modem."""

from __future__ import annotations

import json
import os
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from blocklist.store import Store
from firmware.dialects import CADENCE_PERIOD_S, CONEXANT_CX93001, RingCadence
from firmware.modem_line import ModemLine
from firmware.scenarios import CallScript
from firmware.virtual_modem import VirtualModem
from screening.core.rules import Policy
from screening.daemon import Daemon
from screening.session import CallSettings
from screening.status import (
    STATUS_FILE_NAME,
    DaemonStatus,
    LineState,
    StatusError,
    StatusWriter,
    mamoru_version,
    read_status,
)
from tests.support.web import Web, WebRig, installer_session, items, ja, modem_config, new_client
from voice.announcements import ToneAnnouncements

TOKYO = "Asia/Tokyo"
SCALE = 0.05


class Clocks:
    """Wall clock and monotonic clock the test moves by hand (the writer takes them as arguments)."""

    def __init__(self, start: datetime) -> None:
        self.now = start
        self.mono = 1000.0

    def wall(self) -> datetime:
        return self.now

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)
        self.mono += seconds


def local(moment: datetime) -> str:
    from zoneinfo import ZoneInfo

    return f"{moment.astimezone(ZoneInfo(TOKYO)):%Y-%m-%d %H:%M}"


# ---- the status file --------------------------------------------------------------------------


def test_status_is_written_on_state_changes_and_as_a_heartbeat(tmp_path: Path) -> None:
    start = datetime(2026, 4, 1, 9, 0, tzinfo=UTC)
    clocks = Clocks(start)
    writer = StatusWriter.beside(tmp_path / "mamoru.db", speech_model=True, clock=clocks.wall,
                                 monotonic=clocks.monotonic)  # fmt: skip
    path = tmp_path / STATUS_FILE_NAME
    assert not path.exists()  # nothing is written before the daemon starts
    writer.started()
    status = read_status(path)
    assert status == DaemonStatus(LineState.OK, start, "", None, True, mamoru_version(), os.getpid(), start)

    clocks.advance(10)
    writer.call_screened()
    writer.tick()  # heartbeat not due yet: the file still says what it said
    assert read_status(path) == status
    clocks.advance(25)
    writer.tick()
    status = read_status(path)
    assert status.updated_at == start + timedelta(seconds=35)
    assert status.last_call_at == start + timedelta(seconds=10) and status.line_since == start

    clocks.advance(1)
    writer.line_fault("modem silent")  # at once, not at the next heartbeat
    status = read_status(path)
    assert (status.line_state, status.line_since, status.line_message) == (
        LineState.FAULT, start + timedelta(seconds=36), "modem silent")
    clocks.advance(1)
    writer.line_fault("still silent")  # the same state again: "since" stays
    assert read_status(path).line_since == start + timedelta(seconds=36)
    clocks.advance(1)
    writer.line_restored("reopened")
    writer.stopped()
    status = read_status(path)
    assert status.line_state is LineState.STOPPED and not status.stale(start + timedelta(days=1))
    assert [p.name for p in tmp_path.iterdir()] == [STATUS_FILE_NAME]  # no temp files left
    assert json.loads(path.read_text())["format"] == "mamoru-status/1"


def test_stale_means_no_heartbeat_for_two_minutes(tmp_path: Path) -> None:
    start = datetime(2026, 4, 1, 9, 0, tzinfo=UTC)
    clocks = Clocks(start)
    writer = StatusWriter(tmp_path / "s.json", clock=clocks.wall, monotonic=clocks.monotonic)
    writer.started()
    status = read_status(tmp_path / "s.json")
    assert not status.stale(start + timedelta(seconds=119)) and status.stale(start + timedelta(seconds=121))


def test_a_damaged_status_file_is_an_error_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / STATUS_FILE_NAME
    assert read_status(path) is None
    for content in (b"", b"{not json", b"[]", b'{"format": "other"}',
                    b'{"format": "mamoru-status/1", "line": {"state": "melted"}}',
                    b'{"format": "mamoru-status/1", "line": {"state": "ok", "since": "2026-01-01T00:00:00Z"}, '
                    b'"pid": true, "updated_at": "2026-01-01T00:00:00Z"}',
                    b" " * 70_000):  # fmt: skip
        path.write_bytes(content)
        with pytest.raises(StatusError):
            read_status(path)


def test_a_status_write_failure_never_raises(tmp_path: Path) -> None:
    writer = StatusWriter(tmp_path / "missing-dir" / STATUS_FILE_NAME)
    writer.started()
    writer.line_fault("x")
    writer.tick()
    assert not (tmp_path / "missing-dir").exists()


# ---- the health page ---------------------------------------------------------------------------


@pytest.fixture
def rig_config(tmp_path: Path) -> str:
    return modem_config(tmp_path)


@pytest.fixture
def web(rig: WebRig) -> Web:
    return installer_session(rig)


def test_the_health_page_reflects_the_status_file(web: Web) -> None:
    page = web.get("/health")
    assert page.status_code == 200
    shown = items(page.text)
    assert list(shown) == ["line", "last_call", "speech_model", "disk", "recordings", "feeds", "database", "clock",
                           "version"]  # fmt: skip
    assert shown["line"] == ("warning", ja("health.line.no_status"))
    assert shown["last_call"] == ("ok", ja("health.last_call.none"))
    assert shown["recordings"] == ("ok", ja("health.recordings.none", days=90))
    assert shown["feeds"] == ("ok", ja("health.feeds.none"))
    assert shown["version"] == ("ok", ja("health.version", version=mamoru_version()))
    # no daemon to ask: the doctor's check finds no Japanese model installed
    assert shown["speech_model"] == ("problem", ja("health.speech_model.missing"))

    now = datetime.now(UTC).replace(microsecond=0)
    writer = StatusWriter.beside(web.ctx.store.path, speech_model=True, clock=lambda: now)
    writer.started()
    shown = items(web.get("/health").text)
    assert shown["line"] == ("ok", ja("health.line.ok", since=local(now)))
    assert shown["speech_model"] == ("ok", ja("health.speech_model.ok"))  # the running daemon has one loaded
    assert ja("health.all_ok") in web.get("/health").text

    writer.line_fault("gone")
    shown = items(web.get("/health").text)
    # the configured device is not there: the page says so, with the path
    assert shown["line"] == ("problem", ja("health.line.missing", device="/dev/mamoru-modem", since=local(now)))
    assert ja("health.problems", count=1) in web.get("/health").text

    old = now - timedelta(minutes=5)
    StatusWriter.beside(web.ctx.store.path, clock=lambda: old).started()  # a daemon that went quiet
    assert items(web.get("/health").text)["line"] == ("problem", ja("health.line.stale", minutes=5))

    writer.stopped()
    assert items(web.get("/health").text)["line"] == ("problem", ja("health.line.stopped", since=local(now)))

    web.ctx.status_path.write_text("{broken", encoding="utf-8")
    page = web.get("/health")
    assert page.status_code == 200 and items(page.text)["line"] == ("problem", ja("health.line.unreadable"))


def test_the_health_page_needs_a_login(web: Web) -> None:
    anonymous = new_client(web.server)
    try:
        response = anonymous.get("/health")
        assert response.status_code == 303 and response.headers["location"].startswith("/login")
    finally:
        anonymous.close()


@pytest.mark.timeout(120)
def test_the_running_daemon_keeps_the_health_page_current(web: Web) -> None:
    """Status written by the real daemon on the virtual modem: start, a call, a lost modem, its return, stop."""
    modem = VirtualModem(CONEXANT_CX93001, RingCadence.JAPAN, SCALE)
    modem.start()
    store = Store(web.ctx.store.path, retry_interval=0.05, busy_timeout=0.5)
    store.open()
    line = ModemLine(str(modem.device_path), "auto", "JP", RingCadence.JAPAN,
                     ring_gap_s=1.5 * CADENCE_PERIOD_S[RingCadence.JAPAN] * SCALE)  # fmt: skip
    line.open()
    status = StatusWriter.beside(store.path, speech_model=True, interval_s=0.2)
    daemon = Daemon(line, store, CallSettings(Policy(), ToneAnnouncements(), 30.0), status=status)
    stop = threading.Event()
    thread = threading.Thread(target=daemon.run, args=(stop,), daemon=True)

    def line_item(wanted: str, timeout: float = 20.0) -> tuple[str, str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            shown = items(web.get("/health").text)
            if shown["line"][0] == wanted:
                return shown["line"]
            time.sleep(0.1)
        raise AssertionError(f"line never {wanted}: {shown}")

    try:
        thread.start()
        assert line_item("ok")[1].startswith(ja("health.line.ok", since="")[:10])
        shown = items(web.get("/health").text)
        assert shown["speech_model"] == ("ok", ja("health.speech_model.ok"))  # the daemon said so

        modem.wait_for_call_end(modem.place_call(CallScript(nmbr="P", hang_up_after_s=400)), timeout=30)
        deadline = time.monotonic() + 10
        while read_status(web.ctx.status_path).last_call_at is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert read_status(web.ctx.status_path).last_call_at is not None
        assert items(web.get("/health").text)["last_call"][1] != ja("health.last_call.none")

        modem.vanish()
        # (this page's config names /dev/mamoru-modem, which is not there either: "not found")
        assert line_item("problem")[1].startswith(ja("health.line.missing", device="/dev/mamoru-modem", since="")[:20])
        modem.reappear()
        line_item("ok")
        pid = read_status(web.ctx.status_path).pid
        assert pid == os.getpid()
    finally:
        stop.set()
        thread.join(timeout=10)
        line.close()
        modem.stop()
        store.close()
    assert read_status(web.ctx.status_path).line_state is LineState.STOPPED
    assert items(web.get("/health").text)["line"][0] == "problem"
