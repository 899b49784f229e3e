"""Phone-number facts have one home (screening.core.numbers): the wrappers other modules ask."""

from __future__ import annotations

import pytest

from screening.core.numbers import (
    NumberError,
    country_code_dialling,
    country_code_for_region,
    country_code_length,
    dialled_from,
    is_fixed_line,
    is_possible_parts,
    is_supported_region,
    national_parts,
    region_dialling,
    region_time_zones,
)  # fmt: skip


def test_region_facts() -> None:
    jp = region_dialling("JP")
    assert jp is not None and (jp.country_code, jp.national_prefix, jp.international_prefix) == (81, "0", "010")
    assert region_dialling("XX") is None
    nanp = country_code_dialling(1)
    assert nanp is not None and nanp.international_prefix == "011"
    assert country_code_for_region("GB") == 44
    assert is_supported_region("JP") and not is_supported_region("XX")
    assert region_time_zones("JP") == ("Asia/Tokyo",)


def test_country_codes_are_prefix_free() -> None:
    assert country_code_length("81312345678") == 2
    assert country_code_length("12025550123") == 1
    assert country_code_length("8") == 0  # too short for any code
    assert country_code_length("") == 0


def test_number_facts() -> None:
    assert national_parts("+81312345678") == ("312345678", "JP")
    assert national_parts("+999") is None
    assert is_fixed_line("+81312345678") and not is_fixed_line("+819012345678")
    assert is_possible_parts(81, "312345678") and not is_possible_parts(81, "31")
    assert dialled_from("+442079460000", "JP") == "010 44 20 7946 0000"
    with pytest.raises(NumberError):
        dialled_from("+", "JP")
