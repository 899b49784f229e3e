"""What a SIP line does beyond the modem: reject without ringing, the household phone's leg,
several calls at once, and registering as an extension -- all against real SIP peers on loopback
(pjsua2 callers and a pjsua2 household phone in subprocesses, SIPp as the registrar).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from array import array
from dataclasses import replace
from pathlib import Path

import pytest

from tests.support.sipp import sipp_binary

pytest.importorskip("pjsua2")

from firmware.sip_line import SipLine, SipSettings, sip_lines_from_uri, sip_settings_from_uri
from screening.config import Config
from screening.core.line import LineAdapter, LineFault, LineRestored, SipUpstream
from screening.core.model import Action, EventKind, Prompt
from screening.line_factory import sip_defaults
from tests.support.ports import free_udp_port
from tests.support.sip import BLOCKED, FAMILY, ROOT, UNKNOWN, SipDaemonRig, result_of
from voice.announcements import ToneAnnouncements

PHONE = ROOT / "tests" / "sip_phone.py"
SIPP_DIR = ROOT / "tests" / "data" / "sipp"

pytestmark = pytest.mark.timeout(90)


class Phone:
    """The household phone (tests/sip_phone.py) listening on its own port."""

    def __init__(self, *args: str) -> None:
        self.port = free_udp_port()
        self.proc = subprocess.Popen([sys.executable, str(PHONE), "--port", str(self.port), *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        assert self.proc.stdout is not None
        ready = ""
        for _ in range(100):  # pjlib's start-up lines come first; the phone exits after --max-s anyway
            ready = self.proc.stdout.readline()
            if not ready or ready.startswith("{"):
                break
        assert ready.startswith("{") and json.loads(ready) == {"ready": True}, \
            self.proc.stderr.read() if self.proc.stderr else ready

    @property
    def uri(self) -> str:
        return f"sip:phone@127.0.0.1:{self.port}"

    def result(self, timeout: float = 30.0) -> dict:
        return result_of(self.proc, timeout)


def tone_level(pcm: bytes, freq: float) -> float:
    """Goertzel power of ``freq`` in PCM16 8 kHz, normalised per sample (mixed voices stay apart)."""
    samples = array("h", pcm[: len(pcm) // 2 * 2])
    coeff = 2 * math.cos(2 * math.pi * freq / 8000)
    s1 = s2 = 0.0
    for x in samples:
        s1, s2 = x + coeff * s1 - s2, s1
    return math.sqrt(max(0.0, s1 * s1 + s2 * s2 - coeff * s1 * s2)) / max(1, len(samples))


def freqs(result: dict) -> list[int]:
    return [f for _, _, f in result["bursts"]]


# ---- reject without ringing ---------------------------------------------------------------


@pytest.mark.parametrize("upstream", [SipUpstream.TRUNK, SipUpstream.HGW])
def test_blocked_caller_is_rejected_without_ringing_where_the_upstream_honours_it(
        tmp_path: Path, upstream: SipUpstream) -> None:
    with SipDaemonRig(tmp_path, upstream=upstream, reject_code=603) as rig:
        result = rig.call(BLOCKED)
        assert (result["final_code"], result["rang"], result["answered"]) == (603, False, False), result
        row = rig.wait_calls(1)[0]
        assert (row.action, row.end_reason) == (Action.BLOCK, "rejected")
        assert EventKind.REJECTED in rig.event_kinds(row.id) and EventKind.ANSWERED not in rig.event_kinds(row.id)
        # A withheld caller must still hear why: Number Request is answered and played even here.
        withheld = rig.call("anonymous", "--header", "Privacy: id")
        assert withheld["answered"] and len(withheld["bursts"]) == 3, withheld
        assert rig.wait_calls(2)[1].action is Action.REQUEST_NUMBER


def test_on_an_fxo_adapter_a_blocked_caller_is_answered_and_announced(tmp_path: Path) -> None:
    # Rejecting the adapter's INVITE would leave the analog line ringing in the house.
    with SipDaemonRig(tmp_path, upstream=SipUpstream.FXO) as rig:
        result = rig.call(BLOCKED)
        assert result["answered"] and len(result["bursts"]) == 2, result
        assert rig.wait_calls(1)[0].end_reason == "announced_and_hung_up"


# ---- the household phone's leg ------------------------------------------------------------


def test_allowed_caller_rings_through_to_the_household_phone(tmp_path: Path) -> None:
    phone = Phone("--answer-after", "1.0")
    with SipDaemonRig(tmp_path, household=phone.uri) as rig:
        caller = rig.call(FAMILY, "--hang-up-after", "2.5")
        heard = phone.result()
        assert caller["rang"] and caller["answered"] and caller["ended_by"] == "us", caller
        assert heard["answered"] and heard["ended_by"] == "them", heard
        # The household phone is told who is calling, and each side hears the other's voice.
        assert ("P-Asserted-Identity", "<sip:+81312345678@127.0.0.1>") in [tuple(h) for h in heard["headers"]]
        assert any(600 <= f <= 720 for f in freqs(caller)), caller  # the phone's 660 Hz
        assert any(400 <= f <= 480 for f in freqs(heard)), heard  # the caller's 440 Hz
        row = rig.wait_calls(1)[0]
        assert (row.action, row.end_reason) == (Action.ALLOW, "allowed_to_ring")
        assert EventKind.HOUSEHOLD in rig.event_kinds(row.id)
        assert rig.voices[0].received_pcm == bytearray()  # family calls are not recorded


def test_allowed_caller_is_declined_when_the_household_phone_is_busy(tmp_path: Path) -> None:
    phone = Phone("--answer-after", "0.3", "--reject", "486")
    with SipDaemonRig(tmp_path, household=phone.uri) as rig:
        caller = rig.call(FAMILY)
        assert caller["rang"] and not caller["answered"] and caller["final_code"] == 480, caller
        assert not phone.result()["answered"]
        assert rig.wait_calls(1)[0].action is Action.ALLOW


def test_warned_call_is_connected_after_the_warning_and_both_voices_are_recorded(tmp_path: Path) -> None:
    phone = Phone("--answer-after", "0.5", "--hang-up-after", "2.0")
    with SipDaemonRig(tmp_path, household=phone.uri) as rig:
        caller = rig.call(UNKNOWN)
        heard = phone.result()
        # The caller heard the warning (880/660/880) first, then the household's 660 Hz voice.
        assert caller["answered"] and caller["ended_by"] == "them", caller
        assert [f for f in freqs(caller)][:3] and abs(freqs(caller)[0] - 880) < 130, caller
        assert heard["answered"] and heard["ended_by"] == "us" and heard["bursts"], heard
        row = rig.wait_calls(1)[0]
        assert (row.action, row.end_reason) == (Action.WARN, "handset_on_hook")  # the household hung up
        kinds = rig.event_kinds(row.id)
        assert kinds.index(EventKind.PLAYED) < kinds.index(EventKind.HOUSEHOLD)  # warning first
        pcm = bytes(rig.voices[0].received_pcm)
        assert len(pcm) >= 8000 * 2 * 1.5, len(pcm)
        # Both directions reach the voice pipeline: the caller's 440 Hz and the household's 660 Hz.
        silence = tone_level(pcm, 1000)
        assert tone_level(pcm, 440) > 20 * silence and tone_level(pcm, 660) > 20 * silence


# ---- several calls at once --------------------------------------------------------------


def test_four_calls_at_once_are_each_screened_and_a_fifth_gets_busy(tmp_path: Path) -> None:
    # Four callers at once come through the configured upstream (a trunk, a gateway): any other
    # address gets one call slot at a time (firmware/sip_admission.py).
    with SipDaemonRig(tmp_path, lines=4, trusted=frozenset({"127.0.0.1"})) as rig:
        callers = [rig.start_call(number, "--hang-up-after", "4.0")
                   for number in (UNKNOWN, "0662224444", "09011112222", "0120333444")]
        time.sleep(2.0)  # all four answered and warned; each caller stays on 4 s
        fifth = rig.call(BLOCKED)
        assert fifth["final_code"] == 486 and not fifth["answered"], fifth
        results = [result_of(p) for p in callers]
        assert all(r["answered"] and r["ended_by"] == "us" for r in results), results
        assert all(len(r["bursts"]) >= 3 for r in results), results  # every caller heard the whole warning
        rows = rig.wait_calls(4)
        assert [r.action for r in rows] == [Action.WARN] * 4
        assert all(r.end_reason == "caller_hung_up" for r in rows)
        assert all(len(v.received_pcm) > 2 * 8000 * 2 for v in rig.voices)  # each call recorded on its own
        # With the slots free again, the blocked caller is screened as usual.
        assert rig.call(BLOCKED)["answered"]
        assert rig.wait_calls(5)[-1].action is Action.BLOCK


# ---- phoning a relative --------------------------------------------------------------------


def test_a_relative_is_phoned_over_sip_and_acknowledges_with_1(tmp_path: Path) -> None:
    from screening.voice_call import CallAlertStatus, VoiceCallAlerter

    relative = Phone("--answer-after", "0.5", "--dtmf", "1", "--dtmf-after", "1.5")
    # The alerter runs on the call loop's thread between calls (LineJobs); here it has the line alone.
    line = SipLine(SipSettings(host="127.0.0.1", port=free_udp_port(),
                               outbound=f"sip:{{number}}@127.0.0.1:{relative.port}"))
    line.open()
    try:
        assert line.can_dial()
        message = ToneAnnouncements().clip_for(Prompt.WARNING)  # the spoken message needs espeak-ng
        alerter = VoiceCallAlerter(line, lambda text, lang: message, attempts=1, ring_timeout_s=10,
                                   home_region="JP")
        result = alerter.call("090-1234-5678", "fraud call now", "ja")
        heard = relative.result()
    finally:
        line.close()
    assert result.status is CallAlertStatus.ACKNOWLEDGED and result.digits == ("1",), result
    assert heard["to"] == "09012345678" and heard["answered"] and heard["ended_by"] == "them", heard
    assert abs(freqs(heard)[0] - 880) < 130, heard  # the message reached the relative


def test_without_an_outbound_route_a_sip_line_does_not_dial(tmp_path: Path) -> None:
    from screening.core.line import DialResult

    with SipDaemonRig(tmp_path) as rig:
        assert not rig.lines[0].can_dial()
        assert rig.lines[0].dial("0312345678", 5) is DialResult.FAILED


# ---- registering as an extension --------------------------------------------------------


def _registrar(tmp_path: Path, scenario: str, port: int | None = None) -> tuple[subprocess.Popen[str], int]:
    """SIPp as the registrar (digest auth verified by SIPp itself) on ``port``."""
    port = port or free_udp_port()
    proc = subprocess.Popen([sipp_binary(), "-sf", str(SIPP_DIR / f"{scenario}.xml"), "-i", "127.0.0.1", "-p", str(port),
                             "-mp", str(free_udp_port()), "-m", "1", "-timeout", "40s", "-nostdin"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    time.sleep(0.3)
    return proc, port


def _events(line: LineAdapter, want: tuple[type, ...], timeout: float) -> list[object]:
    """Line events until ``want`` has been seen in that order (others may come between)."""
    seen: list[object] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        event = line.next_event(0.2)
        if event is None:
            continue
        seen.append(event)
        pending = list(want)
        for e in seen:
            if pending and isinstance(e, pending[0]):
                pending.pop(0)
        if not pending:
            break
    return seen


def test_registers_with_digest_auth_and_recovers_a_lost_registration(tmp_path: Path) -> None:
    down, port = _registrar(tmp_path, "registrar_down")  # accepts, then refuses the refresh with 503
    secret = tmp_path / "sip.secret"
    secret.write_text("s3cret\n")
    cfg = Config.defaults()
    cfg = replace(cfg, sip=replace(cfg.sip, password_file=secret))
    line = sip_lines_from_uri(f"sip://mamoru@127.0.0.1:{port}?bind=127.0.0.1:{free_udp_port()}&retry=1",
                              sip_defaults(cfg), env={})[0]
    up = None
    line.open()
    try:
        assert line.endpoint.registration.wait(10), "never registered"  # only after SIPp verified the digest
        seen = _events(line, (LineFault,), timeout=15)
        faults = [e for e in seen if isinstance(e, LineFault)]
        assert faults and "503" in faults[0].message, seen
        assert not line.endpoint.registration.is_set()
        down.communicate(timeout=15)
        up, _ = _registrar(tmp_path, "registrar_up", port)  # the gateway is back
        seen = _events(line, (LineRestored,), timeout=15)
        assert any(isinstance(e, LineRestored) for e in seen), seen
        assert line.endpoint.registration.is_set()
        _, err = up.communicate(timeout=15)
        assert up.returncode == 0, err[-2000:]
    finally:
        line.close()
        for proc in (down, up):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=10)


def test_a_wrong_password_is_a_line_fault_not_a_crash(tmp_path: Path) -> None:
    registrar, port = _registrar(tmp_path, "registrar_up")
    line = sip_lines_from_uri(f"sip://mamoru@127.0.0.1:{port}?bind=127.0.0.1:{free_udp_port()}&retry=30",
                              None, env={"MAMORU_SIP_PASSWORD": "wrong"})[0]
    line.open()
    try:
        seen = _events(line, (LineFault,), timeout=10)
        assert any(isinstance(e, LineFault) and "403" in e.message for e in seen), seen
        assert not line.endpoint.registration.is_set()
    finally:
        line.close()
        if registrar.poll() is None:
            registrar.kill()
        registrar.communicate(timeout=10)


# ---- settings from the URI and [sip] -------------------------------------------------------


def test_settings_from_uri_and_config(tmp_path: Path) -> None:
    cfg = Config.defaults()
    cfg = replace(cfg, sip=replace(cfg.sip, upstream=SipUpstream.HGW, trusted_upstreams=("192.168.1.1/32",),
                                   household="sip:phone@192.168.1.20", max_calls=2))
    s = sip_settings_from_uri("sip://0.0.0.0:5062", sip_defaults(cfg), env={})
    assert (s.host, s.port, s.upstream, s.max_calls, s.registrar) == ("0.0.0.0", 5062, SipUpstream.HGW, 2, None)
    assert s.trusted_upstreams == frozenset({"192.168.1.1/32"}) and s.household == "sip:phone@192.168.1.20"
    s = sip_settings_from_uri("sip://0312345678@192.168.1.1?bind=0.0.0.0:5070&upstream=trunk&expires=120",
                              sip_defaults(cfg), env={"MAMORU_SIP_PASSWORD": "pw"})
    assert (s.registrar, s.user, s.password, s.host, s.port) == ("192.168.1.1", "0312345678", "pw", "0.0.0.0", 5070)
    assert s.upstream is SipUpstream.TRUNK and s.register_expires_s == 120
    assert "pw" not in repr(s)  # the password never reaches a log line
    for bad, problem in [("sip://u:pw@192.168.1.1", "password"), ("sip://h:5060?nope=1", "unknown"),
                         ("sip://h:5060?upstream=modem", "upstream"), ("sip://h?reject=200", "reject"),
                         ("sip://u@h?bind=nonsense", "bind")]:
        with pytest.raises(ValueError, match=problem):
            sip_settings_from_uri(bad, sip_defaults(cfg), env={})
    empty = tmp_path / "empty.secret"
    empty.write_text("\n")
    with pytest.raises(ValueError, match="empty"):
        defaults = sip_defaults(replace(cfg, sip=replace(cfg.sip, password_file=empty)))
        sip_settings_from_uri("sip://u@h", defaults, env={})


def test_a_household_phone_nobody_picks_up_stops_ringing_and_the_warned_caller_stays_recorded(
        tmp_path: Path) -> None:
    phone = Phone("--answer-after", "30")  # rings, nobody there
    with SipDaemonRig(tmp_path, household=phone.uri, ring_timeout_s=2.0) as rig:
        caller = rig.call(UNKNOWN, "--hang-up-after", "5.0")
        heard = phone.result()
        assert caller["answered"] and caller["ended_by"] == "us", caller
        assert heard["offered"] and not heard["answered"] and heard["ended_by"] == "them", heard
        row = rig.wait_calls(1)[0]
        assert (row.action, row.end_reason) == (Action.WARN, "caller_hung_up")
        assert len(rig.voices[0].received_pcm) > 2 * 8000 * 2  # the caller was still recorded


def test_invites_from_outside_the_configured_upstreams_are_refused(tmp_path: Path) -> None:
    # A host on the home network that is not the gateway claims the family's number.
    with SipDaemonRig(tmp_path, trusted_upstreams=frozenset({"127.0.0.2"})) as rig:
        result = rig.call(FAMILY)
        assert (result["final_code"], result["rang"], result["answered"]) == (403, False, False), result
        time.sleep(0.3)
        assert rig.store.recent_calls(limit=10) == []  # refused before screening: nothing rang
