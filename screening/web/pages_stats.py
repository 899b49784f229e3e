"""The statistics page (/stats) and its CSV export (/stats.csv): the figures municipalities publish.

Read-only, for any logged-in account; the period comes from the query string and is checked
like the command line's ``--from``/``--to``. Charts are SVG built on the server
(:mod:`screening.web.stats_charts`), so the page needs no script (the CSP forbids it anyway).
"""

from __future__ import annotations

import logging
from urllib.parse import urlencode

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from blocklist.store.rows import StoreError
from screening.core.clock import region_zone, utc_now
from screening.core.model import Language
from screening.stats import CSV_COLUMNS, Period, StatsReport, build_report, nonzero, parse_period, report_csv
from screening.web.i18n import translate
from screening.web.sessions import require_user
from screening.web.settings_common import web_ctx
from screening.web.stats_charts import Series, bar_chart, stacked_bars
from screening.web.templating import render, request_language

log = logging.getLogger(__name__)

MAX_DATE_CHARS = 10


def _period(request: Request) -> tuple[Period | None, str | None, dict[str, str]]:
    """The asked-for period, or None and the error text; plus the values to show in the form."""
    zone = region_zone(web_ctx(request).config().line.home_region)
    values = {name: request.query_params.get(name, "")[:MAX_DATE_CHARS].strip() for name in ("from", "to")}
    try:
        period = parse_period(values["from"] or None, values["to"] or None, utc_now().astimezone(zone).date())
    except ValueError:
        return None, translate(request_language(request), "stats.bad_period"), values
    return period, None, values


def _charts(report: StatsReport, lang: Language) -> dict[str, str]:
    months = [m.month for m in report.months]

    def series(attr: str, prefix: str) -> list[Series]:
        rows = [getattr(m, attr) for m in report.months]
        return [Series(key, translate(lang, f"{prefix}.{key}"), tuple(float(r.get(key, 0)) for r in rows))
                for key in nonzero(rows)]  # fmt: skip

    return {
        "by_action": stacked_bars(translate(lang, "stats.chart.by_action"), months, series("by_action", "stats.action")),
        "by_category": stacked_bars(translate(lang, "stats.chart.by_category"), months,
                                    series("by_category", "stats.category")),
        "repel_rate": bar_chart(translate(lang, "stats.chart.repel_rate"), months,
                                [m.repel_rate for m in report.months], "%", top=100.0, key="repel_rate"),
    }  # fmt: skip


async def stats_page(request: Request) -> Response:
    require_user(request)
    lang = request_language(request)
    period, error, values = _period(request)
    if period is None:
        return render(request, "stats.html", {"error": error, "values": values, "report": None}, status_code=400)
    zone = region_zone(web_ctx(request).config().line.home_region)
    try:
        report = await run_in_threadpool(build_report, web_ctx(request).store, period, zone)
    except StoreError as exc:
        log.error("web: statistics unavailable: %s", exc)
        return render(request, "stats.html", {"error": translate(lang, "stats.unavailable"), "values": values,
                                              "report": None}, status_code=503)  # fmt: skip
    query = urlencode({"from": period.first.isoformat(), "to": period.last.isoformat()})
    return render(request, "stats.html", {
        "report": report, "charts": _charts(report, lang), "values": values, "error": None,
        "csv_url": f"/stats.csv?{query}",
    })  # fmt: skip


async def stats_csv(request: Request) -> Response:
    require_user(request)
    lang = request_language(request)
    period, error, _ = _period(request)
    if period is None:
        return Response(error or "", status_code=400, media_type="text/plain; charset=utf-8")
    zone = region_zone(web_ctx(request).config().line.home_region)
    report = await run_in_threadpool(build_report, web_ctx(request).store, period, zone)
    headers = [translate(lang, f"stats.csv.{column}") for column in CSV_COLUMNS]
    body = report_csv(report, headers, translate(lang, "stats.total"))
    name = f"mamoru-stats-{period.first:%Y%m%d}-{period.last:%Y%m%d}.csv"
    return Response(body, media_type="text/csv; charset=utf-8",
                    headers={"content-disposition": f'attachment; filename="{name}"'})  # fmt: skip


routes: list[Route] = [
    Route("/stats", stats_page, methods=["GET"]),
    Route("/stats.csv", stats_csv, methods=["GET"]),
]
