"""SIP line: INVITE-to-decision latency, answered-call latency, memory and concurrent calls.

Runs ``mamoru run --line sip://127.0.0.1:PORT`` as a separate process (a real pjsua2
endpoint on loopback, a real store) and places calls into it with SIPp, using the
scenarios in ``benchmarks/sipp/``:

1. **Rejected calls** (``[sip] upstream = "trunk"``): ``--calls`` blocklisted callers, one
   at a time at ``--rate`` calls/s after ``--warmup`` unmeasured ones. Latency is INVITE
   sent → final response received, from ``gettimeofday`` stamps SIPp logs per call (µs);
   SIPp's own response-time measure (``rtd``, ``-trace_rtt``, whole ms) is kept as a
   cross-check. The call log gives the daemon-side split (INVITE → call row → response
   event, ms) and ``decide_ms``. The final codes are counted: on a trunk a blocked call must
   get ``reject_code`` (603) without being answered.
2. **Memory**: the daemon's VmRSS (``/proc/PID/status``) after the warm-up, sampled during
   the rejected calls, and after them.
3. **Answered calls** (``upstream = "fxo"``): ``--answered`` unknown callers (warn), one at a
   time; latency INVITE → 200 OK. Each call lasts for the warning (7.5 s in Japanese) plus
   ``line.call_timeout_s`` (1 s) of listening, then mamoru hangs up.
4. **Concurrent calls**: for N = 1 .. ``--max-concurrent``, N answered calls started at once
   (SIPp ``-l N``). A call is handled correctly when it got 200 OK, its announcement (the RTP
   this script receives on the call's own port, decoded and correlated with the shipped
   warning prompt), a call row with the right decision and events, and mamoru's BYE, which
   SIPp answered. The result is the largest N for which every call of every round up to N
   was handled correctly; ``[sip] max_calls`` (``--max-calls``) is the configured limit,
   beyond which calls should get 486.

    .venv/bin/python benchmarks/bench_sip.py                 # full run, writes benchmarks/results_sip.json
    .venv/bin/python benchmarks/bench_sip.py --quick         # a smoke run in about a minute; writes nothing
    .venv/bin/python benchmarks/bench_sip.py --calls 200 --json-out /tmp/sip.json

Only 127.0.0.1 is used. Needs SIPp (Debian ``sip-tester``) and pjsua2 in the venv.
"""

from __future__ import annotations

import argparse
import array
import json
import logging
import math
import os
import random
import re
import selectors
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from blocklist.store import Store  # noqa: E402
from screening.core.model import ListEntry, ListKind, MatchKind, Prompt  # noqa: E402
from voice.announcements import PromptLibrary  # noqa: E402

log = logging.getLogger("bench_sip")

SIPP_DIR = Path(__file__).resolve().parent / "sipp"
DEFAULT_JSON = Path(__file__).resolve().parent / "results_sip.json"
HOST = "127.0.0.1"
LANGUAGE = "ja"
CALL_TIMEOUT_S = 1  # line.call_timeout_s: a warned call is listened to this long, then hung up
BLOCKED_NUMBER = "0352{:06d}"  # 03-52xx-xxxx, each call its own number, all on the blocklist
UNKNOWN_NUMBER = "0662{:06d}"  # 06-62xx-xxxx, on no list: warn
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0
ROWS_TIMEOUT_S = 15.0
RSS_SAMPLE_S = 0.2
LOUD_RMS = 200  # a 20 ms frame louder than this (int16 RMS) is speech, not silence
MIN_CORRELATION = 0.9  # received announcement vs the shipped prompt, aligned
MIN_COVERAGE = 0.98  # share of the prompt's speech frames heard as speech


# ---- small helpers -------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def summary(values: list[float], digits: int = 2) -> dict[str, float | int | None]:
    if not values:
        return {"n": 0, "p50": None, "p99": None, "max": None, "mean": None}
    return {"n": len(values), "p50": round(pct(values, 50), digits), "p99": round(pct(values, 99), digits),
            "max": round(max(values), digits), "mean": round(statistics.fmean(values), digits)}


def histogram_ms(values: list[float]) -> dict[str, int]:
    """Counts per whole millisecond ("12" = 12.0 .. 12.999 ms): shows where the time goes (bimodal?)."""
    return {str(k): v for k, v in sorted(Counter(int(x) for x in values).items())}


