"""The breadth policy for signed feeds: a pure function over the whole list (issue 12, item 13)."""

from __future__ import annotations

import pytest

from blocklist.feed_breadth import BreadthLimits, feed_breadth_problem
from screening.core.model import ListEntry, ListKind, MatchKind

LIMITS = BreadthLimits()


def block(value: str, end: str | None = None) -> ListEntry:
    if value.endswith("*"):
        return ListEntry(ListKind.BLOCK, MatchKind.PREFIX, value[:-1])
    if end is not None:
        return ListEntry(ListKind.BLOCK, MatchKind.RANGE, value, end)
    return ListEntry(ListKind.BLOCK, MatchKind.EXACT, value)


def test_ninety_two_digit_prefixes_blocking_all_of_japan_are_refused() -> None:
    feed = [block(f"+81{d}*") for d in range(10, 100)]
    problem = feed_breadth_problem(feed, LIMITS)
    assert problem is not None


def test_nine_hundred_three_digit_prefixes_are_refused_for_their_share() -> None:
    # Every prefix is long enough on its own; together they cover 90 % of Japan (and 110/119: drop those).
    feed = [block(f"+81{d}*") for d in range(120, 1000)]
    problem = feed_breadth_problem(feed, LIMITS)
    assert problem is not None and "88.0% of all numbers under +81" in problem, problem


def test_a_wide_range_counts_like_the_prefixes_it_spans() -> None:
    feed = [block("+81300000000", "+81699999999")]  # 03-0000-0000 .. 06-9999-9999: 40 % of 9-digit numbers
    problem = feed_breadth_problem(feed, LIMITS)
    assert problem is not None and "+81" in problem and "40.0%" in problem, problem


def test_overlapping_entries_are_counted_once() -> None:
    # Ten times the same 0.1 % prefix, plus exact numbers inside it: still 0.1 %.
    feed = [block("+81120*")] * 10 + [block(f"+8112012345{i:02d}") for i in range(50)]
    assert feed_breadth_problem(feed, LIMITS) is None


def test_the_share_limit_is_a_setting() -> None:
    feed = [block(f"+81{d}*") for d in range(120, 140)]  # 2 %
    assert feed_breadth_problem(feed, LIMITS) is not None
    assert feed_breadth_problem(feed, BreadthLimits(max_share_percent=5.0)) is None


def test_a_whole_country_prefix_is_refused_abroad_too() -> None:
    problem = feed_breadth_problem([block("+44*")], LIMITS)
    assert problem is not None and "+44" in problem


def test_short_prefixes_are_refused_by_the_min_digits_setting() -> None:
    assert feed_breadth_problem([block("+8150*")], LIMITS) is not None
    assert feed_breadth_problem([block("+8150*")], BreadthLimits(min_prefix_digits=2)) is None


@pytest.mark.parametrize("entry", [
    block("+81110"), block("+81119"), block("+81118"),   # emergency numbers named outright
    block("+8111*"),                                     # a prefix over 110-119
    block("+81100", "+81199"),                           # a range over them
])  # fmt: skip
def test_emergency_numbers_are_never_blockable(entry: ListEntry) -> None:
    problem = feed_breadth_problem([block("+81312340001"), entry], BreadthLimits(min_prefix_digits=1))
    assert problem is not None and "emergency" in problem, problem


def test_a_police_station_number_is_never_blockable_but_a_mobile_ending_0110_is() -> None:
    assert "police" in (feed_breadth_problem([block("+81335810110")], LIMITS) or "")
    assert feed_breadth_problem([block("+819012340110")], LIMITS) is None


def test_an_ordinary_police_feed_passes() -> None:
    feed = [block(f"+8131234{i:04d}") for i in range(2000) if i != 110] + [block("+8150123*"),
            block("+81312350000", "+81312359999"), block("+442079460000")]  # fmt: skip
    assert feed_breadth_problem(feed, LIMITS) is None


def test_the_units_limits_protect_the_rules_official_numbers() -> None:
    from screening.config import parse_config
    from screening.feed_wiring import feed_limits

    cfg = parse_config({"feeds": {"max_share_percent": 2.5, "min_prefix_digits": 4},
                        "rules": {"official_numbers": ["110", "119", "#9110", "171"]}}, source="test")  # fmt: skip
    limits = feed_limits(cfg)
    assert (limits.max_share_percent, limits.min_prefix_digits) == (2.5, 4)
    assert limits.protected == ("+81110", "+81119", "+81171")
    assert "emergency" in (feed_breadth_problem([block("+81171")], limits) or "")
