"""Number-list files: reading and writing the formats people and feeds exchange.

Pure: bytes in, ``ListEntry`` values out (and back); no I/O, no clock. The CLI
(``mamoru block|allow import|export``) and the signed feeds (``blocklist.feeds``)
use it; ``docs/lists.md`` is the user-facing description of the same formats.
The line reader every format shares is ``blocklist.list_records``; the fast path
for numbers already in E.164 form is ``blocklist.list_numbers``.

Formats
-------
``plain``
    One entry per line, in anything ``mamoru block add`` takes: a number in any
    written form (``03-1234-5678``, ``+81 3 1234 5678``), a prefix (``0120*``) or a
    range (``03-1234-0000..03-1234-9999``). ``#`` starts a comment: a line that
    starts with it is skipped, text after it on an entry's line is that entry's
    reason. Blank lines are skipped.
``csv``
    A header row, then one entry per row. Required: a ``number`` column (also
    ``phone``, ``phone_number``, ``電話番号``), written as in ``plain``. Optional:
    ``reason`` (also ``note``, ``理由``, ``メモ``, ``備考``), ``expires`` (ISO date
    or date-time; a date means 00:00 UTC that day, as ``--expires`` does), ``list``
    (``allow``/``block``: overrides the list being imported into), ``source``
    (overrides ``--source``; ``feed:…`` is reserved for signed feeds) and ``added``.
    Other columns are ignored; header names are case-insensitive. Every row must
    have as many fields as the header.
``ftc``
    The US FTC Do-Not-Call complaint data (``Company_Phone_Number, Created_Date,
    Violation_Date, Consumer_City, Consumer_State, Consumer_Area_Code, Subject,
    Recorded_Message_Or_Robocall``). Numbers are 10-digit NANP numbers, so they
    are read as US numbers whatever the unit's home region. The reason is the
    ``Subject``, plus `` (robocall)`` when the last column says so. The file has
    one row per complaint: a number's first row is kept, repeats are counted in
    ``duplicates``, not reported.
``feed`` (``mamoru-feed/1``, what a signed TUF feed carries)
    UTF-8 CSV whose first line is exactly ``number,reason,expires``. ``number``
    is E.164 only, ASCII, no separators: ``+81312345678``, a prefix ``+81120*`` or
    a range ``+81312340000..+81312349999``; a national form (``0312345678``) is a
    row problem, because a feed is read by units in many regions and must mean
    the same number in all of them. ``reason`` is free text; ``expires`` is an
    optional ISO-8601 UTC time. All entries are block entries.

Every format: UTF-8 with or without a BOM. ``plain``, ``csv`` and ``ftc`` also
read Shift-JIS (cp932, what Japanese Excel writes) when the file is not valid
UTF-8, and log that they did. A row's expiry is capped by the ``expires_at``
argument (``--days``/``--expires``, or a feed's maximum age): the earlier wins.
An empty reason takes the ``note`` argument.

Bad input never raises: a row that cannot be used becomes a ``RowProblem`` (its
1-based line number, up to 80 characters of its text, what is wrong) and the
rest is read on. That covers unparseable numbers, wrong field counts, bad
expiry dates, NUL bytes, lines over 64 KiB, bytes that are not text, a quote
left open (a quoted field may span lines, as Excel writes a cell with a line
break, but at most 100), and a header without a number column.
"""

from __future__ import annotations

import csv
import logging
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from io import StringIO

from blocklist.interop_formats import (
    SQLITE_MAGIC,
    ForeignRow,
    callattendant_db_rows,
    callattendant_rows,
    looks_like_vcard,
    ncid_rows,
    vcard_rows,
    write_callattendant,
    write_ncid,
    write_vcard,
)  # fmt: skip
from blocklist.list_numbers import country_code_of, ftc_number, list_spec
from blocklist.list_records import (
    MAX_LINE_CHARS,
    Lines,
    Record,
    RowProblem,
    csv_records,
    decode_line,
    excerpt,
    plain_records,
    split_header,
)  # fmt: skip
from blocklist.lists import ListSpecError, parse_list_spec
from blocklist.store.rows import FEED_SOURCE_PREFIX
from screening.core.clock import iso_utc, parse_iso_utc
from screening.core.model import ListEntry, ListKind, MatchKind
from screening.core.numbers import national_format, national_parts, region_dialling
from screening.core.safe_text import csv_cell, csv_uncell

