"""Hostile and malformed SIP against the real daemon: ``mamoru run --line sip://127.0.0.1:PORT``.

Every test starts the daemon as a subprocess, exactly as a user or systemd runs it, with its
own database, recordings directory and half-second tone prompts (so calls are short and the
recording can be analysed), and talks to it over UDP: raw datagrams from a tiny Python user
agent (:class:`RawUac`) where the bytes themselves are the attack, SIPp where load or a real
dialog (re-INVITE, RTP, CANCEL) is. What is proved, whatever the attack:

* the daemon process is still alive afterwards and stops cleanly on SIGTERM;
* no call is answered (200 OK) unless its call row with a decision is in the database,
  and a blocklisted caller is still blocked afterwards;
* every INVITE gets a final response (never silence forever) unless it was unparsable;
* memory stays bounded under a flood; a warned call survives hold/unhold and a codec change
  and its recording still gets the caller's audio; CANCEL at any moment leaves no stuck call.

The SIPp scenarios are named ``hostile_*.xml``: ``tests/test_sipp_scenarios.py`` runs every
``uac_*.xml`` against plain UAS peers, which these (re-INVITEs, waiting for mamoru's BYE) are not.
"""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
import wave
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from tests.support.ports import free_udp_port

pytest.importorskip("pjsua2")

log = logging.getLogger(__name__)

pytestmark = pytest.mark.timeout(150)

ROOT = Path(__file__).resolve().parent.parent
SIPP_DIR = Path(__file__).resolve().parent / "data" / "sipp"

BLOCKED = "0398765432"  # on the block list (exact)
FAMILY = "0312345678"  # on the allow list
UNKNOWN = "0662223333"  # on no list: warned, answered, recorded
FLOOD_PREFIX = "090123"  # the flood's callers 090-1230-0001 … are blocked by prefix

PROMPT_S = 0.5  # every announcement: a half-second tone
WARNING_HZ = 2000
BLOCKED_HZ = 1400
OTHER_PROMPT_HZ = 1700

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 20.0
ROW_TIMEOUT_S = 20.0
FINISHED = ("completed", "failed")


# ---------------------------------------------------------------------------------------------
# the daemon under test
# ---------------------------------------------------------------------------------------------


def _write_tone_wav(path: Path, freq: float, seconds: float, rate: int = 8000) -> None:
    n = int(seconds * rate)
    pcm = array("h", (int(8000 * math.sin(2 * math.pi * freq * i / rate)) for i in range(n)))
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm.tobytes())


