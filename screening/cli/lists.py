"""``mamoru allow ...`` and ``mamoru block ...``: add, remove, show, import and export list entries."""

from __future__ import annotations

import argparse
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

from blocklist.formats import (
    ListFormat,
    detect_format,
    read_entries,
    write_entries,
)
from blocklist.list_records import RowProblem
from blocklist.lists import ListSpecError, parse_list_spec
from blocklist.store import Store
from blocklist.store.rows import FEED_SOURCE_PREFIX, StoreError
from screening.cli.common import (
    EXIT_ERROR,
    EXIT_OK,
    CliError,
    add_common_args,
    existing_store,
    load,
    open_store,
    print_json,
)
from screening.config import Config
from screening.core.clock import iso_utc, parse_iso_utc, utc_now
from screening.core.files import atomic_write_bytes
from screening.core.model import Action, ListEntry, ListKind
from screening.core.numbers import national_format
from screening.core.safe_text import terminal_safe


def register(sub: Any) -> None:
    for kind in ListKind:
        p = sub.add_parser(kind.value, help=f"manage the {kind.value} list")
        lsub = p.add_subparsers(dest="list_action", required=True)
        for action in ("add", "remove"):
            q = lsub.add_parser(action, help=f"{action} a number, prefix (0120*) or range (a..b)")
            add_common_args(q)
            q.add_argument("number")
            if action == "add":
                q.add_argument("--note", default="")
                q.add_argument("--source", default="family" if kind is ListKind.ALLOW else "local")
                q.add_argument("--days", type=int, help="expire after N days")
                q.add_argument("--expires", metavar="DATE", help="expire on this date (ISO-8601)")
                q.add_argument("--action", choices=[a.value for a in Action],
                               help=f"this entry's own action instead of the list's (e.g. screen); default {kind.value}")
            q.set_defaults(func=cmd_list, list_kind=kind.value)
        q = lsub.add_parser("list", help="show the list")
        add_common_args(q, json_flag=True)
        q.set_defaults(func=cmd_list, list_kind=kind.value)
        q = lsub.add_parser("import", help="add every entry of a list file (plain, CSV, FTC complaints, feed, "
                            "NCID list, vCard phone book, callattendant)")
        add_common_args(q, json_flag=True)
        q.add_argument("file", metavar="FILE", help="the list file, or - for stdin (formats: docs/lists.md)")
        q.add_argument("--format", choices=["plain", "csv", "ftc", "feed", "ncid", "vcard", "callattendant"],
                       help="default: detected from the header")
        q.add_argument("--source", help="where the numbers come from (default: ftc for FTC files, else "
                       f"{'family' if kind is ListKind.ALLOW else 'local'}); a CSV source column wins")
        q.add_argument("--note", default="", help="reason for rows that give none")
        q.add_argument("--days", type=int, help="expire after N days")
        q.add_argument("--expires", metavar="DATE", help="expire on this date (ISO-8601); caps each row's own expiry")
        q.add_argument("--strict", action="store_true", help="import nothing if any row has a problem")
        q.set_defaults(func=cmd_list, list_kind=kind.value)
        q = lsub.add_parser("export", help="write the list as plain, CSV (default), feed, NCID, vCard or callattendant")
        add_common_args(q)
        q.add_argument("--format", choices=["plain", "csv", "feed", "ncid", "vcard", "callattendant"], default="csv")
        q.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")
        q.add_argument("--with-feeds", action="store_true", help="include entries delivered by signed feeds")
        q.set_defaults(func=cmd_list, list_kind=kind.value)



def _parse_expiry(args: argparse.Namespace) -> str | None:
    if args.days is not None:
        if args.days <= 0:
            raise CliError("--days must be a positive number of days")
        return iso_utc(utc_now() + timedelta(days=args.days), timespec="seconds")
    if args.expires:
        try:
            when = parse_iso_utc(args.expires)  # a bare date or time is UTC
        except ValueError as exc:
            raise CliError(f"--expires {args.expires!r}: use a date like 2027-03-31") from exc
        return iso_utc(when, timespec="seconds")
    return None


def cmd_list(args: argparse.Namespace) -> int:
    kind = ListKind(args.list_kind)
    cfg = load(args)
    region = cfg.line.home_region
    if args.list_action == "import":
        return _import_list(args, kind, cfg)
    if args.list_action in ("list", "export") and not Path(cfg.store.db).exists():
        existing_store(cfg)  # says where it looked
        if args.list_action == "export":
            return _export_list(args, kind, None, region)
        if args.json:
            print_json([])
        else:
            print(f"the {kind.value} list is empty")
        return EXIT_OK
    store = open_store(cfg)
    try:
        if args.list_action == "export":
            return _export_list(args, kind, store, region)
        if args.list_action == "list":
            entries = store.list_entries(kind)
            if args.json:
                print_json([_entry_dict(e) for e in entries])
            elif not entries:
                print(f"the {kind.value} list is empty")
            for e in entries if not args.json else ():
                expiry = f" (until {e.expires_at[:10]})" if e.expires_at else ""
                own = f" [{e.action.value}]" if e.action else ""
                print(terminal_safe(f"{_entry_label(e, region):<28} {e.source:<10} {e.note}{expiry}{own}"))
            return EXIT_OK
        try:
            match, value, value_end = parse_list_spec(args.number, region)
        except ListSpecError as exc:
            raise CliError(str(exc)) from exc
        if args.list_action == "add":
            entry = store.add_entry(ListEntry(kind, match, value, value_end, source=args.source, note=args.note,
                                              expires_at=_parse_expiry(args),
                                              action=Action(args.action) if args.action else None))
            print(f"added to {kind.value} list: {_entry_label(entry, region)}")
            return EXIT_OK
        if store.remove_entry(kind, match, value, value_end):
            print(f"removed from {kind.value} list: {args.number}")
            return EXIT_OK
        raise CliError(f"{args.number} is not on the {kind.value} list")
    finally:
        store.close()


