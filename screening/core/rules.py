"""The screening rules: ``decide(caller, lists, policy) -> Decision``.

Pure: no I/O, no clock, no database. Everything it needs arrives as arguments
(the lists are an already-filtered in-memory snapshot), so every decision can be
table-tested and explained. Rules are evaluated in a fixed order; the first that
applies wins and names itself with a stable rule id.

Order, and why:
1. allowlist        -- the family explicitly said yes; beats everything, even a feed.
2. blocklist        -- an explicit no (local, family or police feed).
3. reason codes     -- withheld / out of area / payphone / service conflict / none.
4. unparseable      -- digits that are not a number are suspicious, never allowed.
5. international    -- unless the caller's country is an allowed exception.
6. official look-alike -- 110/119/…0110 shown as caller ID is a classic spoof: never allow.
7. everything else  -- the policy for unknown numbers (default: warn).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


from screening.core.model import Action, CallerID, Category, Decision, ListEntry, Prompt, Reason
from screening.core.numbers import national_parts, try_parse_number


class ListLookup(Protocol):
    """What decide() needs from the allow/block lists (blocklist.lists.NumberLists)."""

    def match_allow(self, e164: str) -> ListEntry | None: ...

    def match_block(self, e164: str) -> ListEntry | None: ...


@dataclass(frozen=True, slots=True)
class Policy:
    """What to do per situation. Built from the ``[rules]`` config section."""

    home_region: str = "JP"
    withheld: Action = Action.REQUEST_NUMBER
    international: Action = Action.BLOCK
    out_of_area: Action = Action.WARN
    payphone: Action = Action.WARN
    service_conflict: Action = Action.WARN
    no_caller_id: Action = Action.WARN
    invalid: Action = Action.WARN
    unknown: Action = Action.WARN
    international_allow_countries: frozenset[str] = frozenset()
    official_numbers: frozenset[str] = frozenset({"110", "118", "119", "#9110"})
    official_suffixes: tuple[str, ...] = ("0110",)


# Per-reason-code situation: (category, policy attribute, human reason fragment).
_REASON_RULES: dict[Reason, tuple[Category, str, str]] = {
    Reason.WITHHELD: (Category.WITHHELD, "withheld", "withheld number"),
    Reason.OUT_OF_AREA: (Category.OUT_OF_AREA, "out_of_area", "number unavailable (out of area)"),
    Reason.PAYPHONE: (Category.PAYPHONE, "payphone", "call from a payphone"),
    Reason.SERVICE_CONFLICT: (Category.SERVICE_CONFLICT, "service_conflict", "number not delivered (service conflict)"),
}

_ACTION_TAIL: dict[Action, str] = {
    Action.ALLOW: "the phone rings normally",
    Action.WARN: "fraud-prevention warning played to the caller",
    Action.SCREEN: "warned and asked for a name; the household decides",
    Action.REQUEST_NUMBER: "Number Request played",
    Action.BLOCK: "call refused",
}


def _prompt_for(action: Action, category: Category) -> Prompt | None:
    if action is Action.ALLOW:
        return None
    if action in (Action.WARN, Action.SCREEN):
        return Prompt.WARNING
    if action is Action.REQUEST_NUMBER:
        return Prompt.NUMBER_REQUEST
    if category is Category.INTERNATIONAL:
        return Prompt.INTERNATIONAL_BLOCKED
    return Prompt.NUMBER_BLOCKED


def _make(action: Action, rule: str, what: str, category: Category, matched: ListEntry | None = None) -> Decision:
    return Decision(
        action=action,
        rule=rule,
        reason=f"{what}: {_ACTION_TAIL[action]}",
        category=category,
        prompt=_prompt_for(action, category),
        matched=matched,
    )


def _never_allow(action: Action) -> Action:
    """Official-looking callers are at least warned, whatever the policy for unknowns."""
    return Action.WARN if action is Action.ALLOW else action


def looks_official(caller: CallerID, policy: Policy) -> bool:
    """110/119 and friends shown as caller ID, or a police-station-style …0110 number.

    Real emergency services do not call households from these numbers; fraud
    rings spoof them because elderly people trust them.
    """
    raw = "".join(ch for ch in (caller.raw_number or "") if ch.isdigit() or ch in "#*")
    if raw in policy.official_numbers:
        return True
    if caller.number_e164:
        parts = national_parts(caller.number_e164)
        if parts is None:
            return False
        national, region = parts
        if national in policy.official_numbers:
            return True
        if region == policy.home_region:
            return any(national.endswith(sfx) for sfx in policy.official_suffixes)
    return False


def decide(caller: CallerID, lists: ListLookup, policy: Policy) -> Decision:
    """Decide what to do with one incoming call. Pure function."""
    e164 = caller.number_e164  # normalised once, by the caller-ID parser

    if e164:
        allowed = lists.match_allow(e164)
        if allowed is not None:
            return _make(Action.ALLOW, "allowlist", f"on the family allowlist ({allowed.describe()})",
                         _category_of(e164, policy), allowed)
        blocked = lists.match_block(e164)
        if blocked is not None:
            note = f", {blocked.note}" if blocked.note else ""
            return _make(Action.BLOCK, f"blocklist:{blocked.source}",
                         f"on the {blocked.source} blocklist ({blocked.describe()}{note})",
                         _category_of(e164, policy), blocked)

    if caller.reason is not None:
        category, attr, what = _REASON_RULES[caller.reason]
        return _make(getattr(policy, attr), attr, what, category)

    if not caller.raw_number:
        return _make(policy.no_caller_id, "no_caller_id", "no caller ID received",
                     Category.NO_CALLER_ID)

    if not e164 and not looks_official(caller, policy):
        return _make(policy.invalid, "invalid_number",
                     f"caller ID {caller.raw_number!r} is not a valid number", Category.INVALID)

    parsed = try_parse_number(e164, policy.home_region) if e164 else None
    if parsed is not None and parsed.is_international(policy.home_region):
        region = parsed.region or "??"
        if region not in policy.international_allow_countries:
            return _make(policy.international, f"international:+{parsed.country_code}",
                         f"international call from +{parsed.country_code} ({region})",
                         Category.INTERNATIONAL)
        return _make(policy.unknown, f"international_exception:{region}",
                     f"international call from an allowed country ({region})", Category.INTERNATIONAL)

    if looks_official(caller, policy):
        return _make(_never_allow(policy.unknown), "official_lookalike",
                     "number looks like police/emergency services, which do not call from it",
                     Category.OFFICIAL_LOOKALIKE)

    return _make(policy.unknown, "unknown", "number not on any list", Category.DOMESTIC)


def _category_of(e164: str, policy: Policy) -> Category:
    parsed = try_parse_number(e164, policy.home_region) if e164 else None
    if parsed is not None and parsed.is_international(policy.home_region):
        return Category.INTERNATIONAL
    return Category.DOMESTIC


class NoLists:
    """Empty lists, for checks without a store."""

    def match_allow(self, e164: str) -> ListEntry | None:
        return None

    def match_block(self, e164: str) -> ListEntry | None:
        return None
