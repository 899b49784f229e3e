"""List files of other call screeners and phone books, read into number specs and written back.

Pure: text in, ``ForeignRow`` values out (``blocklist.formats`` turns them into ``ListEntry``
values with the same checks as its own formats); entries in, bytes out. ``docs/lists.md``
describes them for users.

``ncid`` -- NCID's ``ncidd.blacklist`` / ``ncidd.whitelist`` (man page ncidd.blacklist(5))
    Lines of expressions, a string of non-blank characters or everything between double quotes,
    separated by spaces, then an optional comment: ``#`` (ignored) or ``#=`` followed by the name
    to show for the caller, kept as the entry's reason. NCID matches an expression anywhere in
    the caller's number or name; mamoru matches numbers: an expression that is a whole number is
    that number, ``^digits`` (start of the number) is the prefix ``digits*``. Name expressions,
    regular expressions and partial numbers are row problems, named by line.
``vcard`` -- vCard 2.1/3.0/4.0 phone books (RFC 2426, RFC 6350)
    Android, iPhone, Google Contacts and Fritz!Box (CardDAV) exports. Folded lines are unfolded;
    every ``TEL`` of a card (``item1.TEL``, ``TEL;TYPE=cell:``, 4.0's ``tel:`` URIs) becomes an
    entry whose reason is the card's ``FN`` (or ``N``), so the web page shows the family's names.
    2.1's ``ENCODING=QUOTED-PRINTABLE`` names (Android's Japanese exports) are decoded.
``callattendant`` -- the lists of callattendant (emxsys/callattendant)
    Its ``Blacklist`` and ``Whitelist`` tables (``PhoneNo, Name, Reason, SystemDateTime``) as
    ``sqlite3 -header -csv callattendant.db "SELECT * FROM Blacklist"`` writes them, or its
    ``callattendant.db`` itself (the table of the list being imported into). The reason
    is ``Reason``, or ``Name`` when there is none (both, joined by " -- ", when both are given).
"""

from __future__ import annotations

import csv
import quopri
import re
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from io import StringIO

from blocklist.list_records import Lines, RowProblem, csv_records, excerpt
from screening.core.model import ListEntry, MatchKind
from screening.core.numbers import national_format, national_parts, region_dialling

__all__ = ["CALLATTENDANT_HEADER", "SQLITE_MAGIC", "ForeignRow", "callattendant_db_rows", "callattendant_rows", "looks_like_vcard", "ncid_rows",
           "vcard_rows", "write_callattendant", "write_ncid", "write_vcard"]

CALLATTENDANT_HEADER = ("PhoneNo", "Name", "Reason", "SystemDateTime")
_MAX_CARD_LINES = 2000  # a card is a few dozen lines; a card never closed must not swallow the file
_NCID_TOKEN = re.compile(r'"([^"]*)"|(\S+)')


@dataclass(frozen=True, slots=True)
class ForeignRow:
    """One number from a foreign list: where it was, how mamoru reads it, its reason."""

    line: int
    text: str
    spec: str
    note: str


# --------------------------------------------------------------------------- NCID


def _split_lines(text: str) -> list[str]:
    """CRLF, LF and lone CR end a line, as for mamoru's own formats (not str.splitlines' form feeds)."""
    lines = re.split(r"\r\n|\r|\n", text)
    return lines[:-1] if lines and lines[-1] == "" else lines


