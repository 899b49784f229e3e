"""The web page under attack while `mamoru run` screens calls (issue 12, items 9 and 10).

Runs ``mamoru run`` as a separate process on the virtual modem (``sim:`` with a scenario of
``--calls`` calls, the first one delayed so that the attack is already running) with its web
page on loopback, and attacks the page for as long as the calls last:

- **POST flood** (item 9): ``N`` parallel anonymous ``Transfer-Encoding: chunked``
  multipart POSTs of 20 MB to ``/login``, each sent again as soon as it was answered;
  once without any cookie and once with the pre-session cookie of the login form.
- **Slowloris** (item 10): 1,100 connections that send a request line and then one header
  line every 2 s, never the end of the head, reconnecting when closed; from one source
  address, and spread over 40 (127.0.0.0/8 is all loopback).

Throughout, a prober fetches ``/login`` from 127.0.0.1 once a second. Measured: the calls
the daemon screened AND recorded (finished call rows in the store, and recording files), the daemon's and the
web process's peak and final RSS (``VmHWM``/``VmRSS``) and open file descriptors,
``status.json`` updates, and the prober's successes.

    .venv/bin/python benchmarks/bench_web_attacks.py                 # all runs, writes results_web_attacks.json
    .venv/bin/python benchmarks/bench_web_attacks.py --only slowloris_1100_one_source --json-out /tmp/w.json

Only loopback addresses are used. Raises its own descriptor limit for the 1,100 sockets; the daemon
gets 1,024, as under systemd (``prlimit``, util-linux).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from screening.core.model import Role  # noqa: E402
from screening.web.accounts import Account, UserFile, hash_password  # noqa: E402

BODY_BYTES = 20 * 1024 * 1024
CHUNK = b"x" * 65536
SAMPLE_S = 0.25
CALLS_TIMEOUT_S = 300.0
SERVICE_NOFILE = 1024


def proc_status(pid: int) -> dict[str, int]:
    values = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0])
        values["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    except (OSError, ValueError):
        pass
    return values


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    """Child processes of ``pid``, whichever of its threads started them."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
    return sorted(found)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ---- the unit --------------------------------------------------------------------------------


def make_unit(tmp: Path, port: int, calls: int, time_scale: float) -> Path:
    scenario = tmp / "calls.toml"
    lines = []
    for n in range(calls):
        gap = 20.0 if n == 0 else 2.0  # line seconds (x time_scale): the attack starts first
        lines.append(f'[[call]]\nnmbr = "06622{n:05d}"\nlabel = "unknown {n}"\nhang_up_after_s = 2.0\n'
                     f"gap_s = {gap}\n")  # fmt: skip
    scenario.write_text("\n".join(lines), encoding="utf-8")
    config = tmp / "mamoru.toml"
    config.write_text(
        f'[line]\nuri = "sim:?scenario={scenario}&time_scale={time_scale}&stay=1"\n'
        f'[store]\ndb = "{tmp / "data" / "mamoru.db"}"\n[recording]\ndir = "{tmp / "data" / "recordings"}"\n'
        f'[web]\nhost = "127.0.0.1"\nport = {port}\n[log]\nlevel = "warning"\n[feeds]\nupdate_minutes = 0\n',
        encoding="utf-8",
    )
    (tmp / "data").mkdir()
    # an account exists, as on a unit in use (else every request is sent to /setup)
    UserFile(tmp / "data" / "web-users.json").add(
        Account("kanri", Role.INSTALLER, hash_password("kanri-pass-2024")), first=True)
    return config


def finished_calls(db: Path) -> tuple[int, int]:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            rows = conn.execute("select count(*), sum(state in ('completed', 'failed')) from calls").fetchone()
    except sqlite3.Error:
        return 0, 0
    return int(rows[0] or 0), int(rows[1] or 0)


# ---- attacks ---------------------------------------------------------------------------------


@dataclass
class Tally:
    replies: Counter[str]
    lock: threading.Lock

    def add(self, what: str) -> None:
        with self.lock:
            self.replies[what] += 1


def _pre_session_cookie(port: int, source: str) -> str:
    with httpx.Client(transport=httpx.HTTPTransport(local_address=source), timeout=10) as client:
        client.get(f"http://127.0.0.1:{port}/login")
        return "; ".join(f"{k}={v}" for k, v in client.cookies.items())


