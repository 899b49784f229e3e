"""Allow/block number lists: parsing what users type, and fast matching.

Pure: no I/O, no clock. The store (``blocklist/store/``) persists
``ListEntry`` rows; the daemon turns them into an immutable ``NumberLists``
snapshot with ``NumberLists.build`` and swaps it atomically when the store's
``lists_generation`` changes, so a lookup never sees a half-updated list.

Entries, prefixes and range bounds are E.164 strings with a leading ``+``
(``+81312345678``); matching is done on those strings, so every number the
daemon looks up must come from ``screening.core.numbers.parse_number`` too.
"""

from __future__ import annotations

import heapq
import re
import unicodedata
from array import array
from bisect import bisect_right
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime

from screening.core.clock import parse_iso_utc
from screening.core.model import ListEntry, ListKind, MatchKind
from screening.core.numbers import NumberError, clean_digits, country_code_length, parse_number, region_dialling

__all__ = ["ListSpecError", "NumberLists", "entry_problem", "parse_list_spec"]

# What may appear in a written number besides digits and a leading '+'.
# Japanese typists use the long-vowel mark 'ー' and assorted dashes as hyphens.
_SEPARATORS = " -.()/‐‑‒–—―−ー"
_RANGE_SEPARATORS = ("..", "~", "〜")  # '～' (full width) folds to '~' under NFKC
_MAX_E164_DIGITS = 15


class ListSpecError(ValueError):
    """A list specification (number, prefix or range) the user must correct."""


# --------------------------------------------------------------------------- parsing


def parse_list_spec(text: str, home_region: str) -> tuple[MatchKind, str, str | None]:
    """Turn what a user types after ``mamoru block add`` into ``(match, value, value_end)``.

    - a number in any written form -> ``(EXACT, "+81312345678", None)``
    - a prefix ending in ``*`` (``0120*``, ``+4420*``, ``03-1234-*``) ->
      ``(PREFIX, "+81120", None)``: the national trunk prefix is replaced by the
      home country code, because lookups are done on E.164 numbers.
    - a range ``A..B`` (also ``A~B`` / ``A〜B`` as written in Japan) ->
      ``(RANGE, start, end)`` with both ends E.164, of equal length, start <= end.

    A plain ``-`` is not accepted between two numbers: it is also the digit-group
    separator, so ``03-1234-0000-03-1234-9999`` would be ambiguous.
    Raises ``ListSpecError`` naming the input and what is wrong with it.
    """
    folded = unicodedata.normalize("NFKC", text or "").strip()
    if not folded:
        raise ListSpecError("empty list entry: type a number, a prefix like 0120*, or a range A..B")
    for sep in _RANGE_SEPARATORS:
        if sep in folded:
            return _parse_range(text, folded, sep, home_region)
    if "*" in folded:
        return MatchKind.PREFIX, _parse_prefix(text, folded, home_region), None
    return MatchKind.EXACT, _parse_exact(text, folded, home_region), None


def _check_chars(original: str, part: str, *, allow_star: bool = False) -> None:
    """Reject letters and stray symbols: clean_digits would silently drop them."""
    body = part[1:] if part.startswith("+") else part
    allowed = set(_SEPARATORS) | ({"*"} if allow_star else set())
    bad = sorted({ch for ch in body if not ch.isdigit() and ch not in allowed})
    if bad:
        raise ListSpecError(f"{original!r}: unexpected character(s) {''.join(bad)!r}")
    if not any(ch.isdigit() for ch in body):
        raise ListSpecError(f"{original!r}: no digits")


def _parse_exact(original: str, part: str, home_region: str) -> str:
    _check_chars(original, part)
    try:
        return parse_number(part, home_region).e164
    except NumberError as exc:
        hint = " (use '..' between the two ends of a range)" if len(clean_digits(part)) > 17 else ""
        raise ListSpecError(f"{original!r}: {exc}{hint}") from exc


def _parse_range(original: str, folded: str, sep: str, home_region: str) -> tuple[MatchKind, str, str]:
    parts = folded.split(sep)
    if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
        raise ListSpecError(f"{original!r}: a range needs exactly two numbers, like 03-1234-0000..03-1234-9999")
    start, end = (_parse_exact(original, p.strip(), home_region) for p in parts)
    if len(start) != len(end):
        raise ListSpecError(
            f"{original!r}: range ends {start} and {end} have different lengths; "
            "write both ends in full, e.g. 03-1234-0000..03-1234-9999"
        )
    try:
        countries = {parse_number(start, home_region).country_code, parse_number(end, home_region).country_code}
    except NumberError as exc:  # _parse_exact accepted it leniently; E.164 re-parse may still refuse
        raise ListSpecError(f"{original!r}: {exc}") from exc
    if len(countries) != 1:
        raise ListSpecError(f"{original!r}: range ends {start} and {end} are in different countries")
    if start > end:  # equal-length digit strings: string order is numeric order
        raise ListSpecError(f"{original!r}: range start {start} is after its end {end}")
    return MatchKind.RANGE, start, end


