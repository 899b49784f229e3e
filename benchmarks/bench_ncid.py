"""NCID server cost on the call loop: ``publish`` time, and publish → line at a client.

A real ``NcidServer`` on loopback with ``--readers`` clients that read every line, ``--sleepers``
that never read (dropped when their buffers fill) and a connect flood of ``--flood`` sockets beyond
``max_clients``. ``--calls`` call lines are published from this thread, one every ``--gap-ms``,
as a call loop would; we time each ``publish`` (what the call loop pays) and, on one reading
client, the delay until its line arrived.

    .venv/bin/python benchmarks/bench_ncid.py [--calls 10000] [--json-out benchmarks/results_ncid.json]
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from screening.ncid.lines import CallLabel, NcidCall  # noqa: E402
from screening.ncid.server import NcidServer, NcidSettings  # noqa: E402


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=10000)
    parser.add_argument("--gap-ms", type=float, default=1.0)
    parser.add_argument("--readers", type=int, default=15)
    parser.add_argument("--sleepers", type=int, default=16)
    parser.add_argument("--flood", type=int, default=200)
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()

    settings = NcidSettings(host="127.0.0.1", port=0, max_clients=args.readers + args.sleepers + 1)
    arrivals: dict[str, float] = {}
    with NcidServer(settings) as server:
        timed = socket.create_connection(("127.0.0.1", server.port))
        others = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(args.readers - 1)]
        sleepers = []
        for _ in range(args.sleepers):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.connect(("127.0.0.1", server.port))
            sleepers.append(s)
        stop = threading.Event()

        def read(sock: socket.socket, record: bool) -> None:
            buf = b""
            sock.settimeout(0.5)
            while not stop.is_set():
                try:
                    data = sock.recv(65536)
                except TimeoutError:
                    continue
                if not data:
                    return
                buf += data
                now = time.perf_counter()
                *lines, buf = buf.split(b"\n")
                if record:
                    for line in lines:
                        if line.startswith(b"CID: "):
                            arrivals[line.split(b"*NMBR*")[1].split(b"*")[0].decode()] = now

        threads = [threading.Thread(target=read, args=(timed, True), daemon=True)]
        threads += [threading.Thread(target=read, args=(s, False), daemon=True) for s in others]
        for t in threads:
            t.start()
        flood = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(args.flood)]
        time.sleep(0.5)
        publish_s: list[float] = []
        sent: dict[str, float] = {}
        when = datetime.now(UTC)
        for n in range(args.calls):
            number = f"03{n:08d}"
            started = time.perf_counter()
            server.publish(NcidCall(CallLabel.CID, when, "-", number, "NO NAME"))
            publish_s.append(time.perf_counter() - started)
            sent[number] = started
            time.sleep(args.gap_ms / 1000)
        deadline = time.monotonic() + 10
        while len(arrivals) < args.calls and time.monotonic() < deadline:
            time.sleep(0.05)
        delays = [arrivals[k] - sent[k] for k in sent if k in arrivals]
        result = {
            "calls": args.calls, "readers": args.readers, "sleepers": args.sleepers, "flood": args.flood,
            "publish_us_p50": round(statistics.median(publish_s) * 1e6, 1),
            "publish_us_p99": round(_percentile(publish_s, 0.99) * 1e6, 1),
            "publish_us_max": round(max(publish_s) * 1e6, 1),
            "delivered_to_timed_reader": len(delays),
            "delay_ms_p50": round(statistics.median(delays) * 1e3, 2) if delays else None,
            "delay_ms_p99": round(_percentile(delays, 0.99) * 1e3, 2) if delays else None,
            "clients_dropped": server.dropped,
            "clients_left": server.client_count(),
        }
        stop.set()
        for t in threads:
            t.join(timeout=5)
        for s in [timed, *others, *sleepers, *flood]:
            s.close()
    print(json.dumps(result, indent=2))
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