def proc_status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {key} for pid {pid}")


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def iso_epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class RssSampler:
    """VmRSS of one process every ``RSS_SAMPLE_S`` on its own thread, while running."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss", daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append(proc_status_kb(self.pid, "VmRSS"))
            except (OSError, RuntimeError):
                return
            self._stop.wait(RSS_SAMPLE_S)


# ---- the daemon ----------------------------------------------------------------------------


class DaemonProcess:
    """``mamoru run --line sip://127.0.0.1:PORT`` with its own config, database and home."""

    def __init__(self, workdir: Path, *, upstream: str, max_calls: int, blocked: list[str]) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True)
        self.port = free_udp_port()
        self.db = workdir / "mamoru.db"
        self.config = workdir / "mamoru.toml"
        self.stderr_path = workdir / "daemon.log"
        self.upstream = upstream
        self.proc: subprocess.Popen[bytes] | None = None
        self.config.write_text(
            f'[line]\nhome_region = "JP"\ncall_timeout_s = {CALL_TIMEOUT_S}\n'
            '[log]\nlevel = "info"\n'
            f'[voice]\nlanguage = "{LANGUAGE}"\ntranscribe = false\n'
            f'[recording]\ndir = "{workdir / "recordings"}"\n'
            '[web]\nenabled = false\n'
            '[feeds]\nupdate_minutes = 0\n'
            f'[sip]\nupstream = "{upstream}"\nreject_code = 603\nmax_calls = {max_calls}\n',
            encoding="utf-8")  # fmt: skip
        with Store(self.db) as store:
            if blocked:
                store.import_entries(ListEntry(ListKind.BLOCK, MatchKind.EXACT, "+81" + n[1:], note="bench")
                                     for n in blocked)  # fmt: skip

    def start(self) -> DaemonProcess:
        env = {**os.environ, "HOME": str(self.workdir), "XDG_STATE_HOME": str(self.workdir / "state")}
        env.pop("MAMORU_CONFIG", None)
        with self.stderr_path.open("wb") as err:
            self.proc = subprocess.Popen(
                [str(ROOT / ".venv" / "bin" / "mamoru"), "run", "--line", f"sip://{HOST}:{self.port}",
                 "--config", str(self.config), "--db", str(self.db)],
                cwd=self.workdir, env=env, stdin=subprocess.DEVNULL, stdout=err, stderr=err,
            )
        self._wait_ready()
        log.info("daemon pid %d on sip://%s:%d (upstream %s)", self.proc.pid, HOST, self.port, self.upstream)
        return self

    def _wait_ready(self) -> None:
        """Ready once the SIP endpoint answers an OPTIONS and the call loop logged that it runs."""
        assert self.proc is not None
        deadline = time.monotonic() + READY_TIMEOUT_S
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((HOST, 0))
            sock.settimeout(0.3)
            n = 0
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"daemon exited with {self.proc.returncode}:\n{self.log_tail()}")
                n += 1
                sock.sendto(_options(sock.getsockname()[1], self.port, n), (HOST, self.port))
                try:
                    reply, _ = sock.recvfrom(65535)
                except TimeoutError:
                    continue
                if reply.startswith(b"SIP/2.0 ") and "screening on line" in self.log_text():
                    return
                time.sleep(0.1)
        raise RuntimeError(f"daemon not ready after {READY_TIMEOUT_S:.0f} s:\n{self.log_tail()}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def rss_kb(self) -> int:
        return proc_status_kb(self.pid, "VmRSS")

    def log_text(self) -> str:
        try:
            return self.stderr_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def log_problems(self, keep: int = 5) -> dict[str, object]:
        """Warning and error lines in the daemon's log (pjsip's own port-in-use retries count too)."""
        lines = re.findall(r"^\S+ \S+ (?:WARNING|ERROR|CRITICAL) .*$", self.log_text(), re.M)
        errors = sum(1 for ln in lines if " WARNING " not in ln[:40])
        return {"warning": len(lines) - errors, "error": errors, "first": [ln[24:240] for ln in lines[:keep]]}

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            log.error("daemon did not stop in %.0f s after SIGTERM; killing it", STOP_TIMEOUT_S)
            self.proc.kill()
            self.proc.wait(timeout=5)
            return None

    # -- the call log, read-only while the daemon runs --

    def query(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        con = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=5)
        try:
            return con.execute(sql, params).fetchall()
        finally:
            con.close()

    def wait_rows_finished(self, count: int) -> int:
        """Wait (bounded) until at least ``count`` call rows are no longer in progress."""
        deadline = time.monotonic() + ROWS_TIMEOUT_S
        done = 0
        while time.monotonic() < deadline:
            done = int(self.query("select count(*) from calls where state in ('completed', 'failed')")[0][0])
            if done >= count:
                break
            time.sleep(0.1)
        return done

    def calls_by_number(self, numbers: list[str]) -> dict[str, dict[str, object]]:
        """The call row and its events for each national number (the latest call from it)."""
        wanted = {"+81" + n[1:]: n for n in numbers}
        out: dict[str, dict[str, object]] = {}
        marks = ",".join("?" * len(wanted))
        rows = self.query(f"select id, number_e164, action, rule, state, end_reason, error, recording_seconds "
                          f"from calls where number_e164 in ({marks}) order by id", tuple(wanted))  # fmt: skip
        ids = [r[0] for r in rows]
        events: dict[int, list[tuple[str, str, dict[str, object]]]] = {i: [] for i in ids}
        for call_id, at, kind, detail in self.query(
                f"select call_id, at, kind, detail from events where call_id in ({','.join('?' * len(ids))}) "
                "order by id", tuple(ids)):  # fmt: skip
            events[call_id].append((kind, at, json.loads(detail or "{}")))
        for call_id, e164, action, rule, state, end_reason, error, rec_s in rows:
            out[wanted[e164]] = {"id": call_id, "action": action, "rule": rule, "state": state,
                                 "end_reason": end_reason, "error": error, "recording_seconds": rec_s,
                                 "events": events[call_id]}  # fmt: skip
        return out


def _options(local_port: int, port: int, n: int) -> bytes:
    return (f"OPTIONS sip:mamoru@{HOST}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {HOST}:{local_port};branch=z9hG4bK-bench-ready-{n}\r\n"
            f"From: <sip:bench@{HOST}:{local_port}>;tag=bench{n}\r\n"
            f"To: <sip:mamoru@{HOST}:{port}>\r\n"
            f"Call-ID: bench-ready-{n}@{HOST}\r\nCSeq: {n} OPTIONS\r\nMax-Forwards: 70\r\n"
            "Content-Length: 0\r\n\r\n").encode()  # fmt: skip


# ---- SIPp ----------------------------------------------------------------------------------


@dataclass
class SippRun:
    returncode: int | None
    results: list[dict[str, str]]  # one RESULT line per call, parsed
    rtd_ms: list[float]  # SIPp's own response times (whole ms)
    successful: int | None
    failed: int | None
    wall_s: float
    stderr_tail: str

    def latencies_ms(self, start: str = "0", end: str = "1", code: int | None = None) -> list[float]:
        out = []
        for r in self.results:
            if r.get(f"s{end}", "0") in ("0", "") or (code is not None and r["code"] != str(code)):
                continue
            out.append((_stamp(r, end) - _stamp(r, start)) * 1000)
        return out


def _stamp(result: dict[str, str], which: str) -> float:
    return float(result[f"s{which}"]) + float(result[f"u{which}"]) / 1e6


_RESULT = re.compile(r"RESULT (.*)$")


def run_sipp(scenario: str, rows: list[tuple[str, ...]], *, target_port: int, limit: int, rate: float,
             timeout_s: float, workdir: Path, source: str = HOST) -> SippRun:  # fmt: skip
    """One SIPp client run of ``len(rows)`` calls from ``source``; every bound is SIPp's ``-timeout`` plus a
    margin here."""
    workdir.mkdir(parents=True)
    inf = workdir / "calls.csv"
    inf.write_text("SEQUENTIAL\n" + "".join(";".join(r) + ";\n" for r in rows), encoding="ascii")
    log_file = workdir / "results.log"
    stat_file = workdir / "stat.csv"
    cmd = [shutil.which("sipp") or "sipp", "-sf", str(SIPP_DIR / f"{scenario}.xml"), "-inf", str(inf),
           "-i", source, "-p", str(free_udp_port()), "-mp", str(free_udp_port()),
           "-m", str(len(rows)), "-l", str(limit), "-r", f"{rate:g}", "-rp", "1000",
           "-trace_logs", "-log_file", str(log_file), "-trace_rtt", "-rtt_freq", "1",
           "-trace_stat", "-stf", str(stat_file), "-trace_err", "-error_file", str(workdir / "errors.log"),
           "-timeout", f"{math.ceil(timeout_s)}s", "-timeout_error", "-nostdin",
           f"{HOST}:{target_port}"]  # fmt: skip
    started = time.monotonic()
    with (workdir / "sipp.out").open("wb") as out, (workdir / "sipp.err").open("wb") as err:
        proc = subprocess.Popen(cmd, cwd=workdir, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        try:
            rc: int | None = proc.wait(timeout=timeout_s + 30)
        except subprocess.TimeoutExpired:
            log.error("sipp did not exit %.0f s after its own timeout; killing it", 30.0)
            proc.kill()
            proc.wait(timeout=5)
            rc = None
    wall = time.monotonic() - started
    results = []
    if log_file.exists():
        for line in log_file.read_text(encoding="utf-8", errors="replace").splitlines():
            m = _RESULT.search(line)
            if m:
                fields = dict(kv.split("=", 1) for kv in m.group(1).split())
                fields = {k: (str(int(float(v))) if re.fullmatch(r"-?\d+\.\d+", v) else v) for k, v in fields.items()}
                results.append(fields)
    rtd: list[float] = []
    for rtt in workdir.glob("*_rtt.csv"):
        for line in rtt.read_text(encoding="utf-8").splitlines()[1:]:
            parts = line.split(";")
            if len(parts) >= 2 and parts[1]:
                rtd.append(float(parts[1]))
    successful = failed = None
    if stat_file.exists():
        lines = [ln for ln in stat_file.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
        if len(lines) >= 2:
            last = dict(zip(lines[0].split(";"), lines[-1].split(";")))
            successful = int(last.get("SuccessfulCall(C)", "0") or 0)
            failed = int(last.get("FailedCall(C)", "0") or 0)
    err_tail = (workdir / "sipp.err").read_text(encoding="utf-8", errors="replace")[-1500:]
    return SippRun(rc, results, rtd, successful, failed, wall, err_tail)


# ---- RTP: what each caller heard ---------------------------------------------------------


def _ulaw_table() -> list[int]:
    out = []
    for byte in range(256):
        b = ~byte & 0xFF
        x = ((((b & 0x0F) << 3) + 0x84) << ((b >> 4) & 0x07)) - 0x84
        out.append(-x if b & 0x80 else x)
    return out


def _alaw_table() -> list[int]:
    out = []
    for byte in range(256):
        b = byte ^ 0x55
        exp, mant = (b >> 4) & 0x07, b & 0x0F
        x = (mant << 4) + 8 if exp == 0 else ((mant << 4) + 0x108) << (exp - 1)
        out.append(x if b & 0x80 else -x)
    return out


G711 = {0: _ulaw_table(), 8: _alaw_table()}


class RtpSinks:
    """UDP ports (RTP even, RTCP odd) on 127.0.0.1 that keep every RTP packet per port."""

    def __init__(self) -> None:
        self.packets: dict[int, list[tuple[int, int, int, bytes]]] = {}  # port -> (pt, seq, ts, payload)
        self._socks: list[socket.socket] = []
        self._sel = selectors.DefaultSelector()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rtp", daemon=True)
        self._thread.start()

    def allocate(self) -> int:
        for _ in range(200):
            port = random.randrange(30000, 60000, 2)
            rtp, rtcp = (socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2))
            try:
                rtp.bind((HOST, port))
                rtcp.bind((HOST, port + 1))
            except OSError:
                rtp.close()
                rtcp.close()
                continue
            with self._lock:
                self.packets[port] = []
                for sock, is_rtp in ((rtp, True), (rtcp, False)):
                    sock.setblocking(False)
                    self._socks.append(sock)
                    self._sel.register(sock, selectors.EVENT_READ, port if is_rtp else None)
            return port
        raise RuntimeError("no free RTP port pair on 127.0.0.1")

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:  # allocate() waits at most one select timeout
                if not self._sel.get_map():
                    ready = []
                else:
                    ready = self._sel.select(timeout=0.02)
                for key, _ in ready:
                    self._take(key)
            if not ready:
                time.sleep(0.02)

    def _take(self, key: selectors.SelectorKey) -> None:
        while True:
            try:
                data = key.fileobj.recv(2048)  # type: ignore[union-attr]
            except (BlockingIOError, OSError):
                return
            if key.data is None or len(data) < 12 or data[0] >> 6 != 2:
                continue  # RTCP, or not RTP
            offset = 12 + 4 * (data[0] & 0x0F)
            if data[0] & 0x10 and len(data) >= offset + 4:
                offset += 4 + 4 * int.from_bytes(data[offset + 2:offset + 4], "big")
            self.packets[key.data].append((data[1] & 0x7F, int.from_bytes(data[2:4], "big"),
                                           int.from_bytes(data[4:8], "big"), data[offset:]))  # fmt: skip

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for sock in self._socks:
            sock.close()
        self._sel.close()

    def heard(self, port: int, reference: array.array) -> dict[str, object]:
        """Decode one call's audio by RTP timestamp and compare it with the prompt it should be."""
        with self._lock:
            packets = list(self.packets.get(port, ()))
        audio = [p for p in packets if p[0] in G711]
        if not audio:
            return {"packets": len(packets), "ok": False, "why": "no G.711 audio received"}
        ts0 = audio[0][2]
        rel = [((ts - ts0) & 0xFFFFFFFF, pt, payload) for pt, _, ts, payload in audio]
        length = max(r + len(p) for r, _, p in rel)
        if length > 8000 * 120:
            return {"packets": len(packets), "ok": False, "why": f"RTP timestamps span {length} samples"}
        pcm = array.array("h", bytes(2 * length))
        for r, pt, payload in rel:
            table = G711[pt]
            pcm[r:r + len(payload)] = array.array("h", (table[b] for b in payload))
        seqs = sorted({p[1] for p in audio})
        lost = (seqs[-1] - seqs[0] + 1 - len(seqs)) if seqs else 0
        result = compare_audio(pcm, reference)
        result.update(packets=len(packets), audio_packets=len(audio), lost_packets=lost,
                      payload_types=sorted({p[0] for p in audio}), received_s=round(length / 8000, 2))  # fmt: skip
        return result


def _frames_loud(pcm: array.array) -> list[bool]:
    """Per 20 ms frame: speech (RMS above LOUD_RMS) or not."""
    return [math.sqrt(sum(x * x for x in pcm[i:i + 160]) / 160) > LOUD_RMS for i in range(0, len(pcm) - 159, 160)]


def _first_loud(pcm: array.array) -> int | None:
    return next((160 * i for i, loud in enumerate(_frames_loud(pcm)) if loud), None)


def compare_audio(pcm: array.array, reference: array.array) -> dict[str, object]:
    """Align the received audio with the prompt at its first speech, then correlate the whole prompt."""
    ref_start, got_start = _first_loud(reference), _first_loud(pcm)
    if ref_start is None or got_start is None:
        return {"ok": False, "why": "no speech heard", "correlation": None, "coverage": None}
    base = got_start - ref_start
    window = range(ref_start, min(len(reference), ref_start + 4000))

    def corr_at(lag: int, indices: range) -> float:
        num = ref_energy = got_energy = 0
        for i in indices:
            j = i + lag
            r = reference[i]
            g = pcm[j] if 0 <= j < len(pcm) else 0
            num += r * g
            ref_energy += r * r
            got_energy += g * g
        return num / math.sqrt(ref_energy * got_energy) if ref_energy and got_energy else 0.0

    coarse = max(range(base - 160, base + 161, 2), key=lambda k: corr_at(k, window))
    lag = max(range(coarse - 2, coarse + 3), key=lambda k: corr_at(k, window))
    correlation = corr_at(lag, range(len(reference)))
    ref_loud = _frames_loud(reference)
    aligned = array.array("h", bytes(2 * len(reference)))
    lo, hi = max(0, lag), min(len(pcm), lag + len(reference))
    if hi > lo:
        aligned[lo - lag:hi - lag] = pcm[lo:hi]
    got_loud = _frames_loud(aligned)
    speech = [i for i, loud in enumerate(ref_loud) if loud]
    coverage = sum(1 for i in speech if got_loud[i]) / len(speech)
    ok = correlation >= MIN_CORRELATION and coverage >= MIN_COVERAGE
    return {"ok": ok, "why": None if ok else "announcement cut, garbled or mixed",
            "correlation": round(correlation, 4), "coverage": round(coverage, 4), "lag_samples": lag}


def warning_reference() -> array.array:
    clip = PromptLibrary(LANGUAGE).clip_for(Prompt.WARNING)
    assert clip.sample_rate == 8000, clip.sample_rate
    return array.array("h", clip.pcm16)


# ---- the phases ----------------------------------------------------------------------------


def rejected_calls(tmp: Path, args: argparse.Namespace) -> dict[str, object]:
    """(1) INVITE → final response for blocklisted callers on a trunk, and (3) the daemon's memory."""
    total = args.warmup + args.calls
    numbers = [BLOCKED_NUMBER.format(i) for i in range(total)]
    daemon = DaemonProcess(tmp / "trunk", upstream="trunk", max_calls=args.max_calls, blocked=numbers)
    started = time.monotonic()
    try:
        daemon.start()
        rss_start = daemon.rss_kb()
        if args.warmup:
            log.info("trunk: %d warm-up calls", args.warmup)
            warm = run_sipp("bench_blocked", [(n,) for n in numbers[:args.warmup]], target_port=daemon.port,
                            limit=1, rate=args.rate, timeout_s=args.warmup / args.rate + 60,
                            workdir=tmp / "sipp-warmup")  # fmt: skip
            if len(warm.results) != args.warmup:
                raise RuntimeError(f"warm-up: {len(warm.results)} of {args.warmup} calls completed\n"
                                   f"{warm.stderr_tail}\n{daemon.log_tail()}")
            daemon.wait_rows_finished(args.warmup)
        time.sleep(args.settle_s)
        rss_before = daemon.rss_kb()
        log.info("trunk: %d measured calls at %g/s, one at a time (RSS %d kB)", args.calls, args.rate, rss_before)
        with RssSampler(daemon.pid) as sampler:
            run = run_sipp("bench_blocked", [(n,) for n in numbers[args.warmup:]], target_port=daemon.port,
                           limit=1, rate=args.rate, timeout_s=args.calls / args.rate * 2 + 60,
                           workdir=tmp / "sipp-rejected")  # fmt: skip
            finished = daemon.wait_rows_finished(total)
        time.sleep(args.settle_s)
        rss_after = daemon.rss_kb()
        hwm = proc_status_kb(daemon.pid, "VmHWM")
        rows = daemon.calls_by_number(numbers[args.warmup:])
        problems = daemon.log_problems()
    finally:
        rc = daemon.stop()
    codes = Counter(r["code"] for r in run.results)
    ends = Counter(r["end"] for r in run.results)
    # daemon-side split of the same calls, from the call log (ISO times, whole ms)
    by_number = {r["number"]: r for r in run.results}
    to_row, row_to_action, decide = [], [], []
    right = unanswered = 0
    for number, row in rows.items():
        if row["action"] == "block" and str(row["rule"]).startswith("blocklist") and row["state"] == "completed":
            right += 1
        kinds = {k for k, _, _ in row["events"]}
        unanswered += "rejected" in kinds and "answered" not in kinds
        for kind, at, detail in row["events"]:
            if kind == "decided" and "decide_ms" in detail:
                decide.append(float(detail["decide_ms"]))
        offered = next((at for k, at, _ in row["events"] if k == "offered"), None)
        acted = next((at for k, at, _ in row["events"] if k in ("rejected", "answered")), None)
        sipp = by_number.get(number)
        if offered and sipp:
            to_row.append((iso_epoch(offered) - _stamp(sipp, "0")) * 1000)
        if offered and acted:
            row_to_action.append((iso_epoch(acted) - iso_epoch(offered)) * 1000)
    latencies = run.latencies_ms()
    during = sampler.samples or [rss_after]
    return {
        "upstream": "trunk",
        "calls": args.calls,
        "warmup_calls": args.warmup,
        "rate_per_s": args.rate,
        "concurrency": 1,
        "sipp_calls_logged": len(run.results),
        "sipp_successful": run.successful,
        "sipp_failed": run.failed,
        "final_codes": dict(sorted(codes.items())),
        "rejected_with_603": codes.get("603", 0),
        "answered_instead": codes.get("200", 0),
        "call_ends": dict(ends),
        "invite_to_final_ms": summary(latencies),
        "invite_to_final_ms_histogram": histogram_ms(latencies),
        "invite_to_603_ms": summary(run.latencies_ms(code=603)),
        "sipp_rtd_ms": summary(run.rtd_ms, 1),
        "daemon_invite_to_row_ms": summary(to_row, 1),
        "daemon_row_to_response_event_ms": summary(row_to_action, 1),
        "decide_ms": summary(decide, 3),
        "call_rows": len(rows),
        "call_rows_finished_total": finished,
        "lost_call_records": args.calls - len(rows),
        "rows_with_right_decision": right,
        "rows_rejected_unanswered": unanswered,
        "memory_kb": {
            "rss_at_start": rss_start,
            "rss_before": rss_before,
            "rss_during_max": max(during),
            "rss_during_mean": round(statistics.fmean(during)),
            "rss_after": rss_after,
            "growth": rss_after - rss_before,
            "trace": [during[round(i * (len(during) - 1) / 9)] for i in range(10)],
            "vm_hwm": hwm,
            "samples": len(during),
        },
        "daemon_log": problems,
        "daemon_exit_code": rc,
        "wall_s": round(time.monotonic() - started, 1),
    }


@dataclass
class CallCheck:
    number: str
    port: int
    code: str | None = None
    end: str | None = None
    answer_ms: float | None = None
    bye_after_answer_s: float | None = None
    audio: dict[str, object] = field(default_factory=dict)
    row: dict[str, object] | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def answered_round(daemon: DaemonProcess, sinks: RtpSinks, reference: array.array, numbers: list[str], *,
                   limit: int, rate: float, workdir: Path) -> tuple[list[CallCheck], SippRun]:  # fmt: skip
    """Place answered (warned) calls and check each one: 200 OK, announcement, call row, BYE."""
    ports = [sinks.allocate() for _ in numbers]
    rows_before = int(daemon.query("select count(*) from calls")[0][0])
    per_call_s = len(reference) / 8000 + CALL_TIMEOUT_S + 10
    run = run_sipp("bench_warned", list(zip(numbers, map(str, ports))), target_port=daemon.port, limit=limit,
                   rate=rate, timeout_s=per_call_s * math.ceil(len(numbers) / limit) + 30, workdir=workdir)  # fmt: skip
    busy = sum(1 for r in run.results if r["code"] == "486")  # turned away before screening: no call row
    daemon.wait_rows_finished(rows_before + len(numbers) - busy)
    rows = daemon.calls_by_number(numbers)
    by_number = {r["number"]: r for r in run.results}
    checks = []
    for number, port in zip(numbers, ports):
        c = CallCheck(number, port)
        r = by_number.get(number)
        if r is None:
            c.problems.append("SIPp logged no result")
        else:
            c.code, c.end = r["code"], r["end"]
            if c.code != "200":
                c.problems.append(f"final response {c.code}")
            else:
                c.answer_ms = round((_stamp(r, "1") - _stamp(r, "0")) * 1000, 3)
            if c.end == "ok":
                c.bye_after_answer_s = round(_stamp(r, "2") - _stamp(r, "1"), 3)
            elif c.code == "200":
                c.problems.append(f"no BYE from mamoru ({c.end})")
        if c.code == "200":
            c.audio = sinks.heard(port, reference)
            if not c.audio.get("ok"):
                c.problems.append(f"announcement: {c.audio.get('why')}")
        c.row = rows.get(number)
        if c.row is None:
            c.problems.append("no call row")
        else:
            c.problems += _row_problems(c.row)
        checks.append(c)
    return checks, run


def _row_problems(row: dict[str, object]) -> list[str]:
    out = []
    if (row["action"], row["rule"]) != ("warn", "unknown"):
        out.append(f"decision {row['action']}/{row['rule']}")
    if row["state"] != "completed" or row["error"]:
        out.append(f"row {row['state']} {row['error'] or ''}".strip())
    kinds = [k for k, _, _ in row["events"]]  # type: ignore[union-attr]
    for kind in ("offered", "decided", "answered", "played", "hung_up"):
        if kind not in kinds:
            out.append(f"no {kind} event")
    played = [d for k, _, d in row["events"] if k == "played"]  # type: ignore[union-attr]
    if played and played[0].get("end") != "completed":
        out.append(f"announcement ended {played[0].get('end')}")
    return out


def _check_json(c: CallCheck) -> dict[str, object]:
    return {"number": c.number, "code": c.code, "end": c.end, "answer_ms": c.answer_ms,
            "bye_after_answer_s": c.bye_after_answer_s,
            "audio": {k: c.audio.get(k) for k in ("correlation", "coverage", "received_s", "lost_packets")},
            "row": None if c.row is None else {k: c.row[k] for k in ("action", "rule", "state", "end_reason",
                                                                      "recording_seconds")},
            "ok": c.ok, "problems": c.problems}  # fmt: skip


def answered_calls(tmp: Path, args: argparse.Namespace) -> dict[str, object]:
    """(2) INVITE → 200 OK for warned callers on an FXO adapter, one at a time, and (4) concurrent calls."""
    reference = warning_reference()
    daemon = DaemonProcess(tmp / "fxo", upstream="fxo", max_calls=args.max_calls, blocked=[])
    sinks = RtpSinks()
    serial = 0

    def fresh(n: int) -> list[str]:
        nonlocal serial
        serial += n
        return [UNKNOWN_NUMBER.format(i) for i in range(serial - n, serial)]

    started = time.monotonic()
    try:
        daemon.start()
        log.info("fxo: %d answered calls, one at a time (each ~%.0f s)", args.answered,
                 len(reference) / 8000 + CALL_TIMEOUT_S)
        checks, run = answered_round(daemon, sinks, reference, fresh(1 + args.answered), limit=1, rate=1,
                                     workdir=tmp / "sipp-answered")  # fmt: skip
        first, measured = checks[0], checks[1:]
        sequential = {
            "upstream": "fxo",
            "calls": args.answered,
            "warmup_calls": 1,
            "invite_to_200_ms": summary([c.answer_ms for c in measured if c.answer_ms is not None]),
            "first_call_invite_to_200_ms": first.answer_ms,
            "sipp_rtd_ms": summary(run.rtd_ms[1:], 1),
            "handled_correctly": sum(c.ok for c in measured),
            "announcement_correlation_min": _min(c.audio.get("correlation") for c in measured),
            "bye_after_answer_s": summary([c.bye_after_answer_s for c in measured if c.bye_after_answer_s], 2),
            "problems": sorted({p for c in checks for p in c.problems}),
        }
        rounds = []
        max_ok = 0
        for n in range(1, args.max_concurrent + 1):
            time.sleep(1.0)
            log.info("fxo: %d simultaneous answered call%s", n, "s" * (n > 1))
            with RssSampler(daemon.pid) as sampler:
                checks, run = answered_round(daemon, sinks, reference, fresh(n), limit=n, rate=1000,
                                             workdir=tmp / f"sipp-concurrent-{n}")  # fmt: skip
            handled = sum(c.ok for c in checks)
            all_ok = handled == n
            if all_ok and max_ok == n - 1:
                max_ok = n
            busy = sum(c.code == "486" for c in checks)
            # up to max_calls every call is handled; beyond it the extra calls get 486 Busy Here
            as_expected = handled == min(n, args.max_calls) and busy == n - handled
            rounds.append({
                "n": n,
                "handled_correctly": handled,
                "all_ok": all_ok,
                "busy_486": busy,
                "as_expected": as_expected,
                "max_overlapping": _max_overlap(run),
                "final_codes": dict(sorted(Counter(str(c.code) for c in checks).items())),
                "announcements_ok": sum(bool(c.audio.get("ok")) for c in checks),
                "rows_ok": sum(1 for c in checks if c.row is not None and not _row_problems(c.row)),
                "clean_bye": sum(c.end == "ok" and c.code == "200" for c in checks),
                "invite_to_200_ms": summary([c.answer_ms for c in checks if c.answer_ms is not None]),
                "rss_max_kb": max(sampler.samples) if sampler.samples else None,
                "calls": [_check_json(c) for c in checks],
            })
            log.info("fxo: %d simultaneous: %d handled correctly %s", n, handled,
                     "" if all_ok else sorted({p for c in checks for p in c.problems}))
        problems = daemon.log_problems()
    finally:
        rc = daemon.stop()
        sinks.close()
    return {
        "sequential": sequential,
        "concurrent": {
            "max_calls_configured": args.max_calls,
            "max_simultaneous_handled_correctly": max_ok,
            # rounds beyond max_calls: max_calls calls handled, the rest turned away with 486 (None: no such round)
            "overflow_as_expected": (all(r["as_expected"] for r in over)
                                     if (over := [r for r in rounds if r["n"] > args.max_calls]) else None),
            "rounds": rounds,
        },
        "daemon_log": problems,
        "daemon_exit_code": rc,
        "wall_s": round(time.monotonic() - started, 1),
    }


def _max_overlap(run: SippRun) -> int:
    """How many of the round's calls were up at the same moment (INVITE sent .. BYE answered)."""
    spans = [(_stamp(r, "0"), _stamp(r, "2") if r.get("s2", "0") != "0" else _stamp(r, "1"))
             for r in run.results if r.get("s1", "0") != "0"]  # fmt: skip
    edges = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans])
    up = best = 0
    for _, step in edges:
        up += step
        best = max(best, up)
    return best