__all__ = [
    "FEED_FORMAT_ID", "FEED_HEADER", "EntryStream", "ImportResult", "ListFormat", "detect_format",
    "iter_entries", "read_entries", "read_feed", "write_entries",
]  # fmt: skip

log = logging.getLogger(__name__)

FEED_HEADER = "number,reason,expires"
FEED_FORMAT_ID = "mamoru-feed/1"

_BOM = b"\xef\xbb\xbf"
_MAX_NOTE_CHARS = 500
_MAX_SOURCE_CHARS = 64
_ANY_REGION = "ZZ"  # phonenumbers' "unknown region": fine for numbers written with '+'
_NOTE_CACHE_MAX = 10_000  # distinct reasons shared as one str each (a feed repeats a few)


class ListFormat(StrEnum):
    PLAIN = "plain"
    CSV = "csv"
    FTC = "ftc"
    FEED = "feed"
    NCID = "ncid"  # ncidd.blacklist / ncidd.whitelist (blocklist.interop_formats)
    VCARD = "vcard"  # phone books: Android, iPhone, Google Contacts, Fritz!Box
    CALLATTENDANT = "callattendant"  # callattendant's Blacklist/Whitelist tables as CSV


@dataclass(slots=True)
class ImportResult:
    entries: list[ListEntry]
    problems: list[RowProblem]
    format: ListFormat
    rows: int  # data rows read (not the header, blank or comment lines), problems included
    duplicates: int = 0  # FTC repeat complaints about a number already read
    encoding: str = "utf-8"


# --------------------------------------------------------------------------- detection & decoding


# A feed prefix must name at least this many digits after the country code (+81120* yes, +81* no).
MIN_FEED_PREFIX_NATIONAL_DIGITS = 2


def detect_format(data: bytes) -> ListFormat:
    """Guess the format from the header: FEED if line 1 is exactly FEED_HEADER; a SQLite file is
    callattendant's database, ``BEGIN:VCARD`` a VCARD; FTC, CALLATTENDANT (``PhoneNo``) or CSV by
    the first non-blank line's column names; NCID if a line has a ``#=`` name comment; else PLAIN."""
    head = data[: MAX_LINE_CHARS * 4].removeprefix(_BOM)
    first = re.split(rb"\r\n|\r|\n", head, maxsplit=1)[0]
    if first == FEED_HEADER.encode():
        return ListFormat.FEED
    if data.startswith(SQLITE_MAGIC):  # callattendant.db itself
        return ListFormat.CALLATTENDANT
    if looks_like_vcard(head[:64].decode("utf-8", "replace")):
        return ListFormat.VCARD
    for raw in re.split(rb"\r\n|\r|\n", head):
        if raw.strip():
            names = {_column_name(n) for n in split_header(decode_line(raw))}
            if "company_phone_number" in names:
                return ListFormat.FTC
            if "phoneno" in names:
                return ListFormat.CALLATTENDANT
            if any(_CSV_COLUMNS.get(n) == "number" for n in names):
                return ListFormat.CSV
            break
    if re.search(rb"(?m)^\S[^#\r\n]*#=", head):  # NCID's '#= name' comment (a CSV header wins)
        return ListFormat.NCID
    return ListFormat.PLAIN


def _decode(data: bytes, *, legacy: bool) -> tuple[str, str, bool]:
    """(text, encoding used, whether some bytes were undecodable). Undecodable bytes become
    lone surrogates (``surrogateescape``), which the line reader reports as problems of their lines."""
    data = data.removeprefix(_BOM)
    try:
        return data.decode("utf-8"), "utf-8", False
    except UnicodeDecodeError:
        pass
    if legacy:
        try:
            text = data.decode("cp932")
        except UnicodeDecodeError:
            pass
        else:
            # Excel never writes cp932's user-defined area (0xF0-0xF9 lead bytes, 0xFD-0xFF),
            # but arbitrary binary decodes to it: such a file is not Shift-JIS.
            if _PRIVATE_USE.search(text) is None:
                log.warning("list file is not UTF-8: read it as Shift-JIS (cp932)")
                return text, "cp932", False
    return data.decode("utf-8", "surrogateescape"), "utf-8", True


_PRIVATE_USE = re.compile("[\ue000-\uf8ff]")


# --------------------------------------------------------------------------- dates


