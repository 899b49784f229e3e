"""Text from callers, feeds and imports made safe for where it is shown: a terminal, a spreadsheet.

Caller ID is written by whoever places the call. A "number" holding
``ESC ] 0 ; … BEL`` retitles the terminal of whoever runs ``mamoru calls``, and
``ESC [ 2 J`` wipes it; a note ``=HYPERLINK("http://…")`` in a CSV export becomes
a live formula when a relative opens it in Excel or LibreOffice. Pure: no I/O.
"""

from __future__ import annotations

import logging
import re
import unicodedata

__all__ = ["TerminalSafeFormatter", "csv_cell", "csv_uncell", "pad_columns", "terminal_safe"]

# C0 and C1 controls, DEL, and the bidirectional overrides that make text read differently than it is
# (U+202A-U+202E, U+2066-U+2069). Tab and newline are allowed only where the caller says so.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_UNSAFE_KEEP_LINES = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")

# A spreadsheet treats a cell starting with these as a formula (or, for tab/CR, shifts it);
# OWASP's list. A leading apostrophe is escaped too, so reading back is exact.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "'")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def terminal_safe(text: str, *, keep_lines: bool = False) -> str:
    """``text`` with every control character shown as ``\\x1b``-style escapes, never sent raw."""
    return (_UNSAFE_KEEP_LINES if keep_lines else _UNSAFE).sub(_escape, text)


def csv_cell(text: str) -> str:
    """A free-text CSV cell that a spreadsheet shows as text: a formula-like start gets a leading ``'``."""
    return "'" + text if text.startswith(_FORMULA_START) else text


def csv_uncell(text: str) -> str:
    """Undo ``csv_cell`` when reading our own export back (``'=x`` -> ``=x``, ``''x`` -> ``'x``)."""
    return text[1:] if text.startswith("'") and text[1:].startswith(_FORMULA_START) else text


def pad_columns(text: str, columns: int) -> str:
    """Left-align in a terminal column: kana and kanji take two columns each."""
    width = sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)
    return text + " " * max(0, columns - width)


class TerminalSafeFormatter(logging.Formatter):
    """Log lines reach a terminal (or the journal, shown in one): escape controls, keep tracebacks' lines."""

    def format(self, record: logging.LogRecord) -> str:
        return terminal_safe(super().format(record), keep_lines=True)
