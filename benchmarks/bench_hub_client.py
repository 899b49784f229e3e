"""What does the hub link cost the call loop, and how fast does a backlog drain?

Runs a real Mosquitto (TLS, passwords, ACL; ``tests/support/hub_servers.py``), a real store and the
unit's ``HubClient``, then:

1. ``on_screened`` on the caller's thread (what the call loop pays per call: a hand-off to the
   writer thread, which then reads the call's facts, encodes and commits), connected and with the
   broker down;
2. a backlog of ``--backlog`` summaries queued while the broker was down: broker start → queue empty.

    .venv/bin/python benchmarks/bench_hub_client.py [--calls 500] [--backlog 2000] [--json-out results_hub_client.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from blocklist.store import Store
from screening.core.model import Action, CallerID, Category, Decision
from screening.hub_client.client import HubClient
from screening.hub_client.settings import HubSettings, Share
from screening.hub_wiring import unit_actions
from screening.hubwire import CommandSigner, public_key_text
from tests.support.hub_servers import MosquittoBroker

log = logging.getLogger("bench_hub_client")
UNIT = "bench-0001"
DRAIN_TIMEOUT_S = 600.0


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"p50": round(statistics.median(ordered), 3), "p99": round(ordered[int(len(ordered) * 0.99) - 1], 3),
            "max": round(ordered[-1], 3)}  # fmt: skip


def wait(predicate: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(0.01)


def run(calls: int, backlog: int) -> dict[str, object]:
    decision = Decision(Action.WARN, "unknown", "not on a list", Category.DOMESTIC)
    caller = CallerID(raw_number="0355550101", number_e164="+81355550101")
    with tempfile.TemporaryDirectory() as tmp_text:
        tmp = Path(tmp_text)
        broker = MosquittoBroker.for_test(tmp / "broker", {UNIT: "bench-unit-pw"})
        broker.start()
        (tmp / "unit").mkdir()
        (tmp / "pw").write_text("bench-unit-pw\n")
        store = Store(tmp / "unit" / "mamoru.db")
        store.open()
        settings = HubSettings(url=broker.url, unit_id=UNIT, credentials_file=tmp / "pw", ca_file=broker.ca_file,
                               command_key=public_key_text(CommandSigner.generate().public),
                               share=frozenset({Share.CALLS}), queue_limit=max(5000, backlog + 10))  # fmt: skip
        client = HubClient(settings, tmp / "unit" / "mamoru.db.hub.db", store.path, unit_actions(store, None, None, None))
        try:
            client.start()
            wait(lambda: client.connected, 10)
            connected_ms: list[float] = []
            for call_id in range(1, calls + 1):
                started = time.perf_counter()
                client.on_screened(call_id, caller, decision)
                connected_ms.append((time.perf_counter() - started) * 1000)
                time.sleep(0.002)  # calls come one at a time, not back to back
            client.flush(60)
            wait(lambda: len(client.queue) == 0, 60)
            broker.stop()
            wait(lambda: not client.connected, 10)
            down_ms: list[float] = []
            for call_id in range(calls + 1, calls + backlog + 1):
                started = time.perf_counter()
                client.on_screened(call_id, caller, decision)
                down_ms.append((time.perf_counter() - started) * 1000)
            flushed = time.monotonic()
            client.flush(600)
            commit_s = time.monotonic() - flushed
            queued = len(client.queue)
            published = client.published
            started = time.monotonic()
            broker.start()
            wait(lambda: len(client.queue) == 0, DRAIN_TIMEOUT_S)
            drain_s = time.monotonic() - started
            drained = client.published - published
        finally:
            client.stop()
            store.close()
            broker.stop()
    return {"calls": calls, "backlog": backlog,
            "on_screened_connected_ms": percentiles(connected_ms), "on_screened_broker_down_ms": percentiles(down_ms),
            "backlog_queued": queued, "backlog_commit_wait_s": round(commit_s, 2),
            "backlog_drain_s": round(drain_s, 2), "backlog_drained": drained,
            "drain_rate_per_s": round(drained / drain_s, 1)}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--backlog", type=int, default=2000)
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    result = run(args.calls, args.backlog)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json_out:
        args.json_out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
