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
from screening.core.clock import parse_iso_utc
from screening.status import DaemonStatus, LineProblem, LineState, StatusError, mamoru_version, read_status
from screening.web.auth import require_user
from screening.web.context import WebContext
from screening.web.i18n import UiLanguage, register, translate
from screening.web.pages_calls import region_zone
from screening.web.templating import render, request_language

log = logging.getLogger(__name__)

OK, WARNING, PROBLEM = "ok", "warning", "problem"
_BADGE = {OK: "verdict-clean", WARNING: "verdict-suspicious", PROBLEM: "verdict-fraud"}  # existing colour classes

register({
    "ja": {
        "health.title": "本体の状態",
        "health.intro": "電話の見守り（まもる）がきちんと動いているかを表示します。",
        "health.all_ok": "すべて正常です。電話を見守っています。",
        "health.some_warnings": "動いていますが、確かめてほしいことがあります。",
        "health.problems": "{count}件の問題があります。赤い「問題」の行をご覧ください。",
        "health.checked_at": "{time} に確認しました。",
        "health.severity.ok": "正常",
        "health.severity.warning": "注意",
        "health.severity.problem": "問題",
        "health.item.line": "電話回線",
        "health.item.last_call": "最後の電話",
        "health.item.speech_model": "詐欺の言葉の聞き取り",
        "health.item.disk": "保存の空き容量",
        "health.item.recordings": "通話の録音",
        "health.item.feeds": "警察などの番号リスト",
        "health.item.database": "通話の記録",
        "health.item.clock": "時計",
        "health.item.version": "まもるの版",
        "health.line.ok": "電話回線につながっていて、電話を見守っています（{since}から）。",
        "health.line.sim": "お試し用の仮の回線で動いています。本当の電話は見守っていません。",
        "health.line.fault": "電話回線（モデム）とつながっていません（{since}から）。モデムのUSBケーブルを確かめてください。",
        "health.line.stopped": "電話の見守りは止まっています（{since}から）。本体を再起動してください。",
        "health.line.missing": "モデムが見つかりません（{device}、{since}から）。モデムのUSBケーブルを確かめてください。見つかりしだい、見守りを始めます。",
        "health.line.handset_stuck": "受話器が上がったままになっていて、電話を見守れていません。電話機の受話器がきちんと置かれているか確かめてください。置かれているのに直らないときは、モデムのUSBケーブルを抜いて、10秒後に差し直してください。",
        "health.line.stale": "電話の見守りから、{minutes}分以上応答がありません。本体を再起動してください。",
        "health.line.no_status": "電話の見守りの状態が、まだ届いていません。動き始めたばかりか、止まっています。",
        "health.line.unreadable": "電話の見守りの状態が読めません。設置担当者にご連絡ください。",
        "health.last_call.at": "{time}",
        "health.last_call.none": "まだ電話はありません。",
        "health.speech_model.ok": "通話の中の詐欺の言葉を聞き取っています。",
        "health.speech_model.installed": "聞き取りの準備ができています。",
        "health.speech_model.off": "聞き取りは、設定で切ってあります。",
        "health.speech_model.missing": "聞き取りの仕組み（音声モデル）がないため、詐欺の言葉を聞き取れません。通話の録音はされます。",
        "health.disk.ok": "十分あります（空き {free}、{percent}%）。",
        "health.disk.problem": "ほとんど残っていません（空き {free}、{percent}%）。古い録音を消してください。",
        "health.recordings.summary": "{count}件（{size}）を保存しています。{days}日より古い録音は消えます。",
        "health.recordings.none": "まだ録音はありません。{days}日より古い録音は消えます。",
        "health.recordings.off": "録音はしない設定です。",
        "health.recordings.problem": "録音を保存できません。設置担当者にご連絡ください。",
        "health.feeds.ok": "最新です（{names}）。",
        "health.feeds.none": "使っていません（ご自分のリストだけを使っています）。",
        "health.feeds.stale": "しばらく更新できていないリストがあります。本体がインターネットにつながっているか確かめてください。",
        "health.feeds.expired": "古くなって使われていないリストがあります。本体がインターネットにつながっているか確かめてください。",
        "health.database.ok": "正常です。",
        "health.database.warning": "まだないか、次に起動したときに更新されます。",
        "health.database.problem": "読めないか、壊れています。設置担当者にご連絡ください。",
        "health.database.damaged": "壊れていたため別の名前で残し、新しい記録で電話の見守りを続けています。"
                                   "これまでの記録は設置担当者が取り戻せます。ご連絡ください。",
        "health.clock.ok": "正しいようです（{time}）。",
        "health.clock.problem": "時計が狂っています。本体をインターネットにつないで、再起動してください。",
        "health.version": "まもる {version}",
        "health.failed": "確認できませんでした。設置担当者にご連絡ください。",
    },
    "en": {
        "health.title": "Status",
        "health.intro": "Whether mamoru is working and screening calls.",
        "health.all_ok": "Everything is working. Calls are being screened.",
        "health.some_warnings": "Working, but please check the items marked \"check\".",
        "health.problems": "{count} problem(s). Please see the items marked \"problem\".",
        "health.checked_at": "Checked at {time}.",
        "health.severity.ok": "OK",
        "health.severity.warning": "check",
        "health.severity.problem": "problem",
        "health.item.line": "Telephone line",
        "health.item.last_call": "Last call",
        "health.item.speech_model": "Listening for fraud",
        "health.item.disk": "Free space",
        "health.item.recordings": "Call recordings",
        "health.item.feeds": "Police number lists",
        "health.item.database": "Call records",
        "health.item.clock": "Clock",
        "health.item.version": "mamoru version",
        "health.line.ok": "Connected to the telephone line and screening calls (since {since}).",
        "health.line.sim": "Running on the demonstration line. Real calls are not screened.",
        "health.line.fault": "The telephone modem is not answering (since {since}). Please check its USB cable.",
        "health.line.stopped": "Call screening has stopped (since {since}). Please restart the unit.",
        "health.line.missing": "modem not found at {device} (since {since}). Please check its USB cable; screening starts as soon as it is found.",
        "health.line.handset_stuck": "The telephone's handset seems to be off the hook, so calls are not screened. Please put it back properly; if it is, unplug the modem's USB cable and plug it back in after 10 seconds.",
        "health.line.stale": "Call screening has not answered for more than {minutes} minutes. Please restart the unit.",
        "health.line.no_status": "No news from call screening yet: it has just started, or it is not running.",
        "health.line.unreadable": "The screening status cannot be read. Please contact the installer.",
        "health.last_call.at": "{time}",
        "health.last_call.none": "No calls yet.",
        "health.speech_model.ok": "Calls are listened to for fraud.",
        "health.speech_model.installed": "Ready to listen for fraud.",
        "health.speech_model.off": "Listening for fraud is switched off in the settings.",
        "health.speech_model.missing": "The speech model is missing, so calls cannot be checked for fraud. Calls are still recorded.",
        "health.disk.ok": "Enough ({free} free, {percent}%).",
        "health.disk.problem": "Almost full ({free} free, {percent}%). Please delete old recordings.",
        "health.recordings.summary": "{count} recording(s), {size}. Recordings older than {days} days are deleted.",
        "health.recordings.none": "No recordings yet. Recordings older than {days} days are deleted.",
        "health.recordings.off": "Calls are not recorded (switched off in the settings).",
        "health.recordings.problem": "Recordings cannot be saved. Please contact the installer.",
        "health.feeds.ok": "Up to date ({names}).",
        "health.feeds.none": "None (only your own lists are used).",
        "health.feeds.stale": "Some lists could not be updated lately. Please check the unit's internet connection.",
        "health.feeds.expired": "Some lists are out of date and no longer used. Please check the unit's internet connection.",
        "health.database.ok": "Readable.",
        "health.database.warning": "Not there yet, or updated at the next start.",
        "health.database.problem": "Cannot be read or damaged. Please contact the installer.",
        "health.database.damaged": "They were damaged: kept aside, and calls are screened with new records. "
                                   "The installer can recover the old ones; please contact them.",
        "health.clock.ok": "Looks right ({time}).",
        "health.clock.problem": "The clock is wrong. Connect the unit to the internet and restart it.",
        "health.version": "mamoru {version}",
        "health.failed": "This could not be checked. Please contact the installer.",
    },
})  # fmt: skip


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

    def __init__(self, ctx: WebContext, lang: UiLanguage, now: datetime) -> None:
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


def health_items(ctx: WebContext, lang: UiLanguage, now: datetime) -> list[HealthItem]:
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
