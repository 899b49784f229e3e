"""blocklist.lists: what users type, and how the snapshot matches numbers."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blocklist.lists import ListSpecError, NumberLists, parse_list_spec
from screening.core.model import ListEntry, ListKind, MatchKind
from screening.core.numbers import parse_number
from tests.support.examples import examples

EXACT, PREFIX, RANGE = MatchKind.EXACT, MatchKind.PREFIX, MatchKind.RANGE


def block(match: MatchKind, value: str, end: str | None = None, **kw: str | None) -> ListEntry:
    return ListEntry(ListKind.BLOCK, match, value, end, **kw)  # type: ignore[arg-type]


def allow(match: MatchKind, value: str, end: str | None = None, **kw: str | None) -> ListEntry:
    return ListEntry(ListKind.ALLOW, match, value, end, **kw)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- parse_list_spec


@pytest.mark.parametrize(
    ("text", "region", "expected"),
    [
        ("03-1234-5678", "JP", (EXACT, "+81312345678", None)),
        ("(03) 1234 5678", "JP", (EXACT, "+81312345678", None)),
        ("０３－１２３４－５６７８", "JP", (EXACT, "+81312345678", None)),
        ("０３ー１２３４ー５６７８", "JP", (EXACT, "+81312345678", None)),  # long-vowel mark as hyphen
        ("+44 20 7946 0000", "JP", (EXACT, "+442079460000", None)),
        ("010-44-20-7946-0000", "JP", (EXACT, "+442079460000", None)),
        ("011 44 20 7946 0000", "US", (EXACT, "+442079460000", None)),
        ("0120*", "JP", (PREFIX, "+81120", None)),
        ("０１２０＊", "JP", (PREFIX, "+81120", None)),
        ("0120-*", "JP", (PREFIX, "+81120", None)),
        ("03-1234-*", "JP", (PREFIX, "+8131234", None)),
        ("+4420*", "JP", (PREFIX, "+4420", None)),
        ("010-44-*", "JP", (PREFIX, "+44", None)),
        ("+81*", "JP", (PREFIX, "+81", None)),
        ("1-212*", "US", (PREFIX, "+1212", None)),
        ("212*", "US", (PREFIX, "+1212", None)),
        ("03-1234-0000..03-1234-9999", "JP", (RANGE, "+81312340000", "+81312349999")),
        ("03-1234-0000 .. 03-1234-9999", "JP", (RANGE, "+81312340000", "+81312349999")),
        ("03-1234-0000～03-1234-9999", "JP", (RANGE, "+81312340000", "+81312349999")),
        ("03-1234-0000〜03-1234-9999", "JP", (RANGE, "+81312340000", "+81312349999")),
        ("03-1234-5678..03-1234-5678", "JP", (RANGE, "+81312345678", "+81312345678")),
    ],
)
def test_parse_list_spec(text: str, region: str, expected: tuple[MatchKind, str, str | None]) -> None:
    assert parse_list_spec(text, region) == expected


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("abc", "unexpected character"),
        ("03-12a4-5678", "unexpected character"),
        ("03-1234-5678#", "unexpected character"),
        ("12", "not a phone number"),
        ("03-1234-0000-03-1234-9999", "use '..'"),  # a '-' range is ambiguous
        ("03*12*", "only allowed once"),
        ("03*5678", "only allowed once, at the end"),
        ("*", "no digits"),
        ("0*", "too short"),
        ("+4*", "country code"),
        ("03-1234-9999..03-1234-0000", "after its end"),
        ("0312340000..031234999", "different lengths"),
        ("+81312345678..+44207946000", "different countries"),
        ("03-1234-0000..", "exactly two numbers"),
        ("03-1234-0000..03-1234-5000..03-1234-9999", "exactly two numbers"),
        ("0120..0120*", "unexpected character"),
    ],
)
def test_parse_list_spec_errors_name_input_and_problem(text: str, problem: str) -> None:
    with pytest.raises(ListSpecError) as info:
        parse_list_spec(text, "JP")
    message = str(info.value)
    assert problem in message
    if text.strip():
        assert repr(text) in message
    assert isinstance(info.value, ValueError)


JP_NUMBERS = ["03-1234-5678", "06-6123-4567", "0120-123-456", "090-1234-5678", "0570-012-345", "011-123-4567"]


@given(st.sampled_from(JP_NUMBERS), st.integers(min_value=2, max_value=10))
def test_prefix_of_written_number_matches_its_e164(written: str, cut: int) -> None:
    """A prefix typed the way the number is written matches that number once parsed."""
    digits = written.replace("-", "")
    _, prefix, _ = parse_list_spec(digits[:cut] + "*", "JP")
    assert parse_number(written, "JP").e164.startswith(prefix)


# --------------------------------------------------------------------------- matching


def test_empty() -> None:
    lists = NumberLists.empty()
    assert len(lists) == 0
    assert lists.match_block("+81312345678") is None
    assert lists.match_allow("+81312345678") is None


def test_precedence_exact_then_longest_prefix_then_narrowest_range() -> None:
    exact = block(EXACT, "+81312345678")
    short = block(PREFIX, "+813")
    long = block(PREFIX, "+8131234")
    wide = block(RANGE, "+81312340000", "+81312349999")
    narrow = block(RANGE, "+81312345000", "+81312345999")
    lists = NumberLists.build([wide, short, narrow, long, exact], None)
    assert lists.match_block("+81312345678") is exact
    assert lists.match_block("+81312345679") is long  # prefix beats any range
    assert lists.match_block("+81399990000") is short

    ranges_only = NumberLists.build([wide, narrow], None)
    assert ranges_only.match_block("+81312345500") is narrow
    assert ranges_only.match_block("+81312341000") is wide
    assert ranges_only.match_block("+81312350000") is None


def test_range_bounds_are_inclusive_and_length_specific() -> None:
    r = block(RANGE, "+81312340000", "+81312349999")
    lists = NumberLists.build([r], None)
    assert lists.match_block("+81312340000") is r
    assert lists.match_block("+81312349999") is r
    assert lists.match_block("+81312339999") is None
    assert lists.match_block("+81312350000") is None
    assert lists.match_block("+8131234000") is None  # shorter number, same digits
    assert lists.match_block("+813123400000") is None


def test_overlapping_ranges_resolve_to_narrowest_everywhere() -> None:
    a = block(RANGE, "+81300000100", "+81300000500")
    b = block(RANGE, "+81300000200", "+81300000300")
    c = block(RANGE, "+81300000250", "+81300000900")  # wider than a: a wins on 301..500
    lists = NumberLists.build([a, b, c], None)
    expect = {99: None, 150: a, 200: b, 260: b, 300: b, 301: a, 500: a, 501: c, 900: c, 901: None}
    for n, entry in expect.items():
        assert lists.match_block(f"+81300000{n:03d}") is entry, n


def test_allow_and_block_are_separate() -> None:
    a = allow(EXACT, "+81312345678")
    b = block(PREFIX, "+81120")
    lists = NumberLists.build([a, b], None)
    assert lists.match_allow("+81312345678") is a
    assert lists.match_block("+81312345678") is None
    assert lists.match_block("+81120123456") is b
    assert lists.match_allow("+81120123456") is None
    assert len(lists) == 2


def test_garbage_lookup_does_not_match_or_raise() -> None:
    lists = NumberLists.build([block(RANGE, "+81312340000", "+81312349999"), block(PREFIX, "+81")], None)
    assert lists.match_block("") is None
    assert lists.match_block("+8131234abcd") is lists.match_block("+81000000000")  # prefix +81 only


def test_expiry_drops_entries_at_or_before_now() -> None:
    past = block(EXACT, "+81311111111", expires_at="2024-06-01T00:00:00.000Z")
    at_now = block(EXACT, "+81322222222", expires_at="2024-06-01T09:00:00+09:00")  # same instant as now
    future = block(EXACT, "+81333333333", expires_at="2024-06-01T00:00:00.001Z")
    later = block(EXACT, "+81344444444", expires_at="2025-01-01T00:00:00Z")
    forever = block(EXACT, "+81355555555")
    lists = NumberLists.build([past, at_now, future, later, forever], "2024-06-01T00:00:00Z")
    assert lists.match_block(past.value) is None
    assert lists.match_block(at_now.value) is None
    assert lists.match_block(future.value) is future
    assert lists.match_block(forever.value) is forever
    assert len(lists) == 3
    assert lists.next_expiry == "2024-06-01T00:00:00.001000+00:00"
    assert len(NumberLists.build([past, at_now], None)) == 2  # no clock, nothing dropped


def test_malformed_entries_are_skipped_not_fatal() -> None:
    bad = [
        block(EXACT, "0312345678"),
        block(RANGE, "+81312340000", None),
        block(RANGE, "+81312340000", "+8131234999"),
        block(RANGE, "+81312349999", "+81312340000"),
        block(PREFIX, "81*"),
        block(EXACT, "+81312345678", expires_at="next tuesday"),
    ]
    good = block(PREFIX, "+81120")
    lists = NumberLists.build([*bad, good], "2024-01-01T00:00:00Z")
    assert len(lists) == 1
    assert [e for e, _ in lists.skipped] == bad
    assert lists.match_block("+81120000000") is good


e164_numbers = st.from_regex(r"\+[1-9][0-9]{6,14}", fullmatch=True)


@settings(max_examples=examples(200))
@given(
    number=e164_numbers,
    noise=st.lists(
        st.tuples(st.sampled_from([EXACT, PREFIX, RANGE]), e164_numbers, st.integers(0, 10**6)), max_size=20
    ),
)
def test_exact_entry_always_matches_its_own_number(number: str, noise: list[tuple[MatchKind, str, int]]) -> None:
    others = []
    for match, value, span in noise:
        if match is RANGE:
            end = str(min(int(value[1:]) + span, 10 ** (len(value) - 1) - 1))
            others.append(block(RANGE, value, "+" + end))
        elif match is PREFIX:
            others.append(block(PREFIX, value[: max(2, len(value) - span % 8)]))
        else:
            others.append(block(EXACT, value, note="noise"))
    mine = block(EXACT, number, note="mine")
    lists = NumberLists.build([*others, mine], None)
    assert lists.match_block(number) is mine


@settings(max_examples=examples(200))
@given(
    st.lists(st.tuples(st.integers(0, 200), st.integers(0, 60)), min_size=1, max_size=25),
    st.integers(0, 260),
)
def test_range_lookup_agrees_with_brute_force(spans: list[tuple[int, int]], probe: int) -> None:
    """The flattened segments give the same answer as scanning every range."""
    entries = [block(RANGE, f"+81300000{s:03d}", f"+81300000{s + w:03d}") for s, w in spans]
    found = NumberLists.build(entries, None).match_block(f"+81300000{probe:03d}")
    covering = [(int(e.value_end[-3:]) - int(e.value[-3:]), e) for e in entries if e.value[-3:] <= f"{probe:03d}" <= e.value_end[-3:]]  # type: ignore[index]
    if not covering:
        assert found is None
    else:
        assert found is not None and found in [e for _, e in covering]
        assert int(found.value_end[-3:]) - int(found.value[-3:]) == min(w for w, _ in covering)  # type: ignore[index]


@pytest.mark.slow
def test_million_entries_build_and_lookup() -> None:
    """Scale check (no timing assertion): 1 M entries, 10 k random lookups, all correct."""
    rng = random.Random(1234)
    numbers = [f"+8190{n:08d}" for n in rng.sample(range(10**8), 990_000)]
    entries = [block(EXACT, n) for n in numbers]
    entries += [block(PREFIX, f"+81120{i:04d}") for i in range(5_000)]
    entries += [block(RANGE, f"+8150{i:04d}0000", f"+8150{i:04d}{rng.randrange(10_000):04d}") for i in range(5_000)]
    lists = NumberLists.build(entries, None)
    assert len(lists) == 1_000_000
    for n in rng.sample(numbers, 5_000):
        assert lists.match_block(n) is not None and lists.match_block(n).value == n  # type: ignore[union-attr]
    for _ in range(5_000):
        probe = f"+8170{rng.randrange(10**8):08d}"
        assert lists.match_block(probe) is None
