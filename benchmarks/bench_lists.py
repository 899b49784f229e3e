"""Benchmark NumberLists at household-appliance scale: 1 M entries on a Raspberry Pi.

Usage:  .venv/bin/python benchmarks/bench_lists.py [--entries N] [--lookups N] [--seed N]

Prints build time, lookup latency percentiles (hits, misses, prefix and range
hits separately) and resident memory. A script, not a test: figures only.
"""

from __future__ import annotations

import argparse
import gc
import random
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from blocklist.lists import NumberLists  # noqa: E402
from screening.core.model import ListEntry, ListKind, MatchKind  # noqa: E402


def rss_mib() -> float:
    """Current resident set size from /proc (Linux); falls back to peak RSS."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_entries(n: int, rng: random.Random) -> tuple[list[ListEntry], list[str]]:
    """~98 % exact mobile numbers (a police feed), 1 % prefixes, 1 % ranges, a few allow entries."""
    n_prefix = n_range = n // 100
    n_exact = n - n_prefix - n_range
    exact = [f"+8190{d:08d}" for d in rng.sample(range(10**8), n_exact)]
    entries = [ListEntry(ListKind.BLOCK, MatchKind.EXACT, v, source="feed") for v in exact]
    entries += [ListEntry(ListKind.BLOCK, MatchKind.PREFIX, f"+8112{i:05d}") for i in range(n_prefix)]
    for i in range(n_range):
        start = 5000_0000 + i * 1000
        end = start + rng.randrange(1000)
        entries.append(ListEntry(ListKind.BLOCK, MatchKind.RANGE, f"+81{start:09d}", f"+81{end:09d}"))
    entries += [ListEntry(ListKind.ALLOW, MatchKind.EXACT, f"+8130000{i:04d}") for i in range(100)]
    return entries, exact


def percentiles(samples_ns: list[int]) -> str:
    samples = sorted(samples_ns)
    p50 = samples[len(samples) // 2] / 1000
    p99 = samples[int(len(samples) * 0.99)] / 1000
    return f"p50 {p50:7.2f} µs   p99 {p99:7.2f} µs   max {samples[-1] / 1000:8.2f} µs   mean {statistics.fmean(samples) / 1000:6.2f} µs"


def time_lookups(lists: NumberLists, numbers: list[str]) -> list[int]:
    out = []
    clock = time.perf_counter_ns
    for number in numbers:
        t0 = clock()
        lists.match_allow(number)  # the daemon checks allow first, then block
        lists.match_block(number)
        out.append(clock() - t0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--lookups", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)

    base = rss_mib()
    t0 = time.perf_counter()
    entries, exact = make_entries(args.entries, rng)
    t1 = time.perf_counter()
    with_entries = rss_mib()
    gc.collect()
    t2 = time.perf_counter()
    lists = NumberLists.build(entries, "2024-01-01T00:00:00Z")
    t3 = time.perf_counter()
    del entries
    gc.collect()
    after = rss_mib()

    print(f"python {sys.version.split()[0]}  entries {len(lists):,}")
    print(f"generate ListEntry objects: {t1 - t0:6.2f} s   (RSS +{with_entries - base:.0f} MiB)")
    print(f"NumberLists.build:          {t3 - t2:6.2f} s")
    print(f"RSS with snapshot:          {after:6.0f} MiB (baseline {base:.0f} MiB)")

    k = args.lookups
    sets = {
        "exact hit": rng.choices(exact, k=k),
        "miss": [f"+8170{rng.randrange(10**8):08d}" for _ in range(k)],
        "prefix hit": [f"+8112{rng.randrange(args.entries // 100):05d}{rng.randrange(100):02d}" for _ in range(k)],
        "range probe": [f"+81{5000_0000 + rng.randrange(args.entries // 100) * 1000 + rng.randrange(1000):09d}"
                        for _ in range(k)],  # fmt: skip
    }
    for name, numbers in sets.items():
        print(f"lookup {name:<12} {percentiles(time_lookups(lists, numbers))}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS: {peak:.0f} MiB")


if __name__ == "__main__":
    main()