def post_flood(port: int, parallel: int, with_cookie: bool, stop: threading.Event, tally: Tally) -> list[threading.Thread]:
    def one(n: int) -> None:
        source = f"127.0.5.{n % 250 + 1}"
        cookie = _pre_session_cookie(port, source) if with_cookie else ""
        head = (f"POST /login HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nTransfer-Encoding: chunked\r\n"
                "Content-Type: multipart/form-data; boundary=xyz\r\n"
                + (f"Cookie: {cookie}\r\n" if cookie else "") + "\r\n").encode()  # fmt: skip
        while not stop.is_set():
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0)) as sock:
                    sock.sendall(head)
                    sent = 0
                    try:
                        while sent < BODY_BYTES and not stop.is_set():
                            sock.sendall(b"10000\r\n" + CHUNK + b"\r\n")
                            sent += len(CHUNK)
                        sock.sendall(b"0\r\n\r\n")
                    except OSError:
                        pass
                    reply = sock.recv(64)
                    tally.add(reply.split(b" ", 2)[1].decode() if reply.startswith(b"HTTP/") else "closed")
            except OSError as exc:
                tally.add(type(exc).__name__)
            stop.wait(0.1)

    threads = [threading.Thread(target=one, args=(n,), daemon=True) for n in range(parallel)]
    for thread in threads:
        thread.start()
    return threads


