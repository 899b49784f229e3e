"""The SIPp scenarios in tests/data/sipp load and run against real SIPp peers on loopback.

Every UAC scenario (withheld, international, unknown, flood, malformed …) is run against three
UAS behaviours the SIP line will show: SIPp's built-in ``uas`` (answer, caller hangs up), a
603 rejection without ringing, and answer-then-hang-up (announcement). Both ends must report
their calls complete: the UAS only exits 0 once it has seen the whole dialog (ACK or BYE), so a
scenario that silently sent nothing fails here. All pairs run concurrently to keep this quick.

Then each scenario's INVITE is caught on a raw UDP socket (declined with 603, as the SIP line
rejects) and fed to :func:`screening.core.sip_callerid.caller_id_from_sip`: the bytes SIPp really
sends must give the caller ID the scenario is named for.
"""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from screening.core.model import Reason
from screening.core.sip_callerid import caller_id_from_sip
from tests.support.ports import free_udp_port
from tests.support.sipp import sipp_binary

SIPP_DIR = Path(__file__).parent / "data" / "sipp"
UAC_SCENARIOS = sorted(p.stem for p in SIPP_DIR.glob("uac_*.xml"))
UAS_PEERS = ("builtin_uas", "uas_reject_603", "uas_answer_hangup")
CALLS = {"uac_flood": 10}  # the flood runs several calls at a high rate; the rest one call
WAIT_S = 45


@dataclass
class _Pair:
    uac: subprocess.Popen[str]
    uas: subprocess.Popen[str]


def _start_pair(sipp: str, uac: str, uas: str, log_dir: Path) -> _Pair:
    calls = CALLS.get(uac, 1)
    # One block for both peers: SIP ports, then four media ports each (SIPp binds RTP, RTCP and the
    # ports above). Ports picked one by one could overlap a peer's media range: "errno 98".
    base = free_udp_port(span=10)
    uas_port, uac_port, uas_media, uac_media = base, base + 1, base + 2, base + 6
    common = ["-i", "127.0.0.1", "-m", str(calls), "-timeout", "20s", "-timeout_error", "-nostdin"]
    uas_scenario = ["-sn", "uas"] if uas == "builtin_uas" else ["-sf", str(SIPP_DIR / f"{uas}.xml")]
    uas_proc = subprocess.Popen(
        [sipp, *uas_scenario, "-p", str(uas_port), "-mp", str(uas_media), *common],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=log_dir,
    )
    uac_proc = subprocess.Popen(
        [sipp, "-sf", str(SIPP_DIR / f"{uac}.xml"), "-p", str(uac_port), "-mp", str(uac_media),
         "-r", "100", *common, f"127.0.0.1:{uas_port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=log_dir,
    )
    return _Pair(uac_proc, uas_proc)


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[tuple[str, str], tuple[int, int, str]]]:
    sipp = sipp_binary()
    log_dir = tmp_path_factory.mktemp("sipp")
    pairs = {(uac, uas): _start_pair(sipp, uac, uas, log_dir) for uac in UAC_SCENARIOS for uas in UAS_PEERS}
    out: dict[tuple[str, str], tuple[int, int, str]] = {}
    try:
        for key, pair in pairs.items():
            _, uac_err = pair.uac.communicate(timeout=WAIT_S)
            _, uas_err = pair.uas.communicate(timeout=WAIT_S)
            out[key] = (pair.uac.returncode, pair.uas.returncode, (uac_err + uas_err)[-2000:])
        yield out
    finally:
        for pair in pairs.values():
            for proc in (pair.uac, pair.uas):
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(timeout=5)


def test_expected_scenarios_exist() -> None:
    assert set(UAC_SCENARIOS) >= {
        "uac_withheld", "uac_international", "uac_unknown", "uac_flood",
        "uac_bad_headers", "uac_huge_header", "uac_bad_content_length",
    }


