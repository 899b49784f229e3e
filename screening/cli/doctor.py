"""``mamoru doctor``: check that this box can screen calls, in plain words (checks: :mod:`screening.doctor`)."""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

from screening.core.safe_text import terminal_safe
from screening.doctor import collect, format_report, report_language


def register(subparsers: Any) -> argparse.ArgumentParser:
    """``mamoru doctor [--config F] [--db F] [--json]``."""
    p = subparsers.add_parser("doctor", help="check that this box can screen calls, in plain words")
    p.add_argument("--config", metavar="F", help="TOML config (default: $MAMORU_CONFIG, /etc/mamoru/mamoru.toml)")
    p.add_argument("--db", metavar="F", help="SQLite database (overrides [store] db)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_doctor)
    return p


def cmd_doctor(args: argparse.Namespace) -> int:
    """Exit 0 when nothing is a problem (warnings allowed), 1 otherwise."""
    # The modem layer logs its retries and timeouts; the family reads our summary instead.
    firmware_log = logging.getLogger("firmware")
    level = firmware_log.level
    firmware_log.setLevel(logging.CRITICAL)
    try:
        checks = collect(Path(args.config) if args.config else None, args.db)
    finally:
        firmware_log.setLevel(level)
    healthy = all(c.severity != "problem" for c in checks)
    if args.json:  # for programs: the checks' own (English) words
        print(json.dumps({"ok": healthy, "checks": [asdict(c) for c in checks]}, ensure_ascii=False, indent=2))
    else:
        print(terminal_safe(format_report(checks, report_language(Path(args.config) if args.config else None)),
                            keep_lines=True))
    return 0 if healthy else 1
