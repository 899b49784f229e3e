"""``mamoru detect``: score a transcript (or a JSONL batch of them) for phone fraud.

Why a command: families and volunteers reviewing a recorded call, and anyone
extending a phrase pack, need to see exactly which phrases fired and why,
without a phone line. Output is JSON so it can be diffed and scripted.

    mamoru detect [--lang ja|en|ko] [--config F] [--explain] [FILE|-]
    mamoru detect --jsonl FILE|-        # {"id", "text", "lang"?} per line
    mamoru transcribe --json call.wav | mamoru detect    # segments: flags carry seconds

FILE may be plain text or the JSON that ``mamoru transcribe --json`` prints; for
the latter the segments are scored in call order and each flag's start/end are
seconds into the call ("positions": "seconds"), else character offsets. Every
flag says how it matched: "text", "reading" (Japanese kana reading) or
"fuzzy_reading" (the reading within a few edits, long words only).

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
from voice.detector import Detection, FraudDetector, PhrasePack, PhrasePackError, StreamingDetector

EXIT_OK, EXIT_ERROR = 0, 1
DEFAULT_LANGUAGE = "ja"
LANGUAGES = ("ja", "en", "ko")


def register(subparsers: Any) -> None:
    """Register ``detect`` on the ``mamoru`` sub-command parser (``set_defaults(func=cmd_detect)``)."""
    p = subparsers.add_parser("detect", help="score a call transcript for phone fraud, as JSON")
    p.add_argument("--config", metavar="F", help="TOML config; its [voice] language is the default --lang")
    p.add_argument("--lang", choices=LANGUAGES, help="phrase pack language (default: config's, else ja)")
    p.add_argument("--explain", action="store_true", help="one readable line per flag instead of JSON")
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
        transcript = _transcript(text)
        if transcript is not None:
            language = str(transcript.get("language") or language) if not getattr(args, "lang", None) else language
            if language not in LANGUAGES:
                raise PhrasePackError(f"transcript language {language!r} has no phrase pack")
            detection = _detect_segments(PhrasePack.load(language), transcript["segments"])
            result = {**detection.as_dict(), "positions": "seconds"}
        else:
            detection = FraudDetector(PhrasePack.load(language)).detect(text)
            result = detection.as_dict()
    except (OSError, UnicodeDecodeError) as exc:
        print(f"mamoru: detect: cannot read input: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except PhrasePackError as exc:
        print(f"mamoru: detect: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if getattr(args, "explain", False):
        _explain(detection, "s" if transcript is not None else "", sys.stdout)
    else:
        _print_json(result, sys.stdout)
    return EXIT_OK


def _transcript(text: str) -> dict[str, Any] | None:
    """The ``mamoru transcribe --json`` document in ``text``, if it is one (else plain text)."""
    if not text.lstrip().startswith("{"):
        return None
    try:
        document = json.loads(text)
    except json.JSONDecodeError:
        return None
    if not isinstance(document, dict) or not isinstance(document.get("segments"), list):
        return None
    return document


def _detect_segments(pack: PhrasePack, segments: list[Any]) -> Detection:
    """Score transcript segments in call order, as the live call does, so flags carry call times."""
    detector = StreamingDetector(pack)
    for seg in segments:
        if not isinstance(seg, dict) or not isinstance(seg.get("text"), str):
            raise PhrasePackError("transcript segment without a \"text\" string")
        words = [(str(w["text"]), float(w["start_s"]), float(w["end_s"])) for w in seg.get("words") or []
                 if isinstance(w, dict) and {"text", "start_s", "end_s"} <= w.keys()]
        detector.add_segment(seg["text"], float(seg.get("start_s", 0.0)), float(seg.get("end_s", 0.0)), words)
    return detector.detection


def _explain(detection: Detection, unit: str, out: TextIO) -> None:
    out.write(f"{detection.verdict.value} (score {detection.score})\n")
    for f in detection.flags:
        where = f"{f.start:.2f}-{f.end:.2f} {unit}" if unit else f"chars {int(f.start)}-{int(f.end)}"
        out.write(f"  [{where}] {f.matched!r} {f.category} <- {f.phrase} ({f.how.value.replace('_', ' ')})\n")


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
