"""SipLine against real pjsua2 callers (tests/sip_peer.py subprocesses) on 127.0.0.1.

The daemon, session, store and tone announcements are the real ones; only the line is SIP.
"""

from __future__ import annotations

import itertools
import socket
import subprocess
import sys
import time
from array import array
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

pytest.importorskip("pjsua2")

from firmware.sip_line import (
    SipLine,
    SipSettings,
    parse_sip_headers,
    sip_line_from_uri,
)
from screening.config import Config
from screening.core.line import (
    CallOffered,
    EndReason,
    LineError,
    LineEvent,
    Ring,
    RingingStopped,
)
from screening.core.model import (
    Action,
    CallerID,
    Category,
    Prompt,
    Reason,
)
from screening.core.sip_callerid import caller_id_from_sip
from screening.line_factory import sip_defaults
from tests.support.ports import free_udp_port
from tests.support.sip import BLOCKED, FAMILY, PEER, ROOT, UNKNOWN, SipDaemonRig, result_of
from voice.announcements import ToneAnnouncements


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[SipDaemonRig]:
    with SipDaemonRig(tmp_path) as r:
        yield r


def freqs(result: dict) -> list[int]:
    return [f for _, _, f in result["bursts"]]


def near(values: list[int], expected: list[int]) -> bool:
    """Burst pitches within 15 %: zero-crossing estimates through G.711 and a jitter buffer run low."""
    return len(values) == len(expected) and all(abs(v - e) <= 0.15 * e for v, e in zip(values, expected))


def test_blocked_caller_hears_the_announcement_then_we_hang_up(rig: SipDaemonRig) -> None:
    result = rig.call(BLOCKED)
    assert result["answered"] and result["ended_by"] == "them" and result["final_code"] == 200
    assert near(freqs(result), [480, 480]), result  # NUMBER_BLOCKED: two 480 Hz bursts
    assert all(450 <= length <= 560 for _, length, _ in result["bursts"])
    row = rig.wait_calls(1)[0]
    assert (row.action, row.rule, row.end_reason) == (Action.BLOCK, "blocklist:local", "announced_and_hung_up")
    assert row.line == f"sip:127.0.0.1:{rig.port}"


def test_withheld_caller_gets_the_number_request(rig: SipDaemonRig) -> None:
    result = rig.call("anonymous", "--header", "Privacy: id")
    assert result["answered"] and result["ended_by"] == "them"
    assert near(freqs(result), [523, 659, 784]), result  # NUMBER_REQUEST's rising three tones
    row = rig.wait_calls(1)[0]
    assert (row.action, row.reason_code) == (Action.REQUEST_NUMBER, Reason.WITHHELD.value)


def test_international_caller_is_blocked_over_pcma(rig: SipDaemonRig) -> None:
    result = rig.call("+441632960123", "--codec", "PCMA/8000")
    assert result["codec"] == "PCMA" and result["answered"]
    # INTERNATIONAL_BLOCKED: one unbroken ~1 s sweep 950/1400/1800 Hz (mean ~1380)
    assert len(result["bursts"]) == 1 and 900 <= result["bursts"][0][1] <= 1100, result
    assert near(freqs(result), [1383]), result
    row = rig.wait_calls(1)[0]
    assert row.action is Action.BLOCK and row.rule.startswith("international")


