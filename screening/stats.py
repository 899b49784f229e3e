"""The effectiveness figures municipalities publish, per month: ``mamoru stats``, the page and the CSV.

Months are the household's local months (a call at 08:00 JST on the 1st belongs to that month,
though it is the previous day in UTC). Every figure is computed from the store's rows, never
kept as a counter, so a recovered or replayed call counts like any other.

撃退率 (repel rate), as the police loaner-recorder reports define it: of the warned or
screened callers who reached the announcement (an announcement was played), the share who hung
up during the announcement or the challenge. A call counts as repelled when a played prompt
ended with the caller hanging up, a robocall challenge was failed, or its outcome is
``caller_hung_up`` or ``screened_out``. Calls never answered (household already on the line)
are not in the denominator.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, time, tzinfo
from typing import Any

from blocklist.store.stats import AlertFacts, CallFacts, StatsStore
from screening.core.clock import iso_utc, parse_iso_utc
from screening.core.model import Action, CallOutcome, Category

__all__ = ["CSV_COLUMNS", "MonthStats", "Period", "StatsReport", "build_report", "parse_period", "report_csv"]

ACTIONS = tuple(a.value for a in Action)
CATEGORIES = tuple(c.value for c in Category)
OUTCOMES = tuple(o.value for o in CallOutcome)
_REPEL_OUTCOMES = {CallOutcome.CALLER_HUNG_UP.value, CallOutcome.SCREENED_OUT.value}
_CHALLENGED_ACTIONS = {Action.WARN.value, Action.SCREEN.value}


@dataclass(frozen=True, slots=True)
class Period:
    """Local calendar days ``first`` .. ``last``, both included."""

    first: date
    last: date

    def utc_bounds(self, zone: tzinfo) -> tuple[str, str]:
        """[since, until) as ISO UTC strings the store compares as text."""
        start = datetime.combine(self.first, time(0), zone)
        end = datetime.combine(date.fromordinal(self.last.toordinal() + 1), time(0), zone)
        return iso_utc(start), iso_utc(end)

    def months(self) -> list[str]:
        year, month = self.first.year, self.first.month
        out: list[str] = []
        while (year, month) <= (self.last.year, self.last.month):
            out.append(f"{year:04d}-{month:02d}")
            year, month = (year + 1, 1) if month == 12 else (year, month + 1)
        return out


def _parse_day(text: str, *, end: bool) -> date:
    """``YYYY-MM-DD``, or ``YYYY-MM`` (its first day, or with ``end`` its last)."""
    value = text.strip()
    try:
        if len(value) == 7:
            first = date.fromisoformat(value + "-01")
            if not end:
                return first
            following = date(first.year + first.month // 12, first.month % 12 + 1, 1)
            return date.fromordinal(following.toordinal() - 1)
        return date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"not a date: {text!r} (use YYYY-MM-DD or YYYY-MM)") from None


def parse_period(since: str | None, until: str | None, today: date) -> Period:
    """From ``--from``/``--to`` (inclusive); by default the last 12 months up to ``today``. Raises ValueError."""
    last = _parse_day(until, end=True) if until else today
    if since:
        first = _parse_day(since, end=False)
    else:
        back = last.year * 12 + last.month - 1 - 11
        first = date(back // 12, back % 12 + 1, 1)
    if first > last:
        raise ValueError(f"--from {first} is after --to {last}")
    if (last.year - first.year) * 12 + last.month - first.month >= 120:
        raise ValueError("a period of at most 10 years, please")
    return Period(first, last)


@dataclass(slots=True)
class MonthStats:
    month: str  # YYYY-MM, local
    calls: int = 0
    by_action: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ACTIONS, 0))
    by_category: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CATEGORIES, 0))
    outcomes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    challenged: int = 0  # warned or screened callers who reached the announcement
    repelled: int = 0  # of those, hung up during the announcement or the challenge
    messages: int = 0
    fraud_calls: int = 0
    flagged_phrases: int = 0
    alerts: int = 0
    alerts_acknowledged: int = 0

    @property
    def repel_rate(self) -> float | None:
        """撃退率 in percent (one decimal), None when nobody was warned or screened."""
        return round(100.0 * self.repelled / self.challenged, 1) if self.challenged else None

    def add_call(self, call: CallFacts) -> None:
        self.calls += 1
        self.by_action[call.action or "none"] = self.by_action.get(call.action or "none", 0) + 1
        self.by_category[call.category or "none"] = self.by_category.get(call.category or "none", 0) + 1
        if call.outcome:
            self.outcomes[call.outcome] += 1
        if call.action in _CHALLENGED_ACTIONS and call.answered:
            self.challenged += 1
            if call.hung_up_in_announcement or call.challenge_failed or call.outcome in _REPEL_OUTCOMES:
                self.repelled += 1
        self.messages += call.messages
        self.fraud_calls += int(call.fraud)
        self.flagged_phrases += call.flagged_phrases

    def add_alert(self, alert: AlertFacts) -> None:
        self.alerts += 1
        self.alerts_acknowledged += int(alert.acked)

    def as_dict(self) -> dict[str, Any]:
        return {"month": self.month, "calls": self.calls, "by_action": dict(self.by_action),
                "by_category": dict(self.by_category), "outcomes": dict(self.outcomes),
                "warned_or_screened": self.challenged, "repelled": self.repelled, "repel_rate": self.repel_rate,
                "messages": self.messages, "fraud_calls": self.fraud_calls, "flagged_phrases": self.flagged_phrases,
                "alerts": self.alerts, "alerts_acknowledged": self.alerts_acknowledged}  # fmt: skip


@dataclass(frozen=True, slots=True)
class StatsReport:
    period: Period
    zone: str
    months: list[MonthStats]
    total: MonthStats

    def as_dict(self) -> dict[str, Any]:
        return {"from": self.period.first.isoformat(), "to": self.period.last.isoformat(), "time_zone": self.zone,
                "months": [m.as_dict() for m in self.months], "total": self.total.as_dict()}  # fmt: skip


def _local_month(iso: str, zone: tzinfo) -> str:
    return parse_iso_utc(iso).astimezone(zone).strftime("%Y-%m")


def build_report(store: StatsStore, period: Period, zone: tzinfo) -> StatsReport:
    since, until = period.utc_bounds(zone)
    months = {month: MonthStats(month) for month in period.months()}
    total = MonthStats("total")
    for call in store.call_facts(since, until):
        month = months.get(_local_month(call.started_at, zone))
        if month is not None:
            month.add_call(call)
            total.add_call(call)
    for alert in store.alert_facts(since, until):
        month = months.get(_local_month(alert.created_at, zone))
        if month is not None:
            month.add_alert(alert)
            total.add_alert(alert)
    return StatsReport(period, str(zone), list(months.values()), total)


# The CSV's columns, in order: (id, what a cell holds). Headers are the ids' labels in the chosen
# language (``stats.csv.<id>`` in the web catalogue); docs/statistics.md lists them.
CSV_COLUMNS: tuple[str, ...] = (
    "month", "calls", *(f"action_{a}" for a in ACTIONS), *(f"category_{c}" for c in CATEGORIES),
    "warned_or_screened", "repelled", "repel_rate", "messages", "fraud_calls", "flagged_phrases",
    "alerts", "alerts_acknowledged", *(f"outcome_{o}" for o in OUTCOMES),
)  # fmt: skip


def _csv_row(month: MonthStats, month_label: str) -> list[object]:
    rate = month.repel_rate
    return [month_label, month.calls, *(month.by_action.get(a, 0) for a in ACTIONS),
            *(month.by_category.get(c, 0) for c in CATEGORIES), month.challenged, month.repelled,
            "" if rate is None else f"{rate:.1f}", month.messages, month.fraud_calls, month.flagged_phrases,
            month.alerts, month.alerts_acknowledged, *(month.outcomes.get(o, 0) for o in OUTCOMES)]  # fmt: skip


def report_csv(report: StatsReport, headers: Iterable[str], total_label: str) -> bytes:
    """UTF-8 with a BOM (so Excel reads the Japanese headers right), CRLF rows, one per month and a total."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(list(headers))
    for month in report.months:
        writer.writerow(_csv_row(month, month.month))
    writer.writerow(_csv_row(report.total, total_label))
    return out.getvalue().encode("utf-8-sig")


def month_counts(report: StatsReport, key: str) -> list[tuple[str, dict[str, int]]]:
    """(month, counts) for a chart: ``key`` is ``by_action`` or ``by_category``."""
    return [(m.month, dict(getattr(m, key))) for m in report.months]


def nonzero(counts: Iterable[dict[str, int]]) -> list[str]:
    """The keys that are non-zero somewhere, in their order (a chart's legend)."""
    seen: Counter[str] = Counter()
    order: list[str] = []
    for row in counts:
        for key, value in row.items():
            if key not in order:
                order.append(key)
            seen[key] += value
    return [k for k in order if seen[k]]