@lru_cache(maxsize=4096)
def _iso(text: str) -> str:
    """ISO-8601 date or date-time -> the store's UTC form. Raises ValueError."""
    return iso_utc(parse_iso_utc(text))


# --------------------------------------------------------------------------- reading


_CSV_COLUMNS = {
    "number": "number", "phone": "number", "phone_number": "number", "電話番号": "number",
    "reason": "reason", "note": "reason", "理由": "reason", "メモ": "reason", "備考": "reason",
    "expires": "expires", "expires_at": "expires", "有効期限": "expires",
    "list": "list", "source": "source", "added": "added", "added_at": "added",
}  # fmt: skip
_FTC_NUMBER = "company_phone_number"
_FTC_SUBJECT = "subject"
_FTC_ROBOCALL = "recorded_message_or_robocall"
_ROBOCALL_YES = frozenset({"y", "yes", "robocall", "true", "1"})
_FEED_SPEC = re.compile(r"\+[0-9]+(?:\*|\.\.\+[0-9]+)?")


def _column_name(name: str) -> str:
    folded = unicodedata.normalize("NFKC", name).strip().lstrip("\ufeff").lower()
    return re.sub(r"[\s\-]+", "_", folded)


class _Skip(Exception):
    """A row's problem, raised inside a row handler and turned into a RowProblem."""


_Handler = Callable[[list[str]], ListEntry | None]  # one data row -> entry, or None for a repeat


