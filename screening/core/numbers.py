"""Phone-number normalisation with ``phonenumbers``, for a configured home region.

Accepts what people and modems write: ``03-1234-5678``, ``(03) 1234 5678``,
``+81 3 1234 5678``, ``0081312345678``, Japan's international prefix ``010``,
``011`` from North America, ``00`` elsewhere. Full-width digits are folded.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from functools import lru_cache

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberFormat

# International call prefixes by home region, tried when the library's own
# parse leaves the prefix in place (e.g. JP '010', NANP '011').
_IDD_PREFIXES: dict[str, tuple[str, ...]] = {
    "JP": ("010",),
    "US": ("011",),
    "CA": ("011",),
}
_DEFAULT_IDD = ("00",)


class NumberError(ValueError):
    """A string that is not a usable phone number."""


@dataclass(frozen=True, slots=True)
class ParsedNumber:
    e164: str  # "+81312345678"
    region: str | None  # ISO region of the number ("JP", "GB", "JM"), None if unknown
    country_code: int  # 81
    valid: bool  # phonenumbers considers it a valid assigned-range number

    def is_international(self, home_region: str) -> bool:
        home_cc = phonenumbers.country_code_for_region(home_region)
        if self.country_code != home_cc:
            return True
        # Shared country codes (+1 NANP): Jamaica is not the US.
        return self.region is not None and self.region != home_region and home_cc == 1


def clean_digits(raw: str) -> str:
    """Fold full-width characters and drop separators, keeping a leading '+'."""
    text = unicodedata.normalize("NFKC", raw).strip()
    plus = text.startswith("+")
    digits = "".join(ch for ch in text if ch.isdigit())
    return ("+" if plus else "") + digits


@lru_cache(maxsize=4096)
def parse_number(raw: str, home_region: str = "JP") -> ParsedNumber:
    """Parse a written or modem-reported number into E.164. Raises NumberError."""
    text = clean_digits(raw)
    bare = text.lstrip("+")
    if len(bare) < 3 or len(bare) > 17:
        raise NumberError(f"not a phone number: {raw!r}")
    if not text.startswith("+"):
        for prefix in _IDD_PREFIXES.get(home_region, ()) + _DEFAULT_IDD:
            if bare.startswith(prefix) and len(bare) > len(prefix) + 4:
                text = "+" + bare[len(prefix) :]
                break
    try:
        num = phonenumbers.parse(text, home_region)
    except NumberParseException as exc:
        raise NumberError(f"not a phone number: {raw!r} ({exc})") from exc
    if not phonenumbers.is_possible_number(num) and len(bare) > 4:
        # Short codes (110, 119, 0110 …) are kept below; long garbage is not.
        raise NumberError(f"not a possible phone number: {raw!r}")
    e164 = phonenumbers.format_number(num, PhoneNumberFormat.E164)
    country_code = num.country_code or 0
    region = phonenumbers.region_code_for_number(num) or phonenumbers.region_code_for_country_code(country_code)
    return ParsedNumber(
        e164=e164,
        region=region if region and region != "ZZ" else None,
        country_code=country_code,
        valid=phonenumbers.is_valid_number(num),
    )


def try_parse_number(raw: str | None, home_region: str = "JP") -> ParsedNumber | None:
    if not raw:
        return None
    try:
        return parse_number(raw, home_region)
    except NumberError:
        return None


def national_format(e164: str, home_region: str = "JP") -> str:
    """How the household writes it: '03-1234-5678' at home, '+44 20 …' abroad."""
    try:
        num = phonenumbers.parse(e164, None)
    except NumberParseException:
        return e164
    if phonenumbers.region_code_for_number(num) == home_region:
        return phonenumbers.format_number(num, PhoneNumberFormat.NATIONAL)
    return phonenumbers.format_number(num, PhoneNumberFormat.INTERNATIONAL)
