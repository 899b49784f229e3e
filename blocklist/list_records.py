"""Number-list files as numbered records: the line reader under ``blocklist.formats``.

Text in (already decoded), ``Record`` values and ``RowProblem`` values out, in file
order. Lines that must not reach a parser (over 64 KiB, NUL, undecodable) and CSV
quotes left open become problems here, so every format reads them the same way.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = [
    "MAX_LINE_CHARS", "Lines", "Record", "RowProblem", "csv_records", "decode_line", "excerpt", "plain_records",
    "split_header",
]  # fmt: skip

MAX_LINE_CHARS = 64 * 1024  # a real row is < 1 KiB; this bounds what one bad line costs
_MAX_RECORD_LINES = 100  # a quoted field spanning more lines is a quote left open
_EXCERPT_CHARS = 80


@dataclass(frozen=True, slots=True)
class RowProblem:
    """A row that was skipped. ``line`` is 1-based; ``text`` is printable and at most ~80 characters."""

    line: int
    text: str
    problem: str


def decode_line(raw: bytes) -> str:
    for encoding in ("utf-8", "cp932"):
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            continue
    return raw.decode("utf-8", "replace")


def split_header(line: str) -> list[str]:
    try:
        return next(csv.reader([line]), [])
    except csv.Error:
        return []


_LINE = re.compile(r"[^\r\n]*+(?:\r\n|\r|\n)|[^\r\n]++\Z")  # possessive: no backtracking over a long line
_SURROGATE = re.compile("[\udc80-\udcff]")


def excerpt(text: str) -> str:
    """At most 80 printable characters (+ "…"): undecodable bytes as \\xNN, controls escaped."""
    text = text.rstrip("\r\n")
    out: list[str] = []
    size = 0
    for ch in text[:_EXCERPT_CHARS]:
        if ch.isprintable():
            piece = ch
        elif "\udc80" <= ch <= "\udcff":
            piece = f"\\x{ord(ch) - 0xDC00:02x}"
        else:
            piece = ch.encode("unicode_escape").decode("ascii")
        if size + len(piece) > _EXCERPT_CHARS:
            return "".join(out) + "…"
        out.append(piece)
        size += len(piece)
    return "".join(out) + ("…" if len(text) > _EXCERPT_CHARS else "")


class _RunawayRecord(Exception):
    """A quoted field has gone on for more than _MAX_RECORD_LINES lines."""


class Lines:
    """The text's lines for ``csv.reader`` (or the plain reader), with their numbers.

    Lines that must not reach the parser (too long, NUL, undecodable) are queued
    as problems and replaced by an empty line. Splits on CRLF, LF and lone CR
    (old Mac Excel) alike; lines are sliced lazily from one string, so a 1 M-row
    file is never a list of lines and a 100 MB line is never copied.
    """

    def __init__(self, text: str, *, undecodable: bool) -> None:
        self._text = text
        self._matches = _LINE.finditer(text)
        self._undecodable = undecodable
        self.line = 0  # number of the last line handed out
        self.record: list[str] = []  # lines of the record being read
        self.pending: list[RowProblem] = []

    def __iter__(self) -> Lines:
        return self

    def __next__(self) -> str:
        if len(self.record) >= _MAX_RECORD_LINES:
            raise _RunawayRecord
        match = next(self._matches)  # StopIteration ends the reader
        self.line += 1
        start, end = match.span()
        if end - start > MAX_LINE_CHARS:
            tail = self._text[max(start, end - 2) : end]
            length = end - start - (len(tail) - len(tail.rstrip("\r\n")))  # without the line end
            line = self._text[start : start + _EXCERPT_CHARS + 1]
            self.pending.append(RowProblem(self.line, excerpt(line),
                                           f"line is {length:,} characters long (at most {MAX_LINE_CHARS:,})"))
            line = "\n"
        else:
            line = match.group()
            if "\x00" in line:
                self.pending.append(RowProblem(self.line, excerpt(line), "line contains a NUL byte"))
                line = "\n"
            elif self._undecodable and _SURROGATE.search(line):
                self.pending.append(RowProblem(self.line, excerpt(line),
                                               "line is not UTF-8 text (nor Shift-JIS): save the file as UTF-8"))
                line = "\n"
        self.record.append(line)
        return line

    def start_record(self) -> int:
        self.record.clear()
        return self.line + 1

    def record_text(self) -> str:
        return "".join(self.record)


@dataclass(slots=True)
class Record:
    line: int
    text: str
    fields: list[str]


def csv_records(lines: Lines) -> Iterator[Record | RowProblem]:
    """Non-blank CSV records with their first line, and problems, in file order."""
    reader = csv.reader(lines, strict=True)
    while True:
        first = lines.start_record()
        try:
            fields = next(reader)
        except StopIteration:
            break
        except _RunawayRecord:
            fields = None
            problem = f"a quoted field runs on for over {_MAX_RECORD_LINES} lines: is a closing quote missing?"
        except csv.Error as exc:
            fields = None
            problem = f"not readable as CSV: {exc}"
        yield from lines.pending
        lines.pending.clear()
        if fields is None:
            yield RowProblem(first, excerpt(lines.record_text()), problem)
        elif any(f.strip() for f in fields):
            yield Record(first, lines.record_text(), fields)
    yield from lines.pending


def plain_records(lines: Lines) -> Iterator[Record | RowProblem]:
    for line in lines:
        lines.record.clear()
        yield from lines.pending
        lines.pending.clear()
        body = line.strip()
        if body and not body.startswith("#"):
            yield Record(lines.line, line, [body])

