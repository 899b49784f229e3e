"""The NCID server on real loopback sockets: protocol lines, call-log replay, and clients that
misbehave (garbage, floods of connections, never reading) without slowing ``publish``."""

from __future__ import annotations

import socket
import time
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from screening.config import ConfigError, parse_config
from screening.core.model import Action, CallerID, Category, Decision, ListEntry, ListKind, MatchKind, Reason
from screening.ncid.lines import CallLabel, NcidCall, call_from_decision, call_line
from screening.ncid.server import NcidServer, NcidSettings
from tests.support.daemon import wait_for

TOKYO = ZoneInfo("Asia/Tokyo")
WHEN = datetime(2026, 12, 6, 0, 39, tzinfo=UTC)  # 09:39 in Tokyo


def _decision(action: Action, matched: ListEntry | None = None) -> Decision:
    return Decision(action, "rule", "why", Category.DOMESTIC, matched=matched)


def _settings(**kw: object) -> NcidSettings:
    return NcidSettings(**{"host": "127.0.0.1", "port": 0, "zone": TOKYO, "version": "1.0", **kw})  # type: ignore[arg-type]


class Client:
    """A line-reading NCID client on a real socket."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.buf = b""

    def line(self, timeout: float = 5.0) -> str:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            self.sock.settimeout(max(deadline - time.monotonic(), 0.01))
            data = self.sock.recv(4096)
            if not data:
                raise EOFError(self.buf)
            self.buf += data
        line, _, self.buf = self.buf.partition(b"\n")
        return line.decode("utf-8")

    def until(self, end: str) -> list[str]:
        lines = [self.line()]
        while not lines[-1].startswith(end):
            lines.append(self.line())
        return lines

    def close(self) -> None:
        self.sock.close()


def test_call_lines_follow_the_ncid_field_layout_in_local_time() -> None:
    caller = CallerID(raw_number="0662223333")
    line = call_line(call_from_decision(caller, _decision(Action.WARN), WHEN, line_id="HOME"), TOKYO)
    assert line == "CID: *DATE*12062026*TIME*0939*LINE*HOME*NMBR*0662223333*MESG*NONE*NAME*NO NAME*"
    blocked = call_from_decision(caller, _decision(Action.BLOCK), WHEN, line_id="-", refused_label=CallLabel.BLK)
    assert call_line(blocked, TOKYO).startswith("BLK: *DATE*12062026*")
    withheld = call_from_decision(CallerID(reason=Reason.WITHHELD), _decision(Action.REQUEST_NUMBER), WHEN, line_id="-",
                                  refused_label=CallLabel.BLK)  # fmt: skip
    assert call_line(withheld, TOKYO, log=True) == (
        "HUPLOG: *DATE*12062026*TIME*0939*LINE*-*NMBR*PRIVATE*MESG*NONE*NAME*NO NAME*")


def test_family_name_from_the_allowlist_and_hostile_names_cannot_forge_lines() -> None:
    family = ListEntry(ListKind.ALLOW, MatchKind.EXACT, "+81312345678", source="family", note="花子")
    line = call_line(call_from_decision(CallerID(raw_number="0312345678"), _decision(Action.ALLOW, family), WHEN,
                                        line_id="-"), TOKYO)  # fmt: skip
    assert line.endswith("*NAME*花子*")
    evil = CallerID(raw_number="0312345678*NAME*BANK", name="x\nCID: *DATE*01012000*NMBR*110*NAME*POLICE*\r\u2028")
    line = call_line(call_from_decision(evil, _decision(Action.WARN), WHEN, line_id="-"), TOKYO)
    assert "\n" not in line and "\r" not in line and "\u2028" not in line
    assert line.count("*NAME*") == 1 and line.count("*NMBR*") == 1


def test_startup_replays_the_call_log_then_live_lines_reach_every_client() -> None:
    old = NcidCall(CallLabel.HUP, WHEN, "-", "0398765432", "NO NAME")
    with NcidServer(_settings(), [old]) as server:
        a, b = Client(server.port), Client(server.port)
        for client in (a, b):
            startup = client.until("300 ")
            assert startup[0] == "200 Server: mamoru (NCID) 1.0"
            assert startup[1].startswith("210 API: ")
            assert startup[2:] == ["254 Start of call log",
                                   "HUPLOG: *DATE*12062026*TIME*0939*LINE*-*NMBR*0398765432*MESG*NONE*NAME*NO NAME*",
                                   "250 End of call log", "300 End of connection startup"]  # fmt: skip
        server.publish(NcidCall(CallLabel.CID, WHEN, "-", "0662223333", "NO NAME"))
        assert a.line().startswith("CID: *DATE*12062026*TIME*0939*LINE*-*NMBR*0662223333*")
        assert b.line().startswith("CID: ")
        a.sock.sendall(b"GOODBYE\n")
        wait_for(lambda: server.client_count() == 1, 5)
        c = Client(server.port)  # a later client's log holds the live call too
        replay = c.until("300 ")
        assert [line[:7] for line in replay[3:5]] == ["HUPLOG:", "CIDLOG:"]
        a.close(), b.close(), c.close()


def test_no_replay_says_so() -> None:
    with NcidServer(_settings(replay_calls=0), [NcidCall(CallLabel.CID, WHEN, "-", "1", "x")]) as server:
        client = Client(server.port)
        assert client.until("300 ")[2] == "251 Call log not sent"
        client.close()


def test_garbage_floods_and_sleepers_do_not_stop_a_good_client_or_block_publish() -> None:
    with NcidServer(_settings(max_clients=40, send_buffer_bytes=32 * 1024, max_input_bytes=8 * 1024)) as server:
        good = Client(server.port)
        good.until("300 ")
        # Never read: their kernel buffers fill, then our bounded buffer, then they are dropped.
        sleepers = [socket.socket() for _ in range(5)]
        for s in sleepers:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.connect(("127.0.0.1", server.port))
        garbage = socket.create_connection(("127.0.0.1", server.port))
        garbage.sendall(bytes(range(256)) * 8 + b"\xff" * 100 + b"\n")  # binary, no sense, within the input cap
        talker = socket.create_connection(("127.0.0.1", server.port))
        try:
            talker.sendall(b"HELLO: IDENT: " + b"A" * 20000 + b"\n")  # far beyond the input cap
        except OSError:
            pass
        # A connect flood: beyond max_clients they are told and closed.
        flood = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(100)]
        wait_for(lambda: server.client_count() <= 40, 10)
        slowest = 0.0
        for chunk in range(20):  # ~190 kB in all: far more than a sleeper's buffers hold
            for n in range(100):
                started = time.monotonic()
                server.publish(NcidCall(CallLabel.CID, WHEN, "-", f"03{chunk:04d}{n:04d}", "NO NAME " + "x" * 40))
                slowest = max(slowest, time.monotonic() - started)
            for _ in range(100):  # the good client reads as a real one does, and sees every line
                assert good.line(timeout=20).startswith("CID: ")
        assert slowest < 0.5  # generous: publish never waits for a client (a lock and a wake-up byte)
        wait_for(lambda: server.dropped >= 5, 10)  # the sleepers (and the talker) were dropped
        refused = flood[-1]
        refused.settimeout(5)
        assert refused.recv(100).startswith(b"MSG: Too many clients")
        for s in [*sleepers, garbage, talker, *flood]:
            s.close()
        good.close()


def test_config_refuses_a_home_network_address_unless_allowed(tmp_path: Path) -> None:
    assert parse_config({}, "t").ncid.listen is None
    cfg = parse_config({"ncid": {"listen": "127.0.0.1:3333"}}, "t")
    assert cfg.ncid.listen is not None and cfg.ncid.listen.port == 3333
    with pytest.raises(ConfigError, match="ncid.listen.*not loopback"):
        parse_config({"ncid": {"listen": "0.0.0.0:3333"}}, "t")
    assert parse_config({"ncid": {"listen": "192.168.1.5:3333", "allow_remote": True}}, "t").ncid.allow_remote
    with pytest.raises(ConfigError, match="ncid.listen"):
        parse_config({"ncid": {"listen": "example.com:3333"}}, "t")
    with pytest.raises(ConfigError, match="ncid.line_id"):
        parse_config({"ncid": {"line_id": "a*b"}}, "t")


def test_decisions_reach_listeners_before_the_line_is_acted_on_and_a_failing_one_changes_nothing(
        tmp_path: Path) -> None:  # fmt: skip
    from firmware.scenarios import CallScript
    from screening.events import CallDecided, EventBus
    from tests.support.daemon import ModemDaemonRig, off_hook_commands

    heard: list[tuple[int, Action, int]] = []
    rig_box: list[ModemDaemonRig] = []

    def listener(event: CallDecided) -> None:
        call_id, decision = event.call_id, event.decision
        # At this moment the modem has not been taken off hook for this call yet.
        records = rig_box[0].modem.records()
        heard.append((call_id, decision.action, len(off_hook_commands(records[-1])) if records else -1))
        raise RuntimeError("a broken listener")

    bus = EventBus()
    bus.subscribe(CallDecided, listener)
    with ModemDaemonRig(tmp_path, bus=bus) as rig:
        rig_box.append(rig)
        rig.call(CallScript(nmbr="0398765432", hang_up_after_s=20))
        (row,) = rig.wait_calls(1)
    assert heard == [(row.id, Action.BLOCK, 0)]
    assert row.action is Action.BLOCK and row.end_reason is not None  # blocked and finished all the same


def test_refused_calls_are_blk_where_the_gateway_rejects_them_before_ringing() -> None:
    from screening.ncid.wiring import refused_label

    assert refused_label(parse_config({}, "t")) is CallLabel.HUP
    hgw = parse_config({"line": {"uri": "sip://0312345678@192.168.1.1"}, "sip": {"upstream": "hgw"}}, "t")
    assert refused_label(hgw) is CallLabel.BLK
    fxo = parse_config({"line": {"uri": "sip://0.0.0.0:5062"}, "sip": {"upstream": "fxo"}}, "t")
    assert refused_label(fxo) is CallLabel.HUP