def ncid_rows(text: str) -> Iterator[ForeignRow | RowProblem]:
    for number, raw in enumerate(_split_lines(text), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        body, name = _ncid_comment(line)
        expressions = [m.group(1) if m.group(1) is not None else m.group(2) for m in _NCID_TOKEN.finditer(body)]
        if not expressions:
            yield RowProblem(number, excerpt(line), "no expression before the comment")
            continue
        for expression in expressions:
            spec = _ncid_spec(expression)
            if spec is None:
                yield RowProblem(number, excerpt(line), f"{expression[:40]!r} matches a name or part of a number in "
                                 "NCID; mamoru matches whole numbers or prefixes (^0120)")  # fmt: skip
            else:
                yield ForeignRow(number, excerpt(line), spec, name)


def _ncid_comment(line: str) -> tuple[str, str]:
    """(expressions, display name): a '#' outside quotes starts the comment; '#=' names the caller."""
    quoted = False
    for i, char in enumerate(line):
        if char == '"':
            quoted = not quoted
        elif char == "#" and not quoted:
            comment = line[i + 1 :]
            return line[:i], comment[1:].strip() if comment.startswith("=") else ""
    return line, ""


def _ncid_spec(expression: str) -> str | None:
    anchored = expression.startswith("^")
    digits = expression[1:] if anchored else expression
    if digits.startswith("1?"):  # NCID's "optional leading 1" for NANP numbers: the number itself
        digits = digits[2:]
    if not re.fullmatch(r"\+?[0-9][0-9\-]*", digits):
        return None
    return f"{digits}*" if anchored else digits


def write_ncid(entries: Iterable[ListEntry], home_region: str) -> bytes:
    """``number #= name`` lines (digits as a modem prints them); a range is listed as a comment."""
    out = ["# written by mamoru: numbers as the modem sends them; '#=' is the name shown\n"]
    for entry in entries:
        name = re.sub(r"[\r\n\"]+", " ", entry.note).strip()
        suffix = f" #= {name}" if name else ""
        if entry.match is MatchKind.EXACT:
            out.append(f"{_digits(entry.value, home_region)}{suffix}\n")
        elif entry.match is MatchKind.PREFIX:
            out.append(f"^{_prefix_digits(entry.value, home_region)}{suffix}\n")
        else:
            out.append(f"# not expressible in NCID (a range): {entry.describe()}{suffix}\n")
    return "".join(out).encode("utf-8")


def _prefix_digits(prefix: str, home_region: str) -> str:
    """``+81570`` -> ``0570`` at home (the national prefix put back), else the E.164 digits."""
    meta = region_dialling(home_region)
    code = f"+{meta.country_code}" if meta is not None else None
    if meta is not None and code is not None and meta.national_prefix and prefix.startswith(code):
        return meta.national_prefix + prefix[len(code):]
    return prefix


def _digits(e164: str, home_region: str) -> str:
    """``0312345678`` for a number of the home region (what its modem prints), else the E.164 form."""
    if national_parts(e164) is not None:
        national = re.sub(r"\D", "", national_format(e164, home_region))
        if national and not national_format(e164, home_region).startswith("+"):
            return national
    return e164


# --------------------------------------------------------------------------- vCard


def looks_like_vcard(head: str) -> bool:
    return head.lstrip("\ufeff \t\r\n")[:11].upper() == "BEGIN:VCARD"


def vcard_rows(text: str) -> Iterator[ForeignRow | RowProblem]:
    card: list[tuple[int, str]] | None = None
    for number, line in _unfolded(text):
        upper = line.strip().upper()
        if upper == "BEGIN:VCARD":
            if card is not None:
                yield RowProblem(card[0][0], excerpt(card[0][1]), "card without END:VCARD")
            card = [(number, line)]
        elif upper == "END:VCARD":
            if card is None:
                yield RowProblem(number, excerpt(line), "END:VCARD without BEGIN:VCARD")
            else:
                yield from _card_rows(card)
            card = None
        elif card is not None:
            card.append((number, line))
            if len(card) > _MAX_CARD_LINES:
                yield RowProblem(card[0][0], excerpt(card[0][1]), f"card longer than {_MAX_CARD_LINES} lines")
                card = None
        elif line.strip():
            yield RowProblem(number, excerpt(line), "text outside BEGIN:VCARD ... END:VCARD")
    if card is not None:
        yield RowProblem(card[0][0], excerpt(card[0][1]), "card without END:VCARD")


def _unfolded(text: str) -> Iterator[tuple[int, str]]:
    """(first line number, logical line): RFC folding (a line starting with space or tab continues the
    previous one) and 2.1 quoted-printable soft breaks (a line ending in '=')."""
    current: tuple[int, str] | None = None
    for number, line in enumerate(_split_lines(text), start=1):
        if current is not None and line[:1] in (" ", "\t"):
            current = (current[0], current[1] + line[1:])
            continue
        if current is not None and current[1].endswith("=") and "QUOTED-PRINTABLE" in current[1].upper():
            current = (current[0], current[1][:-1] + line)
            continue
        if current is not None:
            yield current
        current = (number, line)
    if current is not None:
        yield current


def _property(line: str) -> tuple[str, dict[str, str], str]:
    """``item1.TEL;TYPE=cell:value`` -> ("TEL", {"TYPE": "cell"}, "value")."""
    head, _, value = line.partition(":")
    name, *params = head.split(";")
    name = name.rpartition(".")[2].strip().upper()
    parsed: dict[str, str] = {}
    for param in params:
        key, eq, val = param.partition("=")
        parsed[key.strip().upper() if eq else "TYPE"] = val if eq else key
    return name, parsed, value


def _text_value(value: str, params: dict[str, str]) -> str:
    if params.get("ENCODING", "").upper() == "QUOTED-PRINTABLE":
        charset = params.get("CHARSET", "utf-8")
        try:
            value = quopri.decodestring(value.encode("latin-1", "replace")).decode(charset, "replace")
        except LookupError:
            value = quopri.decodestring(value.encode("latin-1", "replace")).decode("utf-8", "replace")
    return re.sub(r"\\([\\,;nN])", lambda m: "\n" if m.group(1) in "nN" else m.group(1), value)


def _card_rows(card: list[tuple[int, str]]) -> Iterator[ForeignRow | RowProblem]:
    name = ""
    phones: list[tuple[int, str, str]] = []
    for number, line in card[1:]:
        prop, params, value = _property(line)
        if prop == "FN":
            name = _text_value(value, params).strip()
        elif prop == "N" and not name:
            parts = [p.strip() for p in _text_value(value, params).split(";")]
            name = " ".join(p for p in (parts[0] if parts else "", parts[1] if len(parts) > 1 else "") if p)
        elif prop == "TEL":
            phones.append((number, line, value.strip()))
    for number, line, value in phones:
        spec = value[4:] if value.lower().startswith("tel:") else value
        spec = spec.split(";", 1)[0].strip()  # tel:+81-3-1234-5678;ext=12 -> the number
        if not spec:
            yield RowProblem(number, excerpt(line), "TEL without a number")
            continue
        yield ForeignRow(number, excerpt(line), spec, name)


def write_vcard(entries: Iterable[ListEntry]) -> bytes:
    """vCard 3.0, one card per name (its numbers as TEL lines, E.164); prefixes and ranges are left out."""
    cards: dict[str, list[str]] = {}
    for entry in entries:
        if entry.match is MatchKind.EXACT:
            cards.setdefault(entry.note.strip() or entry.value, []).append(entry.value)
    out: list[str] = []
    for name, numbers in cards.items():
        escaped = re.sub(r"([\\,;])", r"\\\1", re.sub(r"[\r\n]+", " ", name))
        out += ["BEGIN:VCARD", "VERSION:3.0", f"FN:{escaped}", f"N:{escaped};;;;"]
        out += [f"TEL;TYPE=VOICE:{number}" for number in numbers]
        out.append("END:VCARD")
    return "".join(f"{line}\r\n" for line in out).encode("utf-8")


# --------------------------------------------------------------------------- callattendant


def callattendant_rows(text: str) -> Iterator[ForeignRow | RowProblem]:
    records = csv_records(Lines(text, undecodable=False))
    header: list[str] | None = None
    for item in records:
        if isinstance(item, RowProblem):
            yield item
            continue
        if header is None:
            header = [cell.strip().lstrip("\ufeff") for cell in item.fields]
            if "PhoneNo" not in header:
                yield RowProblem(item.line, excerpt(item.text), "no PhoneNo column: expected "
                                 f"{','.join(CALLATTENDANT_HEADER)} (sqlite3 -header -csv)")  # fmt: skip
                return
            continue
        if len(item.fields) != len(header):
            yield RowProblem(item.line, excerpt(item.text), f"{len(item.fields)} fields, the header has {len(header)}")
            continue
        cells = dict(zip(header, item.fields, strict=True))
        name, reason = cells.get("Name", "").strip(), cells.get("Reason", "").strip()
        note = f"{name} -- {reason}" if name and reason else (reason or name)
        yield ForeignRow(item.line, excerpt(item.text), cells["PhoneNo"].strip(), note)


SQLITE_MAGIC = b"SQLite format 3\x00"
_CALLATTENDANT_TABLES = {True: "Blacklist", False: "Whitelist"}


def callattendant_db_rows(data: bytes, *, blocklist: bool) -> Iterator[ForeignRow | RowProblem]:
    """callattendant's own database file (``callattendant.db``): its Blacklist or Whitelist table.

    Read from the bytes (``sqlite3`` deserialize, nothing written anywhere); a row's "line" is its rowid.
    """
    table = _CALLATTENDANT_TABLES[blocklist]
    con = sqlite3.connect(":memory:")
    try:
        con.deserialize(data)
        rows = con.execute(f"SELECT rowid, PhoneNo, Name, Reason FROM {table} ORDER BY rowid").fetchall()
    except sqlite3.Error as exc:
        yield RowProblem(1, "", f"not a readable callattendant database (table {table}): {exc}")
        return
    finally:
        con.close()
    for rowid, number, name, reason in rows:
        text = excerpt(f"{table} row {rowid}: {number}")
        name, reason = str(name or "").strip(), str(reason or "").strip()
        note = f"{name} -- {reason}" if name and reason else (reason or name)
        yield ForeignRow(int(rowid), text, str(number or "").strip(), note)


def write_callattendant(entries: Iterable[ListEntry], home_region: str) -> bytes:
    """The CSV that ``sqlite3 -header -csv`` gives of its tables; exact numbers only (PhoneNo is a key)."""
    out = StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CALLATTENDANT_HEADER)
    for entry in entries:
        if entry.match is MatchKind.EXACT:
            when = entry.added_at.replace("T", " ").removesuffix("Z")[:19] if entry.added_at else ""
            writer.writerow((_digits(entry.value, home_region), "", entry.note, when))
    return out.getvalue().encode("utf-8")