class MamoruDaemon:
    """``mamoru run --line sip://127.0.0.1:PORT`` in a subprocess, with its own state directory."""

    def __init__(self, tmp: Path, *, call_timeout_s: int = 30, sip_extra: str = "") -> None:
        self.tmp = tmp
        self.port = free_udp_port()
        self.db = tmp / "mamoru.db"
        self.recordings = tmp / "recordings"
        self.prompts = tmp / "prompts"
        self.config = tmp / "mamoru.toml"
        self.log_path = tmp / "daemon.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_file: Any = None
        self.env = {**{k: v for k, v in os.environ.items() if k != "MAMORU_CONFIG"},
                    "HOME": str(tmp / "home"), "XDG_STATE_HOME": str(tmp / "state")}
        self.prompts.mkdir()
        for prompt, freq in (("warning", WARNING_HZ), ("number_blocked", BLOCKED_HZ),
                             ("number_request", OTHER_PROMPT_HZ), ("international_blocked", OTHER_PROMPT_HZ),
                             ("household_warning", OTHER_PROMPT_HZ)):
            _write_tone_wav(self.prompts / f"{prompt}.wav", freq, PROMPT_S)
        self.config.write_text(f"""\
[line]
home_region = "JP"
call_timeout_s = {call_timeout_s}

[store]
db = "{self.db}"

[voice]
transcribe = false
prompts_dir = "{self.prompts}"

[recording]
dir = "{self.recordings}"

[web]
enabled = false

[feeds]
update_minutes = 0

[sip]
upstream = "fxo"
{sip_extra}""", encoding="utf-8")

    # ---- the command line, as a user types it ----

    def cli(self, *args: str) -> str:
        proc = subprocess.run([sys.executable, "-m", "screening.cli", *args, "--config", str(self.config),
                               "--db", str(self.db)], capture_output=True, text=True, cwd=ROOT, env=self.env,
                              timeout=60)
        assert proc.returncode == 0, f"mamoru {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
        return proc.stdout

    def start(self) -> None:
        self.cli("block", "add", BLOCKED, "--note", "fraud caller")
        self.cli("block", "add", f"{FLOOD_PREFIX}*", "--note", "the flood's numbers")
        self.cli("allow", "add", FAMILY, "--note", "daughter")
        self._log_file = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "screening.cli", "run", "--line", f"sip://127.0.0.1:{self.port}",
             "--config", str(self.config), "--db", str(self.db)],
            stdin=subprocess.DEVNULL, stdout=self._log_file, stderr=subprocess.STDOUT, cwd=ROOT, env=self.env)
        deadline = time.monotonic() + START_TIMEOUT_S
        while "screening on line" not in self.log_text():
            if self.proc.poll() is not None:
                pytest.fail(f"mamoru run exited with {self.proc.returncode} at start:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                pytest.fail(f"mamoru run not screening {START_TIMEOUT_S:.0f}s after start:\n{self.log_tail()}")
            time.sleep(0.05)
        log.info("daemon pid %s screening on sip:127.0.0.1:%s", self.proc.pid, self.port)

    def stop(self) -> int:
        """SIGTERM; the exit code (fails the test if it does not stop in time)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
                pytest.fail(f"mamoru run did not stop {STOP_TIMEOUT_S:.0f}s after SIGTERM:\n{self.log_tail()}")
        return int(self.proc.returncode)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    # ---- looking at it ----

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def assert_alive(self, after: str) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            pytest.fail(f"mamoru run died after {after} (exit {self.proc.returncode}):\n{self.log_tail()}")

    def assert_stops_cleanly(self) -> None:
        code = self.stop()
        assert code == 0, f"mamoru run exited {code} on SIGTERM:\n{self.log_tail()}"
        fatal = [ln for ln in self.log_text().splitlines()
                 if "Assertion" in ln or "SIP thread failed" in ln or "pjsua2 callback" in ln]
        assert not fatal, "\n".join(fatal)

    def rss_kb(self) -> int:
        assert self.proc is not None
        status = Path(f"/proc/{self.proc.pid}/status").read_text(encoding="ascii")
        match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
        assert match, status
        return int(match.group(1))

    def query(self, sql: str, args: tuple[object, ...] = ()) -> list[sqlite3.Row]:
        con = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=5)
        try:
            con.row_factory = sqlite3.Row
            return con.execute(sql, args).fetchall()
        finally:
            con.close()

    def calls(self) -> list[sqlite3.Row]:
        return self.query("SELECT * FROM calls ORDER BY id")

    def events(self, call_id: int) -> list[tuple[str, str]]:
        return [(r["kind"], r["detail"]) for r in
                self.query("SELECT kind, detail FROM events WHERE call_id = ? ORDER BY id", (call_id,))]

    def wait_calls(self, n: int, timeout: float = ROW_TIMEOUT_S) -> list[sqlite3.Row]:
        """At least ``n`` call rows, all finished (completed or failed)."""
        deadline = time.monotonic() + timeout
        rows: list[sqlite3.Row] = []
        while time.monotonic() < deadline:
            rows = self.calls()
            if len(rows) >= n and all(r["state"] in FINISHED for r in rows):
                return rows
            self.assert_alive("waiting for call rows")
            time.sleep(0.05)
        pytest.fail(f"expected {n} finished call rows within {timeout:.0f}s, have "
                    f"{[(r['id'], r['raw_number'], r['action'], r['state']) for r in rows]}\n{self.log_tail()}")


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[MamoruDaemon]:
    d = MamoruDaemon(tmp_path)
    try:
        d.start()
        yield d
    finally:
        d.close()
        log.info("daemon log tail:\n%s", d.log_tail(15))


# ---------------------------------------------------------------------------------------------
# a minimal user agent on a raw UDP socket: the bytes are ours, the dialog handling is correct
# ---------------------------------------------------------------------------------------------


@dataclass
class SipMessage:
    first_line: str
    headers: list[tuple[str, str]]
    body: bytes

    @property
    def is_response(self) -> bool:
        return self.first_line.startswith("SIP/2.0 ")

    @property
    def code(self) -> int:
        return int(self.first_line.split()[1]) if self.is_response else 0

    @property
    def method(self) -> str:
        return self.first_line.split(" ", 1)[0]

    def header(self, name: str) -> str | None:
        compact = {"call-id": "i", "from": "f", "to": "t", "via": "v", "contact": "m"}.get(name.lower())
        for n, v in self.headers:
            if n.lower() == name.lower() or (compact is not None and n.lower() == compact):
                return v
        return None

    def all(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n.lower() == name.lower()]


def parse_sip(data: bytes) -> SipMessage | None:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("utf-8", errors="replace").split("\r\n")
    if not lines or not lines[0]:
        return None
    headers = [(n.strip(), v.strip()) for n, sep, v in (ln.partition(":") for ln in lines[1:]) if sep]
    return SipMessage(lines[0], headers, body)


def _uri_of(name_addr: str) -> str:
    match = re.search(r"<([^>]*)>", name_addr)
    return match.group(1) if match else name_addr.split(";", 1)[0].strip()


def sdp(rtp_port: int, codecs: str = "0 8", direction: str = "sendrecv", version: int = 1) -> str:
    lines = ["v=0", f"o=hostile 1 {version} IN IP4 127.0.0.1", "s=-", "c=IN IP4 127.0.0.1", "t=0 0",
             f"m=audio {rtp_port} RTP/AVP {codecs}"]
    lines += [f"a=rtpmap:{pt} {'PCMU' if pt == '0' else 'PCMA'}/8000" for pt in codecs.split()]
    return "\r\n".join([*lines, f"a={direction}", ""])


@dataclass
class Dialog:
    """One INVITE we sent and what became of it."""

    name: str
    call_id: str
    from_tag: str
    branch: str
    request_uri: str
    from_header: str
    codes: list[int] = field(default_factory=list)
    to_header: str | None = None
    contact: str | None = None
    answered_at: float | None = None
    bye_sent_at: float | None = None
    cancelled: bool = False
    ended_by_peer: bool = False  # the daemon sent BYE
    done: bool = False  # final non-2xx ACKed, or BYE answered either way

    @property
    def final(self) -> int | None:
        finals = [c for c in self.codes if c >= 200]
        return finals[0] if finals else None


class RawUac:
    """Sends what it is told, byte for byte, and then behaves: ACKs finals, hangs up, answers BYE."""

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.port = int(self.sock.getsockname()[1])
        self.rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # where the daemon's RTP goes (unread)
        self.rtp.bind(("127.0.0.1", 0))
        self.rtp_port = int(self.rtp.getsockname()[1])
        self.dialogs: dict[str, Dialog] = {}
        self.stray: list[SipMessage] = []

    def close(self) -> None:
        self.sock.close()
        self.rtp.close()

    def __enter__(self) -> RawUac:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, data: bytes) -> None:
        self.sock.sendto(data, self.target)

    def new_dialog(self, name: str, user: str = UNKNOWN) -> Dialog:
        tag = uuid.uuid4().hex[:10]
        dialog = Dialog(name=name, call_id=f"{uuid.uuid4().hex}@hostile", from_tag=tag,
                        branch=f"z9hG4bK{uuid.uuid4().hex[:16]}",
                        request_uri=f"sip:mamoru@127.0.0.1:{self.target[1]}",
                        from_header=f"<sip:{user}@127.0.0.1>;tag={tag}")
        self.dialogs[dialog.call_id] = dialog
        return dialog

    def invite(self, dialog: Dialog, *, extra: str = "", body: str | None = None,
               content_length: str | None = None, from_line: str | None = None, cut: int | None = None) -> bytes:
        """The INVITE as bytes (sent too); ``extra`` header lines go before Content-Type."""
        body = sdp(self.rtp_port) if body is None else body
        length = str(len(body.encode())) if content_length is None else content_length
        head = [f"INVITE {dialog.request_uri} SIP/2.0",
                f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch={dialog.branch};rport",
                "Max-Forwards: 70",
                from_line if from_line is not None else f"From: {dialog.from_header}",
                f"To: <{dialog.request_uri}>",
                f"Call-ID: {dialog.call_id}",
                "CSeq: 1 INVITE",
                f"Contact: <sip:hostile@127.0.0.1:{self.port}>"]
        if extra:
            head.append(extra.rstrip("\r\n"))
        head += ["Content-Type: application/sdp", f"Content-Length: {length}"]
        data = ("\r\n".join(head) + "\r\n\r\n" + body).encode("utf-8", errors="surrogateescape")
        if cut is not None:
            data = data[:cut]
        self.send(data)
        return data

    def cancel(self, dialog: Dialog) -> None:
        dialog.cancelled = True
        self.send("\r\n".join([
            f"CANCEL {dialog.request_uri} SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch={dialog.branch};rport",
            "Max-Forwards: 70", f"From: {dialog.from_header}", f"To: <{dialog.request_uri}>",
            f"Call-ID: {dialog.call_id}", "CSeq: 1 CANCEL", "Content-Length: 0", "", ""]).encode())

    def _ack(self, dialog: Dialog, response: SipMessage) -> None:
        to = response.header("To") or f"<{dialog.request_uri}>"
        if 200 <= response.code < 300:  # a new transaction to the remote target
            uri, branch = _uri_of(response.header("Contact") or dialog.request_uri), \
                f"z9hG4bK{uuid.uuid4().hex[:16]}"
        else:  # part of the INVITE transaction
            uri, branch = dialog.request_uri, dialog.branch
        self.send("\r\n".join([
            f"ACK {uri} SIP/2.0", f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch={branch};rport",
            "Max-Forwards: 70", f"From: {dialog.from_header}", f"To: {to}", f"Call-ID: {dialog.call_id}",
            "CSeq: 1 ACK", "Content-Length: 0", "", ""]).encode())

    def bye(self, dialog: Dialog) -> None:
        dialog.bye_sent_at = time.monotonic()
        self.send("\r\n".join([
            f"BYE {_uri_of(dialog.contact or dialog.request_uri)} SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bK{uuid.uuid4().hex[:16]};rport",
            "Max-Forwards: 70", f"From: {dialog.from_header}", f"To: {dialog.to_header}",
            f"Call-ID: {dialog.call_id}", "CSeq: 2 BYE", "Content-Length: 0", "", ""]).encode())

    def _reply(self, request: SipMessage, code: int = 200, reason: str = "OK") -> None:
        lines = [f"SIP/2.0 {code} {reason}"]
        lines += [f"Via: {v}" for v in request.all("Via")]
        for name in ("From", "To", "Call-ID", "CSeq"):
            value = request.header(name)
            if value is not None:
                lines.append(f"{name}: {value}")
        self.send(("\r\n".join([*lines, "Content-Length: 0"]) + "\r\n\r\n").encode())

    def pump(self, until: Callable[[], bool], timeout: float, *, hang_up_after: float | None = 0.0) -> bool:
        """Handle what arrives until ``until()`` or ``timeout``; True if ``until()`` became true.

        An answered dialog is hung up (BYE) ``hang_up_after`` seconds after its 200 OK
        (None: wait for the daemon to hang up), a cancelled one that was answered all the same at once.
        """
        deadline = time.monotonic() + timeout
        while True:
            if until():
                return True
            now = time.monotonic()
            if now > deadline:
                return False
            for dialog in self.dialogs.values():
                if dialog.answered_at is None or dialog.bye_sent_at is not None or dialog.done:
                    continue
                # A caller who sent CANCEL and was answered anyway (the 200 crossed it) leaves at once.
                if dialog.cancelled or (hang_up_after is not None and now - dialog.answered_at >= hang_up_after):
                    self.bye(dialog)
            try:
                data, _ = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            message = parse_sip(data)
            if message is None:
                continue
            dialog = self.dialogs.get(message.header("Call-ID") or "")
            if dialog is None:
                self.stray.append(message)
                continue
            if not message.is_response:
                if message.method == "BYE":
                    dialog.ended_by_peer = dialog.done = True
                if message.method != "ACK":
                    self._reply(message)
                continue
            cseq = (message.header("CSeq") or "").split()
            method = cseq[1].upper() if len(cseq) == 2 else ""
            if method == "INVITE":
                dialog.codes.append(message.code)
                if message.code >= 200:
                    dialog.to_header = message.header("To")
                    self._ack(dialog, message)
                if 200 <= message.code < 300:
                    dialog.contact = dialog.contact or message.header("Contact")
                    if dialog.answered_at is None:
                        dialog.answered_at = time.monotonic()
                elif message.code >= 300:
                    dialog.done = True
            elif method == "BYE" and message.code >= 200:
                dialog.done = True

    def settle(self, dialogs: list[Dialog], timeout: float, *, quiet_s: float = 1.5,
               hang_up_after: float | None = 0.0) -> None:
        """Pump until every dialog is done, or got nothing at all for ``quiet_s`` (dropped)."""
        started = time.monotonic()

        def settled() -> bool:
            silent_ok = time.monotonic() - started >= quiet_s
            return all(d.done or (silent_ok and not d.codes) for d in dialogs)

        self.pump(settled, timeout, hang_up_after=hang_up_after)


# ---------------------------------------------------------------------------------------------
# SIPp
# ---------------------------------------------------------------------------------------------


@dataclass
class SippResult:
    returncode: int
    logs: list[str]  # what the scenario's <log> actions wrote
    errors: str  # SIPp's error file and stderr, for failure messages

    def assert_ok(self, what: str) -> None:
        assert self.returncode == 0, f"{what}: sipp exited {self.returncode}\n{self.errors[-3000:]}"


def _sipp() -> str:
    path = shutil.which("sipp")
    if path is None:
        pytest.fail("sipp is not installed: apt-get install -y sip-tester (scripts/test.sh does this as root)")
    return path


def run_sipp(scenario: str, daemon: MamoruDaemon, cwd: Path, *, calls: int = 1, rate: float | None = None,
             limit: int | None = None, keys: dict[str, str] | None = None, inf: Path | None = None,
             timeout_s: float = 30.0, source_ip: str = "127.0.0.1") -> SippResult:
    """Run ``tests/data/sipp/<scenario>.xml`` against the daemon until SIPp exits (bounded)."""
    name = f"{scenario}-{uuid.uuid4().hex[:6]}"
    logs, errors = cwd / f"{name}_logs.log", cwd / f"{name}_errors.log"
    args = [_sipp(), "-sf", str(SIPP_DIR / f"{scenario}.xml"), "-i", source_ip,
            "-p", str(free_udp_port()), "-mp", str(free_udp_port(span=4)), "-m", str(calls),
            "-timeout", f"{timeout_s:.0f}s", "-timeout_error", "-nostdin",
            "-trace_logs", "-log_file", str(logs), "-trace_err", "-error_file", str(errors)]
    if rate is not None:
        args += ["-r", str(rate)]
    if limit is not None:
        args += ["-l", str(limit)]
    if inf is not None:
        args += ["-inf", str(inf)]
    for key, value in (keys or {}).items():
        args += ["-key", key, value]
    args.append(f"127.0.0.1:{daemon.port}")
    stderr_path = cwd / f"{name}_stderr.log"
    with stderr_path.open("w") as stderr_file:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr_file,
                                cwd=cwd)
        deadline = time.monotonic() + timeout_s + 15
        try:
            while proc.poll() is None:
                if time.monotonic() > deadline:
                    pytest.fail(f"sipp {scenario} still running {timeout_s + 15:.0f}s after start")
                daemon.assert_alive(f"sipp {scenario} started")  # no point waiting for SIPp's timeout
                time.sleep(0.1)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    text = logs.read_text(errors="replace") if logs.exists() else ""
    err = (errors.read_text(errors="replace") if errors.exists() else "") + stderr_path.read_text(errors="replace")
    log.info("sipp %s: exit %s, %d log lines", scenario, proc.returncode, len(text.splitlines()))
    return SippResult(proc.returncode, [ln.strip() for ln in text.splitlines() if ln.strip()], err)


def assert_blocked_caller_still_screened(daemon: MamoruDaemon, cwd: Path, after: str,
                                        source_ip: str = "127.0.0.1") -> None:
    """A well-formed call from the blocklisted number: answered, announced, hung up by mamoru."""
    daemon.assert_alive(after)
    before = len(daemon.calls())
    run_sipp("hostile_caller", daemon, cwd, keys={"caller": BLOCKED},
             source_ip=source_ip).assert_ok(f"blocked caller after {after}")
    rows = daemon.wait_calls(before + 1)
    row = rows[-1]
    assert (row["raw_number"], row["action"], row["rule"], row["end_reason"]) == \
        (BLOCKED, "block", "blocklist:local", "announced_and_hung_up"), dict(row)


# ---------------------------------------------------------------------------------------------
# audio: G.711 for the caller's RTP, tone detection in the recording
# ---------------------------------------------------------------------------------------------

_SEG_ALAW = (0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF)
_SEG_ULAW = (0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF)


def _segment(value: int, ends: tuple[int, ...]) -> int:
    return next((i for i, end in enumerate(ends) if value <= end), len(ends))


def linear_to_alaw(sample: int) -> int:
    """ITU-T G.711 A-law (the reference g711.c algorithm)."""
    value = sample >> 3
    mask = 0xD5 if value >= 0 else 0x55
    if value < 0:
        value = -value - 1
    seg = _segment(value, _SEG_ALAW)
    if seg >= 8:
        return 0x7F ^ mask
    code = (seg << 4) | ((value >> 1) & 0xF if seg < 2 else (value >> seg) & 0xF)
    return code ^ mask


def linear_to_ulaw(sample: int) -> int:
    """ITU-T G.711 µ-law (the reference g711.c algorithm)."""
    value = sample >> 2
    mask = 0x7F if value < 0 else 0xFF
    value = min(abs(value), 8159) + (0x84 >> 2)
    seg = _segment(value, _SEG_ULAW)
    if seg >= 8:
        return 0x7F ^ mask
    return ((seg << 4) | ((value >> (seg + 1)) & 0xF)) ^ mask


def tone_g711(freq: float, seconds: float, encode: Callable[[int], int]) -> bytes:
    n = int(seconds * 8000)
    return bytes(encode(int(9000 * math.sin(2 * math.pi * freq * i / 8000))) for i in range(n))


def tone_share(samples: array, freq: float, rate: int = 8000) -> float:
    """How much of a window's energy is at ``freq`` (Goertzel): about 1 for a pure tone, 0 for none."""
    n = len(samples)
    energy = sum(s * s for s in samples)
    if n == 0 or energy == 0:
        return 0.0
    coeff = 2 * math.cos(2 * math.pi * freq / rate)
    s1 = s2 = 0.0
    for x in samples:
        s1, s2 = x + coeff * s1 - s2, s1
    power = s1 * s1 + s2 * s2 - coeff * s1 * s2
    return 2 * power / (n * energy)


def tone_timeline(path: Path, freqs: tuple[float, ...], window_s: float = 0.1) -> list[tuple[float, float | None]]:
    """(start s, the tone filling that window or None) for each window of a 16-bit mono WAV."""
    with wave.open(str(path), "rb") as wav:
        assert (wav.getnchannels(), wav.getsampwidth()) == (1, 2), "recordings are 16-bit mono"
        rate = wav.getframerate()
        pcm = array("h", wav.readframes(wav.getnframes()))
    if sys.byteorder == "big":
        pcm.byteswap()
    step = int(rate * window_s)
    out: list[tuple[float, float | None]] = []
    for start in range(0, len(pcm) - step + 1, step):
        window = pcm[start:start + step]
        rms = math.sqrt(sum(s * s for s in window) / step)
        found = next((f for f in freqs if rms > 300 and tone_share(window, f, rate) > 0.6), None)
        out.append((start / rate, found))
    return out


# ---------------------------------------------------------------------------------------------
# 1. malformed SIP
# ---------------------------------------------------------------------------------------------


def _lines_with(uac: RawUac, dialog: Dialog, *, replace: dict[str, str] | None = None,
                before_from: list[str] | None = None) -> list[str]:
    """The INVITE's request line and headers; ``replace`` swaps a header by name, ``before_from``
    puts lines ahead of From."""
    lines = [f"INVITE {dialog.request_uri} SIP/2.0",
             f"Via: SIP/2.0/UDP 127.0.0.1:{uac.port};branch={dialog.branch};rport",
             "Max-Forwards: 70", *(before_from or []), f"From: {dialog.from_header}", f"To: <{dialog.request_uri}>",
             f"Call-ID: {dialog.call_id}", "CSeq: 1 INVITE", f"Contact: <sip:hostile@127.0.0.1:{uac.port}>",
             "Content-Type: application/sdp"]
    for name, line in (replace or {}).items():
        lines = [line if ln.split(":", 1)[0] == name else ln for ln in lines]
    return lines


def _raw_invite(uac: RawUac, dialog: Dialog, lines: list[str], body: str | None = None,
                content_length: int | str | None = None, cut: int | None = None) -> bytes:
    body = sdp(uac.rtp_port) if body is None else body
    length = len(body.encode("utf-8", errors="surrogateescape")) if content_length is None else content_length
    data = ("\r\n".join([*lines, f"Content-Length: {length}"]) + "\r\n\r\n" + body).encode(
        "utf-8", errors="surrogateescape")
    uac.send(data[:cut] if cut is not None else data)
    return data


@dataclass(frozen=True)
class Hostile:
    """One malformed message: how to send it, who the From claims to be, what we insist on."""

    name: str
    send: Callable[[RawUac, Dialog], object]
    user: str = BLOCKED
    must_not_answer: bool = False  # RFC 3261 says reject or drop: a 2xx is a failure
    expect_action: str | None = None  # if answered, the decision its row must carry


def _many(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{i}: value-{i}" for i in range(n)]


HOSTILE: list[Hostile] = [
    Hostile("binary garbage", lambda u, d: u.send(bytes(range(256)) * 8)),
    Hostile("empty datagram", lambda u, d: u.send(b"")),
    Hostile("CRLF keep-alive", lambda u, d: u.send(b"\r\n\r\n")),
    Hostile("stray 200 OK for no transaction", lambda u, d: u.send(
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKstray\r\nFrom: <sip:a@b>;tag=1\r\n"
        b"To: <sip:c@d>;tag=2\r\nCall-ID: stray@hostile\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n")),
    Hostile("stray BYE for no dialog", lambda u, d: u.send(
        f"BYE sip:mamoru@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{u.port};branch=z9hG4bKbye\r\n"
        f"From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: {d.call_id}\r\nCSeq: 9 BYE\r\n"
        "Content-Length: 0\r\n\r\n".encode())),
    Hostile("request line only", lambda u, d: u.send(f"INVITE {d.request_uri} SIP/2.0\r\n\r\n".encode())),
    Hostile("INVITE cut in the headers", lambda u, d: _raw_invite(u, d, _lines_with(u, d), cut=170),
            must_not_answer=True),
    # A body shorter than Content-Length: RFC 3261 18.3 wants 400. pjsip answers 400 when what is
    # left is no valid SDP, and accepts the INVITE when it is (9999 below): then it is screened.
    Hostile("INVITE cut in the SDP", lambda u, d: _raw_invite(
        u, d, _lines_with(u, d), body=sdp(u.rtp_port)[:40], content_length=len(sdp(u.rtp_port))),
            must_not_answer=True),
    Hostile("Content-Length bigger than the body", lambda u, d: _raw_invite(u, d, _lines_with(u, d),
                                                                             content_length=9999),
            expect_action="block"),
    Hostile("Content-Length smaller than the body", lambda u, d: _raw_invite(u, d, _lines_with(u, d),
                                                                              content_length=10),
            expect_action="block"),
    Hostile("Content-Length negative", lambda u, d: _raw_invite(u, d, _lines_with(u, d), content_length=-5),
            must_not_answer=True),
    Hostile("Content-Length not a number", lambda u, d: _raw_invite(u, d, _lines_with(u, d),
                                                                     content_length="12abc"),
            must_not_answer=True),
    Hostile("60 KB header", lambda u, d: _raw_invite(u, d, [*_lines_with(u, d), "X-Filler: " + "x" * 60_000]),
            expect_action="block"),
    Hostile("60 KB display name in From", lambda u, d: _raw_invite(
        u, d, _lines_with(u, d, replace={"From": f'From: "{"A" * 60_000}" {d.from_header}'}))),
    Hostile("3000 headers", lambda u, d: _raw_invite(u, d, [*_lines_with(u, d), *_many("X-H", 3000)])),
    # Past sip_callerid.MAX_HEADERS the From is not read: no caller ID, screened on the second ring
    # (warn). Not let through -- but a blocklisted caller is warned instead of blocked.
    Hostile("From after 150 other headers", lambda u, d: _raw_invite(
        u, d, _lines_with(u, d, before_from=_many("X-Pad", 150)))),
    Hostile("From without a URI", lambda u, d: _raw_invite(
        u, d, _lines_with(u, d, replace={"From": f"From: <<<>>>;tag={d.from_tag}"}))),
    Hostile("no From at all", lambda u, d: _raw_invite(u, d, [ln for ln in _lines_with(u, d)
                                                               if not ln.startswith("From:")])),
    Hostile("no Call-ID", lambda u, d: _raw_invite(u, d, [ln for ln in _lines_with(u, d)
                                                           if not ln.startswith("Call-ID:")])),
    Hostile("two From headers, family second", lambda u, d: _raw_invite(
        u, d, [*_lines_with(u, d), f"From: <sip:{FAMILY}@127.0.0.1>;tag=second"]), expect_action="block"),
    Hostile("compact f: header", lambda u, d: _raw_invite(
        u, d, _lines_with(u, d, replace={"From": f"f: {d.from_header}"})), expect_action="block"),
    Hostile("NUL and invalid UTF-8 in From", lambda u, d: _raw_invite(
        u, d, _lines_with(u, d, replace={"From": f'From: "\x00\udcff\udcfe\u202e" {d.from_header}'})),
            expect_action="block"),
    Hostile("CSeq number overflow", lambda u, d: _raw_invite(
        u, d, _lines_with(u, d, replace={"CSeq": "CSeq: 99999999999999999999999 INVITE"}))),
    Hostile("Max-Forwards 0", lambda u, d: _raw_invite(
        u, d, _lines_with(u, d, replace={"Max-Forwards": "Max-Forwards: 0"}))),
    Hostile("SDP garbage", lambda u, d: _raw_invite(
        u, d, _lines_with(u, d), body="v=0\r\nm=audio 99999 RTP/AVP 0\r\nc=IN IP4 999.1.1.1\r\n"),
            must_not_answer=True),
    Hostile("no SDP offer", lambda u, d: _raw_invite(u, d, _lines_with(u, d), body=""),
            expect_action="block"),
    Hostile("folded From header", lambda u, d: _raw_invite(
        u, d, _lines_with(u, d, replace={"From": f"From: <sip:{BLOCKED}\r\n @127.0.0.1>;tag={d.from_tag}"}))),
]


def test_malformed_sip_neither_crashes_the_daemon_nor_skips_screening(daemon: MamoruDaemon,
                                                                       tmp_path: Path) -> None:
    """Each malformed message in turn is dropped, rejected, or screened like any call; a
    provisional response is always followed by a final one. Afterwards a blocklisted caller is
    still blocked and SIGTERM still stops the daemon cleanly."""
    outcomes: list[str] = []
    for case in HOSTILE:
        with RawUac(daemon.port) as uac:
            dialog = uac.new_dialog(case.name, case.user)
            before = len(daemon.calls())
            case.send(uac, dialog)
            uac.settle([dialog], 15, quiet_s=1.0)
            daemon.assert_alive(case.name)
            new_rows = daemon.calls()[before:]
            outcomes.append(f"{case.name}: responses {dialog.codes}, rows "
                            f"{[(r['raw_number'], r['action'], r['rule']) for r in new_rows]}")
            if any(100 <= c < 200 for c in dialog.codes):
                assert dialog.final is not None, f"{case.name}: provisional response, then silence: {dialog.codes}"
            if dialog.answered_at is None:
                continue
            # Answered: only after this very call was decided, and its row says so.
            assert not case.must_not_answer, f"{case.name}: a malformed INVITE was answered: {dialog.codes}"
            assert new_rows, f"{case.name}: 200 OK but no call row"
            assert all(r["action"] in ("block", "warn", "request_number") for r in new_rows), outcomes[-1]
            if case.expect_action is not None:
                assert [r["action"] for r in new_rows] == [case.expect_action], outcomes[-1]
            daemon.wait_calls(before + len(new_rows))  # its session is over before the next message
    log.info("malformed SIP outcomes:\n%s", "\n".join(outcomes))

    rows = daemon.wait_calls(len(daemon.calls()))
    assert all(r["action"] is not None and r["rule"] for r in rows), "a call row without a decision"
    assert not [r for r in rows if r["action"] == "allow" and r["raw_number"] != FAMILY], \
        "a malformed call was let through to ring"

    assert_blocked_caller_still_screened(daemon, tmp_path, "malformed SIP")
    daemon.assert_stops_cleanly()


# ---------------------------------------------------------------------------------------------
# 2. an INVITE flood
# ---------------------------------------------------------------------------------------------

FLOOD_CALLS = 300
# Calls per second: a rate at which many calls are admitted and answered, so their rows can be checked.
# Bursts at 1000/s (which used to abort pjlib) are tests/test_sip_flood.py's.
FLOOD_RATE = 50
FLOOD_LIMIT = 60  # SIPp's concurrent calls
FLOOD_RSS_GROWTH_KB = 40_000  # a leak of ~130 KB per call would show; the heap's own growth does not


def _flood_numbers(path: Path, n: int) -> list[str]:
    numbers = [f"{FLOOD_PREFIX}{i:05d}" for i in range(1, n + 1)]  # 090-1230-0001 …: blocked by prefix
    path.write_text("SEQUENTIAL\n" + "".join(f"{num};\n" for num in numbers), encoding="ascii")
    return numbers


def test_invite_flood_answers_only_screened_calls_and_memory_stays_bounded(daemon: MamoruDaemon,
                                                                            tmp_path: Path) -> None:
    """300 INVITEs at 50/s, each caller hanging up the moment it is answered: the daemon
    survives, every 200 OK SIPp saw belongs to a call whose own row carries its block decision,
    every other INVITE got a final 4xx-6xx, and the resident memory does not run away."""
    numbers = _flood_numbers(tmp_path / "numbers.csv", FLOOD_CALLS)
    rss_before = daemon.rss_kb()
    result = run_sipp("hostile_flood", daemon, tmp_path, calls=FLOOD_CALLS, rate=FLOOD_RATE, limit=FLOOD_LIMIT,
                      inf=tmp_path / "numbers.csv", timeout_s=60)
    daemon.assert_alive(f"a flood of {FLOOD_CALLS} INVITEs at {FLOOD_RATE}/s")
    result.assert_ok("INVITE flood")

    outcome: dict[str, str] = {}
    problems: list[str] = []
    for line in result.logs:
        kind, number, *code = line.split()
        if kind in ("SILENT", "BYE_UNANSWERED"):
            problems.append(line)
        if kind != "BYE_UNANSWERED":
            assert number not in outcome, f"{number} logged twice: {outcome[number]}, {line}"
            outcome[number] = " ".join([kind, *code])
    assert not problems, f"INVITEs left without a final response, or BYEs without an answer: {problems[:10]}"
    assert set(outcome) == set(numbers), f"calls without an outcome: {sorted(set(numbers) - set(outcome))[:10]}"
    answered = {n for n, o in outcome.items() if o == "ANSWERED"}
    assert answered, "the flood never got through to a screened call"

    deadline = time.monotonic() + ROW_TIMEOUT_S
    rows = daemon.calls()
    while not all(r["state"] in FINISHED for r in rows) and time.monotonic() < deadline:
        daemon.assert_alive("the flood's calls ending")
        time.sleep(0.1)
        rows = daemon.calls()
    by_number: dict[str, list[sqlite3.Row]] = {}
    for row in rows:
        by_number.setdefault(row["raw_number"], []).append(row)
    for number in sorted(answered):
        mine = by_number.get(number, [])
        assert len(mine) == 1, f"{number} was answered but has {len(mine)} call rows"
        row = mine[0]
        assert (row["action"], row["rule"], row["state"]) == ("block", "blocklist:local", "completed"), dict(row)
        assert row["end_reason"] in ("caller_hung_up", "announced_and_hung_up"), dict(row)
        assert "answered" in [kind for kind, _ in daemon.events(row["id"])], dict(row)
    assert all(r["action"] is not None for r in rows), "a call row without a decision"
    refused_after_decision = {r["raw_number"]: outcome.get(r["raw_number"]) for r in rows
                              if r["raw_number"] not in answered}
    assert not refused_after_decision, \
        f"blocked on an FXO line means answered and announced, not refused: {refused_after_decision}"
    strangers = [r["raw_number"] for r in rows if r["raw_number"] not in numbers]
    assert not strangers, f"rows for callers that never called: {strangers}"

    rss_after = daemon.rss_kb()
    log.info("flood: %d answered and screened, %d rejected (%s), %d rows; RSS %d -> %d kB", len(answered),
             FLOOD_CALLS - len(answered), sorted({o for o in outcome.values() if o != "ANSWERED"}), len(rows),
             rss_before, rss_after)
    assert rss_after - rss_before < FLOOD_RSS_GROWTH_KB, f"RSS grew {rss_before} -> {rss_after} kB"
    assert_blocked_caller_still_screened(daemon, tmp_path, "the INVITE flood")
    daemon.assert_stops_cleanly()


# ---------------------------------------------------------------------------------------------
# 3. re-INVITE mid-call, CANCEL before the decision and before the answer
# ---------------------------------------------------------------------------------------------

TONE_BEFORE_HZ = 500  # what the caller says before the re-INVITEs (PCMU)
TONE_AFTER_HZ = 1000  # and after: off hold, PCMA


def test_reinvite_hold_and_codec_change_keep_a_warned_call_up_and_recorded(daemon: MamoruDaemon,
                                                                           tmp_path: Path) -> None:
    """A warned caller holds, unholds with PCMA instead of PCMU, then hangs up: the call stays
    up throughout (SIPp fails on an early BYE or a refused re-INVITE), the caller's audio after
    the codec change is in the recording, after the audio from before it, and the call ends as
    the caller's hang-up."""
    (tmp_path / "hostile_tone_500.ulaw").write_bytes(tone_g711(TONE_BEFORE_HZ, 1.0, linear_to_ulaw))
    (tmp_path / "hostile_tone_1000.alaw").write_bytes(tone_g711(TONE_AFTER_HZ, 1.0, linear_to_alaw))
    run_sipp("hostile_reinvite", daemon, tmp_path, keys={"caller": UNKNOWN}).assert_ok("hold, unhold, PCMA")
    row = daemon.wait_calls(1)[0]
    assert (row["raw_number"], row["action"], row["rule"], row["state"], row["end_reason"]) == \
        (UNKNOWN, "warn", "unknown", "completed", "caller_hung_up"), dict(row)
    kinds = [kind for kind, _ in daemon.events(row["id"])]
    assert kinds[:3] == ["offered", "decided", "answered"] and "listened" in kinds and "hung_up" in kinds, kinds
    assert row["recording"], dict(row)
    recording = daemon.recordings / row["recording"]
    timeline = tone_timeline(recording, (WARNING_HZ, TONE_BEFORE_HZ, TONE_AFTER_HZ))
    at = {f: [t for t, found in timeline if found == f] for f in (WARNING_HZ, TONE_BEFORE_HZ, TONE_AFTER_HZ)}
    summary = f"{recording.name}: " + ", ".join(f"{f} Hz {len(ts) / 10:.1f}s" for f, ts in at.items())
    log.info("recording %s", summary)
    assert len(at[WARNING_HZ]) >= 3, f"the warning is not in the recording: {summary}"
    assert len(at[TONE_BEFORE_HZ]) >= 10, f"the caller before the re-INVITEs is missing: {summary}"
    assert len(at[TONE_AFTER_HZ]) >= 15, f"the caller after hold and the codec change is missing: {summary}"
    assert max(at[WARNING_HZ]) < min(at[TONE_BEFORE_HZ]) and max(at[TONE_BEFORE_HZ]) < min(at[TONE_AFTER_HZ]), \
        f"recording out of order: {timeline}"
    daemon.assert_stops_cleanly()


def test_cancel_before_the_decision_and_before_the_answer(daemon: MamoruDaemon, tmp_path: Path) -> None:
    """A caller with no usable number hangs up before the second ring decides its call; the
    family hangs up while their allowed call rings. Both CANCELs get 200 and the INVITE 487,
    nothing is answered, and the line screens the next caller."""
    undecided = run_sipp("hostile_cancel", daemon, tmp_path, keys={"caller": "alice"})
    undecided.assert_ok("CANCEL before the decision")
    assert not any(line.startswith("RANG") for line in undecided.logs), "rang before anything was decided"
    ringing = run_sipp("hostile_cancel", daemon, tmp_path, keys={"caller": FAMILY})
    ringing.assert_ok("CANCEL while ringing")
    assert f"RANG {FAMILY}" in ringing.logs, ringing.logs
    rows = daemon.wait_calls(1)
    assert [(r["raw_number"], r["action"], r["end_reason"]) for r in rows] == \
        [(FAMILY, "allow", "allowed_to_ring")], [dict(r) for r in rows]
    assert "answered" not in [kind for kind, _ in daemon.events(rows[0]["id"])]
    late = time.monotonic() + 3.5  # past the second ring (3 s): the cancelled call is not screened late
    while time.monotonic() < late:
        assert len(daemon.calls()) == 1, [dict(r) for r in daemon.calls()]
        time.sleep(0.1)
    assert_blocked_caller_still_screened(daemon, tmp_path, "two CANCELs")
    daemon.assert_stops_cleanly()


def test_a_cancelled_call_never_hands_its_decision_to_the_next_caller(daemon: MamoruDaemon) -> None:
    """INVITE, CANCEL and at once the next caller's INVITE. The next caller may land in the call
    slot the cancelled call just left while that call's session is still running: it must get
    its own decision (blocked: announced and hung up by mamoru; family: ringing), never the
    cancelled caller's warning, nor that session's hang-up."""
    for i, second in enumerate([BLOCKED, FAMILY] * 3):
        before = len(daemon.calls())
        with RawUac(daemon.port) as uac:
            first = uac.new_dialog(f"cancelled #{i}", UNKNOWN)
            nxt = uac.new_dialog(f"next caller #{i}", second)
            uac.invite(first)
            uac.cancel(first)
            uac.invite(nxt)
            if second == BLOCKED:
                uac.settle([first, nxt], 10, hang_up_after=None)  # mamoru must hang up by itself
                assert nxt.final == 200 and nxt.ended_by_peer, (
                    f"#{i} blocklisted caller right after a CANCEL: responses {nxt.codes}, hung up by mamoru "
                    f"after the announcement: {nxt.ended_by_peer}; rows "
                    f"{[(r['raw_number'], r['action'], r['state']) for r in daemon.calls()[before:]]}")
            else:
                uac.pump(lambda: 180 in nxt.codes or nxt.final is not None, 5)
                uac.pump(lambda: nxt.final is not None, 1.0)  # keeps ringing: no final response
                assert 180 in nxt.codes and nxt.final is None, f"#{i} family caller after a CANCEL: {nxt.codes}"
                uac.cancel(nxt)
                uac.settle([first, nxt], 10)
                assert nxt.final == 487, nxt.codes
            assert first.final in (487, 200), first.codes  # 200: the answer beat the CANCEL
        rows = daemon.wait_calls(before + 1)[before:]
        seen = [(r["raw_number"], r["action"], r["end_reason"], [k for k, _ in daemon.events(r["id"])])
                for r in rows]
        mine = [r for r in rows if r["raw_number"] == second]
        assert len(mine) == 1, seen
        expected = ("block", "announced_and_hung_up") if second == BLOCKED else ("allow", "allowed_to_ring")
        assert (mine[0]["action"], mine[0]["end_reason"]) == expected, seen
        for row in rows:
            if row["raw_number"] == UNKNOWN and first.final == 487:
                played = [d for k, d in daemon.events(row["id"]) if k == "played"]
                assert all('"end": "caller_hung_up"' in d for d in played), \
                    f"#{i}: the cancelled call's warning was played to someone: {played}"
    daemon.assert_stops_cleanly()