def _min(values) -> float | None:
    present = [v for v in values if v is not None]
    return min(present) if present else None


# ---- main ----------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=1000, help="measured blocklisted calls (reject path)")
    ap.add_argument("--warmup", type=int, default=50, help="unmeasured blocklisted calls first")
    ap.add_argument("--rate", type=float, default=10.0, help="blocklisted calls started per second (one at a time)")
    ap.add_argument("--answered", type=int, default=20, help="measured answered calls, one at a time")
    ap.add_argument("--max-concurrent", type=int, default=6, help="simultaneous answered calls: N = 1 .. this")
    ap.add_argument("--max-calls", type=int, default=4, help="[sip] max_calls in the daemon's config")
    ap.add_argument("--settle-s", type=float, default=3.0, help="idle time before/after the memory readings")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 100 calls, 10 warm-up, 3 answered, N up to 2; writes no JSON unless --json-out")
    ap.add_argument("--json-out", type=Path, help=f"write the results here (default, full runs: {DEFAULT_JSON})")
    ap.add_argument("--keep", action="store_true", help="keep the working directory (logs, SIPp traces)")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.calls, args.warmup, args.answered, args.max_concurrent = 100, 10, 3, 2
        args.settle_s = 1.0
    json_out = args.json_out or (None if args.quick else DEFAULT_JSON)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")  # fmt: skip
    logging.getLogger("blocklist.store").setLevel(logging.WARNING)  # our own set-up's migrations
    if shutil.which("sipp") is None:
        log.error("sipp is not installed (Debian: apt-get install sip-tester)")
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="mamoru-bench-sip-"))
    started = time.monotonic()
    load_before = os.getloadavg()
    try:
        rejected = rejected_calls(tmp, args)
        answered = answered_calls(tmp, args)
    except Exception:
        log.exception("benchmark failed; working directory kept: %s", tmp)
        return 1
    result = {
        "rejected": rejected,
        "answered": answered,
        "sipp": _sipp_version(),
        "python": sys.version.split()[0],
        "machine": os.uname().machine,
        "cpus": os.cpu_count(),
        "loadavg_1min_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "git": _git_head(),
        "wall_s": round(time.monotonic() - started, 1),
    }
    if args.keep:
        log.info("working directory kept: %s", tmp)
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    if json_out:
        json_out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(_summary_text(result, json_out))
    conc = answered["concurrent"]
    ok = (rejected["lost_call_records"] == 0 and rejected["rejected_with_603"] == args.calls
          and rejected["rows_with_right_decision"] == args.calls
          and answered["sequential"]["handled_correctly"] == args.answered
          and all(r["as_expected"] for r in conc["rounds"]))  # fmt: skip
    return 0 if ok else 1


