"""``mamoru sip probe``: the report on an INVITE's headers (pure), and the command catching a real
SIPp INVITE on loopback, declining it, and saying what it saw."""

from __future__ import annotations

import subprocess
from pathlib import Path

from firmware.sip_probe import InviteCapture, invite_report
from tests.support.daemon import DaemonProcess, daemon_env
from tests.support.ports import free_udp_port
from tests.support.sipp import sipp_binary

SIPP_DIR = Path(__file__).parent / "data" / "sipp"


def _seen(headers: list[tuple[str, str]], source_ip: str, trusted: frozenset[str]) -> list[str]:
    capture = InviteCapture()
    capture(headers, source_ip=source_ip, trusted_upstreams=trusted, home_region="JP")
    seen = capture.wait(timeout=1)
    assert seen is not None
    return invite_report(seen, trusted_upstreams=trusted, home_region="JP")


def test_report_names_the_believed_source_and_masks_numbers_and_names() -> None:
    headers = [("From", '"Yamada Taro" <sip:0312345678@192.168.1.1>;tag=1'),
               ("P-Asserted-Identity", "<sip:0398765432@192.168.1.1>")]
    untrusted = _seen(headers, "192.168.1.50", frozenset({"192.168.1.1/32"}))
    assert "caller-ID source: From (P-Asserted-Identity ignored: 192.168.1.50 is not in [sip] trusted_upstreams)" \
        in untrusted
    assert "  From: \"xxxxxx xxxx\" <sip:XXXXXXXXXX@192.168.1.1>;tag=1" in untrusted
    assert not any("0312345678" in line or "Yamada" in line for line in untrusted)
    trusted = _seen(headers, "192.168.1.1", frozenset({"192.168.1.1/32"}))
    assert "caller-ID source: P-Asserted-Identity" in trusted
    assert trusted[-1] == "mamoru reads: +XXXXXXXXXXX"


def test_report_shows_gateway_reason_words() -> None:
    report = _seen([("From", '"Coin line/payphone" <sip:anonymous@anonymous.invalid>;tag=9')], "192.168.1.1",
                   frozenset({"192.168.1.1/32"}))  # fmt: skip
    assert "reason word in From: payphone (C)" in report
    assert '  From: "Coin line/payphone" <sip:anonymous@anonymous.invalid>;tag=9' in report  # a reason is kept
    assert report[-1] == "mamoru reads: payphone (C)"


def test_sip_probe_catches_a_sipp_invite_and_declines_it(tmp_path: Path) -> None:
    port = free_udp_port()
    probe = DaemonProcess(["sip", "probe", "--line", f"sip://127.0.0.1:{port}", "--seconds", "60"],
                          daemon_env(tmp_path))  # fmt: skip
    probe.start("waiting up to", timeout=30)
    try:
        base = free_udp_port(span=6)
        sipp = subprocess.run([sipp_binary(), "-sf", str(SIPP_DIR / "uac_withheld.xml"), "-i", "127.0.0.1",
                               "-p", str(base), "-mp", str(base + 2), "-m", "1", "-timeout", "20s", "-nostdin",
                               f"127.0.0.1:{port}"], cwd=tmp_path, capture_output=True, text=True, timeout=60)  # fmt: skip
        assert sipp.returncode == 0, sipp.stderr[-2000:]  # the call completed: declined, ACKed
        assert probe.wait_log("mamoru reads:", timeout=30), probe.log_text()
        assert probe.proc is not None and probe.proc.wait(timeout=30) == 0  # it ends by itself after one INVITE
    finally:
        probe.stop()
    text = probe.log_text()
    assert "  Privacy: id" in text and "caller-ID source: From" in text
    assert "reason word in From: withheld (P)" in text and "mamoru reads: withheld (P)" in text
