"""Benchmark importing a 1 M-row list file: parse (blocklist.formats) + write (Store) time and peak memory.

Usage:  .venv/bin/python benchmarks/bench_import.py [--rows N] [--cases feed,csv,ftc] [--modes collect,stream]
                                                    [--json-out benchmarks/results_import.json]

Cases (files generated in a temporary directory, ~98 % exact numbers, 1 % prefixes, 1 % ranges):
  feed  a mamoru-feed/1 file, E.164 numbers: what a signed police feed delivers (the fast path)
  csv   a CSV of Japanese national numbers ("090-1234-5678"), as a person would export from Excel:
        every row goes through phonenumbers (the slow path)
  ftc   an FTC Do-Not-Call complaint file, 10-digit US numbers, ~20 % repeat complaints
Modes:
  collect  read_entries, then Store.import_entries in one transaction: what `mamoru block import` does
           (the database is locked only while writing)
  stream   iter_entries straight into Store.import_entries: constant memory, but the write
           transaction is open while the file is parsed
Each file is generated, and each case and mode is measured, in a fresh child process, so the
peak RSS a child reports (resource.getrusage) is its own: Linux carries the parent's high-water
mark across fork/exec, so the parent never holds any data. A script, not a test: figures only.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

REASONS = ["還付金詐欺", "オレオレ詐欺", "架空請求", "fake bank", "impersonates police", "investment fraud"]
FTC_HEADER = ("Company_Phone_Number,Created_Date,Violation_Date,Consumer_City,Consumer_State,Consumer_Area_Code,"
              "Subject,Recorded_Message_Or_Robocall\n")  # fmt: skip
FTC_SUBJECTS = ['"Reducing your debt (credit cards, mortgage, student loans)"', "Imposters", "Vacation & timeshares",
                "Warranties & protection plans", "Medical & prescriptions", "Dropped call or no message"]  # fmt: skip


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def write_case(case: str, rows: int, path: Path, rng: random.Random) -> None:
    n_prefix = n_range = rows // 100
    n_exact = rows - n_prefix - n_range
    numbers = rng.sample(range(10**8), n_exact)
    with path.open("w", encoding="utf-8", newline="") as out:
        if case == "ftc":
            out.write(FTC_HEADER)
            area = [202, 212, 305, 404, 602, 617, 713, 813]
            number = ""
            for i, d in enumerate(numbers):
                if i % 5:  # every fifth row is another complaint about the number before it
                    number = f"{area[d % len(area)]}{d % 10**7:07d}"
                out.write(f"{number or 2025550143},2024-03-01 10:22:31,2024-02-29 16:05:00,Phoenix,Arizona,602,"
                          f"{FTC_SUBJECTS[i % len(FTC_SUBJECTS)]},{'Y' if i % 3 else 'N'}\n")  # fmt: skip
            return
        if case == "feed":
            out.write("number,reason,expires\n")
            exact = (f"+8190{d:08d}" for d in numbers)
            prefixes = (f"+8112{i:05d}*" for i in range(n_prefix))
            ranges = (f"+81{5000_0000 + i * 1000:09d}..+81{5000_0000 + i * 1000 + 999:09d}" for i in range(n_range))
            tail = ","
        else:
            out.write("number,reason\n")
            exact = (f"090-{d // 10**4:04d}-{d % 10**4:04d}" for d in numbers)
            prefixes = (f"012{i % 10}-{i // 10:04d}*" for i in range(n_prefix))
            ranges = (f"03-{5000 + i // 10:04d}-{i % 10}000..03-{5000 + i // 10:04d}-{i % 10}999"
                      for i in range(n_range))  # fmt: skip
            tail = ""
        for i, spec in enumerate((*exact, *prefixes, *ranges)):
            out.write(f"{spec},{REASONS[i % len(REASONS)]}{tail}\n")


def child(case: str, mode: str, path: Path, db: Path) -> dict[str, object]:
    from blocklist.formats import iter_entries, read_entries
    from blocklist.list_records import RowProblem
    from blocklist.store import Store
    from screening.core.model import ListEntry, ListKind

    kw: dict[str, Any] = {"kind": ListKind.BLOCK, "home_region": "JP", "source": "bench", "expires_at": "2030-01-01"}
    baseline = peak_rss_mb()  # the interpreter with phonenumbers and sqlite-utils loaded
    store = Store(db, recover_calls=False).open()
    t0 = time.perf_counter()
    data = path.read_bytes()
    problems = 0
    parse_s: float | None = None
    write_s: float | None = None
    if mode == "collect":
        result = read_entries(data, None, **kw)
        problems = len(result.problems)
        t1 = time.perf_counter()
        written = store.import_entries(result.entries)
        t2 = time.perf_counter()
        parse_s, write_s = t1 - t0, t2 - t1
    else:
        def good(stream: Iterable[ListEntry | RowProblem]) -> Iterator[ListEntry]:
            nonlocal problems
            for item in stream:
                if isinstance(item, RowProblem):
                    problems += 1
                else:
                    yield item

        written = store.import_entries(good(iter_entries(data, None, **kw)))
        t2 = time.perf_counter()  # parse and write interleave: only the total is meaningful
    store.close()
    total = t2 - t0
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    stored = con.execute("SELECT count(*) FROM list_entries").fetchone()[0]
    con.close()
    return {
        "file_mb": round(len(data) / 2**20, 1),
        "entries_written": written,
        "entries_stored": stored,
        "problems": problems,
        "parse_s": round(parse_s, 2) if parse_s is not None else None,
        "write_s": round(write_s, 2) if write_s is not None else None,
        "total_s": round(total, 2),
        "rows_per_s": round(written / total),
        "peak_rss_mb": round(peak_rss_mb()),
        "peak_rss_before_mb": round(baseline),
        "db_mb": round(db.stat().st_size / 2**20, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--cases", default="feed,csv,ftc")
    parser.add_argument("--modes", default="collect,stream")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json-out", type=Path, help="write the results here as JSON")
    parser.add_argument("--child", nargs=4, metavar=("CASE", "MODE", "FILE", "DB"), help=argparse.SUPPRESS)
    parser.add_argument("--generate", nargs=2, metavar=("CASE", "FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.generate:
        write_case(args.generate[0], args.rows, Path(args.generate[1]), random.Random(args.seed))
        return 0
    if args.child:
        case, mode, file, db = args.child
        print(json.dumps(child(case, mode, Path(file), Path(db))))
        return 0

    results: dict[str, object] = {"rows": args.rows, "python": sys.version.split()[0], "machine": os.uname().machine,
                                  "cases": {}}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="mamoru-bench-import-") as tmp:
        for case in args.cases.split(","):
            path = Path(tmp) / f"{case}.csv"
            subprocess.run([sys.executable, __file__, "--generate", case, str(path), "--rows", str(args.rows),
                            "--seed", str(args.seed)], check=True, timeout=3600)  # fmt: skip
            for mode in args.modes.split(","):
                db = Path(tmp) / f"{case}-{mode}.db"
                proc = subprocess.run([sys.executable, __file__, "--child", case, mode, str(path), str(db)],
                                      capture_output=True, text=True, timeout=3600, check=False)  # fmt: skip
                if proc.returncode != 0:
                    print(proc.stderr, file=sys.stderr)
                    return 1
                figures = json.loads(proc.stdout)
                results["cases"][f"{case}/{mode}"] = figures  # type: ignore[index]
                print(f"{case:>5}/{mode:<8} " + "  ".join(f"{k} {v}" for k, v in figures.items()), flush=True)
                db.unlink()
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
