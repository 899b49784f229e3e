"""Benchmark the statistics and the family-list suggestions over a year of calls.

Usage:  .venv/bin/python benchmarks/bench_stats.py [--per-day N] [--repeat N] [--out FILE]

A real store (migrated by ``Store.open``) is filled with a year of calls with the events the
daemon writes (offered, decided, answered, played, hung_up; screened calls also challenge and
outcome; some messages and flagged phrases), in one bulk transaction so the set-up takes seconds.
Then ``build_report`` for the 12 months (what ``mamoru stats`` and the page run) and
``Store.suggestions`` are timed. A script, not a test: figures only.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from blocklist.store import Store  # noqa: E402
from screening.core.clock import iso_utc, region_zone  # noqa: E402
from screening.stats import Period, build_report  # noqa: E402

START = datetime(2026, 1, 1, tzinfo=UTC)
ACTIONS = (("allow", 0.35), ("warn", 0.35), ("screen", 0.15), ("block", 0.1), ("request_number", 0.05))


def fill(store: Store, per_day: int, rng: random.Random) -> tuple[int, int]:
    """A year of calls, ``per_day`` a day, written straight into the migrated tables."""
    db = store._reader()  # the benchmark's one bulk writer; the store's own API is per call
    names, weights = zip(*ACTIONS, strict=True)
    calls = events = 0
    db.conn.execute("BEGIN")  # one transaction: the store's connection autocommits otherwise
    for day in range(365):
        for n in range(per_day):
            started = START + timedelta(days=day, seconds=rng.randrange(86400))
            action = rng.choices(names, weights)[0]
            number = f"+8131234{rng.randrange(2000):04d}"  # some numbers call again and again
            ended = started + timedelta(seconds=rng.choice((5, 20, 60, 300)))
            cursor = db.conn.execute(
                "INSERT INTO calls (call_uid, started_at, line, raw_number, number_e164, category, action, rule, "
                "reason, state, end_reason, ended_at) VALUES (?, ?, 'bench', ?, ?, 'domestic', ?, ?, '', "
                "'completed', 'completed', ?)",
                [f"{day}-{n}", iso_utc(started), number, number, action, action, iso_utc(ended)])  # fmt: skip
            call_id = cursor.lastrowid
            steps = [("offered", "{}"), ("decided", "{}")]
            if action != "allow":
                end = "caller_hung_up" if rng.random() < 0.3 else "completed"
                steps += [("answered", "{}"), ("played", json.dumps({"end": end})), ("hung_up", "{}")]
            if action == "screen":
                outcome = rng.choice(("connected", "refused", "screened_out", "message", "caller_hung_up"))
                steps += [("challenge", json.dumps({"passed": outcome != "screened_out"})),
                          ("outcome", json.dumps({"outcome": outcome}))]
                if outcome == "message":
                    steps.append(("message", json.dumps({"seconds": 10})))
            db.conn.executemany("INSERT INTO events (call_id, at, kind, detail) VALUES (?, ?, ?, ?)",
                                [(call_id, iso_utc(started), kind, detail) for kind, detail in steps])
            if rng.random() < 0.01:
                db.conn.execute("INSERT INTO flags (call_id, phrase, category, at) VALUES (?, '還付金', 'refund', ?)",
                                [call_id, iso_utc(started)])  # fmt: skip
            calls += 1
            events += len(steps)
    db.conn.execute("COMMIT")
    return calls, events


def timed(fn, repeat: int) -> list[float]:  # type: ignore[no-untyped-def]
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-day", type=int, default=30, help="calls a day (a busy household: 10)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", type=Path, help="write the results JSON here")
    args = parser.parse_args()
    rng = random.Random(15)
    zone = region_zone("JP")
    with tempfile.TemporaryDirectory() as tmp, Store(Path(tmp) / "bench.db", recover_calls=False) as store:
        t0 = time.perf_counter()
        calls, events = fill(store, args.per_day, rng)
        fill_s = time.perf_counter() - t0
        period = Period(date(2026, 1, 1), date(2026, 12, 31))
        report = build_report(store, period, zone)
        stats_s = timed(lambda: build_report(store, period, zone), args.repeat)
        now = START + timedelta(days=365)
        offers = store.suggestions(now)
        suggest_s = timed(lambda: store.suggestions(now), args.repeat)
        db_mb = (Path(tmp) / "bench.db").stat().st_size / 2**20
    result = {
        "python": platform.python_version(), "machine": platform.machine(), "calls": calls, "events": events,
        "per_day": args.per_day, "db_mb": round(db_mb, 1), "fill_s": round(fill_s, 2),
        "stats_12_months_s": {"median": round(statistics.median(stats_s), 3), "max": round(max(stats_s), 3)},
        "suggestions_s": {"median": round(statistics.median(suggest_s), 3), "max": round(max(suggest_s), 3)},
        "repel_rate_year": report.total.repel_rate, "offers": len(offers),
    }  # fmt: skip
    text = json.dumps(result, indent=2, ensure_ascii=False)
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
