"""``mamoru feed ...`` (on the unit) and ``mamoru publish ...`` (on the issuer's machine)."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

from blocklist.feed_publisher import (
    Expiry,
    FeedRepository,
    KeyRole,
    PublishError,
    PublishResult,
    feed_file,
)
from blocklist.feeds import (
    FeedError,
    FeedOutcome,
    FeedUpdate,
    add_feed,
    remove_feed,
    update_all,
    update_feed,
)  # fmt: skip
from blocklist.formats import ListFormat, read_entries, write_entries
from blocklist.store.rows import StoreError
from screening.cli.common import (
    CliError,
    add_common_args,
    existing_store,
    load,
    local_time,
    open_store,
)
from screening.core.clock import region_zone
from screening.core.model import ListKind
from screening.core.safe_text import terminal_safe
from screening.feed_wiring import feed_limits

ROLE_CHOICES = [r.value for r in KeyRole] + ["all"]
_DEFAULT = Expiry()


def register(subparsers: Any) -> None:
    _add_feed_parsers(subparsers)
    _add_publish_parsers(subparsers)


def _add_feed_parsers(subparsers: Any) -> None:
    """``mamoru feed add|update|list|remove``."""
    p = subparsers.add_parser("feed", help="signed number feeds this unit follows (police lists)")
    fsub = p.add_subparsers(dest="feed_action", required=True)
    q = fsub.add_parser("add", help="trust a feed: its base URL and its root metadata file, then fetch it")
    q.add_argument("name", help="short name, e.g. police-tokyo (a-z, 0-9, '-')")
    q.add_argument("url", help="base URL holding metadata/ and targets/")
    q.add_argument("--root", required=True, metavar="ROOT.json", help="the feed's root metadata, from its issuer")
    q.add_argument("--no-update", action="store_true", help="do not fetch the list now")
    add_common_args(q)
    q.set_defaults(func=cmd_feed_add)
    q = fsub.add_parser("update", help="check every feed (or one) now and apply new lists")
    q.add_argument("name", nargs="?")
    add_common_args(q, json_flag=True)
    q.set_defaults(func=cmd_feed_update)
    q = fsub.add_parser("list", help="feeds with version, entries, last check and last error")
    add_common_args(q, json_flag=True)
    q.set_defaults(func=cmd_feed_list)
    q = fsub.add_parser("remove", help="stop following a feed and delete its numbers")
    q.add_argument("name")
    add_common_args(q)
    q.set_defaults(func=cmd_feed_remove)


def _add_publish_parsers(subparsers: Any) -> None:
    """``mamoru publish init|numbers|rotate-keys|refresh`` (issuer side; needs no unit config)."""
    p = subparsers.add_parser("publish", help="issuer tools: a signed number feed (TUF repository)")
    psub = p.add_subparsers(dest="publish_action", required=True)
    q = psub.add_parser("init", help="create a feed repository: keys, metadata and an empty list")
    q.add_argument("dir", type=Path)
    q.add_argument("--expires-days", type=_days, default=_days_of(_DEFAULT.root), metavar="N",
                   help="root metadata lifetime (default %(default)s)")  # fmt: skip
    _lifetimes(q)
    q.set_defaults(func=cmd_publish_init)
    q = psub.add_parser("numbers", help="publish a new list from a CSV with a number,reason header")
    q.add_argument("dir", type=Path)
    q.add_argument("csv", type=Path, metavar="FILE.csv")
    q.add_argument("--region", default="JP", help="region for national numbers in the CSV (default JP)")
    q.add_argument("--empty", action="store_true", help="allow publishing an empty list (removes every number)")
    _lifetimes(q)
    q.set_defaults(func=cmd_publish_numbers)
    q = psub.add_parser("rotate-keys", help="new keys for a role; units follow on their next update")
    q.add_argument("dir", type=Path)
    q.add_argument("--role", choices=ROLE_CHOICES, default="all")
    _lifetimes(q, root=True)
    q.set_defaults(func=cmd_publish_rotate)
    q = psub.add_parser("refresh", help="re-sign timestamp and snapshot, list unchanged (run from cron)")
    q.add_argument("dir", type=Path)
    _lifetimes(q)
    q.set_defaults(func=cmd_publish_refresh)


def _days(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of days") from None
    if not 1 <= value <= 3650:
        raise argparse.ArgumentTypeError(f"{value} days: use 1-3650")
    return value


def _days_of(value: timedelta | object) -> int:
    assert isinstance(value, timedelta)
    return value.days


def _lifetimes(p: argparse.ArgumentParser, *, root: bool = False) -> None:
    for role in (KeyRole.TIMESTAMP, KeyRole.SNAPSHOT, KeyRole.TARGETS) + ((KeyRole.ROOT,) if root else ()):
        p.add_argument(f"--{role.value}-days", type=_days, default=_days_of(getattr(_DEFAULT, role.value)),
                       metavar="N", help=f"{role.value} metadata lifetime (default %(default)s)")  # fmt: skip


def _expiry(args: argparse.Namespace) -> Expiry:
    root = getattr(args, "root_days", None) or getattr(args, "expires_days", None) or _days_of(_DEFAULT.root)
    return Expiry(root=timedelta(days=root), targets=timedelta(days=args.targets_days),
                  snapshot=timedelta(days=args.snapshot_days), timestamp=timedelta(days=args.timestamp_days))


# ---- unit side ---------------------------------------------------------------------


def _feeds_context(args: argparse.Namespace) -> tuple[Any, Any]:
    cfg = load(args)
    return cfg, open_store(cfg)


def cmd_feed_add(args: argparse.Namespace) -> int:
    try:
        root_json = Path(args.root).read_bytes()
    except OSError as exc:
        raise CliError(f"{args.root}: {exc.strerror}") from exc
    cfg, store = _feeds_context(args)
    try:
        add_feed(store, cfg.feeds.dir, args.name, args.url, root_json, first_update=False,
                 max_age_days=cfg.feeds.max_age_days, limits=feed_limits(cfg))  # fmt: skip
        print(f"feed {args.name}: trusted ({store.feed(args.name)['url']})")
        if not args.no_update:
            result = update_feed(store, cfg.feeds.dir, args.name, max_age_days=cfg.feeds.max_age_days,
                                 limits=feed_limits(cfg))
            print(_describe(result) + ("" if result.ok else " (the feed stays added; it is retried)"))
    except (FeedError, StoreError) as exc:
        raise CliError(str(exc)) from exc
    finally:
        store.close()
    return 0


def cmd_feed_update(args: argparse.Namespace) -> int:
    cfg, store = _feeds_context(args)
    try:
        if args.name:
            results = [update_feed(store, cfg.feeds.dir, args.name, max_age_days=cfg.feeds.max_age_days,
                                   limits=feed_limits(cfg))]
        else:
            results = update_all(store, cfg.feeds.dir, max_age_days=cfg.feeds.max_age_days, limits=feed_limits(cfg))
    except (FeedError, StoreError) as exc:
        raise CliError(str(exc)) from exc
    finally:
        store.close()
    if args.json:
        print(json.dumps([_update_dict(r) for r in results], ensure_ascii=False, indent=2))
    elif not results:
        print("no feeds (add one with `mamoru feed add NAME URL --root ROOT.json`)")
    for result in results if not args.json else ():
        print(_describe(result))
    return 0 if all(r.ok for r in results) else 1


def cmd_feed_list(args: argparse.Namespace) -> int:
    cfg = load(args)
    store = existing_store(cfg)  # read-only: never creates a database
    if store is None:
        rows: list[dict[str, Any]] = []
    else:
        try:
            rows = store.feeds()
        except StoreError as exc:
            raise CliError(str(exc)) from exc
        finally:
            store.close()
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return 0
    if not rows:
        print("no feeds")
    zone = region_zone(cfg.line.home_region)  # people read local time; --json keeps UTC
    for row in rows:
        version = f"v{row['version']}" if row["version"] is not None else "never applied"
        print(terminal_safe(f"{row['name']:<16} {version:<14} {row['entries']:>9} entries  checked "
                            f"{local_time(row['checked_at'], zone) or 'never'}  {row['url']}"))  # fmt: skip
        if row["error"]:  # the words come partly from the feed server
            print(terminal_safe(f"{'':<16} last error {local_time(row['error_at'], zone)}: {row['error']}"))
    return 0


def cmd_feed_remove(args: argparse.Namespace) -> int:
    cfg, store = _feeds_context(args)
    try:
        removed = remove_feed(store, cfg.feeds.dir, args.name)
    except (FeedError, StoreError) as exc:
        raise CliError(str(exc)) from exc
    finally:
        store.close()
    if not removed:
        raise CliError(f"no feed named {args.name!r}")
    print(f"feed {args.name}: removed with its numbers")
    return 0


def _describe(result: FeedUpdate) -> str:
    if result.outcome is FeedOutcome.APPLIED:
        return f"feed {result.name}: applied version {result.version}, {result.entries} entries"
    if result.outcome is FeedOutcome.CURRENT:
        return f"feed {result.name}: version {result.version} is current ({result.entries} entries renewed)"
    return f"feed {result.name}: {result.outcome.value}: {result.reason}"


def _update_dict(result: FeedUpdate) -> dict[str, Any]:
    return {"name": result.name, "outcome": result.outcome.value, "version": result.version,
            "entries": result.entries, "refusal": result.refusal.value if result.refusal else None,
            "reason": result.reason}  # fmt: skip


# ---- issuer side --------------------------------------------------------------------


def cmd_publish_init(args: argparse.Namespace) -> int:
    repo = FeedRepository(args.dir)
    result = _publishing(lambda: repo.init(write_entries([], ListFormat.FEED, home_region="JP"), 0,
                                           expiry=_expiry(args)))  # fmt: skip
    print(f"feed repository created in {args.dir}: root v{result.root_version}, empty list published")
    print(f"  serve {repo.metadata_dir} and {repo.targets_dir} under one base URL; never serve {repo.keys_dir}")
    print(f"  units trust {repo.metadata_dir / 'root.json'} (`mamoru feed add NAME URL --root root.json`)")
    print(f"WARNING: {repo.keys_dir / 'root.pem'} is the root key: move it offline (USB stick in a safe). "
          "Only `publish rotate-keys` needs it.", file=sys.stderr)  # fmt: skip
    return 0


def cmd_publish_numbers(args: argparse.Namespace) -> int:
    try:
        data = args.csv.read_bytes()
    except OSError as exc:
        raise CliError(f"{args.csv}: {exc.strerror}") from exc
    imported = read_entries(data, ListFormat.CSV, kind=ListKind.BLOCK, home_region=args.region, source="publish")
    if imported.problems:
        for problem in imported.problems:
            print(f"{args.csv}:{problem.line}: {problem.problem}", file=sys.stderr)
        raise CliError(f"{args.csv}: {len(imported.problems)} problem(s); nothing published (fix the file)")
    if not imported.entries and not args.empty:
        raise CliError(f"{args.csv}: no numbers; publishing it would remove every number from every unit "
                       "(use --empty if that is what you want)")  # fmt: skip
    repo = FeedRepository(args.dir)
    result = _publishing(lambda: repo.publish_numbers(feed_file(imported.entries, args.region),
                                                      len(imported.entries), expiry=_expiry(args)))  # fmt: skip
    print(f"published {result.entries} numbers as targets v{result.targets_version} "
          f"(timestamp v{result.timestamp_version}, expires {result.timestamp_expires.isoformat()})")
    return 0


def cmd_publish_rotate(args: argparse.Namespace) -> int:
    roles = list(KeyRole) if args.role == "all" else [KeyRole(args.role)]
    repo = FeedRepository(args.dir)
    result = _publishing(lambda: repo.rotate_keys(roles, expiry=_expiry(args)))
    print(f"new {', '.join(r.value for r in roles)} key(s); root v{result.root_version} signed by old and new keys")
    if KeyRole.ROOT in roles:
        print(f"WARNING: move the new {repo.keys_dir / 'root.pem'} offline again.", file=sys.stderr)
    return 0


def cmd_publish_refresh(args: argparse.Namespace) -> int:
    repo = FeedRepository(args.dir)
    result = _publishing(lambda: repo.refresh(expiry=_expiry(args)))
    print(f"re-signed: timestamp v{result.timestamp_version} (expires {result.timestamp_expires.isoformat()}), "
          f"snapshot v{result.snapshot_version}, targets v{result.targets_version}, {result.entries} numbers")
    return 0


def _publishing(action: Any) -> PublishResult:
    try:
        result: PublishResult = action()
    except PublishError as exc:
        raise CliError(str(exc)) from exc
    except OSError as exc:
        raise CliError(f"{exc.filename or 'feed repository'}: {exc.strerror or exc}") from exc
    for warning in result.warnings:
        print(f"WARNING: {warning}", file=sys.stderr)
    return result