_PROBLEMS_SHOWN = 20  # on the terminal; --json lists up to _PROBLEMS_JSON
_PROBLEMS_JSON = 1000


def _import_list(args: argparse.Namespace, kind: ListKind, cfg: Config) -> int:
    """Parse the whole file first, then write the good rows in one transaction: the database
    is locked only for the write (the daemon keeps recording calls while a big file parses),
    and ``--strict`` can refuse before anything is touched."""
    name = "stdin" if args.file == "-" else args.file
    try:
        data = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {name}: {exc.strerror or exc}") from exc
    fmt = ListFormat(args.format) if args.format else detect_format(data)
    if fmt is ListFormat.FEED and kind is ListKind.ALLOW:
        raise CliError(f"{name} is a mamoru feed: feeds carry block entries only")
    source = args.source or ("ftc" if fmt is ListFormat.FTC else "family" if kind is ListKind.ALLOW else "local")
    if source.startswith(FEED_SOURCE_PREFIX):
        raise CliError(f"--source {source!r}: 'feed:' sources belong to signed feeds (see mamoru feed add)")
    result = read_entries(data, fmt, kind=kind, home_region=cfg.line.home_region, source=source,
                          expires_at=_parse_expiry(args), note=args.note)  # fmt: skip
    imported, refused = 0, ""
    if args.strict and result.problems:
        refused = f"nothing imported: {len(result.problems)} problem(s) and --strict"
    elif not result.entries:
        refused = f"nothing imported: no valid entries in {name}"
    else:
        store = open_store(cfg)
        try:
            imported = store.import_entries(result.entries)
        except (StoreError, ValueError) as exc:
            raise CliError(f"nothing imported from {name}: {exc}") from exc
        finally:
            store.close()

    def problem_dict(p: RowProblem) -> dict[str, Any]:
        return {"line": p.line, "text": p.text, "problem": p.problem}

    if args.json:
        print_json({"file": name, "list": kind.value, "format": result.format.value, "encoding": result.encoding,
                     "rows": result.rows, "imported": imported, "duplicates": result.duplicates,
                     "problem_count": len(result.problems), "error": refused or None,
                     "problems": [problem_dict(p) for p in result.problems[:_PROBLEMS_JSON]]})  # fmt: skip
        return EXIT_ERROR if refused else EXIT_OK
    for p in result.problems[:_PROBLEMS_SHOWN]:
        print(f"{name}:{p.line}: {p.problem}", file=sys.stderr)
    if len(result.problems) > _PROBLEMS_SHOWN:
        print(f"… and {len(result.problems) - _PROBLEMS_SHOWN} more", file=sys.stderr)
    if refused:
        raise CliError(refused)
    repeats = f", {result.duplicates} repeated number(s) skipped" if result.duplicates else ""
    print(f"imported {imported} entr{'y' if imported == 1 else 'ies'} into the {kind.value} list from {name} "
          f"({result.format.value}, {result.rows} row(s), {len(result.problems)} problem(s){repeats})")  # fmt: skip
    return EXIT_OK


def _export_list(args: argparse.Namespace, kind: ListKind, store: Store | None, region: str) -> int:
    stored = store.list_entries(kind) if store is not None else []
    entries = [e for e in stored if args.with_feeds or not e.source.startswith(FEED_SOURCE_PREFIX)]
    try:
        data = write_entries(entries, ListFormat(args.format), home_region=region)
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    if not args.output or args.output == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return EXIT_OK
    target = Path(args.output)
    try:  # atomically: an interrupted export never leaves half a list behind
        atomic_write_bytes(target, data)
    except OSError as exc:
        raise CliError(f"cannot write {target}: {exc.strerror or exc}") from exc
    print(f"exported {len(entries)} {kind.value} entr{'y' if len(entries) == 1 else 'ies'} to {target}",
          file=sys.stderr)  # fmt: skip
    return EXIT_OK


def _entry_label(entry: ListEntry, region: str) -> str:
    if entry.value_end is None and entry.match.value == "exact":
        return national_format(entry.value, region)
    return entry.describe()


def _entry_dict(entry: ListEntry) -> dict[str, Any]:
    return {"list": entry.list.value, "match": entry.match.value, "value": entry.value,
            "value_end": entry.value_end, "source": entry.source, "note": entry.note,
            "added_at": entry.added_at, "expires_at": entry.expires_at,
            "action": entry.action.value if entry.action else None}