@pytest.mark.parametrize("uas", UAS_PEERS)
@pytest.mark.parametrize("uac", UAC_SCENARIOS)
def test_scenario_runs_against_peer(results, uac: str, uas: str) -> None:
    uac_rc, uas_rc, stderr = results[(uac, uas)]
    assert (uac_rc, uas_rc) == (0, 0), f"{uac} vs {uas}: sipp exit codes uac={uac_rc} uas={uas_rc}\n{stderr}"


def test_scenarios_carry_what_they_claim() -> None:
    def text(name: str) -> str:
        return (SIPP_DIR / f"{name}.xml").read_text(encoding="utf-8")

    assert '"Anonymous" <sip:anonymous@anonymous.invalid>' in text("uac_withheld")
    assert "Privacy: id" in text("uac_withheld")
    assert "sip:+44" in text("uac_international")
    assert "Content-Length: 9999" in text("uac_bad_content_length")
    assert len(text("uac_huge_header")) > 20_000


# ---- on the wire: what each scenario really sends, read by the SIP caller-ID parser ----------


def _serve_one_invite(sock: socket.socket) -> bytes:
    """Receive one INVITE on a raw UDP socket, decline it (603) the way the SIP line rejects."""
    data, peer = sock.recvfrom(65535)
    head = data.split(b"\r\n\r\n", 1)[0].decode("utf-8", errors="replace")
    wanted = ("via", "from", "to", "call-id", "cseq")
    copied: dict[str, str] = {}
    for line in head.split("\r\n")[1:]:
        name = line.split(":", 1)[0].strip().lower()
        if name in wanted and name not in copied:
            copied[name] = line + (";tag=py603" if name == "to" else "")
    reply = "\r\n".join(["SIP/2.0 603 Decline", *(copied[n] for n in wanted if n in copied), "Content-Length: 0"])
    sock.sendto((reply + "\r\n\r\n").encode(), peer)
    return data


def _headers(invite: bytes) -> list[tuple[str, str]]:
    """(name, value) pairs as a SIP stack hands them over; lines without a colon are dropped."""
    head = invite.split(b"\r\n\r\n", 1)[0].decode("utf-8", errors="replace")
    return [(n.strip(), v.strip()) for n, sep, v in (ln.partition(":") for ln in head.split("\r\n")[1:]) if sep]


WIRE_CASES = [
    ("uac_withheld", None, Reason.WITHHELD),
    ("uac_international", "+442071234567", None),
    ("uac_unknown", "+81398765432", None),
    ("uac_bad_content_length", "+81312345678", None),
    ("uac_bad_headers", None, None),  # first From unparsable: no caller ID (warn), never a guess
    ("uac_huge_header", None, None),  # From cut at the bound: no caller ID
]


@pytest.mark.parametrize(("scenario", "e164", "reason"), WIRE_CASES)
def test_scenario_invite_on_the_wire_parses_as_intended(scenario: str, e164: str | None,
                                                         reason: Reason | None, tmp_path: Path) -> None:
    sipp = sipp_binary()
    sip_port = free_udp_port(span=5)  # SIPp's SIP port, then its media ports above it
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(10)
        port = sock.getsockname()[1]
        proc = subprocess.Popen(
            [sipp, "-sf", str(SIPP_DIR / f"{scenario}.xml"), "-i", "127.0.0.1", "-p", str(sip_port),
             "-mp", str(sip_port + 1), "-m", "1", "-timeout", "15s", "-timeout_error", "-nostdin",
             f"127.0.0.1:{port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
        )
        try:
            invite = _serve_one_invite(sock)
            _, err = proc.communicate(timeout=WAIT_S)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=5)
    assert invite.startswith(b"INVITE sip:")
    assert proc.returncode == 0, f"{scenario}: sipp did not complete after our 603\n{err[-2000:]}"
    caller = caller_id_from_sip(_headers(invite), source_ip="127.0.0.1", trusted_upstreams=["127.0.0.1"],
                                home_region="JP")
    assert (caller.number_e164, caller.reason) == (e164, reason)
    if scenario == "uac_huge_header":
        assert len(invite) > 20_000 and any("cut to" in line for line in caller.raw_lines)
