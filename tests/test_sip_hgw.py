"""The Hikari Denwa home gateway (HGW) layout without forked ringing, end to end with SIPp as the HGW.

Layout (docs/japan-lines.md): the external number rings only mamoru's SIP extension; mamoru
registers with the HGW, and rings the household phone as an internal extension (TEL1, internal
number 1) through the HGW when a call is allowed, or once the warning has played.

On an HGW extension the caller arrives in ``From`` only (no P-Asserted-Identity): the number as the
user part, or, without a number, ``anonymous@anonymous.invalid`` with the Number Display reason in
the display name.
"""

from __future__ import annotations

import os
import re
import subprocess
import textwrap
import time
import wave
from pathlib import Path

import pytest

from blocklist.store import Store
from screening.config import load_config
from screening.core.line import SipUpstream
from screening.core.model import Action, CallState, EventKind, ListEntry, ListKind, MatchKind, Reason
from screening.core.sip_callerid import caller_id_from_sip
from tests.support.daemon import DaemonProcess
from tests.support.ports import free_udp_port
from tests.support.sipp import sipp_binary

pytestmark = pytest.mark.timeout(180)

HGW = "127.0.0.1"

# (From as the HGW writes it, expected raw number, expected reason)
HGW_FROM = [
    ('"0312345678" <sip:0312345678@ntt-east.ne.jp>;tag=1', "0312345678", None),
    ('<sip:0312345678@192.168.1.1>;tag=1', "0312345678", None),
    ('"Anonymous" <sip:anonymous@anonymous.invalid>;tag=1', None, Reason.WITHHELD),
    ('<sip:anonymous@anonymous.invalid>;tag=1', None, Reason.WITHHELD),
    ('"Coin line/payphone" <sip:anonymous@anonymous.invalid>;tag=1', None, Reason.PAYPHONE),
    ('"Unavailable" <sip:anonymous@anonymous.invalid>;tag=1', None, Reason.OUT_OF_AREA),
    ('"Interaction with other service" <sip:anonymous@anonymous.invalid>;tag=1', None, Reason.SERVICE_CONFLICT),
    ('"公衆電話" <sip:anonymous@anonymous.invalid>;tag=1', None, Reason.PAYPHONE),
    ('"Coin line/payphone" <sip:anonymous@192.168.1.1>;tag=1', None, Reason.PAYPHONE),
]


@pytest.mark.parametrize(("from_", "raw", "reason"), HGW_FROM)
def test_hgw_from_forms_give_the_number_display_reason(from_: str, raw: str | None, reason: Reason | None) -> None:
    caller = caller_id_from_sip([("From", from_)], source_ip=HGW, trusted_upstreams=[HGW], home_region="JP")
    assert (caller.raw_number, caller.reason) == (raw, reason)


def test_privacy_header_still_withholds_whatever_the_display_name() -> None:
    headers = [("From", '"Coin line/payphone" <sip:anonymous@anonymous.invalid>'), ("Privacy", "id")]
    assert caller_id_from_sip(headers, source_ip=HGW, trusted_upstreams=[HGW], home_region="JP").reason \
        is Reason.WITHHELD


# ---- end to end: SIPp as the HGW (registrar + TEL1, and the external caller) ---------------------

ROOT = Path(__file__).parent.parent
SIPP_DIR = ROOT / "tests" / "data" / "sipp"
FAMILY, BLOCKED, UNKNOWN = "0312345678", "0398765432", "0662223333"


