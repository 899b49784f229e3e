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
import phonenumbers.timezone
from phonenumbers import NumberParseException, PhoneNumberFormat, PhoneNumberType

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


# ---- region and country-code facts ------------------------------------------------------
# The rest of mamoru asks these questions here, so phonenumbers has one home.


@dataclass(frozen=True, slots=True)
class Dialling:
    """How numbers are written and dialled in one region (phonenumbers' metadata)."""

    country_code: int  # 81
    national_prefix: str | None  # the trunk prefix: "0" in Japan, None where there is none
    international_prefix: str | None  # a regex: "010" in Japan, "00" in most of Europe
    national_prefix_for_parsing: str | None  # a regex of what a national number may start with


def _dialling(meta: phonenumbers.PhoneMetadata | None) -> Dialling | None:
    if meta is None:
        return None
    return Dialling(country_code=meta.country_code or 0, national_prefix=meta.national_prefix or None,
                    international_prefix=meta.international_prefix or None,
                    national_prefix_for_parsing=meta.national_prefix_for_parsing or None)  # fmt: skip


@lru_cache(maxsize=512)
def region_dialling(region: str) -> Dialling | None:
    """The dialling facts of an ISO region ("JP"); None for a region phonenumbers does not know."""
    return _dialling(phonenumbers.PhoneMetadata.metadata_for_region(region))


@lru_cache(maxsize=512)
def country_code_dialling(country_code: int) -> Dialling | None:
    """The dialling facts of a country code's main region (+1: the US); None if unknown."""
    region = phonenumbers.region_code_for_country_code(country_code)
    return _dialling(phonenumbers.PhoneMetadata.metadata_for_region_or_calling_code(country_code, region))


def is_supported_region(region: str) -> bool:
    """An ISO 3166 region code phonenumbers has numbering data for ("JP", "GB")."""
    return region in phonenumbers.SUPPORTED_REGIONS


def country_code_for_region(region: str) -> int:
    """81 for "JP"; 0 for a region phonenumbers does not know."""
    return phonenumbers.country_code_for_region(region)


def country_code_length(digits: str) -> int:
    """How many leading digits of ``digits`` (an E.164 number without '+') are a country code; 0: none.

    Country codes are prefix-free, so the first 1-3 digits that are a known code are the code.
    """
    for n in (1, 2, 3):
        if len(digits) >= n and int(digits[:n]) in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
            return n
    return 0


def is_possible_parts(country_code: int, national: str) -> bool:
    """``is_possible_number`` for a number given as its country code and national digits."""
    return phonenumbers.is_possible_number(phonenumbers.PhoneNumber(country_code=country_code,
                                                                     national_number=int(national)))  # fmt: skip


def national_parts(e164: str) -> tuple[str, str | None] | None:
    """(national significant number, region) of an E.164 number; None if it does not parse."""
    try:
        num = phonenumbers.parse(e164, None)
    except NumberParseException:
        return None
    return str(num.national_number), phonenumbers.region_code_for_number(num)


def is_fixed_line(e164: str) -> bool:
    """A landline by its number range (a mobile number is not). Raises NumberError if it does not parse."""
    try:
        num = phonenumbers.parse(e164, None)
    except NumberParseException as exc:
        raise NumberError(f"not a phone number: {e164!r} ({exc})") from exc
    return phonenumbers.number_type(num) == PhoneNumberType.FIXED_LINE


def dialled_from(e164: str, home_region: str) -> str:
    """How someone in ``home_region`` dials ``e164``: '010 44 …' abroad from Japan, '03 …' at home.

    May still hold a '+' for a region without one international prefix. Raises NumberError.
    """
    try:
        num = phonenumbers.parse(e164, None)
    except NumberParseException as exc:
        raise NumberError(f"not a phone number: {e164!r} ({exc})") from exc
    return phonenumbers.format_out_of_country_calling_number(num, home_region)


def region_time_zones(region: str) -> tuple[str, ...]:
    """IANA zone names of a region's example number ("JP" -> ("Asia/Tokyo",)); () if it has none."""
    example = phonenumbers.example_number(region)
    return tuple(phonenumbers.timezone.time_zones_for_number(example)) if example is not None else ()