class EntryStream(Iterator[ListEntry | RowProblem]):
    """What ``iter_entries`` returns: entries and problems in file order, plus what was
    learnt about the file (``format``, ``encoding``; ``rows`` and ``duplicates`` so far)."""

    def __init__(self, data: bytes, fmt: ListFormat | None, *, kind: ListKind, home_region: str, source: str,
                 expires_at: str | None, note: str) -> None:  # fmt: skip
        self.format = fmt if fmt is not None else detect_format(data)
        self.rows = 0
        self.duplicates = 0
        self._kind = ListKind.BLOCK if self.format is ListFormat.FEED else kind
        self._region = home_region
        self._source = source
        self._cap = _iso(expires_at) if expires_at else None  # ValueError: the caller's bug
        self._note = note
        self._notes: dict[str, str] = {}
        text, self.encoding, undecodable = _decode(data, legacy=self.format is not ListFormat.FEED)
        self._text = text
        self._data = data
        self._lines = Lines(text, undecodable=undecodable)
        self._items = self._read()

    def __iter__(self) -> EntryStream:
        return self

    def __next__(self) -> ListEntry | RowProblem:
        return next(self._items)

    def _read(self) -> Iterator[ListEntry | RowProblem]:
        if self.format is ListFormat.CALLATTENDANT and self._data.startswith(SQLITE_MAGIC):
            yield from self._foreign(callattendant_db_rows(self._data, blocklist=self._kind is ListKind.BLOCK))
            return
        foreign = _FOREIGN_READERS.get(self.format)
        if foreign is not None:
            yield from self._foreign(foreign(self._text))
            return
        if self.format is ListFormat.PLAIN:
            yield from self._rows(plain_records(self._lines), self._plain_row)
            return
        records = csv_records(self._lines)
        for item in records:
            if isinstance(item, RowProblem):
                self.rows += 1
                yield item
                continue
            try:
                handler = self._header(item)
            except _Skip as exc:
                yield RowProblem(item.line, excerpt(item.text), str(exc))
                return
            yield from self._rows(records, handler)
            return
        if self.format is ListFormat.FEED:  # not even a header
            yield RowProblem(1, "", f"empty: a mamoru feed starts with the line {FEED_HEADER!r}")

    def _foreign(self, rows: Iterable[ForeignRow | RowProblem]) -> Iterator[ListEntry | RowProblem]:
        for row in rows:
            self.rows += 1
            if isinstance(row, RowProblem):
                yield row
                continue
            if _NOT_TEXT.search(row.spec) or _NOT_TEXT.search(row.note):
                yield RowProblem(row.line, excerpt(row.text), "bytes that are not text, or a NUL")
                continue
            try:
                yield self._entry(row.spec, reason=row.note, expires="", kind=self._kind, source=self._source, added="")
            except (_Skip, ListSpecError) as exc:
                yield RowProblem(row.line, row.text, str(exc))

    def _rows(self, records: Iterable[Record | RowProblem], handler: _Handler) -> Iterator[ListEntry | RowProblem]:
        for item in records:
            self.rows += 1
            if isinstance(item, RowProblem):
                yield item
                continue
            try:
                entry = handler(item.fields)
            except (_Skip, ListSpecError) as exc:
                yield RowProblem(item.line, excerpt(item.text), str(exc))
                continue
            if entry is None:
                self.duplicates += 1
            else:
                yield entry

    # ---- headers: each returns the row handler for the rest of the file

    def _header(self, record: Record) -> _Handler:
        if self.format is ListFormat.FEED:
            if record.line != 1 or record.fields != FEED_HEADER.split(","):
                raise _Skip(f"not a mamoru feed: the first line must be exactly {FEED_HEADER!r}")
            return self._feed_row
        names = [_column_name(n) for n in record.fields]
        if self.format is ListFormat.FTC:
            if _FTC_NUMBER not in names:
                raise _Skip("no Company_Phone_Number column: not an FTC Do-Not-Call complaint file")
            return self._ftc_handler(names)
        return self._csv_handler(names)

    def _csv_handler(self, names: list[str]) -> _Handler:
        columns: dict[str, int] = {}
        for index, name in enumerate(names):
            key = _CSV_COLUMNS.get(name)
            if key is None:
                continue
            if key in columns:
                raise _Skip(f"columns {names[columns[key]]!r} and {name!r} both give the {key}")
            columns[key] = index
        if "number" not in columns:
            found = ", ".join(repr(n) for n in names) or "nothing"
            raise _Skip(f"the header has no 'number' (or 'phone') column; found {found}")
        width = len(names)
        number = columns["number"]
        reason, expires, kind, source, added = (columns.get(k) for k in ("reason", "expires", "list", "source", "added"))

        def row(fields: list[str]) -> ListEntry:
            if len(fields) != width:
                raise _Skip(f"{len(fields)} fields where the header has {width}")
            return self._entry(
                fields[number],
                reason=csv_uncell(fields[reason]) if reason is not None else "",
                expires=fields[expires] if expires is not None else "",
                kind=_list_kind(fields[kind]) if kind is not None and fields[kind].strip() else self._kind,
                source=_source(csv_uncell(fields[source])) if source is not None and fields[source].strip() else self._source,
                added=_expiry_or_skip(fields[added], "added") if added is not None else "",
            )

        return row

    def _ftc_handler(self, names: list[str]) -> _Handler:
        width, number = len(names), names.index(_FTC_NUMBER)
        subject = names.index(_FTC_SUBJECT) if _FTC_SUBJECT in names else None
        robocall = names.index(_FTC_ROBOCALL) if _FTC_ROBOCALL in names else None
        seen: set[str] = set()

        def row(fields: list[str]) -> ListEntry | None:
            if len(fields) != width:
                raise _Skip(f"{len(fields)} fields where the header has {width}")
            text = fields[number].strip()
            if not text:
                raise _Skip("no Company_Phone_Number in this complaint")
            value = ftc_number(text)
            if value in seen:
                return None
            seen.add(value)
            reason = fields[subject].strip() if subject is not None else ""
            if robocall is not None and fields[robocall].strip().lower() in _ROBOCALL_YES:
                reason = f"{reason} (robocall)" if reason else "robocall"
            return self._make(MatchKind.EXACT, value, None, reason=reason, expires=None, kind=self._kind,
                              source=self._source, added="")  # fmt: skip

        return row

    # ---- rows

    def _plain_row(self, fields: list[str]) -> ListEntry:
        spec, _, reason = fields[0].partition("#")
        return self._entry(spec, reason=reason, expires="", kind=self._kind, source=self._source, added="")

    def _feed_row(self, fields: list[str]) -> ListEntry:
        if len(fields) != 3:
            raise _Skip(f"{len(fields)} fields: a feed row is number,reason,expires")
        text = fields[0].strip()
        if not _FEED_SPEC.fullmatch(text):
            if text[:1].isdigit():
                raise _Skip(f"{text[:40]!r} is a national number: a feed is read in many regions and must "
                            "write numbers in E.164 form (+81312345678, +81120*, +81312340000..+81312349999)")
            raise _Skip(f"{text[:40]!r} is not an E.164 number (+81312345678), prefix (+81120*) or range "
                        "(+81312340000..+81312349999)")  # fmt: skip
        match, value, value_end = list_spec(text, _ANY_REGION)
        if match is MatchKind.PREFIX:
            national = len(value) - 1 - len(str(country_code_of(value[1:]) or ""))
            if national < MIN_FEED_PREFIX_NATIONAL_DIGITS:
                # A typo like +81* would silently block a whole country on every unit that follows the feed.
                raise _Skip(f"prefix {value}* is too broad for a feed: it needs at least "
                            f"{MIN_FEED_PREFIX_NATIONAL_DIGITS} digits after the country code")  # fmt: skip
        expires = _expiry_or_skip(fields[2], "expires") if fields[2].strip() else None
        return self._make(match, value, value_end, reason=csv_uncell(fields[1]), expires=expires, kind=ListKind.BLOCK,
                          source=self._source, added="")  # fmt: skip

    def _entry(self, spec: str, *, reason: str, expires: str, kind: ListKind, source: str, added: str) -> ListEntry:
        spec = spec.strip()
        if not spec:
            raise _Skip("no number in this row")
        match, value, value_end = list_spec(spec, self._region)
        expiry = _expiry_or_skip(expires, "expires") if expires.strip() else None
        return self._make(match, value, value_end, reason=reason, expires=expiry, kind=kind, source=source,
                          added=added)  # fmt: skip

    def _make(self, match: MatchKind, value: str, value_end: str | None, *, reason: str, expires: str | None,
              kind: ListKind, source: str, added: str) -> ListEntry:  # fmt: skip
        note = reason.strip()
        if len(note) > _MAX_NOTE_CHARS:
            raise _Skip(f"reason is {len(note)} characters long (at most {_MAX_NOTE_CHARS})")
        note = note or self._note
        if len(self._notes) < _NOTE_CACHE_MAX:  # 1 M rows with the same reason: one str, not a million
            note = self._notes.setdefault(note, note)
        if self._cap is not None and (expires is None or self._cap < expires):
            expires = self._cap
        return ListEntry(kind, match, value, value_end, source, note, added, expires)


