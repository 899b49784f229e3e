"""``mamoru detect``: score a transcript (or a JSONL batch of them) for phone fraud.

Why a command: families and volunteers reviewing a recorded call, and anyone
extending a phrase pack, need to see exactly which phrases fired and why,
without a phone line. Output is JSON so it can be diffed and scripted.

    mamoru detect [--lang ja|en|ko] [--config F] [FILE|-]
    mamoru detect --jsonl FILE|-        # {"id", "text", "lang"?} per line

In JSONL mode a bad line yields ``{"line": N, "id": ..., "error": ...}`` on its
own output line, the other lines are still scored, and the exit code is 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from screening.config import load_config
from voice.detector import FraudDetector, PhrasePack, PhrasePackError

EXIT_OK, EXIT_ERROR = 0, 1
DEFAULT_LANGUAGE = "ja"
LANGUAGES = ("ja", "en", "ko")


def register(subparsers: Any) -> None:
    """Register ``detect`` on the ``mamoru`` sub-command parser (``set_defaults(func=cmd_detect)``)."""
    p = subparsers.add_parser("detect", help="score a call transcript for phone fraud, as JSON")
    p.add_argument("--config", metavar="F", help="TOML config; its [voice] language is the default --lang")
    p.add_argument("--lang", choices=LANGUAGES, help="phrase pack language (default: config's, else ja)")
    source = p.add_mutually_exclusive_group()
    source.add_argument("file", nargs="?", metavar="FILE", help="transcript text file, or - for stdin (default)")
    source.add_argument("--jsonl", metavar="FILE", help='one {"id","text","lang"?} object per line; - for stdin')
    p.set_defaults(func=cmd_detect)


def cmd_detect(args: argparse.Namespace) -> int:
    """Print one JSON result (text mode) or one per input line (``--jsonl``)."""
    language = _default_language(args)
    jsonl = getattr(args, "jsonl", None)
    try:
        if jsonl:
            with _open_input(jsonl) as fh:
                return _detect_jsonl(fh, language, sys.stdout)
        with _open_input(getattr(args, "file", None) or "-") as fh:
            text = fh.read()
        detection = FraudDetector(PhrasePack.load(language)).detect(text)
    except (OSError, UnicodeDecodeError) as exc:
        print(f"mamoru: detect: cannot read input: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except PhrasePackError as exc:
        print(f"mamoru: detect: {exc}", file=sys.stderr)
        return EXIT_ERROR
    _print_json(detection.as_dict(), sys.stdout)
    return EXIT_OK


def _default_language(args: argparse.Namespace) -> str:
    """--lang, else the config's voice.language when --config is given, else Japanese."""
    if getattr(args, "lang", None):
        return str(args.lang)
    config = getattr(args, "config", None)
    if config:
        return str(load_config(Path(config)).voice.language)
    return DEFAULT_LANGUAGE


@contextmanager
def _open_input(name: str) -> Iterator[TextIO]:
    if name == "-":
        yield sys.stdin
    else:
        with open(name, encoding="utf-8") as fh:
            yield fh


def _detect_jsonl(lines: TextIO, default_language: str, out: TextIO) -> int:
    """Score each line independently; a bad line becomes an error object, never aborts the batch."""
    status = EXIT_OK
    detectors: dict[str, FraudDetector] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        result = _detect_line(line, number, default_language, detectors)
        if "error" in result:
            status = EXIT_ERROR
        _print_json(result, out)
    return status


def _detect_line(line: str, number: int, default_language: str, detectors: dict[str, FraudDetector]) -> dict[str, Any]:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        return {"line": number, "error": f"invalid JSON: {exc.msg} (column {exc.colno})"}
    if not isinstance(row, dict):
        return {"line": number, "error": "expected a JSON object {\"id\", \"text\", \"lang\"?}"}
    row_id = row.get("id")
    text, language = row.get("text"), row.get("lang", default_language)
    if not isinstance(text, str):
        return {"line": number, "id": row_id, "error": "\"text\" must be a string"}
    if language not in LANGUAGES:
        return {"line": number, "id": row_id, "error": f"unknown \"lang\" {language!r} (one of {', '.join(LANGUAGES)})"}
    if language not in detectors:
        detectors[language] = FraudDetector(PhrasePack.load(language))
    return {"id": row_id, **detectors[language].detect(text).as_dict()}


def _print_json(value: dict[str, Any], out: TextIO) -> None:
    out.write(json.dumps(value, ensure_ascii=False) + "\n")
    out.flush()
