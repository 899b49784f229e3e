"""``mamoru store recover``: salvage a damaged database that start-up set aside.

The daemon never stops for a damaged database: it moves the file aside and screens
with a fresh one (``blocklist.recovery``). This command reads what SQLite can still
read from the set-aside file into a new database beside it, prints what it got, and
clears the "needs recovery" notice. The damaged file is never changed or deleted;
the live database is not touched (the recovered calls stay in their own file, which
the web page and ``mamoru calls --db`` can open).
"""

from __future__ import annotations

import argparse
import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from blocklist.recovery import DamageNotice, clear_notice, read_notices, salvage
from screening.config import load_config

log = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("store", help="database tools")
    ssub = p.add_subparsers(dest="store_action", required=True)
    q = ssub.add_parser("recover", help="salvage what can be read from a damaged database set aside at start-up")
    q.add_argument("damaged", nargs="?", metavar="FILE",
                   help="the damaged file (default: the newest one set aside and not yet recovered)")
    q.add_argument("--out", metavar="F", help="new database to write (default: beside the damaged file)")
    q.add_argument("--config", metavar="F", help="TOML config (default: $MAMORU_CONFIG, /etc/mamoru/mamoru.toml)")
    q.add_argument("--db", metavar="F", help="the live SQLite database (overrides [store] db)")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(func=cmd_store_recover)


def cmd_store_recover(args: argparse.Namespace) -> int:
    db = Path(args.db) if args.db else Path(load_config(Path(args.config) if args.config else None).store.db)
    notices = read_notices(db)
    if args.damaged:
        damaged = Path(args.damaged)
    elif notices:
        damaged = notices[-1].moved_to
    else:
        log.error("no damaged database waiting to be recovered beside %s", db)
        print(f"mamoru: 回復が必要な壊れたデータベースはありません / no damaged database to recover beside {db}")
        return 1
    if not damaged.exists():
        print(f"mamoru: {damaged} が見つかりません / not found")
        return 1
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = Path(args.out) if args.out else damaged.with_name(f"{db.name}.recovered-{stamp}")
    report = salvage(damaged, out)
    for notice in notices:
        if _same(notice, damaged):
            clear_notice(db, notice.moved_to)
    if args.json:
        print(json.dumps(report.as_dict(), ensure_ascii=False, indent=2))
    else:
        print(f"取り戻した記録 / recovered into {out}:")
        for table, rows in report.tables.items():
            bad = report.unreadable.get(table)
            lost = f"  (読めない部分 {bad} か所 / unreadable stretches)" if bad else ""
            print(f"  {table}: {rows}{lost}")
        print(f"壊れたファイルはそのまま残しています / the damaged file is kept as it was: {damaged}")
    return 0


def _same(notice: DamageNotice, path: Path) -> bool:
    try:
        return notice.moved_to.resolve() == path.resolve()
    except OSError:
        return False