def _parse_prefix(original: str, folded: str, home_region: str) -> str:
    """National or international prefix -> E.164 prefix.

    ``parse_number`` cannot parse a partial number, so this applies the same
    two rewrites it does, from phonenumbers' metadata for the home region:
    an international call prefix (``010`` in Japan, ``011`` in NANP, ``00``)
    becomes ``+``; otherwise the national trunk prefix (``0``) is replaced by
    the home country code.
    """
    if not folded.endswith("*") or folded.count("*") != 1:
        raise ListSpecError(f"{original!r}: '*' is only allowed once, at the end of a prefix (e.g. 0120*)")
    body = folded[:-1].strip()
    _check_chars(original, body)
    digits = clean_digits(body)
    if digits.startswith("+"):
        prefix = digits
    else:
        prefix = _national_to_e164_prefix(original, digits, home_region)
    if not country_code_length(prefix[1:]):
        raise ListSpecError(f"{original!r}: prefix {prefix} does not start with a known country code")
    if len(prefix) - 1 > _MAX_E164_DIGITS:
        raise ListSpecError(f"{original!r}: prefix is longer than any phone number")
    return prefix


def _national_to_e164_prefix(original: str, digits: str, home_region: str) -> str:
    meta = region_dialling(home_region)
    if meta is None:
        raise ListSpecError(f"{original!r}: unknown home region {home_region!r}")
    idd = re.match(meta.international_prefix or "00", digits)
    if idd and idd.end() < len(digits):
        return "+" + digits[idd.end() :]
    if digits.startswith("00") and len(digits) > 2:  # same fallback as parse_number
        return "+" + digits[2:]
    trunk = meta.national_prefix or ""
    national = digits[len(trunk) :] if trunk and digits.startswith(trunk) else digits
    if not national:
        raise ListSpecError(
            f"{original!r}: prefix too short, it would match every number in {home_region}; "
            f"write +{meta.country_code}* if that is really meant"
        )
    return f"+{meta.country_code}{national}"


# --------------------------------------------------------------------------- matching


@dataclass(frozen=True, slots=True)
class _Segments:
    """Ranges of one digit length, flattened into disjoint segments.

    ``starts[i]`` is where segment i begins (as an int), ``owners[i]`` the
    narrowest range covering it, or None for a gap. Overlapping ranges are
    resolved once at build time, so a lookup is one bisect.
    """

    starts: array
    owners: list[ListEntry | None]

    def find(self, number: int) -> ListEntry | None:
        i = bisect_right(self.starts, number) - 1
        return self.owners[i] if i >= 0 else None


def _flatten(ranges: list[tuple[int, int, ListEntry]]) -> _Segments:
    """Sweep the sorted ranges; at each boundary the narrowest live range owns the segment."""
    ranges.sort(key=lambda r: (r[0], r[1]))
    bounds = sorted({r[0] for r in ranges} | {r[1] + 1 for r in ranges})
    heap: list[tuple[int, int, int, ListEntry]] = []  # (width, seq, end, entry)
    starts: array[int] = array("q")
    owners: list[ListEntry | None] = []
    nxt = 0
    for bound in bounds:
        while nxt < len(ranges) and ranges[nxt][0] <= bound:
            lo, hi, entry = ranges[nxt]
            heapq.heappush(heap, (hi - lo, nxt, hi, entry))
            nxt += 1
        while heap and heap[0][2] < bound:  # lazily drop ranges that ended before here
            heapq.heappop(heap)
        owner = heap[0][3] if heap else None
        if not owners or owners[-1] is not owner:
            starts.append(bound)
            owners.append(owner)
    return _Segments(starts, owners)


