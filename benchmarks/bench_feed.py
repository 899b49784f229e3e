"""Benchmark a signed number feed at police scale: publish, apply and look up 1 M entries.

Usage:  .venv/bin/python benchmarks/bench_feed.py [--entries N] [--out benchmarks/results_feed.json]

The issuer side (publish) runs here; the unit side (``add_feed``: TUF refresh,
download, verify, parse, one-transaction replace; then a check that finds the
list current and renews it; then building the daemon's lookup snapshot) runs in
a child process, so its peak RSS is the unit's alone. The feed is served by a
real HTTP server on 127.0.0.1. A script, not a test: figures only.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import platform
import random
import resource
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from blocklist.feed_publisher import FeedRepository, feed_file  # noqa: E402
from blocklist.formats import ListFormat, read_entries, write_entries  # noqa: E402
from screening.core.model import ListKind  # noqa: E402


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 -- the stdlib's name
        pass


def make_csv(n: int, seed: int = 7) -> tuple[bytes, list[str]]:
    """An issuer's CSV: mostly E.164 mobile numbers, 1 % prefixes, 1 % ranges."""
    rng = random.Random(seed)
    n_special = n // 100
    exact = [f"+8190{d:08d}" for d in rng.sample(range(10**8), n - 2 * n_special)]
    rows = ["number,reason"] + [f"{v},fraud ring {i % 50}" for i, v in enumerate(exact)]
    rows += [f"+8112{i:05d}*,scam prefix" for i in range(n_special)]
    rows += [f"+815{i:05d}0000..+815{i:05d}0999,scam range" for i in range(n_special)]
    return ("\n".join(rows) + "\n").encode(), exact


def peak_rss_mib() -> float:
    """This process's peak RSS: VmHWM (ru_maxrss would include the parent's from before exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def unit_side(url: str, root: Path, work: Path, probes: list[str]) -> dict[str, float]:
    """The unit: add the feed (first update applies it), check again, build the snapshot, look up."""
    from blocklist.feeds import FeedOutcome, add_feed, update_feed
    from blocklist.store import Store

    rss_start = peak_rss_mib()
    store = Store(work / "unit.db", recover_calls=False)
    store.open()
    started = time.perf_counter()
    add_feed(store, work / "feeds", "police", url, root.read_bytes(), max_age_days=30, first_update=False)
    result = update_feed(store, work / "feeds", "police", max_age_days=30, timeout_s=300)
    apply_s = time.perf_counter() - started
    assert result.outcome is FeedOutcome.APPLIED, result
    rss_apply = peak_rss_mib()
    started = time.perf_counter()
    again = update_feed(store, work / "feeds", "police", max_age_days=30, timeout_s=300)
    current_s = time.perf_counter() - started
    assert again.outcome is FeedOutcome.CURRENT, again
    started = time.perf_counter()
    lists = store.load_lists(datetime.now(UTC))
    load_s = time.perf_counter() - started
    lookups = []
    for number in probes:
        t0 = time.perf_counter_ns()
        hit = lists.match_block(number)
        lookups.append(time.perf_counter_ns() - t0)
        assert hit is not None and hit.source == "feed:police", number
    lookups.sort()
    store.close()
    return {
        "entries_applied": result.entries,
        "apply_s": round(apply_s, 2),
        "current_check_s": round(current_s, 2),
        "load_lists_s": round(load_s, 2),
        "lookup_us_p50": round(lookups[len(lookups) // 2] / 1000, 2),
        "lookup_us_max": round(lookups[-1] / 1000, 2),
        "unit_rss_mib_before": round(rss_start, 1),
        "unit_peak_rss_mib_apply": round(rss_apply, 1),
        "unit_peak_rss_mib_with_snapshot": round(peak_rss_mib(), 1),
        "db_mib": round((work / "unit.db").stat().st_size / 2**20, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    parser.add_argument("--unit", nargs=3, metavar=("URL", "ROOT", "WORK"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.unit:
        url, root, work = args.unit
        probes = json.loads(sys.stdin.read())
        print(json.dumps(unit_side(url, Path(root), Path(work), probes)))
        return 0

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        csv, exact = make_csv(args.entries)
        repo = FeedRepository(tmp / "www" / "feed")
        repo.init(write_entries([], ListFormat.FEED, home_region="JP"))
        started = time.perf_counter()
        imported = read_entries(csv, ListFormat.CSV, kind=ListKind.BLOCK, home_region="JP", source="publish")
        assert not imported.problems, imported.problems[:3]
        data = feed_file(imported.entries, "JP")
        repo.publish_numbers(data, len(imported.entries))
        publish_s = time.perf_counter() - started
        del imported
        server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(tmp / "www")))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}/feed/"
        probes = random.Random(1).sample(exact, 1000) + ["+8112000001234", "+815000000500"]
        child = subprocess.run([sys.executable, __file__, "--unit", url, str(repo.metadata_dir / "root.json"),
                                str(tmp)], input=json.dumps(probes), capture_output=True, text=True, check=False)
        server.shutdown()
        if child.returncode:
            sys.exit(f"unit side failed:\n{child.stderr}")
        figures = {
            "entries": args.entries,
            "feed_file_mib": round(len(data) / 2**20, 1),
            "publish_s": round(publish_s, 2),
            **json.loads(child.stdout),
            "python": platform.python_version(),
            "machine": platform.machine(),
        }
    print(json.dumps(figures, indent=2))
    if args.out:
        args.out.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
