"""``mamoru stats``: the effectiveness figures per month (calls by decision and category, 撃退率,
messages, fraud, alerts); ``--json`` for scripts, ``--csv FILE`` for a municipality's survey."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from screening.cli.common import EXIT_ERROR, EXIT_OK, CliError, add_common_args, existing_store, load, print_json
from screening.core.clock import iso_utc, region_zone, utc_now
from screening.core.files import atomic_write_bytes
from screening.core.model import Language
from screening.stats import CSV_COLUMNS, StatsReport, build_report, parse_period, report_csv
from screening.web.i18n import PAGE_LANGUAGES, page_language, translate


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("stats", help="effectiveness figures per month (撃退率, messages, alerts)")
    add_common_args(p, json_flag=True)
    p.add_argument("--from", dest="since", metavar="DATE", help="first day, YYYY-MM-DD or YYYY-MM (default: 11 "
                   "months before --to)")  # fmt: skip
    p.add_argument("--to", dest="until", metavar="DATE", help="last day, YYYY-MM-DD or YYYY-MM (default: today)")
    p.add_argument("--csv", metavar="FILE", help="also write the survey CSV (UTF-8 with BOM) here")
    p.add_argument("--lang", choices=[lang.value for lang in PAGE_LANGUAGES], default=Language.JA.value,
                   help="language of the CSV headers (default: ja)")  # fmt: skip
    p.set_defaults(func=cmd_stats)


def cmd_stats(args: argparse.Namespace) -> int:
    cfg = load(args)
    zone = region_zone(cfg.line.home_region)
    try:
        period = parse_period(args.since, args.until, utc_now().astimezone(zone).date())
    except ValueError as exc:
        raise CliError(f"stats: {exc}") from None
    store = existing_store(cfg)
    if store is None:
        return EXIT_ERROR
    try:
        report = build_report(store, period, zone)
    finally:
        store.close()
    if args.csv:
        lang = page_language(args.lang)
        headers = [translate(lang, f"stats.csv.{column}") for column in CSV_COLUMNS]
        data = report_csv(report, headers, translate(lang, "stats.total"))
        try:
            atomic_write_bytes(Path(args.csv), data)
        except OSError as exc:
            raise CliError(f"stats: cannot write {args.csv}: {exc}") from None
    if args.json:
        print_json({**report.as_dict(), "generated_at": iso_utc(utc_now(), timespec="seconds")})
    else:
        print(_table(report))
    return EXIT_OK


def _table(report: StatsReport) -> str:
    head = f"{'month':<8} {'calls':>6} {'allow':>6} {'warn':>6} {'screen':>6} {'block':>6} {'撃退率%':>7} " \
           f"{'msgs':>5} {'fraud':>5} {'alerts':>6} {'acked':>5}"
    lines = [f"{report.period.first} .. {report.period.last} ({report.zone})", head]
    for m in [*report.months, report.total]:
        rate = "-" if m.repel_rate is None else f"{m.repel_rate:.1f}"
        lines.append(f"{m.month:<8} {m.calls:>6} {m.by_action['allow']:>6} {m.by_action['warn']:>6} "
                     f"{m.by_action['screen']:>6} {m.by_action['block']:>6} {rate:>8} {m.messages:>5} "
                     f"{m.fraud_calls:>5} {m.alerts:>6} {m.alerts_acknowledged:>5}")  # fmt: skip
    return "\n".join(lines)