def test_unknown_caller_is_warned_then_recorded_until_they_hang_up(rig: SipDaemonRig) -> None:
    result = rig.call(UNKNOWN, "--hang-up-after", "3.0")
    assert result["answered"] and result["ended_by"] == "us"
    assert near(freqs(result)[:3], [880, 660, 880]), result  # the warning, then we stayed on
    row = rig.wait_calls(1)[0]
    assert (row.action, row.end_reason) == (Action.WARN, "caller_hung_up")
    # The caller's 440 Hz voice reached the voice pipeline as PCM16 8 kHz.
    pcm = bytes(rig.voice.received_pcm)
    assert len(pcm) >= 8000 * 2 * 1, len(pcm)
    assert rig.voice.finished and rig.voice.clips == ["tone:warning"]
    samples = array("h", pcm[: len(pcm) // 2 * 2])
    crossings = sum(1 for a, b in itertools.pairwise(samples) if (a < 0) != (b < 0))
    assert 400 <= crossings / 2 / (len(samples) / 8000) <= 480


def test_caller_hanging_up_mid_announcement_ends_the_call_early(rig: SipDaemonRig) -> None:
    started = time.monotonic()
    result = rig.call(BLOCKED, "--hang-up-after", "0.3")
    assert result["ended_by"] == "us" and result["heard_ms"] < 800
    row = rig.wait_calls(1)[0]
    assert (row.action, row.end_reason) == (Action.BLOCK, "caller_hung_up")
    assert time.monotonic() - started < 10


def test_allowed_caller_rings_and_cancel_before_answer_is_clean(rig: SipDaemonRig) -> None:
    result = rig.call(FAMILY, "--cancel-after", "1.5")
    assert result["rang"] and not result["answered"] and result["final_code"] == 487
    assert result["heard_ms"] == 0
    row = rig.wait_calls(1)[0]
    assert (row.action, row.end_reason) == (Action.ALLOW, "allowed_to_ring")
    # The line is free again and the next call is screened on its own.
    assert rig.call(BLOCKED)["answered"]
    assert [r.action for r in rig.wait_calls(2)] == [Action.ALLOW, Action.BLOCK]


def test_allowed_call_with_no_phone_leg_is_declined_after_the_ring_timeout(tmp_path: Path) -> None:
    with SipDaemonRig(tmp_path, ring_timeout_s=1.5) as rig:
        result = rig.call(FAMILY)
        assert result["rang"] and not result["answered"] and result["final_code"] == 480
        assert 1.0 <= result["elapsed_s"] < 6


def test_asserted_identity_counts_only_from_the_trusted_upstream(tmp_path: Path) -> None:
    pai = f"P-Asserted-Identity: <sip:{BLOCKED}@127.0.0.1>"
    for sub in ("untrusted", "trusted"):
        (tmp_path / sub).mkdir()
    with SipDaemonRig(tmp_path / "untrusted") as rig:  # a spoofed PAI is ignored: From (family) decides
        assert not rig.call(FAMILY, "--header", pai, "--cancel-after", "1.0")["answered"]
        assert rig.wait_calls(1)[0].action is Action.ALLOW
    with SipDaemonRig(tmp_path / "trusted", trusted=frozenset({"127.0.0.1"})) as rig:
        assert rig.call(FAMILY, "--header", pai)["answered"]
        row = rig.wait_calls(1)[0]
        assert (row.action, row.number_e164) == (Action.BLOCK, "+81398765432")


def test_caller_without_usable_id_is_screened_by_ring_count(rig: SipDaemonRig) -> None:
    result = rig.call("alice", "--hang-up-after", "2.5")
    assert result["answered"]
    row = rig.wait_calls(1)[0]
    assert row.action is Action.WARN and row.raw_number is None


def test_a_caller_id_parser_failure_still_screens_the_call(tmp_path: Path) -> None:
    def broken(headers: list[tuple[str, str]], *, source_ip: str, trusted_upstreams: frozenset[str],
               home_region: str) -> CallerID:
        raise ValueError("unparseable")

    with SipDaemonRig(tmp_path, caller_id=broken) as rig:
        assert rig.call(BLOCKED, "--hang-up-after", "2.5")["answered"]
        row = rig.wait_calls(1)[0]
        assert (row.action, row.category) == (Action.WARN, Category.NO_CALLER_ID)


def test_garbage_datagrams_are_survived(rig: SipDaemonRig) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for junk in (b"\x00\xff\xfe garbage", b"INVITE sip:x SIP/2.0\r\n\r\n",
                     b"INVITE sip:mamoru@127.0.0.1 SIP/2.0\r\nFrom: <<<\r\nTo: x\r\n\r\n" + b"A" * 3000):
            s.sendto(junk, ("127.0.0.1", rig.port))
    time.sleep(0.3)
    assert rig.call(BLOCKED)["answered"]
    assert [r.action for r in rig.wait_calls(1)] == [Action.BLOCK]


def test_second_call_while_busy_gets_486(rig: SipDaemonRig) -> None:
    first = rig.start_call(UNKNOWN, "--hang-up-after", "4")
    time.sleep(1.5)
    second = rig.call(BLOCKED)
    assert second["final_code"] == 486 and not second["answered"]
    assert result_of(first)["answered"]
    assert [r.action for r in rig.wait_calls(1)] == [Action.WARN]


def test_reject_declines_without_answering(tmp_path: Path) -> None:
    port = free_udp_port()
    line = SipLine(SipSettings(host="127.0.0.1", port=port, reject_code=603), caller_id_from_sip)
    line.open()
    try:
        proc = subprocess.Popen([sys.executable, str(PEER), "--uri", f"sip:mamoru@127.0.0.1:{port}",
                                 "--from", f"sip:{BLOCKED}@127.0.0.1"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        event = line.next_event(10)
        assert isinstance(event, CallOffered) and event.caller.number_e164 == "+81398765432"
        line.reject(timeout=5)
        result = result_of(proc)
        assert result["final_code"] == 603 and not result["answered"]
        line.hang_up()  # idle line: no error
        with pytest.raises(ValueError):
            line.reject(200)
    finally:
        line.close()


def test_caller_cancelling_before_we_answer_is_not_a_line_failure() -> None:
    port = free_udp_port()
    line = SipLine(SipSettings(host="127.0.0.1", port=port), caller_id_from_sip)
    line.open()
    try:
        proc = subprocess.Popen([sys.executable, str(PEER), "--uri", f"sip:mamoru@127.0.0.1:{port}",
                                 "--from", f"sip:{UNKNOWN}@127.0.0.1", "--cancel-after", "0.5"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        seen: list[LineEvent] = []
        deadline = time.monotonic() + 10
        while not any(isinstance(e, RingingStopped) for e in seen) and time.monotonic() < deadline:
            if (event := line.next_event(0.5)) is not None:
                seen.append(event)
        assert [type(e) for e in seen] == [CallOffered, Ring, RingingStopped]
        assert result_of(proc)["final_code"] == 487
        line.answer()  # the session decided just as the caller left: no exception
        assert line.play(ToneAnnouncements().clip_for(Prompt.WARNING)) is EndReason.CALLER_HUNG_UP
        assert line.listen(1.0) is EndReason.CALLER_HUNG_UP
        line.hang_up()
    finally:
        line.close()


def test_open_on_a_busy_port_raises_line_error() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        line = SipLine(SipSettings(host="127.0.0.1", port=s.getsockname()[1]), caller_id_from_sip)
        with pytest.raises(LineError):
            line.open()
        line.close()


def test_sip_headers_are_unfolded_and_compact_names_expanded() -> None:
    message = ("INVITE sip:x@h SIP/2.0\r\nf: <sip:0312345678@gw>;tag=1\r\nP-Asserted-Identity: <sip:+8131\r\n"
               " 2345678@gw>\r\nprivacy: id\r\nbroken line\r\n\r\nv=0\r\n")
    assert parse_sip_headers(message) == [("From", "<sip:0312345678@gw>;tag=1"),
                                          ("P-Asserted-Identity", "<sip:+8131 2345678@gw>"),
                                          ("Privacy", "id")]


def test_sip_line_from_uri() -> None:
    cfg = Config.defaults()
    line = sip_line_from_uri("sip://127.0.0.1:5090?trusted=10.0.0.1,10.0.0.2&reject=486&ring_timeout=20",
                             sip_defaults(replace(cfg, line=replace(cfg.line, home_region="GB"))))
    assert (line.settings.host, line.settings.port, line.settings.reject_code) == ("127.0.0.1", 5090, 486)
    assert line.settings.trusted_upstreams == frozenset({"10.0.0.1", "10.0.0.2"})
    assert (line.settings.ring_timeout_s, line.settings.home_region) == (20.0, "GB")
    with pytest.raises(ValueError):
        sip_line_from_uri("sim:?stay=1")
