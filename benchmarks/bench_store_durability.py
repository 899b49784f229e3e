"""The store's two costs of "nothing lost, ever": durable call rows, and list edits on a big store.

1. **synchronous=FULL per call.** The writes of one blocked call as the session makes them
   (``begin_call`` with the decision and first events — the one write before the line is
   touched — two events, ``finish_call``), timed with ``PRAGMA synchronous=NORMAL`` and with
   ``FULL`` (what the store uses: every commit fsyncs the WAL), on the filesystem of ``--dir``.
2. **Call decision right after a list edit on a 1 M-entry store.** A daemon-side ListCache
   holds the snapshot; another Store (what ``mamoru block add`` opens) adds one entry; then a
   call is decided every ``--call-every-ms`` while the new snapshot is rebuilt in the
   background: ``ListCache.current()`` + ``decide`` + ``begin_call`` (the decision and the row
   written before the line is touched), and all of that call's writes. For comparison, the old
   path (the call reloads the lists itself when the generation moved) is timed once.
3. **Start-up damage check** (``blocklist.recovery.find_damage``: header, size, quick_check)
   of that 1 M-entry database.

    .venv/bin/python benchmarks/bench_store_durability.py [--entries 1000000] [--calls 300]
                                                          [--dir D] [--json-out F]

A script, not a test: figures only. Use a ``--dir`` on the disk you mean to measure (not tmpfs).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import blocklist.store.engine as store_module  # noqa: E402
from blocklist.recovery import find_damage  # noqa: E402
from blocklist.store import Store
from screening.core.model import CallerID, EventKind, ListEntry, ListKind, MatchKind  # noqa: E402
from screening.core.rules import Policy, decide  # noqa: E402
from screening.list_cache import ListCache  # noqa: E402

POLICY = Policy()
BLOCKED = CallerID(raw_number="09012345678", number_e164="+819012345678")


def ms(samples: list[float]) -> dict[str, float]:
    s = sorted(samples)
    p99 = s[min(len(s) - 1, int(len(s) * 0.99))]
    return {"p50_ms": round(s[len(s) // 2] * 1000, 3), "p99_ms": round(p99 * 1000, 3),
            "max_ms": round(s[-1] * 1000, 3), "mean_ms": round(statistics.fmean(s) * 1000, 3), "n": len(s)}


def one_call(store: Store, lists: object) -> float:
    """The writes of one blocked call; returns when the first (the row, before the line is touched) was done."""
    decision = decide(BLOCKED, lists, POLICY)  # type: ignore[arg-type]
    call_id = store.begin_call("bench", BLOCKED, decision=decision,
                               events=((EventKind.OFFERED, {}), (EventKind.DECIDED, {"rule": decision.rule})))
    row_written = time.perf_counter()
    store.add_event(call_id, EventKind.ANSWERED)
    store.add_event(call_id, EventKind.PLAYED, prompt="blocked")
    store.finish_call(call_id, "blocked")
    return row_written


def bench_synchronous(directory: Path, calls: int) -> dict[str, object]:
    out: dict[str, object] = {}
    lists = ListCache(Store(directory / "empty.db")).current()
    for mode in ("NORMAL", "FULL"):
        store_module.SYNCHRONOUS = mode  # the store reads it when it connects
        path = directory / f"sync-{mode.lower()}.db"
        with Store(path) as store:
            for _ in range(20):  # warm up: WAL file created, pages cached
                one_call(store, lists)
            samples, first = [], []
            for _ in range(calls):
                t0 = time.perf_counter()
                first.append(one_call(store, lists) - t0)
                samples.append(time.perf_counter() - t0)
        out[mode.lower()] = {"all_writes_of_a_call": ms(samples), "decide_and_call_row": ms(first)}
        print(f"  synchronous={mode:6s} one call's writes: {ms(samples)}; decide + call row: {ms(first)}",
              flush=True)
    store_module.SYNCHRONOUS = "FULL"
    return out


def entries(n: int, rng: random.Random) -> Iterator[ListEntry]:
    for d in rng.sample(range(10**8), n):
        yield ListEntry(ListKind.BLOCK, MatchKind.EXACT, f"+8180{d:08d}", source="police")


def bench_edit(directory: Path, n: int, call_every_s: float) -> dict[str, object]:
    path = directory / "big.db"
    t0 = time.perf_counter()
    with Store(path) as loader:
        loader.import_entries(entries(n, random.Random(1)))
    print(f"  imported {n} entries in {time.perf_counter() - t0:.1f} s", flush=True)
    out: dict[str, object] = {"entries": n}
    t0 = time.perf_counter()
    assert find_damage(path) is None
    out["startup_damage_check_s"] = round(time.perf_counter() - t0, 2)  # header + PRAGMA quick_check
    print(f"  start-up damage check (quick_check) of the {path.stat().st_size >> 20} MiB file: "
          f"{out['startup_damage_check_s']} s", flush=True)
    with Store(path) as daemon_store:
        cache = ListCache(daemon_store)
        t0 = time.perf_counter()
        cache.current()
        out["first_load_s"] = round(time.perf_counter() - t0, 2)
        baseline = []
        for _ in range(50):
            t0 = time.perf_counter()
            baseline.append(one_call(daemon_store, cache.current()) - t0)
            time.sleep(call_every_s)
        out["no_edit_decide_and_call_row"] = ms(baseline)

        with Store(path, recover_calls=False) as cli:  # `mamoru block add`
            cli.add_entry(ListEntry(ListKind.BLOCK, MatchKind.EXACT, BLOCKED.number_e164 or "", source="local"))
        edited = time.perf_counter()
        during, decided, first_blocked_after = [], [], None
        while True:
            t0 = time.perf_counter()
            lists = cache.current()
            decided.append(one_call(daemon_store, lists) - t0)
            during.append(time.perf_counter() - t0)
            if lists.match_block(BLOCKED.number_e164 or "") is not None:
                first_blocked_after = time.perf_counter() - edited
                break
            if time.perf_counter() - edited > 120:
                break
            time.sleep(call_every_s)
        out["during_rebuild_decide_and_call_row"] = ms(decided)
        out["during_rebuild_all_writes_of_a_call"] = ms(during)
        out["edit_to_new_snapshot_s"] = round(first_blocked_after or -1, 2)
        print(f"  no edit: snapshot + decide + call row: {out['no_edit_decide_and_call_row']}", flush=True)
        print(f"  while the new snapshot was built: snapshot + decide + call row: {ms(decided)}; "
              f"all of a call's writes: {ms(during)}", flush=True)
        print(f"  edit -> a call sees the new entry: {out['edit_to_new_snapshot_s']} s", flush=True)

        # The old call path, for comparison: the call itself reloads when the generation moved.
        with Store(path, recover_calls=False) as cli:
            cli.remove_entry(ListKind.BLOCK, MatchKind.EXACT, BLOCKED.number_e164 or "")
        t0 = time.perf_counter()
        lists = daemon_store.load_lists(datetime.now(UTC))
        one_call(daemon_store, lists)
        out["old_path_call_after_edit_s"] = round(time.perf_counter() - t0, 2)
        print(f"  old path (reload in the call): {out['old_path_call_after_edit_s']} s", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--call-every-ms", type=float, default=100.0)
    parser.add_argument("--dir", type=Path, default=None, help="where the databases go (default: a temp dir)")
    parser.add_argument("--json-out", type=Path, default=ROOT / "benchmarks" / "results_store_durability.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="mamoru-bench-") as tmp:
        directory = Path(tmp)
        print("synchronous cost per call:", flush=True)
        results: dict[str, object] = {"synchronous": bench_synchronous(directory, args.calls)}
        print(f"list edit on {args.entries} entries:", flush=True)
        results["list_edit"] = bench_edit(directory, args.entries, args.call_every_ms / 1000)
    args.json_out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.json_out}")


if __name__ == "__main__":
    main()