_NOT_TEXT = re.compile("[\x00\ud800-\udfff]")
_FOREIGN_READERS: dict[ListFormat, Callable[[str], Iterator[ForeignRow | RowProblem]]] = {
    ListFormat.NCID: ncid_rows, ListFormat.VCARD: vcard_rows, ListFormat.CALLATTENDANT: callattendant_rows,
}


def _expiry_or_skip(text: str, column: str) -> str:
    text = text.strip()
    if not text:
        return ""
    try:
        return _iso(text)
    except ValueError:
        raise _Skip(f"{column} {text[:40]!r} is not a date: use ISO-8601, e.g. 2027-03-31 or "
                    "2027-03-31T00:00:00Z") from None  # fmt: skip


def _list_kind(text: str) -> ListKind:
    try:
        return ListKind(text.strip().lower())
    except ValueError:
        raise _Skip(f"list {text.strip()[:40]!r} is neither 'allow' nor 'block'") from None


def _source(text: str) -> str:
    source = text.strip()
    if source.startswith(FEED_SOURCE_PREFIX):
        raise _Skip(f"source {source[:40]!r}: 'feed:' sources belong to signed feeds (mamoru feed add)")
    if len(source) > _MAX_SOURCE_CHARS:
        raise _Skip(f"source is {len(source)} characters long (at most {_MAX_SOURCE_CHARS})")
    return source


def iter_entries(data: bytes, fmt: ListFormat | None, *, kind: ListKind, home_region: str, source: str,
                 expires_at: str | None = None, note: str = "") -> EntryStream:  # fmt: skip
    """Stream a list file's entries and row problems in file order (constant memory but for
    the text itself and FTC's seen-number set). ``fmt=None`` detects the format.
    ``kind`` is ignored for FEED (always BLOCK). A malformed ``expires_at`` raises ValueError."""
    return EntryStream(data, fmt, kind=kind, home_region=home_region, source=source, expires_at=expires_at,
                       note=note)  # fmt: skip


def read_entries(data: bytes, fmt: ListFormat | None, *, kind: ListKind, home_region: str, source: str,
                 expires_at: str | None = None, note: str = "") -> ImportResult:  # fmt: skip
    """``iter_entries``, collected."""
    stream = iter_entries(data, fmt, kind=kind, home_region=home_region, source=source, expires_at=expires_at,
                          note=note)  # fmt: skip
    entries: list[ListEntry] = []
    problems: list[RowProblem] = []
    for item in stream:
        (problems if isinstance(item, RowProblem) else entries).append(item)  # type: ignore[arg-type]
    return ImportResult(entries, problems, stream.format, stream.rows, stream.duplicates, stream.encoding)