class Hgw:
    """The gateway's side of mamoru's extension: SIPp as registrar and TEL1 on one address and port."""

    def __init__(self, tmp: Path) -> None:
        self.port = free_udp_port()
        self.log = tmp / "hgw_messages.log"
        self.proc = subprocess.Popen(
            [sipp_binary(), "-sf", str(SIPP_DIR / "hgw_gateway.xml"), "-i", HGW, "-p", str(self.port),
             "-mp", str(free_udp_port()), "-m", "99", "-nostdin", "-trace_msg", "-message_file", str(self.log)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=tmp)
        time.sleep(0.3)

    def registered(self) -> bool:
        """mamoru sent a REGISTER with digest credentials (SIPp checks them and answers 200 or 403)."""
        text = self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else ""
        return any(re.search(r"^\s*REGISTER sip:", m, re.M) and re.search(r"^\s*Authorization:", m, re.M | re.I)
                   for m in text.split("message received")[1:])

    def tel1_calls(self) -> set[str]:
        """Call-IDs of the INVITEs mamoru sent to TEL1 (each is sent twice: the digest challenge)."""
        text = self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else ""
        calls = set()
        for message in text.split("message received")[1:]:
            body = message.split("\n\n", 1)[-1] if "\n\n" in message else message
            if re.search(r"^\s*INVITE sip:1@", body, re.M):
                found = re.search(r"^\s*Call-ID:\s*(\S+)", body, re.M | re.I)
                if found:
                    calls.add(found.group(1))
        return calls

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate(timeout=10)


def _external_call(mamoru_port: int, from_: str, tmp: Path) -> None:
    """The HGW offering one external call to mamoru's extension (SIPp UAC); returns when it ended."""
    proc = subprocess.run(
        [sipp_binary(), "-sf", str(SIPP_DIR / "hgw_incoming.xml"), "-key", "from", from_, "-s", "mamoru",
         "-i", HGW, "-p", str(free_udp_port()), "-mp", str(free_udp_port()), "-m", "1", "-timeout", "30s",
         "-nostdin", f"{HGW}:{mamoru_port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=tmp, timeout=45)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_hgw_layout_rings_tel1_only_for_allowed_and_warned_calls(tmp_path: Path) -> None:
    """``mamoru run`` registered as HGW extension "mamoru", the household phone as TEL1 (sip:1@HGW)."""
    pytest.importorskip("pjsua2")
    hgw = Hgw(tmp_path)
    secret = tmp_path / "sip.secret"
    secret.write_text("s3cret\n", encoding="utf-8")
    secret.chmod(0o600)
    db = tmp_path / "calls.db"
    with Store(db) as store:
        store.add_entry(ListEntry(ListKind.ALLOW, MatchKind.EXACT, "+81312345678", source="family"))
        store.add_entry(ListEntry(ListKind.BLOCK, MatchKind.EXACT, "+81398765432"))
    prompts = tmp_path / "prompts"  # one-second prompts (the household's own recordings) keep calls short
    prompts.mkdir()
    for name in ("warning", "number_request", "number_blocked"):
        with wave.open(str(prompts / f"{name}.wav"), "wb") as wav:
            wav.setnchannels(1)
            wav.setsampwidth(2)
            wav.setframerate(8000)
            wav.writeframes(b"\x00\x10" * 8000)
    bind = free_udp_port()
    config = tmp_path / "mamoru.toml"
    config.write_text(
        f'[line]\nuri = "sip://mamoru@{HGW}:{hgw.port}?bind={HGW}:{bind}"\n'
        f'[sip]\nupstream = "hgw"\ntrusted_upstreams = ["{HGW}"]\nhousehold = "sip:1@{HGW}:{hgw.port}"\n'
        f'password_file = "{secret}"\nmax_calls = 1\n'
        f'[store]\ndb = "{db}"\n[recording]\ndir = "{tmp_path / "rec"}"\n[web]\nenabled = false\n'
        f'[voice]\ntranscribe = false\nprompts_dir = "{prompts}"\n', encoding="utf-8")
    env = {**{k: v for k, v in os.environ.items() if k not in ("MAMORU_CONFIG", "MAMORU_SIP_PASSWORD")},
           "HOME": str(tmp_path), "XDG_STATE_HOME": str(tmp_path / "state")}
    run = DaemonProcess(["run"], env, config=config).start()
    try:
        assert _wait(hgw.registered, 20), "never registered (SIPp verifies the digest)"
        time.sleep(0.5)  # SIPp's 200 OK reaches mamoru
        calls = [
            (f'"{FAMILY}" <sip:{FAMILY}@ntt-east.ne.jp>', Action.ALLOW, "allowlist", True),
            (f"<sip:{BLOCKED}@ntt-east.ne.jp>", Action.BLOCK, "blocklist:local", False),
            (f"<sip:{UNKNOWN}@ntt-east.ne.jp>", Action.WARN, "unknown", True),
            ('"Anonymous" <sip:anonymous@anonymous.invalid>', Action.REQUEST_NUMBER, "withheld", False),
            ('"Coin line/payphone" <sip:anonymous@anonymous.invalid>', Action.WARN, "payphone", True),
            ('"Unavailable" <sip:anonymous@anonymous.invalid>', Action.WARN, "out_of_area", True),
            ('"Interaction with other service" <sip:anonymous@anonymous.invalid>', Action.WARN,
             "service_conflict", True),
            ("<sip:anonymous@anonymous.invalid>", Action.REQUEST_NUMBER, "withheld", False),
        ]
        rung = 0
        with Store(db, retry_interval=0.05, busy_timeout=0.5) as store:
            for n, (from_, action, rule, rings_tel1) in enumerate(calls, start=1):
                _external_call(bind, from_, tmp_path)
                row = _wait_rows(store, n)[-1]
                kinds = [e.kind for e in store.events_for(row.id)]
                assert (row.action, row.rule) == (action, rule), (from_, row)
                assert (EventKind.HOUSEHOLD in kinds) is rings_tel1, (from_, kinds)
                rung += rings_tel1
                assert _wait(lambda want=rung: len(hgw.tel1_calls()) == want, 5), (from_, hgw.tel1_calls())
            blocked = _wait_rows(store, len(calls))[1]
        assert blocked.end_reason == "rejected"  # 603 to the HGW: nothing in the house rang
        assert hgw.proc.poll() is None, "the HGW refused mamoru's credentials"
    finally:
        try:
            code = run.stop(timeout=20)
        finally:
            hgw.stop()
    assert code == 0, run.output()[-3000:]


def _wait_rows(store: Store, n: int, timeout: float = 15.0) -> list:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = store.recent_calls(limit=100)
        if len(rows) >= n and all(r.state in (CallState.COMPLETED, CallState.FAILED) for r in rows):
            return list(reversed(rows))
        time.sleep(0.05)
    raise AssertionError(f"expected {n} finished calls, have {store.recent_calls(limit=100)}")


def _wait(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_the_hgw_settings_in_the_installer_notes_load(tmp_path: Path) -> None:
    """The [line]/[sip] example in docs/japan-lines.md is a valid config for this layout."""
    text = (Path(__file__).parent.parent / "docs" / "japan-lines.md").read_text(encoding="utf-8")
    example = re.search(r"```toml\n(.*?)```", text, re.S)
    assert example is not None
    config = tmp_path / "mamoru.toml"
    config.write_text(textwrap.dedent(example.group(1)), encoding="utf-8")
    cfg = load_config(config, env={})
    assert cfg.line.uri.startswith("sip://3@192.168.1.1")
    assert (cfg.sip.upstream, cfg.sip.household, cfg.sip.trusted_upstreams) == (
        SipUpstream.HGW, "sip:1@192.168.1.1", ("192.168.1.1/32",))
