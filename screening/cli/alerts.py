"""``mamoru alert test`` (send a test alert to the relatives) and ``mamoru alerts`` (the outbox)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from blocklist.outbox import Outbox
from screening.alerts import AlertService
from screening.cli.common import add_common_args, existing_store, load, open_store
from screening.core.clock import local_stamp, parse_iso_utc, region_zone
from screening.core.safe_text import terminal_safe
from screening.notify import AppriseNotifier


def register(subparsers: Any) -> None:
    """``mamoru alert test`` and ``mamoru alerts``."""
    p = subparsers.add_parser("alert", help="alert tools")
    asub = p.add_subparsers(dest="alert_command", required=True)
    q = asub.add_parser("test", help="send a test alert through every channel of every (or one) relative")
    q.add_argument("--to", metavar="NAME", help="only this relative")
    add_common_args(q)
    q.set_defaults(func=cmd_alert_test)
    p = subparsers.add_parser("alerts", help="the alert outbox with delivery status, newest first")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--limit", type=int, default=20)
    add_common_args(p)
    p.set_defaults(func=cmd_alerts)


def cmd_alert_test(args: argparse.Namespace) -> int:
    config = load(args)
    if not config.relatives:
        print("no [[relatives]] configured: nobody to alert")
        return 1
    store = open_store(config)
    try:
        with AlertService(store, config, AppriseNotifier()) as service:
            try:
                results = service.test_alert(args.to)
            except KeyError:
                names = ", ".join(r.name for r in config.relatives)
                print(f"no relative named {args.to!r} (configured: {names})")
                return 1
    finally:
        store.close()
    for r in results:
        print(f"{r.relative}\t{r.channel}\t{'ok' if r.ok else 'failed: ' + (r.error or '?')}")
    return 0 if all(r.ok for r in results) else 1


def cmd_alerts(args: argparse.Namespace) -> int:
    config = load(args)
    store = existing_store(config)  # read-only: never creates a database
    rows = []
    if store is not None:
        try:
            store.count_calls()  # connects and migrates (the Store does it lazily)
            with Outbox(store.path) as outbox:
                rows = outbox.recent(args.limit)
        finally:
            store.close()
    if args.json:
        print(json.dumps([{**a.as_dict(), "deliveries": [d.as_dict() for d in ds]} for a, ds in rows],
                         ensure_ascii=False, indent=2))  # fmt: skip
        return 0
    zone = region_zone(config.line.home_region)  # people read local time; --json keeps UTC
    for alert, deliveries in rows:
        acked = f"  acknowledged by {alert.acked_by}" if alert.acked_by else ""
        when = local_stamp(parse_iso_utc(alert.created_at), zone)
        print(terminal_safe(f"#{alert.id} {when} {alert.kind.value} ({alert.urgency.value}){acked}: {alert.subject}"))
        for d in deliveries:
            extra = f" — {d.last_error}" if d.last_error and d.status.value != "sent" else ""
            print(terminal_safe(f"    {d.relative:<12} {d.channel:<40} {d.status.value} (attempts {d.attempts}){extra}"))
    return 0
