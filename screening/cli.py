"""The ``mamoru`` command line: the composition root for the daemon and the tools.

Every command takes ``--config`` and ``--db``; commands that print data take
``--json``. Errors are one clear line on stderr and a non-zero exit code.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any

from blocklist.lists import ListSpecError, parse_iso_utc, parse_list_spec
from blocklist.store import Store
from screening.core.callerid import caller_id_for_check
from screening.config import Config, ConfigError, load_config
from screening.core.model import ListEntry, ListKind, Reason
from screening.core.clock import local_stamp, region_zone
from screening.core.numbers import national_format
from screening.core.rules import Policy, decide
from screening.core.safe_text import TerminalSafeFormatter, terminal_safe

log = logging.getLogger("mamoru")

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


class CliError(Exception):
    """A user-facing error: printed as one line, exit code 1."""


# ---- shared plumbing ----------------------------------------------------------


def _load(args: argparse.Namespace) -> Config:
    cfg = load_config(Path(args.config) if args.config else None)
    overrides: dict[str, Any] = {}
    if getattr(args, "db", None):
        overrides["db"] = args.db
    if getattr(args, "line", None):
        overrides["line_uri"] = args.line
    return cfg.with_overrides(**overrides) if overrides else cfg


def policy_from_config(cfg: Config) -> Policy:
    # RulesConfig mirrors Policy field for field (a config test keeps them equal).
    return Policy(**{f.name: getattr(cfg.rules, f.name) for f in dataclasses.fields(cfg.rules)})


def _open_store(cfg: Config) -> Store:
    path = Path(cfg.store.db)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Not the daemon: never mark a call that is in progress right now as interrupted.
    store = Store(path, recover_calls=False)
    store.open()
    return store


def _print_json(data: Any) -> None:
    print(json.dumps(data, ensure_ascii=False, indent=2))


def _setup_logging(level: str, verbose: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(TerminalSafeFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if verbose else getattr(logging, level.upper(), logging.INFO),
                        handlers=[handler])


# ---- commands -------------------------------------------------------------------


def cmd_check(args: argparse.Namespace) -> int:
    cfg = _load(args)
    policy = policy_from_config(cfg)
    reason = Reason(args.reason) if args.reason else None
    caller = caller_id_for_check(args.number, reason, args.name, policy.home_region)
    if args.number and caller.number_e164 is None and reason is None:
        raise CliError(f"{args.number!r} is not a phone number")
    lists = _lists_if_db(cfg)
    decision = decide(caller, lists, policy)
    out: dict[str, Any] = {**decision.as_dict(), "number_e164": caller.number_e164, "number_raw": caller.raw_number or None}
    if decision.matched is not None:
        out["matched"] = {"list": decision.matched.list.value, "entry": decision.matched.describe(),
                          "source": decision.matched.source, "note": decision.matched.note}
    _print_json(out)
    return EXIT_OK


def _local(iso: str | None, zone: tzinfo) -> str:
    """A stored UTC time as people read it ('2026-12-06 00:30:07 JST'); '' for none."""
    if not iso:
        return ""
    try:
        return local_stamp(parse_iso_utc(iso), zone)
    except ValueError:
        return iso  # a hand-edited row: show it as stored


def _existing_store(cfg: Config) -> Store | None:
    """The database for a read-only command, or None (after saying where we looked): never create one."""
    path = Path(cfg.store.db)
    if not path.exists():
        print(f"mamoru: no database at {path}: nothing recorded yet (`mamoru run` creates it; "
              "another one: --db F or [store] db)", file=sys.stderr)
        return None
    return _open_store(cfg)


def _lists_if_db(cfg: Config):
    from screening.core.rules import NoLists

    if not Path(cfg.store.db).exists():
        return NoLists()
    store = _open_store(cfg)
    try:
        return store.load_lists(datetime.now(UTC))
    finally:
        store.close()


def cmd_calls(args: argparse.Namespace) -> int:
    cfg = _load(args)
    store = _existing_store(cfg)
    if store is None:
        rows = []
    else:
        try:
            rows = store.recent_calls(limit=args.limit)
        finally:
            store.close()
    if args.json:
        _print_json([row.as_dict() for row in rows])
        return EXIT_OK
    if not rows:
        print("no calls yet")
        return EXIT_OK
    region = cfg.line.home_region
    zone = region_zone(region)  # people read local time with its zone; --json keeps UTC
    for row in rows:
        who = national_format(row.number_e164, region) if row.number_e164 else (row.raw_number or row.reason_code
                                                                                  or "-")
        # Caller ID is written by the caller: never let its bytes drive the terminal.
        print(terminal_safe(f"{row.id:>5}  {_local(row.started_at, zone)}  {who:<18} {row.action or '?':<15} "
                            f"{row.rule or '':<22} {row.state}  {row.reason or ''}"))
    return EXIT_OK


def _parse_expiry(args: argparse.Namespace) -> str | None:
    if args.days is not None:
        if args.days <= 0:
            raise CliError("--days must be a positive number of days")
        return (datetime.now(UTC) + timedelta(days=args.days)).strftime("%Y-%m-%dT%H:%M:%SZ")
    if args.expires:
        try:
            when = datetime.fromisoformat(args.expires)
        except ValueError as exc:
            raise CliError(f"--expires {args.expires!r}: use a date like 2027-03-31") from exc
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return None


def cmd_list(args: argparse.Namespace) -> int:
    kind = ListKind(args.list_kind)
    cfg = _load(args)
    region = cfg.line.home_region
    if args.list_action == "import":
        return _import_list(args, kind, cfg)
    if args.list_action in ("list", "export") and not Path(cfg.store.db).exists():
        _existing_store(cfg)  # says where it looked
        if args.list_action == "export":
            return _export_list(args, kind, None, region)
        if args.json:
            _print_json([])
        else:
            print(f"the {kind.value} list is empty")
        return EXIT_OK
    store = _open_store(cfg)
    try:
        if args.list_action == "export":
            return _export_list(args, kind, store, region)
        if args.list_action == "list":
            entries = store.list_entries(kind)
            if args.json:
                _print_json([_entry_dict(e) for e in entries])
            elif not entries:
                print(f"the {kind.value} list is empty")
            for e in entries if not args.json else ():
                expiry = f" (until {e.expires_at[:10]})" if e.expires_at else ""
                print(terminal_safe(f"{_entry_label(e, region):<28} {e.source:<10} {e.note}{expiry}"))
            return EXIT_OK
        try:
            match, value, value_end = parse_list_spec(args.number, region)
        except ListSpecError as exc:
            raise CliError(str(exc)) from exc
        if args.list_action == "add":
            entry = store.add_entry(ListEntry(kind, match, value, value_end, source=args.source, note=args.note,
                                              expires_at=_parse_expiry(args)))
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
    from blocklist.formats import ListFormat, RowProblem, detect_format, read_entries
    from blocklist.store.rows import FEED_SOURCE_PREFIX, StoreError

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
        store = _open_store(cfg)
        try:
            imported = store.import_entries(result.entries)
        except (StoreError, ValueError) as exc:
            raise CliError(f"nothing imported from {name}: {exc}") from exc
        finally:
            store.close()

    def problem_dict(p: RowProblem) -> dict[str, Any]:
        return {"line": p.line, "text": p.text, "problem": p.problem}

    if args.json:
        _print_json({"file": name, "list": kind.value, "format": result.format.value, "encoding": result.encoding,
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
    from blocklist.formats import ListFormat, write_entries
    from blocklist.store.rows import FEED_SOURCE_PREFIX

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
    partial = target.with_name(f".{target.name}.partial")
    try:  # via a temporary name: an interrupted export never leaves half a list behind
        partial.write_bytes(data)
        partial.replace(target)
    except OSError as exc:
        partial.unlink(missing_ok=True)
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
            "added_at": entry.added_at, "expires_at": entry.expires_at}


def cmd_config_check(args: argparse.Namespace) -> int:
    if args.file:  # `mamoru config check FILE` is what people type first
        if args.config and args.config != args.file:
            raise CliError(f"two files to check: {args.file} and --config {args.config}; give one")
        args.config = args.file
    cfg = _load(args)
    print(f"{cfg.source}: OK")
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from screening.runner import run_daemon  # composition root: imports the adapters

    cfg = _load(args)
    _setup_logging(cfg.log.level, args.verbose)
    if cfg.line.uri.startswith("sim:") and not args.verbose:
        # The demo prints each decision on stdout; the emulator's chatter is noise there.
        logging.getLogger("firmware.virtual_modem").setLevel(logging.WARNING)
        logging.getLogger("screening.session").setLevel(logging.WARNING)
        logging.getLogger("blocklist.store").setLevel(logging.WARNING)  # schema migrations of a fresh demo db
    stop = threading.Event()

    def _on_signal(signum: int, _frame: object) -> None:
        log.info("signal %d: stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    return run_daemon(cfg, stop, demo_db_explicit=bool(args.db))


def cmd_modem_emulate(args: argparse.Namespace) -> int:
    from screening.runner import emulate_modem

    _setup_logging("info", args.verbose)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    return emulate_modem(args, stop)


# ---- argument parsing -----------------------------------------------------------


def _common(p: argparse.ArgumentParser, json_flag: bool = False) -> None:
    p.add_argument("--config", metavar="F", help="TOML config (default: $MAMORU_CONFIG, /etc/mamoru/mamoru.toml)")
    p.add_argument("--db", metavar="F", help="SQLite database (overrides [store] db)")
    if json_flag:
        p.add_argument("--json", action="store_true", help="print JSON")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mamoru", description="Call screening for a household landline.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="screen calls on a line (default line: the config's, e.g. sim:)")
    _common(p)
    p.add_argument("--line", metavar="URI", help="modem:///dev/ttyACM0[?dialect=usr], sip://HOST:PORT, "
                   "sip://USER@REGISTRAR or sim:")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("check", help="show what mamoru would do with a caller, as JSON")
    _common(p, json_flag=True)
    p.add_argument("number", help="the number as shown (empty with --reason for no number)")
    p.add_argument("--reason", choices=[r.value for r in Reason], help="caller ID reason code")
    p.add_argument("--name", help="caller name as delivered")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("calls", help="the call log, newest first")
    _common(p, json_flag=True)
    p.add_argument("--limit", type=int, default=50)
    p.set_defaults(func=cmd_calls)

    for kind in ListKind:
        p = sub.add_parser(kind.value, help=f"manage the {kind.value} list")
        lsub = p.add_subparsers(dest="list_action", required=True)
        for action in ("add", "remove"):
            q = lsub.add_parser(action, help=f"{action} a number, prefix (0120*) or range (a..b)")
            _common(q)
            q.add_argument("number")
            if action == "add":
                q.add_argument("--note", default="")
                q.add_argument("--source", default="family" if kind is ListKind.ALLOW else "local")
                q.add_argument("--days", type=int, help="expire after N days")
                q.add_argument("--expires", metavar="DATE", help="expire on this date (ISO-8601)")
            q.set_defaults(func=cmd_list, list_kind=kind.value)
        q = lsub.add_parser("list", help="show the list")
        _common(q, json_flag=True)
        q.set_defaults(func=cmd_list, list_kind=kind.value)
        q = lsub.add_parser("import", help="add every entry of a list file (plain, CSV, FTC complaints, feed)")
        _common(q, json_flag=True)
        q.add_argument("file", metavar="FILE", help="the list file, or - for stdin (formats: docs/lists.md)")
        q.add_argument("--format", choices=["plain", "csv", "ftc", "feed"], help="default: detected from the header")
        q.add_argument("--source", help="where the numbers come from (default: ftc for FTC files, else "
                       f"{'family' if kind is ListKind.ALLOW else 'local'}); a CSV source column wins")
        q.add_argument("--note", default="", help="reason for rows that give none")
        q.add_argument("--days", type=int, help="expire after N days")
        q.add_argument("--expires", metavar="DATE", help="expire on this date (ISO-8601); caps each row's own expiry")
        q.add_argument("--strict", action="store_true", help="import nothing if any row has a problem")
        q.set_defaults(func=cmd_list, list_kind=kind.value)
        q = lsub.add_parser("export", help="write the list as plain, CSV (default) or feed")
        _common(q)
        q.add_argument("--format", choices=["plain", "csv", "feed"], default="csv")
        q.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")
        q.add_argument("--with-feeds", action="store_true", help="include entries delivered by signed feeds")
        q.set_defaults(func=cmd_list, list_kind=kind.value)

    p = sub.add_parser("config", help="configuration tools")
    csub = p.add_subparsers(dest="config_action", required=True)
    q = csub.add_parser("check", help="validate the config file and report every problem")
    _common(q)
    q.add_argument("file", nargs="?", metavar="FILE", help="the config file to check (same as --config FILE)")
    q.set_defaults(func=cmd_config_check)

    p = sub.add_parser("modem", help="modem tools")
    msub = p.add_subparsers(dest="modem_action", required=True)
    q = msub.add_parser("emulate", help="start a virtual voice modem on a pty and print its device path")
    q.add_argument("--dialect", choices=["usr", "conexant"], default="conexant")
    q.add_argument("--cadence", choices=["jp", "jp_nd", "na", "uk"], default="jp")
    q.add_argument("--scenario", metavar="F", help="TOML call scenario (default: the demo calls)")
    q.add_argument("--no-calls", action="store_true", help="place no calls, just be a modem")
    q.add_argument("--time-scale", type=float, default=1.0, help="<1 runs the scenario faster")
    q.add_argument("--link", metavar="PATH", help="also make this stable symlink to the pty")
    q.add_argument("-v", "--verbose", action="store_true")
    q.set_defaults(func=cmd_modem_emulate)

    from voice.asr_cli import add_asr_parsers  # argparse only; vosk is imported when a command runs
    from voice.detect_cli import add_detect_parser

    from screening.alerts import add_alert_parsers
    from screening.doctor import add_doctor_parser
    from screening.store_cli import add_store_parsers

    from blocklist.feed_cli import add_feed_parsers, add_publish_parsers
    from deploy.provisioning.cli import add_provision_parsers
    from voice.review_export import add_review_export_parser

    from screening.web.cli import add_web_parsers

    add_detect_parser(sub)
    add_asr_parsers(sub)
    add_alert_parsers(sub)
    add_doctor_parser(sub)
    add_store_parsers(sub)
    add_feed_parsers(sub)
    add_publish_parsers(sub)
    add_provision_parsers(sub)
    add_review_export_parser(sub)
    add_web_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not logging.getLogger().handlers and args.command not in ("run",) and args.func is not cmd_modem_emulate:
        _setup_logging("warning")
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"mamoru: configuration error:\n{exc}", file=sys.stderr)
        return EXIT_USAGE
    except CliError as exc:
        print(f"mamoru: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
