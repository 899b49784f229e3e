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

Schedules (``[[schedule]]``, e.g. "night: unknown callers go to messages") replace some of the
policy's actions during a local-time window. The time is an argument (``at``), never read here;
the first schedule whose window covers it applies. List matches (1, 2) are never overridden, so
an allowlisted number still rings at night. A decision taken under a schedule says so in its
rule id (``unknown@schedule:night``) and its sentence.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from datetime import time as clock_time
from typing import Any, Protocol

from screening.core.clock import region_zone
from screening.core.model import Action, CallerID, Category, Decision, ListEntry, ListKind, Prompt, Reason
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
    schedules: tuple[Schedule, ...] = ()  # first whose window covers the call's time applies


# The Policy fields a schedule may override: every "what to do with this kind of caller" action.
SCHEDULABLE = ("withheld", "international", "out_of_area", "payphone", "service_conflict", "no_caller_id",
               "invalid", "unknown")  # fmt: skip
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # index = datetime.weekday()


@dataclass(frozen=True, slots=True)
class Schedule:
    """A local-time window (may wrap midnight) during which some actions differ.

    ``days`` are the weekdays (Monday = 0) the window *starts* on: a Friday 22:00-07:00
    window also covers Saturday 03:00, and not Friday 03:00.
    """

    name: str
    start: clock_time
    end: clock_time
    overrides: tuple[tuple[str, Action], ...]  # (Policy field in SCHEDULABLE, action)
    days: frozenset[int] = frozenset(range(7))

    def covers(self, local: datetime) -> bool:
        moment = local.time().replace(tzinfo=None)
        weekday = local.weekday()
        if self.start < self.end:
            return weekday in self.days and self.start <= moment < self.end
        if moment >= self.start:
            return weekday in self.days
        return moment < self.end and (weekday - 1) % 7 in self.days

    def window(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"


def active_schedule(policy: Policy, at: datetime | None) -> Schedule | None:
    """The schedule in force at ``at`` (naive = UTC) in the household's zone, or None."""
    if at is None or not policy.schedules:
        return None
    local = (at if at.tzinfo else at.replace(tzinfo=UTC)).astimezone(region_zone(policy.home_region))
    return next((s for s in policy.schedules if s.covers(local)), None)


# Per-reason-code situation: (category, policy attribute, human reason fragment).
_REASON_RULES: dict[Reason, tuple[Category, str, str]] = {
    Reason.WITHHELD: (Category.WITHHELD, "withheld", "withheld number"),
    Reason.OUT_OF_AREA: (Category.OUT_OF_AREA, "out_of_area", "number unavailable (out of area)"),
    Reason.PAYPHONE: (Category.PAYPHONE, "payphone", "call from a payphone"),
    Reason.SERVICE_CONFLICT: (Category.SERVICE_CONFLICT, "service_conflict", "number not delivered (service conflict)"),
}

_LIST_ACTION = {ListKind.ALLOW: Action.ALLOW, ListKind.BLOCK: Action.BLOCK}
_ACTION_TAIL: dict[Action, str] = {
    Action.ALLOW: "the phone rings normally",
    Action.WARN: "fraud-prevention warning played to the caller",
    Action.SCREEN: "warning played, the caller asked for their name, the household decides",
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


def decide(caller: CallerID, lists: ListLookup, policy: Policy, at: datetime | None = None) -> Decision:
    """Decide what to do with one incoming call. Pure function.

    ``at`` is when the call came (aware, or naive UTC); None means no schedule applies.
    """
    schedule = active_schedule(policy, at)
    if schedule is None:
        return _decide(caller, lists, policy)
    overrides: dict[str, Any] = dict(schedule.overrides)
    decision = _decide(caller, lists, replace(policy, **overrides))
    if _policy_field(decision.rule) not in overrides:
        return decision  # a list match or a situation this schedule leaves alone
    return replace(decision, rule=f"{decision.rule}@schedule:{schedule.name}",
                   reason=f"{decision.reason} (schedule {schedule.name!r}, {schedule.window()})")


def _policy_field(rule: str) -> str | None:
    """Which Policy action a rule id was decided by (None: a list match)."""
    head = rule.partition(":")[0]
    if head in ("allowlist", "blocklist", "list_entry"):
        return None
    return {"invalid_number": "invalid", "international_exception": "unknown",
            "official_lookalike": "unknown"}.get(head, head)  # fmt: skip


def _entry_action(entry: ListEntry | None) -> tuple[ListEntry, Action] | None:
    if entry is None or entry.action is None or entry.action is _LIST_ACTION[entry.list]:
        return None
    return entry, entry.action


def _decide(caller: CallerID, lists: ListLookup, policy: Policy) -> Decision:
    e164 = caller.number_e164  # normalised once, by the caller-ID parser

    if e164:
        allowed = lists.match_allow(e164)
        own = _entry_action(allowed) or _entry_action(lists.match_block(e164) if allowed is None else None)
        if own is not None:  # a list entry's own action ("screen this one") wins over its list's
            entry, action = own
            return _make(action, f"list_entry:{entry.list.value}",
                         f"on the {entry.source} {entry.list.value} list with its own action ({entry.describe()})",
                         _category_of(e164, policy), entry)
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
