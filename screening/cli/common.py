"""The plumbing every ``mamoru`` command group shares: the error type, exit codes, the common
options, config loading and opening the database. It sits at the bottom of the CLI: it imports
no command group and no feature imports it."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import tzinfo
from pathlib import Path
from typing import Any

from blocklist.lists import parse_iso_utc
from blocklist.store import Store
from screening.config import Config, load_config
from screening.core.clock import local_stamp

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


class CliError(Exception):
    """A user-facing error: printed as one line, exit code 1."""


def add_common_args(p: argparse.ArgumentParser, json_flag: bool = False) -> None:
    p.add_argument("--config", metavar="F", help="TOML config (default: $MAMORU_CONFIG, /etc/mamoru/mamoru.toml)")
    p.add_argument("--db", metavar="F", help="SQLite database (overrides [store] db)")
    if json_flag:
        p.add_argument("--json", action="store_true", help="print JSON")


def load(args: argparse.Namespace) -> Config:
    """The config named by ``--config`` (or the default), with ``--db`` and ``--line`` applied."""
    cfg = load_config(Path(args.config) if args.config else None)
    overrides: dict[str, Any] = {}
    if getattr(args, "db", None):
        overrides["db"] = args.db
    if getattr(args, "line", None):
        overrides["line_uri"] = args.line
    return cfg.with_overrides(**overrides) if overrides else cfg


def open_store(cfg: Config) -> Store:
    path = Path(cfg.store.db)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Not the daemon: never mark a call that is in progress right now as interrupted.
    store = Store(path, recover_calls=False)
    store.open()
    return store


def existing_store(cfg: Config) -> Store | None:
    """The database for a read-only command, or None (after saying where we looked): never create one."""
    path = Path(cfg.store.db)
    if not path.exists():
        print(f"mamoru: no database at {path}: nothing recorded yet (`mamoru run` creates it; "
              "another one: --db F or [store] db)", file=sys.stderr)
        return None
    return open_store(cfg)


def local_time(iso: str | None, zone: tzinfo) -> str:
    """A stored UTC time as people read it ('2026-12-06 00:30:07 JST'); '' for none."""
    if not iso:
        return ""
    try:
        return local_stamp(parse_iso_utc(iso), zone)
    except ValueError:
        return iso  # a hand-edited row: show it as stored


def print_json(data: Any) -> None:
    print(json.dumps(data, ensure_ascii=False, indent=2))
