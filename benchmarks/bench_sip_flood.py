"""SIP INVITE floods (issue 12): does the daemon stay up, and are real calls screened meanwhile?

Runs ``mamoru run --line sip://127.0.0.1:PORT`` (``[sip] upstream = "trunk"``, 4 call slots)
as a separate process and floods it with SIPp's built-in ``uac`` scenario (INVITE with SDP;
every caller is "sipp", no number) at ``--rate`` INVITE/s for ``--seconds``. One second into
the flood, ``--legit`` blocklisted callers (``benchmarks/sipp/bench_blocked.xml``, one at a
time, one every ``1/--legit-rate`` s) call from the upstream's address. Three cases:

* ``untrusted``: ``trusted_upstreams = ["127.0.0.2"]``; the flood comes from 127.0.0.1,
  the real calls from 127.0.0.2 (the gateway);
* ``trusted``: ``trusted_upstreams = ["127.0.0.1"]``; flood and real calls both come
  from 127.0.0.1 (the gateway itself passes the flood on);
* ``open``: no ``trusted_upstreams``; flood from 127.0.0.1, real calls from 127.0.0.2.

Per case: the daemon alive at the end, the real calls' final responses (603 = screened and
rejected by the blocklist), their call rows, INVITE → final response latency, the daemon's
VmRSS (before, peak, after) and CPU seconds during the flood, and the refusals the daemon
logged. Then the daemon is killed (SIGKILL) and started again: the time from start to the
first screened call bounds how long a crash would leave the line unscreened, on top of
systemd's ``RestartSec``.

    .venv/bin/python benchmarks/bench_sip_flood.py            # 1000/s for 10 s, writes results_sip_flood.json
    .venv/bin/python benchmarks/bench_sip_flood.py --quick    # 2 s per case; writes nothing

Only loopback addresses are used. Needs SIPp (Debian ``sip-tester``) and pjsua2 in the venv.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_sip import (  # noqa: E402
    HOST,
    DaemonProcess,
    RssSampler,
    _git_head,
    _sipp_version,
    free_udp_port,
    run_sipp,
    summary,
)

log = logging.getLogger("bench_sip_flood")

DEFAULT_JSON = Path(__file__).resolve().parent / "results_sip_flood.json"
LEGIT_NUMBER = "0353{:06d}"  # 03-53xx-xxxx: on the blocklist, so screened calls get 603 and a row
GATEWAY = "127.0.0.2"
CASES = {  # name: (trusted_upstreams, flood source, legitimate calls' source)
    "untrusted": ([GATEWAY], HOST, GATEWAY),
    "trusted": ([HOST], HOST, HOST),
    "open": ([], HOST, GATEWAY),
}
_REFUSED = re.compile(r"refused with (\d{3}): .*\((\d+) such so far")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_flood(workdir: Path, *, source: str, target_port: int, rate: int, calls: int,
                timeout_s: float) -> subprocess.Popen[bytes]:
    workdir.mkdir(parents=True)
    cmd = [shutil.which("sipp") or "sipp", "-sn", "uac", "-i", source, "-p", str(free_udp_port()),
           "-mp", str(free_udp_port()), "-r", str(rate), "-m", str(calls), "-l", str(calls),
           "-timeout", f"{timeout_s:.0f}s", "-nostdin", "-trace_stat", "-stf", str(workdir / "stat.csv"),
           f"{HOST}:{target_port}"]
    return subprocess.Popen(cmd, cwd=workdir, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=(workdir / "sipp.err").open("wb"))


def refusals(daemon: DaemonProcess) -> dict[str, int]:
    """The daemon's own refusal counts, from its last log line of each kind."""
    out: dict[str, int] = {}
    for code, count in _REFUSED.findall(daemon.log_text()):
        out[code] = int(count)
    return out


