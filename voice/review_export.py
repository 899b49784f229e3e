"""``mamoru review-export``: calls people marked fraud / not fraud, as evaluation data for the detector.

Families mark calls on the web page ("it was fraud" / "it was not"). Those labels
are the only ground truth from real lines, so this writes them in the input format
of ``mamoru detect --jsonl`` — one ``{"id", "text", "lang"}`` object per line, plus
``label`` (``fraud`` / ``not_fraud``), ``detector_verdict`` (what the detector said
before the review) and ``reviewed_at`` — so a phrase-pack change can be scored
against them:

    mamoru review-export -o reviewed.jsonl
    mamoru detect --jsonl reviewed.jsonl      # compare each verdict with the label

Calls without a transcript (no speech model, or nothing said) are skipped and counted.
Transcripts are what callers said: the file is personal data, written mode 0600.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from blocklist.store import Store
from blocklist.store.rows import CallRow, StoreError
from screening.core.model import EventKind
from screening.config import ConfigError, load_config

log = logging.getLogger(__name__)

EXIT_OK, EXIT_ERROR = 0, 1
LANGUAGES = ("ja", "en", "ko")


def add_review_export_parser(subparsers: Any) -> None:
    """Register ``review-export`` on the ``mamoru`` sub-command parser."""
    p = subparsers.add_parser(
        "review-export", help="reviewed calls' transcripts and labels as JSONL for `mamoru detect --jsonl`")
    p.add_argument("--config", metavar="F", help="TOML config (its [store] db and [voice] language)")
    p.add_argument("--db", metavar="F", help="SQLite database (overrides [store] db)")
    p.add_argument("--lang", choices=LANGUAGES,
                   help="language of the transcripts (default: the config's voice language)")  # fmt: skip
    p.add_argument("-o", "--output", metavar="FILE", default="-", help="write here instead of stdout")
    p.set_defaults(func=cmd_review_export)


def review_records(store: Store, language: str, rows: list[CallRow] | None = None) -> Iterator[dict[str, Any]]:
    """One record per reviewed call (``rows``, default all of them) with a transcript, oldest first."""
    for row in store.reviewed_calls() if rows is None else rows:
        text = _transcript(store, row)
        if not text or row.review_label is None:
            continue
        yield {"id": row.id, "text": text, "lang": language, "label": row.review_label.value,
               "detector_verdict": _detector_verdict(store, row), "reviewed_at": row.reviewed_at}  # fmt: skip


def _transcript(store: Store, row: CallRow) -> str:
    """The stored transcript; else the live segments (a call cut off before its end-of-call update)."""
    if row.transcript and row.transcript.strip():
        return row.transcript
    texts = [str(e.detail["text"]) for e in store.events_for(row.id)
             if e.kind == EventKind.TRANSCRIPT and isinstance(e.detail.get("text"), str)]  # fmt: skip
    return " ".join(t for t in texts if t)


def _detector_verdict(store: Store, row: CallRow) -> str | None:
    """The verdict before the first review: a fraud mark overwrites the call's verdict column."""
    for event in store.events_for(row.id):
        if event.kind == EventKind.REVIEW:
            verdict = event.detail.get("detector_verdict")
            return verdict if isinstance(verdict, str) else None
    return row.verdict.value if row.verdict else None


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
    target = Path(output)
    partial = target.with_name(f".{target.name}.partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # callers' words: private
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        partial.replace(target)
    except OSError:
        partial.unlink(missing_ok=True)
        raise
