"""Caller ID from an external ND adapter: frame → ACK, first RING → off-hook, decisions, lost records.

Runs ``mamoru run`` as a separate process with ``[line] nd_adapter`` on a fake ND adapter (pty)
and a virtual modem (pty), both hosted by this script. For each call the fake adapter sends the
caller's frame (timed until our ACK arrives), then the virtual modem rings with no caller ID of
its own; the figure is the time from the modem's write of the first RING to its reading of the
daemon's off-hook command (the caller ID waits for that RING: see firmware/nd_line.py). Both
timestamps come from this process's monotonic clock.

    .venv/bin/python benchmarks/bench_nd_adapter.py --calls 300 --json-out benchmarks/results_nd_adapter.json
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from blocklist.store import Store  # noqa: E402
from firmware.dialects import CONEXANT_CX93001, RingCadence  # noqa: E402
from firmware.scenarios import CallScript  # noqa: E402
from firmware.virtual_modem import VirtualModem  # noqa: E402
from firmware.virtual_nd_adapter import VirtualNdAdapter  # noqa: E402
from screening.core.model import ListEntry, ListKind, MatchKind, Reason  # noqa: E402

OFF_HOOK = {"AT+VLS=1", "ATA"}
# (number, reason, expected rule)
KINDS = [("0398765432", None, "blocklist:local"), (None, Reason.WITHHELD, "withheld"),
         ("0662223333", None, "unknown"), (None, Reason.PAYPHONE, "payphone")]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def proc_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=300)
    ap.add_argument("--time-scale", type=float, default=0.05)
    ap.add_argument("--json-out", type=Path)
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="mamoru-bench-nd-"))
    db = tmp / "bench.db"
    with Store(db) as store:
        store.add_entry(ListEntry(ListKind.BLOCK, MatchKind.EXACT, "+81398765432"))
    env = {**{k: v for k, v in os.environ.items() if k != "MAMORU_CONFIG"}, "HOME": str(tmp),
           "XDG_STATE_HOME": str(tmp / "state")}
    ack_ms: list[float] = []
    ring_ms: list[float] = []
    expected: list[str] = []
    with VirtualModem(CONEXANT_CX93001, RingCadence.JAPAN, args.time_scale, link_dir=tmp) as modem, \
            VirtualNdAdapter(link_dir=tmp) as adapter:
        config = tmp / "mamoru.toml"
        config.write_text(f'[line]\nuri = "modem://{modem.device_path}"\nnd_adapter = "{adapter.device_path}"\n'
                          f'[store]\ndb = "{db}"\n[recording]\nenabled = false\n[web]\nenabled = false\n'
                          '[voice]\ntranscribe = false\n', encoding="utf-8")
        run = subprocess.Popen([sys.executable, "-m", "screening.cli", "run", "--config", str(config)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT, env=env)
        try:
            deadline = time.monotonic() + 30
            while not adapter.send_caller("0662223333").acked:  # mamoru starting: the adapter resends
                if time.monotonic() > deadline:
                    raise SystemExit("mamoru never acknowledged the adapter")
            modem.wait_for_call_end(modem.place_call(CallScript(raw_cid_lines=(), hang_up_after_s=1.0)), 30)
            time.sleep(0.5)
            rss_start = proc_rss_kb(run.pid)
            for n in range(args.calls):
                number, reason, rule = KINDS[n % len(KINDS)]
                t0 = time.monotonic()
                result = adapter.send_caller(number, reason)
                ack_ms.append((time.monotonic() - t0) * 1000)
                if not result.acked:
                    raise SystemExit(f"call {n}: frame not acknowledged ({result})")
                expected.append(rule)
                rec = modem.wait_for_call_end(
                    modem.place_call(CallScript(raw_cid_lines=(), hang_up_after_s=1.0)), 30)
                off = [t for t, c in rec.commands if c.upper().replace(" ", "") in OFF_HOOK]
                if rec.first_ring_at is not None and off:
                    ring_ms.append((off[0] - rec.first_ring_at) * 1000)
            time.sleep(1.0)
            rss_end = proc_rss_kb(run.pid)
        finally:
            run.send_signal(signal.SIGTERM)
            run.wait(timeout=20)
    con = sqlite3.connect(db)
    rules = [r[0] for r in con.execute("select rule from calls order by id")][1:]  # the warm-up call first
    con.close()
    results = {
        "calls": args.calls,
        "time_scale": args.time_scale,
        "frame_to_ack_ms": {"p50": statistics.median(ack_ms), "p99": pct(ack_ms, 99), "max": max(ack_ms)},
        "first_ring_to_off_hook_ms": {"p50": statistics.median(ring_ms), "p99": pct(ring_ms, 99),
                                      "max": max(ring_ms), "answered": len(ring_ms)},
        "decided_from_adapter": sum(a == b for a, b in zip(rules, expected)),
        "call_rows": len(rules),
        "rss_kb": {"after_warm_up": rss_start, "end": rss_end},
        "python": sys.version.split()[0],
        "machine": os.uname().machine,
        "cpus": os.cpu_count(),
    }
    print(json.dumps(results, indent=2))
    if args.json_out is not None:
        args.json_out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0 if results["decided_from_adapter"] == args.calls else 1


if __name__ == "__main__":
    raise SystemExit(main())