@dataclass(frozen=True, slots=True)
class _Index:
    """One list (allow or block): exact dict, prefix dict, flattened ranges."""

    exact: dict[str, ListEntry]
    prefixes: dict[str, ListEntry]
    prefix_lengths: tuple[int, ...]  # lengths present, longest first
    ranges: dict[int, _Segments]  # keyed by len(e164)

    @classmethod
    def build(cls, entries: Iterable[ListEntry]) -> _Index:
        exact: dict[str, ListEntry] = {}
        prefixes: dict[str, ListEntry] = {}
        by_len: dict[int, list[tuple[int, int, ListEntry]]] = {}
        for e in entries:
            if e.match is MatchKind.EXACT:
                exact[e.value] = e
            elif e.match is MatchKind.PREFIX:
                prefixes[e.value] = e
            else:
                assert e.value_end is not None  # checked by entry_problem
                by_len.setdefault(len(e.value), []).append((int(e.value[1:]), int(e.value_end[1:]), e))
        lengths = tuple(sorted({len(p) for p in prefixes}, reverse=True))
        return cls(exact, prefixes, lengths, {n: _flatten(r) for n, r in by_len.items()})

    def match(self, e164: str) -> ListEntry | None:
        hit = self.exact.get(e164)
        if hit is not None:
            return hit
        for n in self.prefix_lengths:
            if n <= len(e164) and (hit := self.prefixes.get(e164[:n])) is not None:
                return hit
        segments = self.ranges.get(len(e164))
        if segments is None or not e164[1:].isdigit():
            return None
        return segments.find(int(e164[1:]))


_EMPTY_INDEX = _Index({}, {}, (), {})
_E164 = re.compile(r"\+[1-9]\d{1,14}")


def entry_problem(entry: ListEntry) -> str | None:
    """Why an entry cannot be indexed, or None.

    The store checks this before writing; ``build`` checks it again because a
    row may have been edited by hand with the sqlite3 shell.
    """
    if entry.match is MatchKind.PREFIX:
        ok = re.fullmatch(r"\+[1-9]\d{0,14}", entry.value) is not None
        return None if ok else "prefix is not '+' followed by digits"
    if not _E164.fullmatch(entry.value):
        return "value is not an E.164 number"
    if entry.match is MatchKind.RANGE:
        end = entry.value_end
        if end is None or not _E164.fullmatch(end) or len(end) != len(entry.value):
            return "range end missing, malformed or of a different length"
        if end < entry.value:
            return "range start after end"
    return None


@dataclass(frozen=True, slots=True)
class NumberLists:
    """Immutable snapshot of the allow and block lists, ready for lookups.

    Precedence within a list when several entries match: exact, then the
    longest prefix, then the narrowest range. ``skipped`` holds entries that
    were malformed (the caller should log them) — a bad row must not make the
    whole list unusable. ``next_expiry`` is the earliest ``expires_at`` still
    in the snapshot: the daemon must rebuild by then even if the store's
    generation did not change.
    """

    allow: _Index = field(default=_EMPTY_INDEX, repr=False)
    block: _Index = field(default=_EMPTY_INDEX, repr=False)
    size: int = 0
    generation: int = 0
    next_expiry: str | None = None
    skipped: tuple[tuple[ListEntry, str], ...] = ()

    @classmethod
    def empty(cls) -> NumberLists:
        return cls()

    @classmethod
    def build(cls, entries: Iterable[ListEntry], now_iso: str | None, *, generation: int = 0) -> NumberLists:
        """Index ``entries``, dropping those with ``expires_at <= now_iso``.

        ``now_iso=None`` keeps everything (no clock here on purpose). When two
        entries share list, match and value, the later one wins.
        """
        now = parse_iso_utc(now_iso) if now_iso else None
        kept: dict[ListKind, list[ListEntry]] = {ListKind.ALLOW: [], ListKind.BLOCK: []}
        skipped: list[tuple[ListEntry, str]] = []
        next_expiry: datetime | None = None
        for entry, expiry, problem in _checked(entries):
            if problem:
                skipped.append((entry, problem))
                continue
            if expiry is not None:
                if now is not None and expiry <= now:
                    continue
                next_expiry = expiry if next_expiry is None else min(next_expiry, expiry)
            kept[entry.list].append(entry)
        return cls(
            allow=_Index.build(kept[ListKind.ALLOW]),
            block=_Index.build(kept[ListKind.BLOCK]),
            size=len(kept[ListKind.ALLOW]) + len(kept[ListKind.BLOCK]),
            generation=generation,
            next_expiry=next_expiry.isoformat() if next_expiry else None,
            skipped=tuple(skipped),
        )

    def match_allow(self, e164: str) -> ListEntry | None:
        return self.allow.match(e164)

    def match_block(self, e164: str) -> ListEntry | None:
        return self.block.match(e164)

    def __len__(self) -> int:
        return self.size


def _checked(entries: Iterable[ListEntry]) -> Iterator[tuple[ListEntry, datetime | None, str | None]]:
    for entry in entries:
        problem = entry_problem(entry)
        expiry = None
        if entry.expires_at and problem is None:
            try:
                expiry = parse_iso_utc(entry.expires_at)
            except ValueError:
                problem = f"unreadable expires_at {entry.expires_at!r}"
        yield entry, expiry, problem
