"""The hostile-SIP harness: ``mamoru run`` on a SIP line as a subprocess, a raw UDP user agent,
SIPp runs and tone analysis; used by the hostile and flood tests (see ``tests/test_sip_hostile.py``)."""

from __future__ import annotations

import logging
import math
import os
import re
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
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.ports import free_udp_port
from tests.support.sipp import sipp_binary

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent.parent
SIPP_DIR = ROOT / "tests" / "data" / "sipp"

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

@contextmanager
def running_daemon(tmp: Path, *, sip_extra: str = "") -> Iterator[MamoruDaemon]:
    """``mamoru run`` on a SIP line for one test; its log tail is logged when it stops."""
    d = MamoruDaemon(tmp, sip_extra=sip_extra)
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
            for open_dialog in self.dialogs.values():
                if open_dialog.answered_at is None or open_dialog.bye_sent_at is not None or open_dialog.done:
                    continue
                # A caller who sent CANCEL and was answered anyway (the 200 crossed it) leaves at once.
                if open_dialog.cancelled or (hang_up_after is not None and now - open_dialog.answered_at >= hang_up_after):
                    self.bye(open_dialog)
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


def run_sipp(scenario: str, daemon: MamoruDaemon, cwd: Path, *, calls: int = 1, rate: float | None = None,
             limit: int | None = None, keys: dict[str, str] | None = None, inf: Path | None = None,
             timeout_s: float = 30.0, source_ip: str = "127.0.0.1") -> SippResult:
    """Run ``tests/data/sipp/<scenario>.xml`` against the daemon until SIPp exits (bounded)."""
    name = f"{scenario}-{uuid.uuid4().hex[:6]}"
    logs, errors = cwd / f"{name}_logs.log", cwd / f"{name}_errors.log"
    args = [sipp_binary(), "-sf", str(SIPP_DIR / f"{scenario}.xml"), "-i", source_ip,
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


def lines_with(uac: RawUac, dialog: Dialog, *, replace: dict[str, str] | None = None,
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


def raw_invite(uac: RawUac, dialog: Dialog, lines: list[str], body: str | None = None,
                content_length: int | str | None = None, cut: int | None = None) -> bytes:
    body = sdp(uac.rtp_port) if body is None else body
    length = len(body.encode("utf-8", errors="surrogateescape")) if content_length is None else content_length
    data = ("\r\n".join([*lines, f"Content-Length: {length}"]) + "\r\n\r\n" + body).encode(
        "utf-8", errors="surrogateescape")
    uac.send(data[:cut] if cut is not None else data)
    return data


def flood_numbers(path: Path, n: int) -> list[str]:
    numbers = [f"{FLOOD_PREFIX}{i:05d}" for i in range(1, n + 1)]  # 090-1230-0001 …: blocked by prefix
    path.write_text("SEQUENTIAL\n" + "".join(f"{num};\n" for num in numbers), encoding="ascii")
    return numbers
