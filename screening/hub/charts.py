"""The fleet page's results per area as charts: each area's last months of calls by category and
the share of callers who hung up during the announcement, drawn server-side as SVG by the unit's
statistics charts (``screening.web.stats_charts``): no script, readable on a phone, and only
aggregate figures (the police role never sees a number or a call)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from screening.web.stats_charts import Series, bar_chart, stacked_bars

CHART_MONTHS = 6


@dataclass(frozen=True, slots=True)
class AreaCharts:
    area: str
    calls: str  # SVG + legend: calls per month by category
    hung_up: str  # SVG: % of callers who hung up during the announcement, per month


def month_window(last: datetime, count: int = CHART_MONTHS) -> tuple[list[str], datetime, datetime]:
    """``count`` months ending with ``last``'s (UTC): their "YYYY-MM" names, the first's start, the end."""
    year, month = last.year, last.month
    names: list[str] = []
    for _ in range(count):
        names.append(f"{year:04d}-{month:02d}")
        year, month = (year - 1, 12) if month == 1 else (year, month - 1)
    names.reverse()
    start = datetime(int(names[0][:4]), int(names[0][5:]), 1, tzinfo=UTC)
    end_year, end_month = (last.year + 1, 1) if last.month == 12 else (last.year, last.month + 1)
    return names, start, datetime(end_year, end_month, 1, tzinfo=UTC)


def area_charts(rows: Iterable[dict[str, Any]], months: list[str], translate: Callable[..., str]) -> list[AreaCharts]:
    """``rows``: ``HubStore.area_months`` (area, month, category, calls, hung_up)."""
    calls: dict[str, dict[str, list[int]]] = {}  # area -> category -> calls per month
    hung_up: dict[str, list[int]] = {}
    index = {month: i for i, month in enumerate(months)}
    for row in rows:
        i = index.get(row["month"])
        if i is None:
            continue
        area = row["area"] or "-"
        calls.setdefault(area, {}).setdefault(row["category"], [0] * len(months))[i] += int(row["calls"])
        hung_up.setdefault(area, [0] * len(months))[i] += int(row["hung_up"])
    charts = []
    for area in sorted(calls):
        by_category = calls[area]
        totals = [sum(values[i] for values in by_category.values()) for i in range(len(months))]
        series = [Series(category, category, tuple(float(v) for v in values))
                  for category, values in sorted(by_category.items())]  # fmt: skip
        shares = [100.0 * h / total if total else None for h, total in zip(hung_up[area], totals, strict=True)]
        charts.append(AreaCharts(
            area,
            stacked_bars(translate("fleet.chart_calls", area=area), months, series),
            bar_chart(translate("fleet.chart_hung_up", area=area), months, shares, "%", top=100.0, key="hung_up"),
        ))  # fmt: skip
    return charts