def _sipp_version() -> str | None:
    out = subprocess.run(["sipp", "-v"], capture_output=True, text=True, timeout=10)
    m = re.search(r"SIPp v\S+", out.stdout + out.stderr)
    return m.group(0).rstrip(".") if m else None


def _git_head() -> str | None:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()  # fmt: skip
        return head + ("+dirty" if dirty else "") if head else None
    except (OSError, subprocess.TimeoutExpired):
        return None


def _summary_text(r: dict[str, object], json_out: Path | None) -> str:
    rej, ans = r["rejected"], r["answered"]
    seq, conc = ans["sequential"], ans["concurrent"]
    lat, mem = rej["invite_to_final_ms"], rej["memory_kb"]
    lines = [
        f"blocklisted, upstream trunk: {rej['calls']} calls, final codes {rej['final_codes']}",
        f"  INVITE -> final response  p50 {lat['p50']} ms  p99 {lat['p99']} ms  max {lat['max']} ms"
        f"  (SIPp rtd p50 {rej['sipp_rtd_ms']['p50']} ms, p99 {rej['sipp_rtd_ms']['p99']} ms)",
        f"  decide_ms p50 {rej['decide_ms']['p50']}  p99 {rej['decide_ms']['p99']};"
        f" call rows {rej['call_rows']}/{rej['calls']}, right decision {rej['rows_with_right_decision']}",
        f"  daemon RSS before {mem['rss_before']} kB, during max {mem['rss_during_max']} kB,"
        f" after {mem['rss_after']} kB, growth {mem['growth']} kB",
        f"unknown caller, upstream fxo: {seq['calls']} answered calls, {seq['handled_correctly']} handled correctly",
        f"  INVITE -> 200 OK  p50 {seq['invite_to_200_ms']['p50']} ms  p99 {seq['invite_to_200_ms']['p99']} ms"
        f"  max {seq['invite_to_200_ms']['max']} ms",
        "simultaneous answered calls: " + ", ".join(
            f"N={x['n']}: {x['handled_correctly']}/{x['n']} {x['final_codes']}" for x in conc["rounds"]),
        f"  max N handled correctly: {conc['max_simultaneous_handled_correctly']}"
        f" ([sip] max_calls = {conc['max_calls_configured']};"
        f" beyond it 486 as expected: {conc['overflow_as_expected']})",
        f"wall time {r['wall_s']} s" + (f"; results in {json_out}" if json_out else ""),
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
