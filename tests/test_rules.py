"""Table tests for the pure screening rules."""

from __future__ import annotations

import dataclasses

import pytest

from blocklist.lists import NumberLists
from screening.core.callerid import caller_id_for_check
from screening.core.model import Action, Category, ListEntry, ListKind, MatchKind, Prompt, Reason
from screening.core.rules import NoLists, Policy, decide

FAMILY = "+81312345678"
SCAMMER = "+81398765432"

LISTS = NumberLists.build(
    [
        ListEntry(ListKind.ALLOW, MatchKind.EXACT, FAMILY, source="family", note="daughter"),
        ListEntry(ListKind.ALLOW, MatchKind.EXACT, "+442079460000", source="family", note="son in London"),
        ListEntry(ListKind.ALLOW, MatchKind.EXACT, "+81335810110", source="family", note="real local police box"),
        ListEntry(ListKind.BLOCK, MatchKind.EXACT, SCAMMER, source="local", note="fake bank"),
        ListEntry(ListKind.BLOCK, MatchKind.PREFIX, "+81505", source="police", note="IP numbers used in fraud"),
        ListEntry(ListKind.BLOCK, MatchKind.RANGE, "+81661110000", "+81661119999", source="police"),
        ListEntry(ListKind.BLOCK, MatchKind.EXACT, "+15555550100", source="local"),
        ListEntry(ListKind.BLOCK, MatchKind.EXACT, "+81120000001", source="local",
                  expires_at="2000-01-01T00:00:00Z"),
    ],
    now_iso="2026-01-01T00:00:00Z",
)


def check(number: str, reason: Reason | None = None, policy: Policy = Policy(), lists=LISTS):
    return decide(caller_id_for_check(number, reason, None, policy.home_region), lists, policy)


@pytest.mark.parametrize(
    ("number", "reason", "action", "rule", "category", "prompt"),
    [
        ("03-1234-5678", None, Action.ALLOW, "allowlist", Category.DOMESTIC, None),
        ("0312345678", None, Action.ALLOW, "allowlist", Category.DOMESTIC, None),
        ("03-9876-5432", None, Action.BLOCK, "blocklist:local", Category.DOMESTIC, Prompt.NUMBER_BLOCKED),
        ("050-5555-1234", None, Action.BLOCK, "blocklist:police", Category.DOMESTIC, Prompt.NUMBER_BLOCKED),
        ("06-6111-5000", None, Action.BLOCK, "blocklist:police", Category.DOMESTIC, Prompt.NUMBER_BLOCKED),
        ("06-6112-5000", None, Action.WARN, "unknown", Category.DOMESTIC, Prompt.WARNING),
        ("", Reason.WITHHELD, Action.REQUEST_NUMBER, "withheld", Category.WITHHELD, Prompt.NUMBER_REQUEST),
        ("", Reason.OUT_OF_AREA, Action.WARN, "out_of_area", Category.OUT_OF_AREA, Prompt.WARNING),
        ("", Reason.PAYPHONE, Action.WARN, "payphone", Category.PAYPHONE, Prompt.WARNING),
        ("", Reason.SERVICE_CONFLICT, Action.WARN, "service_conflict", Category.SERVICE_CONFLICT, Prompt.WARNING),
        ("", None, Action.WARN, "no_caller_id", Category.NO_CALLER_ID, Prompt.WARNING),
        ("010-44-20-7946-1111", None, Action.BLOCK, "international:+44", Category.INTERNATIONAL,
         Prompt.INTERNATIONAL_BLOCKED),
        ("+1 876 555 1234", None, Action.BLOCK, "international:+1", Category.INTERNATIONAL,
         Prompt.INTERNATIONAL_BLOCKED),
        ("0044 20 7946 1111", None, Action.BLOCK, "international:+44", Category.INTERNATIONAL,
         Prompt.INTERNATIONAL_BLOCKED),
        # a child abroad on the allowlist gets through even though international calls are blocked
        ("010-44-20-7946-0000", None, Action.ALLOW, "allowlist", Category.INTERNATIONAL, None),
        ("110", None, Action.WARN, "official_lookalike", Category.OFFICIAL_LOOKALIKE, Prompt.WARNING),
        ("119", None, Action.WARN, "official_lookalike", Category.OFFICIAL_LOOKALIKE, Prompt.WARNING),
        ("03-3581-4321", None, Action.WARN, "unknown", Category.DOMESTIC, Prompt.WARNING),
        ("03-3581-0110", None, Action.ALLOW, "allowlist", Category.DOMESTIC, None),  # explicitly allowlisted
        ("06-6943-0110", None, Action.WARN, "official_lookalike", Category.OFFICIAL_LOOKALIKE, Prompt.WARNING),
        ("0120-000-001", None, Action.WARN, "unknown", Category.DOMESTIC, Prompt.WARNING),  # block entry expired
        ("12#45", None, Action.WARN, "invalid_number", Category.INVALID, Prompt.WARNING),
    ],
)
def test_default_policy_table(number, reason, action, rule, category, prompt):
    d = check(number, reason)
    assert (d.action, d.rule, d.category, d.prompt) == (action, rule, category, prompt)
    assert d.reason and "\n" not in d.reason


