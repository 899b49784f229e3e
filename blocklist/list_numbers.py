"""Number specs of list rows, with a fast path for canonical E.164 numbers.

A feed or FTC file is a million rows of numbers already in E.164 (or 10-digit NANP)
form; ``parse_list_spec`` costs ~60 µs a row for them, this path a fraction of that
and the same result. Anything else takes ``parse_list_spec`` itself.
"""

from __future__ import annotations

import re
from functools import lru_cache

from blocklist.lists import ListSpecError, parse_list_spec
from screening.core.model import MatchKind
from screening.core.numbers import country_code_dialling, country_code_length, is_possible_parts

__all__ = ["country_code_of", "fast_e164", "ftc_number", "list_spec"]

_FTC_REGION = "US"

_PLUS_DIGITS = re.compile(r"\+[1-9][0-9]{4,14}")
_FTC_DIGITS = re.compile(r"[2-9][0-9]{9}")


@lru_cache(maxsize=512)
def _national_prefix(country_code: int) -> tuple[bool, re.Pattern[str] | None]:
    """(metadata known, national_prefix_for_parsing) of a country code's main region."""
    meta = country_code_dialling(country_code)
    if meta is None:
        return False, None
    pattern = meta.national_prefix_for_parsing
    return True, re.compile(pattern) if pattern else None


def country_code_of(digits: str) -> int | None:
    """The leading 1-3 digits that are a country code, as phonenumbers splits them (codes are prefix-free)."""
    n = country_code_length(digits)
    return int(digits[:n]) if n else None


def fast_e164(text: str) -> str | None:
    """``text`` if it is a canonical E.164 number that ``parse_list_spec`` would return unchanged,
    else None (then the caller takes the full path, which also words the error).

    Why: the full path (NFKC, phonenumbers.parse, validity, region lookup) costs ~60 µs a row,
    a minute per million feed rows on x86 and several on a Pi. For ``+<digits>`` input,
    phonenumbers.parse only (1) splits off the country code: the first 1–3 digits that are a
    known code, (2) strips a national prefix, and only when the metadata's
    national_prefix_for_parsing matches at the start of the rest, (3) keeps leading zeros.
    So when (2) cannot apply and (3) does not arise, its E.164 output is the input itself and
    the only check left is parse_number's ``is_possible_number``, done here through
    phonenumbers on a PhoneNumber built directly. Anything else falls back. A property test
    (tests/test_formats.py) checks the two paths agree.
    """
    if not _PLUS_DIGITS.fullmatch(text):
        return None
    digits = text[1:]
    country_code = country_code_of(digits)
    if country_code is None:
        return None
    national = digits[len(str(country_code)) :]
    if len(national) < 4 or national[0] == "0":
        return None
    known, national_prefix = _national_prefix(country_code)
    if not known or (national_prefix is not None and national_prefix.match(national)):
        return None
    return text if is_possible_parts(country_code, national) else None


def list_spec(text: str, home_region: str) -> tuple[MatchKind, str, str | None]:
    """parse_list_spec with the fast path for canonical E.164 numbers and ranges. Raises ListSpecError."""
    if text.startswith("+"):
        if (fast := fast_e164(text)) is not None:
            return MatchKind.EXACT, fast, None
        # A range of two canonical numbers: the checks _parse_range makes after parsing both ends.
        first, dots, last = text.partition("..")
        start, end = (fast_e164(first), fast_e164(last)) if dots else (None, None)
        if start and end and len(start) == len(end) and start <= end \
                and country_code_of(start[1:]) == country_code_of(end[1:]):  # fmt: skip
            return MatchKind.RANGE, start, end
    return parse_list_spec(text, home_region)


def ftc_number(text: str) -> str:
    """A 10-digit NANP number (or any US written form) -> E.164. Raises ListSpecError.

    ``+1`` + ten digits whose first is 2–9 is what parse_number(text, "US") returns when the
    fast path accepts it: no IDD (011/00) or national prefix (1) can be at the start.
    """
    if _FTC_DIGITS.fullmatch(text) and (fast := fast_e164("+1" + text)) is not None:
        return fast
    match, value, _ = parse_list_spec(text, _FTC_REGION)
    if match is not MatchKind.EXACT:
        raise ListSpecError(f"{text!r}: a complaint names one number, not a prefix or range")
    return value