def read_feed(data: bytes, *, source: str, expires_at: str | None) -> ImportResult:
    """A ``mamoru-feed/1`` file: BLOCK entries with ``source``, each expiring at the earlier of
    its own ``expires`` and ``expires_at``."""
    return read_entries(data, ListFormat.FEED, kind=ListKind.BLOCK, home_region=_ANY_REGION, source=source,
                        expires_at=expires_at)  # fmt: skip


# --------------------------------------------------------------------------- writing


def write_entries(entries: Iterable[ListEntry], fmt: ListFormat, *, home_region: str) -> bytes:
    """Serialise entries as PLAIN, CSV or FEED; ``read_entries`` reads the result back to the same entries.

    CSV keeps everything, with E.164 numbers and a BOM (so Excel reads it as UTF-8); a free-text cell that
    a spreadsheet would run as a formula (`=HYPERLINK(...)`) starts with an apostrophe. FEED keeps
    number (E.164), reason and expiry, and takes block entries only. PLAIN keeps number and
    reason (line breaks in a reason become spaces), written the way people write them in
    ``home_region`` when that reads back as the same entry. Raises ValueError for FTC, or for an
    allow entry in a FEED.
    """
    if fmt is ListFormat.PLAIN:
        return "".join(_plain_line(e, home_region) for e in entries).encode("utf-8")
    if fmt is ListFormat.NCID:
        return write_ncid(entries, home_region)
    if fmt is ListFormat.VCARD:
        return write_vcard(entries)
    if fmt is ListFormat.CALLATTENDANT:
        return write_callattendant(entries, home_region)
    if fmt not in (ListFormat.CSV, ListFormat.FEED):
        raise ValueError(f"cannot write the {fmt.value} format")
    out = StringIO()
    # RFC 4180 line ends; also, the writer quotes a field only for the characters of its
    # lineterminator, and a lone CR in a reason must be quoted: it ends a line when read back.
    writer = csv.writer(out, lineterminator="\r\n")
    if fmt is ListFormat.FEED:
        writer.writerow(FEED_HEADER.split(","))
        for e in entries:
            if e.list is not ListKind.BLOCK:
                raise ValueError(f"a feed carries block entries only, not the allow entry {e.describe()}")
            writer.writerow((e.describe(), csv_cell(e.note), e.expires_at or ""))
        return out.getvalue().encode("utf-8")
    writer.writerow(("number", "list", "reason", "source", "added", "expires"))
    for e in entries:
        writer.writerow((e.describe(), e.list.value, csv_cell(e.note), csv_cell(e.source), e.added_at,
                         e.expires_at or ""))
    return _BOM + out.getvalue().encode("utf-8")


def _plain_line(entry: ListEntry, home_region: str) -> str:
    note = re.sub(r"[\r\n]+", " ", entry.note)  # the reader splits lines on CR and LF only
    spec = _written_form(entry, home_region)
    return f"{spec}  # {note}\n" if note else f"{spec}\n"


def _written_form(entry: ListEntry, home_region: str) -> str:
    """How people write the entry (``03-1234-5678``, ``+44 20 7946 0000``, ``0120*``, ``a..b``) when that reads
    back as the same entry in ``home_region``; otherwise its E.164 form."""
    if entry.match is MatchKind.EXACT:
        candidate = _national(entry.value, home_region)
    elif entry.match is MatchKind.PREFIX:
        candidate = _national_prefix_text(entry.value, home_region)
    else:
        start, end = _national(entry.value, home_region), _national(entry.value_end or "", home_region)
        candidate = f"{start}..{end}" if start and end else None
    if candidate is None:
        return entry.describe()
    try:
        same = parse_list_spec(candidate, home_region) == (entry.match, entry.value, entry.value_end)
    except ListSpecError:
        same = False
    return candidate if same else entry.describe()


def _national(e164: str, home_region: str) -> str | None:
    return national_format(e164, home_region) if national_parts(e164) is not None else None


def _national_prefix_text(prefix: str, home_region: str) -> str | None:
    meta = region_dialling(home_region)
    if meta is None or not meta.national_prefix or not prefix.startswith(f"+{meta.country_code}"):
        return None
    return f"{meta.national_prefix}{prefix[len(str(meta.country_code)) + 1 :]}*"
