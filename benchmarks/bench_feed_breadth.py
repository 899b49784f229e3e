"""Benchmark the breadth check a verified feed passes before it is applied (blocklist/feed_breadth.py).

Usage:  .venv/bin/python benchmarks/bench_feed_breadth.py [--entries N] [--repeat N] [--seed N]

The check walks the whole list once and sorts its spans per country, so it adds
to every applied update (1 M entries: ``bench_feed.py``'s verified apply). A
script, not a test: figures only, written to results_feed_breadth.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from blocklist.feed_breadth import BreadthLimits, feed_breadth_problem  # noqa: E402
from screening.core.model import ListEntry, ListKind, MatchKind  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results_feed_breadth.json"


def make_feed(n: int, rng: random.Random) -> list[ListEntry]:
    """A police-style feed: ~99 % exact mobile numbers, 0.5 % 6-digit prefixes, 0.5 % 1000-number ranges."""
    entries = []
    for i in range(n):
        kind = i % 200
        if kind == 0:
            entries.append(ListEntry(ListKind.BLOCK, MatchKind.PREFIX, f"+8150{rng.randrange(10**4):04d}"))
        elif kind == 1:
            start = rng.randrange(10**5) * 1000
            entries.append(ListEntry(ListKind.BLOCK, MatchKind.RANGE, f"+813{start:08d}", f"+813{start + 999:08d}"))
        else:
            entries.append(ListEntry(ListKind.BLOCK, MatchKind.EXACT, f"+8190{rng.randrange(10**8):08d}"))
    return entries


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=12)
    args = parser.parse_args()
    feed = make_feed(args.entries, random.Random(args.seed))
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    times, verdict = [], None
    for _ in range(args.repeat):
        start = time.perf_counter()
        verdict = feed_breadth_problem(feed, BreadthLimits())
        times.append(time.perf_counter() - start)
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    wide = [ListEntry(ListKind.BLOCK, MatchKind.PREFIX, f"+81{d}") for d in range(10, 100)]
    start = time.perf_counter()
    refused = feed_breadth_problem(feed[:-90] + wide, BreadthLimits())
    refuse_s = time.perf_counter() - start
    results = {
        "entries": args.entries,
        "check_s_median": round(statistics.median(times), 3),
        "check_s_max": round(max(times), 3),
        "passes": verdict is None,
        "country_wide_refused": refused is not None,
        "country_wide_refuse_s": round(refuse_s, 4),
        "peak_rss_growth_mib": round(rss_after - rss_before, 1),
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    print(json.dumps(results, indent=2))
    RESULTS.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
