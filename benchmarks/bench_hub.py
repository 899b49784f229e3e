"""Benchmark the hub at fleet scale: ``mamoru hub simulate`` with its results written here.

Usage:  ulimit -n 20000; .venv/bin/python benchmarks/bench_hub.py --units 1000 [--steady-s 30] [--burst-s 10]

Starts its own Mosquitto (TLS, ACL), PostgreSQL and hub process in a temp dir, drives N simulated
units on loopback (connect storm, realistic rate, 10x, burst) and writes results_hub_<N>.json.
A script, not a test: figures only. Needs the ``hub`` extra and Debian's mosquitto and postgresql.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from screening.hub.simulate import MAX_UNITS, simulate_main  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=1000, choices=range(1, MAX_UNITS + 1), metavar="N")
    parser.add_argument("--steady-s", type=float, default=30.0)
    parser.add_argument("--burst-s", type=float, default=10.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    out = HERE / f"results_hub_{args.units}.json"
    results = simulate_main(args.units, None, args.steady_s, args.burst_s)
    results["machine"] = {"python": platform.python_version(), "platform": platform.platform()}
    out.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
