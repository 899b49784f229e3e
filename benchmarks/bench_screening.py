"""Caller-ID-to-action latency, record loss, memory growth and idle CPU of the daemon.

Runs ``mamoru run`` as a separate process on a virtual modem (real pty, real
pyserial path) hosted by this script, places N scripted calls of mixed kinds and
measures, for every answered call, the time from the virtual modem's write of
the caller-ID block to its reading of the daemon's off-hook command. Both
timestamps come from this process's monotonic clock.

    .venv/bin/python benchmarks/bench_screening.py --calls 1000

Prints the figures and writes them as JSON (``--json-out``).
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from blocklist.store import Store  # noqa: E402
from firmware.dialects import CONEXANT_CX93001, RingCadence  # noqa: E402
from firmware.scenarios import CallScript  # noqa: E402
from firmware.virtual_modem import VirtualModem  # noqa: E402
from screening.core.model import ListEntry, ListKind, MatchKind  # noqa: E402

OFF_HOOK = {"AT+VLS=1", "ATA"}
CLK_TCK = os.sysconf("SC_CLK_TCK")


def mixed_calls(n: int) -> list[CallScript]:
    kinds = [
        CallScript(nmbr="0398765432", hang_up_after_s=1.0, label="blocklisted"),
        CallScript(nmbr="P", hang_up_after_s=1.0, label="withheld"),
        CallScript(nmbr="010442079460000", hang_up_after_s=1.0, label="international"),
        CallScript(nmbr="0662223333", hang_up_after_s=1.0, label="unknown"),
        CallScript(nmbr="O", hang_up_after_s=1.0, label="out of area"),
        CallScript(nmbr="0312345678", max_rings=1, label="allowlisted"),
    ]
    return [kinds[i % len(kinds)] for i in range(n)]


def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=1000)
    ap.add_argument("--time-scale", type=float, default=0.01)
    ap.add_argument("--idle-s", type=float, default=10.0)
    ap.add_argument("--json-out", type=Path)
    ap.add_argument("--uri-options", default="", help="appended to the modem URI, e.g. ?cid_quiet_ms=5")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="mamoru-bench-"))
    db = tmp / "bench.db"
    with Store(db) as store:
        store.add_entry(ListEntry(ListKind.ALLOW, MatchKind.EXACT, "+81312345678", source="family"))
        store.add_entry(ListEntry(ListKind.BLOCK, MatchKind.EXACT, "+81398765432"))
    cfg = tmp / "mamoru.toml"
    cfg.write_text('[line]\nhome_region = "JP"\ncadence = "jp"\n[log]\nlevel = "warning"\n'
                   f'[recording]\ndir = "{tmp / "recordings"}"\n', encoding="utf-8")

    modem = VirtualModem(CONEXANT_CX93001, RingCadence.JAPAN, args.time_scale)
    modem.start()
    daemon = subprocess.Popen(
        [sys.executable, "-m", "screening.cli", "run", "--line", f"modem://{modem.device_path}{args.uri_options}",
         "--db", str(db), "--config", str(cfg)],
        cwd=ROOT, stderr=subprocess.PIPE, text=True,
    )
    stderr_tail: list[str] = []
    threading.Thread(target=lambda: stderr_tail.extend(daemon.stderr), daemon=True).start()
    try:
        # Ready once the init sequence reached the modem (voice mode selected).
        deadline = time.monotonic() + 30
        while not any("+VSD" in c.upper() for _, c in modem.command_log):
            if time.monotonic() > deadline or daemon.poll() is not None:
                raise SystemExit(f"daemon did not start: {''.join(stderr_tail)}")
            time.sleep(0.05)
        time.sleep(2.0)  # let start-up settle before measuring idle CPU

        cpu0, t0 = proc_cpu_s(daemon.pid), time.monotonic()
        time.sleep(args.idle_s)
        idle_cpu_pct = 100 * (proc_cpu_s(daemon.pid) - cpu0) / (time.monotonic() - t0)

        scripts = mixed_calls(args.calls)
        warmup = min(50, len(scripts) // 10)
        latencies_ms: list[float] = []
        rss_after_warmup = proc_rss_kb(daemon.pid)
        started = time.monotonic()
        for i, script in enumerate(scripts):
            if i == warmup:
                rss_after_warmup = proc_rss_kb(daemon.pid)
            record = modem.wait_for_call_end(modem.place_call(script), timeout=30)
            off = [t for t, c in record.commands if c.upper().replace(" ", "") in OFF_HOOK]
            if off and record.cid_written_at is not None:
                latencies_ms.append((off[0] - record.cid_written_at) * 1000)
        elapsed = time.monotonic() - started
        # the last call's row completes just after the modem saw the hang-up
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            finished = _count(db, "select count(*) from calls where state in ('completed','failed')")
            if finished >= args.calls:
                break
            time.sleep(0.1)
        rss_end = proc_rss_kb(daemon.pid)
        rows = _count(db, "select count(*) from calls")
        finished = _count(db, "select count(*) from calls where state in ('completed','failed')")
    finally:
        daemon.terminate()
        daemon.wait(timeout=15)
        modem.stop()

    result = {
        "calls": args.calls,
        "answered_calls_measured": len(latencies_ms),
        "cid_to_offhook_ms_p50": round(pct(latencies_ms, 50), 2),
        "cid_to_offhook_ms_p99": round(pct(latencies_ms, 99), 2),
        "cid_to_offhook_ms_max": round(max(latencies_ms), 2),
        "cid_to_offhook_ms_mean": round(statistics.fmean(latencies_ms), 2),
        "call_rows": rows,
        "call_rows_finished": finished,
        "lost_call_records": args.calls - rows,
        "rss_kb_after_warmup": rss_after_warmup,
        "rss_kb_end": rss_end,
        "rss_growth_kb": rss_end - rss_after_warmup,
        "idle_cpu_percent": round(idle_cpu_pct, 3),
        "wall_s": round(elapsed, 1),
        "python": sys.version.split()[0],
        "machine": os.uname().machine,
    }
    for k, v in result.items():
        print(f"{k:>28}: {v}")
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0 if result["lost_call_records"] == 0 else 1


def _count(db: Path, sql: str) -> int:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return int(con.execute(sql).fetchone()[0])
    finally:
        con.close()


if __name__ == "__main__":
    sys.exit(main())
