"""How much of the telephone network one feed may block: a pure check over a whole feed.

A signed feed is trusted to name fraud numbers, not to switch a country off. A
feed of 90 prefixes ``+8110*`` … ``+8199*`` is validly signed and every row is
well-formed, yet it blocks every Japanese number, 110 and 119 included. So
before a verified list is applied, the whole list is measured:

* **share of a country's numbering plan**: prefixes, ranges and exact numbers
  are laid over the national-number space of their country code (a prefix with
  ``k`` national digits covers ``10**-k`` of it; a range of national length
  ``n`` covers ``(end - start + 1) / 10**n``), overlapping prefixes and ranges
  counted once, exact numbers simply added (a million of them are 0.1 % of Japan);
* **shortest prefix**: a prefix must name at least ``min_prefix_digits`` digits
  after the country code (``+81120*`` has three: 0120, toll-free);
* **protected numbers**: emergency and official numbers (110, 118, 119 …, and a
  home-country police-station number ending ``0110`` named exactly) are never
  blocked by a feed, whatever the rest of the list looks like.

A family's own allow entry beats any feed entry in ``screening.core.rules.decide``;
this check keeps a feed from getting that far. No I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from screening.core.model import ListEntry, ListKind, MatchKind
from screening.core.numbers import country_code_for_region, country_code_length, is_fixed_line

__all__ = ["DEFAULT_PROTECTED", "BreadthLimits", "feed_breadth_problem"]

# Emergency and official short numbers in Japan (police, coast guard, fire/ambulance), in the E.164
# form parse_number gives them ("110" -> "+81110"). The same set rules.Policy treats as official.
DEFAULT_PROTECTED: tuple[str, ...] = ("+81110", "+81118", "+81119")
OFFICIAL_SUFFIXES: tuple[str, ...] = ("0110",)  # police stations: …-0110
_SCALE_DIGITS = 15  # E.164 numbers have at most 15 digits: shares are exact integers on this scale
_FULL = 10**_SCALE_DIGITS
_POWERS = tuple(10**k for k in range(_SCALE_DIGITS + 1))


@dataclass(frozen=True, slots=True)
class BreadthLimits:
    """Settings ``[feeds] max_share_percent`` and ``min_prefix_digits``, plus what is never blocked."""

    max_share_percent: float = 1.0
    min_prefix_digits: int = 3
    home_region: str = "JP"
    protected: tuple[str, ...] = DEFAULT_PROTECTED


def _split_country(e164: str) -> tuple[int, str] | None:
    """``+81312…`` -> (81, "312…"); None when no country code starts it (country codes are prefix-free)."""
    n = country_code_length(e164[1:4])
    return (int(e164[1 : 1 + n]), e164[1 + n :]) if n else None


def _interval(national: str, national_end: str | None) -> tuple[int, int]:
    """A slice of a country's national-number space, on the integer scale 0.._FULL.

    A prefix or an exact number covers everything that starts with its digits
    (an exact number is the whole of its own length); a range up to its end.
    """
    pad = _SCALE_DIGITS - len(national)
    start = int(national) * 10**pad if national else 0
    last = int(national_end) * 10**pad if national_end else start
    return start, last + 10**pad


def _police_station(e164: str) -> bool:
    """A home-country landline ending …0110 (a mobile number may end so by chance)."""
    if not e164.endswith(OFFICIAL_SUFFIXES):
        return False
    return is_fixed_line(e164)


def _covers(entry: ListEntry, number: str) -> bool:
    if entry.match is MatchKind.EXACT:
        return entry.value == number
    if entry.match is MatchKind.PREFIX:
        return number.startswith(entry.value)
    assert entry.value_end is not None
    return len(number) == len(entry.value) and entry.value <= number <= entry.value_end


def feed_breadth_problem(entries: Iterable[ListEntry], limits: BreadthLimits) -> str | None:
    """Why this whole feed blocks too much (one sentence naming the worst offence), or None."""
    home_cc = country_code_for_region(limits.home_region)
    protected = frozenset(limits.protected)
    spans: dict[int, list[tuple[int, int]]] = {}  # prefixes and ranges, merged per country below
    singles: dict[int, int] = {}  # exact numbers: summed, not merged (a million of them barely register)
    for entry in entries:
        if entry.list is not ListKind.BLOCK:
            continue
        value = entry.value
        if entry.match is MatchKind.EXACT:  # the common case, kept cheap: 1 M of these per feed
            if value in protected:
                return f"{value} is an emergency/official number, which no feed may block"
            split = _split_country(value)
            if split is None:
                continue  # entry_problem / the store refuse these separately
            cc, national = split
            if cc == home_cc and value.endswith(OFFICIAL_SUFFIXES) and _police_station(value):
                return f"{value} looks like a police station's number (…0110), which no feed may block"
            singles[cc] = singles.get(cc, 0) + _POWERS[_SCALE_DIGITS - len(national)]
            continue
        hit = next((p for p in protected if _covers(entry, p)), None)
        if hit is not None:
            return f"{entry.describe()} would block the emergency/official number {hit}, which no feed may block"
        split = _split_country(value)
        if split is None:
            continue
        cc, national = split
        if entry.match is MatchKind.PREFIX and len(national) < limits.min_prefix_digits:
            return (f"prefix {entry.describe()} names only {len(national)} digit(s) after the country code "
                    f"+{cc} (at least {limits.min_prefix_digits} allowed)")  # fmt: skip
        end = entry.value_end[len(value) - len(national) :] if entry.match is MatchKind.RANGE and entry.value_end \
            else None  # fmt: skip
        spans.setdefault(cc, []).append(_interval(national, end))
    limit = limits.max_share_percent / 100.0
    for cc in sorted(spans.keys() | singles.keys()):
        share = (_union_length(spans.get(cc, [])) + singles.get(cc, 0)) / _FULL
        if share > limit:
            return (f"the feed blocks {share:.1%} of all numbers under +{cc} (at most "
                    f"{limits.max_share_percent:g} % allowed)")  # fmt: skip
    return None


def _union_length(spans: list[tuple[int, int]]) -> int:
    total = 0
    reach = -1
    for lo, hi in sorted(spans):
        if hi <= reach:
            continue
        total += hi - max(lo, reach)
        reach = hi
    return total