def slowloris(port: int, connections: int, sources: int, stop: threading.Event, tally: Tally) -> list[threading.Thread]:
    def run() -> None:
        socks: list[socket.socket | None] = [None] * connections

        def connect(i: int) -> None:
            try:
                sock = socket.socket()
                sock.setblocking(False)
                sock.bind((f"127.0.6.{i % sources + 1}", 0))
                sock.connect_ex(("127.0.0.1", port))
                socks[i] = sock
                tally.add("opened")
            except OSError as exc:
                tally.add(type(exc).__name__)

        for i in range(connections):
            connect(i)
        sent_head: set[int] = set()
        while not stop.wait(2.0):
            for i, sock in enumerate(socks):
                if sock is None:
                    connect(i)
                    continue
                try:
                    sock.send(b"X-a: b\r\n" if i in sent_head else f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n".encode())
                    sent_head.add(i)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    sock.close()
                    sent_head.discard(i)
                    tally.add("closed by server")
                    connect(i)
        for sock in socks:
            if sock is not None:
                sock.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return [thread]


def prober(port: int, stop: threading.Event, tally: Tally) -> list[threading.Thread]:
    def run() -> None:
        while not stop.wait(1.0):
            try:
                code = httpx.get(f"http://127.0.0.1:{port}/login", timeout=5).status_code
                tally.add("ok" if code == 200 else str(code))
            except httpx.HTTPError as exc:
                tally.add(type(exc).__name__)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return [thread]


Attack = Callable[[int, threading.Event, Tally], list[threading.Thread]]
ATTACKS: dict[str, Attack | None] = {
    "no_attack": None,
    "post_flood_20_no_cookie": lambda port, stop, t: post_flood(port, 20, False, stop, t),
    "post_flood_60_no_cookie": lambda port, stop, t: post_flood(port, 60, False, stop, t),
    "post_flood_20_pre_session": lambda port, stop, t: post_flood(port, 20, True, stop, t),
    "slowloris_1100_one_source": lambda port, stop, t: slowloris(port, 1100, 1, stop, t),
    "slowloris_1100_40_sources": lambda port, stop, t: slowloris(port, 1100, 40, stop, t),
}


def run_one(name: str, attack: Attack | None, calls: int, time_scale: float) -> dict[str, object]:
    tmp = Path(tempfile.mkdtemp(prefix="mamoru-web-attack-"))
    port = free_port()
    config = make_unit(tmp, port, calls, time_scale)
    db = tmp / "data" / "mamoru.db"
    status = tmp / "data" / "status.json"
    # The descriptor limit a systemd service gets by default (LimitNOFILE soft 1024), whatever this shell has.
    daemon = subprocess.Popen(["prlimit", f"--nofile={SERVICE_NOFILE}:", "--", sys.executable, "-m", "screening.cli",
                               "run", "--config", str(config)], cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    stderr: list[str] = []
    threading.Thread(target=lambda: stderr.extend(daemon.stderr or []), daemon=True).start()
    stop = threading.Event()
    attack_tally, probe_tally = Tally(Counter(), threading.Lock()), Tally(Counter(), threading.Lock())
    peaks: dict[str, int] = Counter()
    web_pids: set[int] = set()
    status_mtimes: set[float] = set()
    try:
        deadline = time.monotonic() + 60
        while True:  # the page listens (in its own process)
            try:
                if httpx.get(f"http://127.0.0.1:{port}/login", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or daemon.poll() is not None:
                raise SystemExit(f"{name}: the web page did not come up: {''.join(stderr)[-2000:]}")
            time.sleep(0.2)
        before = {"daemon": proc_status(daemon.pid), "web": {}}
        if children(daemon.pid):
            before["web"] = proc_status(children(daemon.pid)[0])
        web_pid = (children(daemon.pid) or [0])[0]
        cpu_before = {"daemon": cpu_s(daemon.pid), "web": cpu_s(web_pid)}
        threads = (attack(port, stop, attack_tally) if attack else []) + prober(port, stop, probe_tally)
        started = time.monotonic()
        while time.monotonic() - started < CALLS_TIMEOUT_S:
            for who, pid in [("daemon", daemon.pid)] + [("web", p) for p in children(daemon.pid)]:
                if who == "web":
                    web_pids.add(pid)
                for key, value in proc_status(pid).items():
                    peaks[f"{who}_{key}"] = max(peaks[f"{who}_{key}"], value)
            try:
                status_mtimes.add(status.stat().st_mtime)
            except OSError:
                pass
            if finished_calls(db)[1] >= calls:
                break
            time.sleep(SAMPLE_S)
        attack_s = time.monotonic() - started
        cpu_used = {"daemon": cpu_s(daemon.pid) - cpu_before["daemon"], "web": cpu_s(web_pid) - cpu_before["web"]}
        stop.set()
        for thread in threads:
            thread.join(15)
        time.sleep(2.0)
        web_now = children(daemon.pid)
        after = {"daemon": proc_status(daemon.pid), "web": proc_status(web_now[0]) if web_now else {}}
        rows, finished = finished_calls(db)
        recordings = sum(1 for f in (tmp / "data" / "recordings").rglob("*") if f.is_file())
        try:
            status_age_s = round(time.time() - status.stat().st_mtime, 1)
        except OSError:
            status_age_s = None
    finally:
        stop.set()
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(30)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait(5)
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "calls_placed": calls, "call_rows": rows, "calls_screened_and_logged": finished,
        "recordings_written": recordings,
        "attack_s": round(attack_s, 1), "status_json_writes_seen": len(status_mtimes),
        "status_json_age_s_at_end": status_age_s,
        "daemon_rss_kb": {"before": before["daemon"].get("VmRSS"), "peak": peaks["daemon_VmHWM"],
                          "after": after["daemon"].get("VmRSS")},
        "daemon_fds": {"before": before["daemon"].get("fds"), "peak": peaks["daemon_fds"]},
        "web_rss_kb": {"before": before["web"].get("VmRSS"), "peak": peaks["web_VmHWM"],
                       "after": after["web"].get("VmRSS")},
        "web_fds": {"before": before["web"].get("fds"), "peak": peaks["web_fds"]},
        "web_processes_seen": len(web_pids),
        "cpu_percent_of_one_core": {who: round(100 * used / attack_s, 1) for who, used in cpu_used.items()},
        "page_probes": dict(probe_tally.replies),
        "attack_replies": dict(attack_tally.replies.most_common(8)),
        "daemon_exit": daemon.returncode,
    }  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=10)
    ap.add_argument("--time-scale", type=float, default=0.5)
    ap.add_argument("--only", choices=sorted(ATTACKS), action="append")
    ap.add_argument("--json-out", type=Path, default=ROOT / "benchmarks" / "results_web_attacks.json")
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))
    results: dict[str, object] = {}
    for name in args.only or list(ATTACKS):
        print(f"{name} ...", flush=True)
        results[name] = run_one(name, ATTACKS[name], args.calls, args.time_scale)
        print(json.dumps(results[name]), flush=True)
    out = {"runs": results, "calls": args.calls, "time_scale": args.time_scale, "python": sys.version.split()[0],
           "machine": os.uname().machine, "cpus": os.cpu_count()}  # fmt: skip
    args.json_out.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