def flood_case(tmp: Path, name: str, args: argparse.Namespace) -> dict[str, object]:
    trusted, flood_source, legit_source = CASES[name]
    numbers = [LEGIT_NUMBER.format(i) for i in range(args.legit)]
    daemon = DaemonProcess(tmp / name, upstream="trunk", max_calls=4, blocked=numbers)
    if trusted:
        with daemon.config.open("a", encoding="utf-8") as config:
            config.write(f"trusted_upstreams = {json.dumps(trusted)}\n")
    flood_calls = int(args.rate * args.seconds)
    try:
        daemon.start()
        time.sleep(args.settle_s)
        rss_before, cpu_before = daemon.rss_kb(), cpu_s(daemon.pid)
        started = time.monotonic()
        with RssSampler(daemon.pid) as rss:
            flood = start_flood(tmp / name / "flood", source=flood_source, target_port=daemon.port,
                                rate=args.rate, calls=flood_calls, timeout_s=args.seconds + 20)
            time.sleep(1.0)
            legit = run_sipp("bench_blocked", [(n,) for n in numbers], target_port=daemon.port, limit=1,
                             rate=args.legit_rate, timeout_s=args.seconds + 20, workdir=tmp / name / "legit",
                             source=legit_source)
            try:
                flood_rc: int | None = flood.wait(timeout=args.seconds + 40)
            except subprocess.TimeoutExpired:
                flood.kill()
                flood.wait(timeout=5)
                flood_rc = None
            flood_wall = time.monotonic() - started
            alive = daemon.proc is not None and daemon.proc.poll() is None
            cpu_flood = cpu_s(daemon.pid) - cpu_before if alive else None
        time.sleep(args.settle_s)
        rss_after = daemon.rss_kb() if alive else None
        if alive:
            daemon.wait_rows_finished(sum(1 for r in legit.results if r.get("code") == "603"))
        rows = daemon.calls_by_number(numbers) if alive else {}
        codes: dict[str, int] = {}
        for r in legit.results:
            codes[r.get("code", "?")] = codes.get(r.get("code", "?"), 0) + 1
        screened = [n for n, row in rows.items() if row["action"] == "block" and row["state"] == "completed"]
        stat = tmp / name / "flood" / "stat.csv"
        flood_stats: dict[str, str] = {}
        if stat.exists():
            lines = [ln for ln in stat.read_text(errors="replace").splitlines() if ln.strip()]
            if len(lines) >= 2:
                flood_stats = dict(zip(lines[0].split(";"), lines[-1].split(";")))
        result: dict[str, object] = {
            "trusted_upstreams": trusted, "flood_source": flood_source, "legit_source": legit_source,
            "flood": {"rate_per_s": args.rate, "invites": flood_calls, "sipp_exit": flood_rc,
                      "created": int(flood_stats.get("TotalCallCreated", "0") or 0),
                      "failed": int(flood_stats.get("FailedCall(C)", "0") or 0),
                      "successful": int(flood_stats.get("SuccessfulCall(C)", "0") or 0),
                      "wall_s": round(flood_wall, 1)},
            "daemon_alive": alive,
            "legit": {"calls": len(numbers), "final_codes": codes, "screened_and_logged": len(screened),
                      "invite_to_final_ms": summary(legit.latencies_ms(code=603))},
            "refused_by_daemon": refusals(daemon),
            "rss_kb": {"before": rss_before, "peak": max(rss.samples, default=None), "after": rss_after,
                       f"after_{args.linger_s:.0f}s": None},
            "unscreened_rows": {n: {k: row[k] for k in ("action", "state", "end_reason", "error")}
                                for n, row in rows.items() if n not in screened},
            "cpu_s_during_flood": None if cpu_flood is None else round(cpu_flood, 2),
            "log_problems": daemon.log_problems(),
        }
        if not alive:
            result["daemon_log_tail"] = daemon.log_tail(10)
        elif args.linger_s:  # pjsip keeps a refused INVITE's transaction until its ACK, or 32 s
            time.sleep(args.linger_s)
            result["rss_kb"][f"after_{args.linger_s:.0f}s"] = daemon.rss_kb()  # type: ignore[index]
        log.info("%s: alive=%s, legit %d/%d screened (%s), RSS %s -> peak %s kB, refused %s", name, alive,
                 len(screened), len(numbers), codes, rss_before, result["rss_kb"]["peak"],  # type: ignore[index]
                 result["refused_by_daemon"])
        return result
    finally:
        daemon.stop()


def restart_to_screening(tmp: Path) -> dict[str, object]:
    """SIGKILL the daemon, start it again (as systemd would, without RestartSec): start → first 603."""
    number = LEGIT_NUMBER.format(999_999)
    daemon = DaemonProcess(tmp / "restart", upstream="trunk", max_calls=4, blocked=[number])
    daemon.start()
    assert daemon.proc is not None
    daemon.proc.send_signal(signal.SIGKILL)
    daemon.proc.wait(timeout=10)
    started = time.monotonic()
    daemon.start()
    ready = time.monotonic() - started
    call = run_sipp("bench_blocked", [(number,)], target_port=daemon.port, limit=1, rate=1, timeout_s=10,
                    workdir=tmp / "restart" / "call")
    screened = time.monotonic() - started
    daemon.stop()
    codes = [r.get("code") for r in call.results]
    return {"start_to_ready_s": round(ready, 2), "start_to_first_screened_call_s": round(screened, 2),
            "first_call_codes": codes}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=int, default=1000, help="flood INVITEs per second")
    ap.add_argument("--seconds", type=float, default=10.0, help="flood duration")
    ap.add_argument("--legit", type=int, default=8, help="real (blocklisted) calls placed during the flood")
    ap.add_argument("--legit-rate", type=float, default=1.0, help="real calls started per second")
    ap.add_argument("--settle-s", type=float, default=2.0)
    ap.add_argument("--linger-s", type=float, default=35.0, help="then wait this long for one more RSS reading")
    ap.add_argument("--case", choices=sorted(CASES), action="append", help="only these cases (default: all)")
    ap.add_argument("--quick", action="store_true", help="2 s floods, 2 real calls; writes no JSON unless --json-out")
    ap.add_argument("--json-out", type=Path)
    ap.add_argument("--keep", action="store_true", help="keep the working directory")
    args = ap.parse_args()
    if args.quick:
        args.seconds, args.legit, args.settle_s, args.linger_s = 2.0, 2, 1.0, 0.0
    json_out = args.json_out or (None if args.quick else DEFAULT_JSON)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    logging.getLogger("blocklist.store").setLevel(logging.WARNING)
    if shutil.which("sipp") is None:
        log.error("sipp is not installed (Debian: apt-get install sip-tester)")
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="mamoru-bench-sip-flood-"))
    started = time.monotonic()
    try:
        cases = {name: flood_case(tmp, name, args) for name in (args.case or list(CASES))}
        restart = restart_to_screening(tmp)
    except Exception:
        log.exception("benchmark failed; working directory kept: %s", tmp)
        return 1
    result = {"cases": cases, "restart": restart, "sipp": _sipp_version(), "python": sys.version.split()[0],
              "machine": os.uname().machine, "cpus": os.cpu_count(), "git": _git_head(),
              "wall_s": round(time.monotonic() - started, 1)}
    if args.keep:
        log.info("working directory kept: %s", tmp)
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    if json_out:
        json_out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(json.dumps({k: {"alive": v["daemon_alive"], "legit": v["legit"], "rss_kb": v["rss_kb"]}
                      for k, v in cases.items()}, indent=1))
    print(json.dumps(restart))
    return 0 if all(c["daemon_alive"] for c in cases.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
