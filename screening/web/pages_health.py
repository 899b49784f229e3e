"""The health page: is the box screening calls right now, in plain words (family and installer).

It reuses ``mamoru doctor``'s checks (disk, speech model, database, clock,
feeds, recordings) for their verdicts and words the answers for the family
itself, Japanese first. The telephone line is the one thing it never probes:
opening the modem would disturb a live call, so the line's state comes from
``status.json``, which the running daemon keeps current (``screening.status``).
A status older than two minutes means the daemon stopped answering.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from urllib.parse import urlsplit

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from blocklist.recovery import read_notices
from screening import doctor
from screening.config import Config
from screening.core.clock import parse_iso_utc, region_zone
from screening.core.model import Language
from screening.status import (
    DaemonStatus,
    LineProblem,
    LineState,
    StatusError,
    mamoru_version,
    read_status,
)
from screening.web.context import WebContext
from screening.web.i18n import translate
from screening.web.sessions import require_user
from screening.web.templating import render, request_language

log = logging.getLogger(__name__)

OK, WARNING, PROBLEM = "ok", "warning", "problem"
_BADGE = {OK: "verdict-clean", WARNING: "verdict-suspicious", PROBLEM: "verdict-fraud"}  # existing colour classes


@dataclass(frozen=True, slots=True)
class HealthItem:
    name: str
    severity: str  # OK | WARNING | PROBLEM
    message: str

    @property
    def badge(self) -> str:
        return _BADGE[self.severity]


def human_bytes(count: int) -> str:
    for unit, size in (("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{count} B"


class HealthReport:
    """Every item for one page view; all file and database reads happen here, off the event loop."""

    def __init__(self, ctx: WebContext, lang: Language, now: datetime) -> None:
        self.ctx = ctx
        self.cfg: Config = ctx.config()
        self.db = Path(ctx.store.path)
        self.lang = lang
        self.now = now
        self.zone: tzinfo = region_zone(self.cfg.line.home_region)

    def t(self, key: str, **values: object) -> str:
        return translate(self.lang, key, **values)

    def when(self, moment: datetime) -> str:
        return f"{moment.astimezone(self.zone):%Y-%m-%d %H:%M}"

    def items(self) -> list[HealthItem]:
        status, unreadable = self._status()
        steps: list[tuple[str, Callable[[], HealthItem]]] = [
            ("line", lambda: self.line(status, unreadable)),
            ("last_call", self.last_call),
            ("speech_model", lambda: self.speech_model(status)),
            ("disk", self.disk),
            ("recordings", self.recordings),
            ("feeds", self.feeds),
            ("database", self.database),
            ("clock", self.clock),
            ("version", lambda: HealthItem("version", OK, self.t("health.version", version=self._version(status)))),
        ]
        return [self._guarded(name, step) for name, step in steps]

    def _guarded(self, name: str, step: Callable[[], HealthItem]) -> HealthItem:
        """A bug in one item must not hide the others (like the doctor's checks)."""
        try:
            return step()
        except Exception:
            log.exception("health page: %s failed", name)
            return HealthItem(name, PROBLEM, self.t("health.failed"))

    def _status(self) -> tuple[DaemonStatus | None, bool]:
        try:
            return read_status(self.ctx.status_path), False
        except StatusError as exc:
            log.warning("health page: %s", exc)
            return None, True

    def _version(self, status: DaemonStatus | None) -> str:
        return status.version if status is not None and status.version else mamoru_version()

    def line(self, status: DaemonStatus | None, unreadable: bool) -> HealthItem:
        if unreadable:
            return HealthItem("line", PROBLEM, self.t("health.line.unreadable"))
        if status is None:
            return HealthItem("line", WARNING, self.t("health.line.no_status"))
        since = self.when(status.line_since)
        if status.line_state is LineState.STOPPED:
            return HealthItem("line", PROBLEM, self.t("health.line.stopped", since=since))
        if status.stale(self.now):
            minutes = max(2, int(status.age_s(self.now) // 60))
            return HealthItem("line", PROBLEM, self.t("health.line.stale", minutes=minutes))
        uri = urlsplit(self.cfg.line.uri)
        if status.line_state is LineState.FAULT:
            if uri.scheme == "modem" and not Path(uri.path).exists():
                return HealthItem("line", PROBLEM, self.t("health.line.missing", device=uri.path, since=since))
            return HealthItem("line", PROBLEM, self.t("health.line.fault", since=since))
        if uri.scheme == "sim":
            return HealthItem("line", WARNING, self.t("health.line.sim"))
        if status.line_problem is LineProblem.HANDSET_STUCK:
            return HealthItem("line", PROBLEM, self.t("health.line.handset_stuck"))
        return HealthItem("line", OK, self.t("health.line.ok", since=since))

    def last_call(self) -> HealthItem:
        rows = self.ctx.store.recent_calls(limit=1)
        if not rows:
            return HealthItem("last_call", OK, self.t("health.last_call.none"))
        at = parse_iso_utc(rows[0].started_at)
        return HealthItem("last_call", OK, self.t("health.last_call.at", time=self.when(at)))

    def speech_model(self, status: DaemonStatus | None) -> HealthItem:
        if not self.cfg.voice.transcribe:
            return HealthItem("speech_model", OK, self.t("health.speech_model.off"))
        if status is not None and status.speech_model is not None and not status.stale(self.now):
            loaded = status.speech_model
            key = "health.speech_model.ok" if loaded else "health.speech_model.missing"
            return HealthItem("speech_model", OK if loaded else PROBLEM, self.t(key))
        found = doctor.check_speech_model(self.cfg)  # the daemon did not say: is one installed at least?
        if found.severity == "ok":
            return HealthItem("speech_model", OK, self.t("health.speech_model.installed"))
        return HealthItem("speech_model", PROBLEM, self.t("health.speech_model.missing"))

    def _data_dirs(self) -> list[Path]:
        dirs = [self.db.parent]
        if self.cfg.recording.enabled:
            dirs.append(Path(self.cfg.recording.dir))
        return dirs

    def disk(self) -> HealthItem:
        found = doctor.check_disk(self._data_dirs())
        usage = shutil.disk_usage(_existing(self.db.parent))
        free, percent = human_bytes(usage.free), round(100 * usage.free / usage.total) if usage.total else 0
        key = "health.disk.ok" if found.severity == "ok" else "health.disk.problem"
        return HealthItem("disk", OK if found.severity == "ok" else PROBLEM, self.t(key, free=free, percent=percent))

    def recordings(self) -> HealthItem:
        if not self.cfg.recording.enabled:
            return HealthItem("recordings", OK, self.t("health.recordings.off"))
        if doctor.check_recordings(self.cfg).severity == "problem":
            return HealthItem("recordings", PROBLEM, self.t("health.recordings.problem"))
        rows = self.ctx.store.recordings_oldest_first()
        if not rows:
            return HealthItem("recordings", OK, self.t("health.recordings.none", days=self.cfg.recording.keep_days))
        size = sum(r.bytes or 0 for r in rows)
        return HealthItem("recordings", OK, self.t("health.recordings.summary", count=len(rows), size=human_bytes(size),
                                                   days=self.cfg.recording.keep_days))  # fmt: skip

    def feeds(self) -> HealthItem:
        found = doctor.check_feeds(self.db, self.cfg, self.now)
        if found.severity == "ok":
            names = "、".join(str(f["name"]) for f in self.ctx.store.feeds())
            return HealthItem("feeds", OK, self.t("health.feeds.ok", names=names))
        if found.severity == "problem":
            return HealthItem("feeds", PROBLEM, self.t("health.feeds.expired"))
        if not self.ctx.store.feeds():
            return HealthItem("feeds", OK, self.t("health.feeds.none"))
        return HealthItem("feeds", WARNING, self.t("health.feeds.stale"))

    def database(self) -> HealthItem:
        severity = doctor.check_database(self.db).severity
        if read_notices(self.db):  # set aside at start-up (blocklist.recovery): say what happened
            return HealthItem("database", PROBLEM, self.t("health.database.damaged"))
        return HealthItem("database", severity, self.t(f"health.database.{severity}"))

    def clock(self) -> HealthItem:
        if doctor.check_clock(self.now).severity == "ok":
            return HealthItem("clock", OK, self.t("health.clock.ok", time=self.when(self.now)))
        return HealthItem("clock", PROBLEM, self.t("health.clock.problem"))


def _existing(path: Path) -> Path:
    """The nearest existing directory: the data directory may not be created yet."""
    current = path.absolute()
    while not current.exists() and current != current.parent:
        current = current.parent
    return current


def health_items(ctx: WebContext, lang: Language, now: datetime) -> list[HealthItem]:
    return HealthReport(ctx, lang, now).items()


async def health_page(request: Request) -> Response:
    require_user(request)
    ctx: WebContext = request.app.state.ctx
    lang = request_language(request)
    now = datetime.now(UTC)
    items = await run_in_threadpool(health_items, ctx, lang, now)
    problems = sum(i.severity == PROBLEM for i in items)
    warnings = sum(i.severity == WARNING for i in items)
    if problems:
        summary, summary_class = translate(lang, "health.problems", count=problems), "notice bad"
    elif warnings:
        summary, summary_class = translate(lang, "health.some_warnings"), "notice"
    else:
        summary, summary_class = translate(lang, "health.all_ok"), "notice ok"
    checked = f"{now.astimezone(region_zone(ctx.config().line.home_region)):%Y-%m-%d %H:%M:%S}"
    return render(request, "health.html", {"items": items, "summary": summary, "summary_class": summary_class,
                                           "checked": checked})  # fmt: skip


routes: list[Route] = [Route("/health", health_page, methods=["GET"])]
