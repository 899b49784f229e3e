"""Server-side SVG charts for the statistics page: no script, no chart library, readable on a phone.

The SVG is built from numbers and from labels that are escaped here (month names and the
catalogue's own texts: nothing a caller can influence), scales with its ``viewBox`` and carries
a ``<title>`` per bar so a screen reader or a long press tells the figure.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

__all__ = ["Series", "bar_chart", "stacked_bars"]

# Colour-blind-safe (Okabe-Ito) fills, in legend order.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#56B4E9", "#F0E442", "#000000", "#999999")
# Small viewBox, large type: on a phone the SVG is drawn ~350 px wide, so 14 units stay readable.
WIDTH, HEIGHT, LEFT, BOTTOM, TOP, FONT = 480, 250, 48, 44, 12, 14


@dataclass(frozen=True, slots=True)
class Series:
    key: str  # stable id (a CSS-free hook for tests: data-key)
    label: str
    values: tuple[float, ...]  # one per month


def _nice_max(value: float) -> float:
    """An axis top at or above ``value`` whose four gridlines fall on whole round numbers."""
    quarter = max(value / 4, 1.0)
    base = 1.0
    while base * 10 <= quarter:
        base *= 10
    return 4 * next(m * base for m in (1, 1.5, 2, 2.5, 3, 4, 5, 7.5, 10) if m * base >= quarter and m * base >= 1)


def _frame(months: list[str], top: float, unit: str, title: str) -> list[str]:
    plot_w, plot_h = WIDTH - LEFT - 8, HEIGHT - BOTTOM - TOP
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" width="100%" role="img" '
             f'aria-label="{escape(title)}" class="chart">', f"<title>{escape(title)}</title>"]
    for i in range(5):
        y = TOP + plot_h - plot_h * i / 4
        parts.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{LEFT + plot_w}" y2="{y:.1f}" stroke="#ddd"/>')
        parts.append(f'<text x="{LEFT - 4}" y="{y + 5:.1f}" text-anchor="end" font-size="{FONT}" fill="#444">'
                     f"{_number(top * i / 4)}{escape(unit)}</text>")
    slot = plot_w / max(len(months), 1)
    for index, month in enumerate(months):
        # the month's number under each bar; the year under the first bar and under each January
        x = LEFT + slot * (index + 0.5)
        parts.append(f'<text x="{x:.1f}" y="{HEIGHT - BOTTOM + 18}" text-anchor="middle" font-size="{FONT}" '
                     f'fill="#444">{int(month[5:])}</text>')
        if index == 0 or month.endswith("-01"):
            parts.append(f'<text x="{x:.1f}" y="{HEIGHT - BOTTOM + 36}" text-anchor="middle" font-size="{FONT}" '
                         f'fill="#444">{escape(month[:4])}</text>')
    return parts


def _number(value: float) -> str:
    return f"{value:.0f}" if value == int(value) else f"{value:.1f}"


def stacked_bars(title: str, months: list[str], series: list[Series]) -> str:
    """Counts per month, one stacked bar per month, one colour per series, and a legend."""
    totals = [sum(s.values[i] for s in series) for i in range(len(months))]
    top = _nice_max(max(totals, default=0))
    parts = _frame(months, top, "", title)
    plot_w, plot_h = WIDTH - LEFT - 8, HEIGHT - BOTTOM - TOP
    slot = plot_w / max(len(months), 1)
    bar_w = max(slot * 0.6, 2)
    for index, month in enumerate(months):
        y: float = TOP + plot_h
        x = LEFT + slot * (index + 0.5) - bar_w / 2
        for number, s in enumerate(series):
            colour = PALETTE[number % len(PALETTE)]
            value = s.values[index]
            if not value:
                continue
            h = plot_h * value / top
            y -= h
            parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{h:.1f}" fill="{colour}" '
                         f'data-key="{escape(s.key)}" data-month="{escape(month)}" data-value="{_number(value)}">'
                         f"<title>{escape(month)} {escape(s.label)}: {_number(value)}</title></rect>")
    parts.append("</svg>")
    return "".join(parts) + _legend(series)


def bar_chart(title: str, months: list[str], values: list[float | None], unit: str, *, top: float | None = None,
              key: str = "value") -> str:  # fmt: skip
    """One bar per month (None: no data that month, drawn as nothing and said in the bar's title)."""
    top = top if top is not None else _nice_max(max((v for v in values if v is not None), default=0))
    parts = _frame(months, top, unit, title)
    plot_w, plot_h = WIDTH - LEFT - 8, HEIGHT - BOTTOM - TOP
    slot = plot_w / max(len(months), 1)
    bar_w = max(slot * 0.6, 2)
    for index, (month, value) in enumerate(zip(months, values, strict=True)):
        if value is None:
            continue
        h = plot_h * value / top
        x = LEFT + slot * (index + 0.5) - bar_w / 2
        parts.append(f'<rect x="{x:.1f}" y="{TOP + plot_h - h:.1f}" width="{bar_w:.1f}" height="{h:.1f}" '
                     f'fill="{PALETTE[0]}" data-key="{escape(key)}" data-month="{escape(month)}" '
                     f'data-value="{_number(value)}"><title>{escape(month)}: {_number(value)}{escape(unit)}</title>'
                     "</rect>")
    parts.append("</svg>")
    return "".join(parts)


def _legend(series: list[Series]) -> str:
    items = "".join(
        f'<li><svg viewBox="0 0 10 10" width="12" height="12" aria-hidden="true"><rect width="10" height="10" '
        f'fill="{colour}"/></svg> {escape(s.label)}</li>'
        for colour, s in ((PALETTE[n % len(PALETTE)], s) for n, s in enumerate(series))
    )
    return f'<ul class="legend">{items}</ul>'