def test_reason_code_beats_digits():
    """A withheld call is withheld even if a modem also printed digits."""
    d = check("0312345678", Reason.WITHHELD)
    assert d.action is Action.REQUEST_NUMBER


def test_international_configurable_to_warn_and_country_exception():
    warn = Policy(international=Action.WARN)
    assert check("+442079461111", policy=warn).action is Action.WARN
    usa_ok = Policy(international_allow_countries=frozenset({"US"}))
    d = check("+1 212 555 0100", policy=usa_ok)
    assert (d.action, d.rule) == (Action.WARN, "international_exception:US")
    # Jamaica shares +1 but is not the US
    assert check("+1 876 555 1234", policy=usa_ok).action is Action.BLOCK


def test_official_lookalike_never_allowed_even_if_unknowns_are():
    lenient = Policy(unknown=Action.ALLOW)
    assert check("06-6112-5000", policy=lenient).action is Action.ALLOW
    assert check("110", policy=lenient).action is Action.WARN
    assert check("06-6943-0110", policy=lenient).action is Action.WARN


def test_every_situation_is_configurable():
    blocky = Policy(
        withheld=Action.BLOCK, out_of_area=Action.BLOCK, payphone=Action.ALLOW, service_conflict=Action.BLOCK,
        no_caller_id=Action.REQUEST_NUMBER,
    )
    assert check("", Reason.WITHHELD, blocky).prompt is Prompt.NUMBER_BLOCKED
    assert check("", Reason.OUT_OF_AREA, blocky).action is Action.BLOCK
    assert check("", Reason.PAYPHONE, blocky).action is Action.ALLOW
    assert check("", Reason.SERVICE_CONFLICT, blocky).action is Action.BLOCK
    assert check("", None, blocky).action is Action.REQUEST_NUMBER


def test_us_home_region():
    us = Policy(home_region="US", official_numbers=frozenset({"911"}), official_suffixes=())
    assert check("(212) 555-0100", policy=us).action is Action.WARN
    assert check("011 44 20 7946 1111", policy=us).rule == "international:+44"
    assert check("911", policy=us).rule == "official_lookalike"
    assert check("+1 555 555 0100", policy=us).rule == "blocklist:local"


def test_allowlist_beats_blocklist():
    both = NumberLists.build(
        [ListEntry(ListKind.ALLOW, MatchKind.EXACT, SCAMMER), ListEntry(ListKind.BLOCK, MatchKind.EXACT, SCAMMER)],
        now_iso=None,
    )
    assert check("03-9876-5432", lists=both).action is Action.ALLOW


def test_no_lists():
    assert check("03-1234-5678", lists=NoLists()).rule == "unknown"


def test_decision_is_deterministic_and_serialisable():
    d1, d2 = check("0398765432"), check("0398765432")
    assert d1 == d2
    assert set(d1.as_dict()) == {"action", "rule", "reason", "category", "prompt"}
    assert dataclasses.is_dataclass(d1)
