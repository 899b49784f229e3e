"""``mamoru review-export``: reviewed calls as JSONL for ``mamoru detect --jsonl`` (the records
themselves: :mod:`voice.review_export`). Transcripts are what callers said: the file is personal
data, written mode 0600."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from blocklist.store import Store
from blocklist.store.rows import StoreError
from screening.config import ConfigError, load_config
from screening.core.files import atomic_write_text
from voice.review_export import review_records

EXIT_OK, EXIT_ERROR = 0, 1
LANGUAGES = ("ja", "en", "ko")


def register(subparsers: Any) -> None:
    """Register ``review-export`` on the ``mamoru`` sub-command parser."""
    p = subparsers.add_parser(
        "review-export", help="reviewed calls' transcripts and labels as JSONL for `mamoru detect --jsonl`")
    p.add_argument("--config", metavar="F", help="TOML config (its [store] db and [voice] language)")
    p.add_argument("--db", metavar="F", help="SQLite database (overrides [store] db)")
    p.add_argument("--lang", choices=LANGUAGES,
                   help="language of the transcripts (default: the config's voice language)")  # fmt: skip
    p.add_argument("-o", "--output", metavar="FILE", default="-", help="write here instead of stdout")
    p.set_defaults(func=cmd_review_export)


def cmd_review_export(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(Path(args.config) if args.config else None)
        if args.db:
            cfg = cfg.with_overrides(db=args.db)
    except ConfigError as exc:
        print(f"mamoru: configuration error:\n{exc}", file=sys.stderr)
        return EXIT_ERROR
    db = Path(cfg.store.db)
    if not db.exists():
        print(f"mamoru: review-export: no database at {db}", file=sys.stderr)
        return EXIT_ERROR
    language = args.lang or cfg.voice.language.value
    store = Store(db, recover_calls=False)  # not the daemon: never touch calls in progress
    try:
        store.open()
        rows = store.reviewed_calls()
        lines = [json.dumps(r, ensure_ascii=False) + "\n" for r in review_records(store, language, rows)]
    except StoreError as exc:
        print(f"mamoru: review-export: {exc}", file=sys.stderr)
        return EXIT_ERROR
    finally:
        store.close()
    try:
        _write("".join(lines), args.output)
    except OSError as exc:
        print(f"mamoru: review-export: cannot write {args.output}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_ERROR
    skipped = len(rows) - len(lines)
    print(f"exported {len(lines)} reviewed call(s)" + (f"; {skipped} without a transcript skipped" if skipped else ""),
          file=sys.stderr)  # fmt: skip
    return EXIT_OK


def _write(text: str, output: str) -> None:
    if output == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    atomic_write_text(Path(output), text, mode=0o600)  # callers' words: private
