"""Benchmark the transcript fraud detector on the English dev corpus.

Usage:  .venv/bin/python benchmarks/bench_detector.py [--corpus DIR] [--lang en] [--json-out F] [--examples N]

The dev corpus (``/work/shared/corpus``) is split by hashing each row's id:
~70 % "tune" (what the phrase pack was tuned on) and ~30 % "check" (held back).
Both splits are reported side by side so overfitting to the tune split shows
as a gap. Alarm = verdict "fraud"; "suspicious-or-fraud" is reported too.
A script, not a test: figures only (tests/test_detector.py gates the check split).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from screening.core.model import Verdict
from voice.detector import Detection, FraudDetector, PhrasePack

DEFAULT_CORPUS = Path("/work/shared/corpus")
TUNE, CHECK = "tune", "check"
TUNE_PERCENT = 70


def split_of(row_id: str) -> str:
    """Stable split by id hash: the same row always lands in the same split."""
    bucket = int.from_bytes(hashlib.sha256(row_id.encode("utf-8")).digest()[:4], "big") % 100
    return TUNE if bucket < TUNE_PERCENT else CHECK


def load_rows(corpus: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for name in ("fraud_en.dev.jsonl", "benign_en.dev.jsonl"):
        with (corpus / name).open(encoding="utf-8") as fh:
            rows.extend(json.loads(line) for line in fh if line.strip())
    return rows


@dataclass
class SplitStats:
    """Counts for one split; rates are computed on demand."""

    fraud: int = 0
    benign: int = 0
    fraud_caught: int = 0
    fraud_caught_loose: int = 0
    benign_alarm: int = 0
    benign_alarm_loose: int = 0
    categories_fraud: Counter[str] = field(default_factory=Counter)
    categories_benign: Counter[str] = field(default_factory=Counter)
    misses: list[dict[str, Any]] = field(default_factory=list)
    false_alarms: list[dict[str, Any]] = field(default_factory=list)

    def add(self, row: dict[str, Any], detection: Detection) -> None:
        categories = {f.category for f in detection.flags}
        alarm = detection.verdict is Verdict.FRAUD
        loose = detection.verdict is not Verdict.CLEAN
        example = {"id": row["id"], "score": detection.score, "categories": sorted(categories),
                   "text": row["text"][:200]}
        if row["label"] == "fraud":
            self.fraud += 1
            self.fraud_caught += alarm
            self.fraud_caught_loose += loose
            self.categories_fraud.update(categories)
            if not alarm:
                self.misses.append(example)
        else:
            self.benign += 1
            self.benign_alarm += alarm
            self.benign_alarm_loose += loose
            self.categories_benign.update(categories)
            if alarm:
                self.false_alarms.append(example)

    def summary(self, examples: int) -> dict[str, Any]:
        return {
            "fraud_rows": self.fraud,
            "benign_rows": self.benign,
            "recall": _rate(self.fraud_caught, self.fraud),
            "false_alarm_rate": _rate(self.benign_alarm, self.benign),
            "recall_suspicious_or_fraud": _rate(self.fraud_caught_loose, self.fraud),
            "false_alarm_rate_suspicious_or_fraud": _rate(self.benign_alarm_loose, self.benign),
            "misses": len(self.misses),
            "false_alarms": len(self.false_alarms),
            "category_hits_fraud": dict(self.categories_fraud.most_common()),
            "category_hits_benign": dict(self.categories_benign.most_common()),
            "miss_examples": self.misses[:examples],
            "false_alarm_examples": self.false_alarms[:examples],
        }


def _rate(numerator: int, denominator: int) -> float:
    return round(numerator / denominator, 4) if denominator else 0.0


def evaluate(rows: Iterable[dict[str, Any]], detector: FraudDetector) -> dict[str, SplitStats]:
    stats = {TUNE: SplitStats(), CHECK: SplitStats()}
    for row in rows:
        stats[split_of(row["id"])].add(row, detector.detect(row["text"]))
    return stats


def print_report(results: dict[str, Any]) -> None:
    print(f"phrase pack: {results['pack']}  rows: {results['rows']}  "
          f"time: {results['seconds']:.2f} s ({results['ms_per_row']:.2f} ms/row)")
    header = f"{'split':<6} {'fraud':>5} {'benign':>6} {'recall':>7} {'FAR':>6} {'recall(s|f)':>11} {'FAR(s|f)':>8} " \
             f"{'misses':>6} {'f.alarms':>8}"
    print(header)
    for name in (TUNE, CHECK):
        s = results["splits"][name]
        print(f"{name:<6} {s['fraud_rows']:>5} {s['benign_rows']:>6} {s['recall']:>7.3f} "
              f"{s['false_alarm_rate']:>6.3f} {s['recall_suspicious_or_fraud']:>11.3f} "
              f"{s['false_alarm_rate_suspicious_or_fraud']:>8.3f} {s['misses']:>6} {s['false_alarms']:>8}")
    for name in (TUNE, CHECK):
        s = results["splits"][name]
        print(f"\n[{name}] category hits on fraud rows:  {s['category_hits_fraud']}")
        print(f"[{name}] category hits on benign rows: {s['category_hits_benign']}")
        for label, key in (("miss", "miss_examples"), ("false alarm", "false_alarm_examples")):
            for ex in s[key]:
                print(f"  {label}: {ex['id']} score={ex['score']} {ex['categories']} | {ex['text'][:140]!r}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--lang", default="en")
    parser.add_argument("--json-out", type=Path, help="also write the figures as JSON here")
    parser.add_argument("--examples", type=int, default=5, help="misses / false alarms shown per split")
    args = parser.parse_args(argv)

    rows = load_rows(args.corpus)
    detector = FraudDetector(PhrasePack.load(args.lang))
    began = time.perf_counter()
    stats = evaluate(rows, detector)
    seconds = time.perf_counter() - began
    results = {
        "pack": detector.pack.source,
        "rows": len(rows),
        "seconds": round(seconds, 3),
        "ms_per_row": round(1000 * seconds / max(len(rows), 1), 3),
        "split": f"sha256(id) % 100 < {TUNE_PERCENT} -> {TUNE}, else {CHECK}",
        "splits": {name: s.summary(args.examples) for name, s in stats.items()},
    }
    print_report(results)
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
