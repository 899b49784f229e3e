"""Settings: the relatives who get an alert, and a test alert to them.

Secrets: a relative's notify URLs usually hold a token or password. They are
never rendered back into a page; the edit form shows one placeholder line per
saved URL (``ntfy ●●●● (1)``), and a placeholder left in place keeps that URL.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from deploy.provisioning.sheet import channel_name
from screening import config_edit
from screening.alerts import AlertService
from screening.config import Config, ConfigError, ConfigProblem, RelativeConfig
from screening.core.model import Language
from screening.core.numbers import national_format
from screening.notify import AppriseNotifier, mask
from screening.web.context import WebContext
from screening.web.i18n import translate
from screening.web.sessions import User, require_user
from screening.web.settings_common import (
    SettingsProblem,
    common_values,
    demo_notice,
    flash_message,
    general_problems,
    save_config,
    say,
    text_field,
    web_ctx,
)
from screening.web.templating import render, request_language

log = logging.getLogger(__name__)

MAX_NOTIFY_URLS = 10
MAX_URL_CHARS = 2000
MAX_NOTIFY_CHARS = 64 * 1024  # the whole form is at most this (limits.FORM_BODY_BYTES): never cut a URL short
MAX_NAME_CHARS = 64
SECRET_MARK = "●●●●"
_TOKEN = re.compile(re.escape(SECRET_MARK) + r"\s*\((\d{1,3})\)\s*$")
RELATIVES_DONE = {"saved": "settings.done.relative_saved", "removed": "settings.done.relative_removed"}

# ---- relatives ---------------------------------------------------------------------------------


@lru_cache(maxsize=256)
def channel_label(url: str) -> str:
    """What kind of channel a URL is ("ntfy", "E-Mail" …): never its address, which holds a secret."""
    return channel_name(url)


def _token(url: str, position: int) -> str:
    """The placeholder of a saved URL in the edit form (1-based ``position``)."""
    return f"{channel_label(url)} {SECRET_MARK} ({position})"


@dataclass(frozen=True, slots=True)
class RelativeView:
    name: str
    channels: tuple[str, ...]
    phone: str  # national format, as people write it
    language: str
    notify_text: str  # placeholders only


def _relative_view(relative: RelativeConfig, home_region: str) -> RelativeView:
    return RelativeView(
        name=relative.name, channels=tuple(channel_label(u) for u in relative.notify),
        phone=national_format(relative.phone, home_region) if relative.phone else "",
        language=relative.language.value if relative.language else "",
        notify_text="\n".join(_token(u, i) for i, u in enumerate(relative.notify, 1)),
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class TestLine:
    channel: str
    ok: bool
    error: str


def _relatives_page(request: Request, user: User, *, form_values: dict[str, str] | None = None,
                    errors: dict[str, list[str]] | None = None, general: list[str] | None = None,
                    notice: str | None = None, test: tuple[str, list[TestLine]] | None = None,
                    status_code: int = 200) -> Response:  # fmt: skip
    cfg = web_ctx(request).config()
    relatives = [_relative_view(r, cfg.line.home_region) for r in cfg.relatives]
    return render(request, "relatives.html", {
        **common_values(request, user), "relatives": relatives, "languages": [lang.value for lang in Language],
        "form": form_values or {"original": "", "name": "", "notify": "", "phone": "", "language": ""},
        "errors": errors or {}, "general": general or [], "notice": notice, "test": test,
        "done": flash_message(request, RELATIVES_DONE), "notify_max": MAX_NOTIFY_URLS,
    }, status_code=status_code)  # fmt: skip


async def relatives_page(request: Request) -> Response:
    user = require_user(request)
    return _relatives_page(request, user)


def _find_relative(cfg: Config, name: str) -> tuple[int, RelativeConfig] | None:
    for index, relative in enumerate(cfg.relatives):
        if relative.name.casefold() == name.strip().casefold():
            return index, relative
    return None


def notify_urls(text: str, saved: tuple[str, ...]) -> list[str]:
    """The textarea's lines as URLs: a placeholder line keeps its saved URL. Raises SettingsProblem."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) > MAX_NOTIFY_URLS:
        raise SettingsProblem("notify", "settings.error.notify_many", max=MAX_NOTIFY_URLS)
    urls: list[str] = []
    for number, line in enumerate(lines, 1):
        match = _TOKEN.search(line)
        if match is not None:
            position = int(match[1])
            if not 1 <= position <= len(saved):
                raise SettingsProblem("notify", "settings.error.notify_token", line=number)
            urls.append(saved[position - 1])
        elif len(line) > MAX_URL_CHARS:
            raise SettingsProblem("notify", "settings.error.notify_long", line=number)
        else:
            urls.append(line)
    return urls


def _relative_errors(request: Request, problems: list[ConfigProblem],
                     index: int) -> tuple[dict[str, list[str]], list[str]]:  # fmt: skip
    lang = request_language(request)
    fields = {"relatives": "notify", "relatives.name": "name", "relatives.notify": "notify",
              "relatives.phone": "phone", "relatives.language": "language"}  # fmt: skip
    by_field, rest = config_edit.field_errors(problems, fields, relative=index)
    errors: dict[str, list[str]] = {}
    for field, found in by_field.items():
        for problem in found:
            if field == "notify" and problem.item is not None:
                text = translate(lang, "settings.error.notify", line=problem.item + 1)
            elif field == "notify":
                text = translate(lang, "settings.error.unreachable")
            elif field == "name":
                text = translate(lang, "settings.error.name_required")
            elif field == "phone":
                text = translate(lang, "settings.error.phone")
            else:
                text = translate(lang, "settings.error.choice")
            errors.setdefault(field, []).append(text)
    return errors, general_problems(rest)


async def save_relative(request: Request) -> Response:
    user = require_user(request)
    ctx = web_ctx(request)
    form = await request.form()
    cfg = ctx.config()
    original = text_field(form, "original", 256)
    values = {"original": original, "name": text_field(form, "name", 256),
              "notify": text_field(form, "notify", MAX_NOTIFY_CHARS),
              "phone": text_field(form, "phone", 64), "language": text_field(form, "language", 16)}  # fmt: skip
    if ctx.config_path is None:
        return _relatives_page(request, user, form_values=values,
                               notice=demo_notice(request), status_code=409)
    found = _find_relative(cfg, original) if original else None
    if original and found is None:
        return _relatives_page(request, user, notice=say(request, "settings.error.no_relative"),
                               status_code=404)  # fmt: skip
    index = found[0] if found else len(cfg.relatives)
    saved = found[1].notify if found else ()
    try:
        _check_name(cfg, values["name"], original)
        urls = notify_urls(values["notify"], saved)
    except SettingsProblem as problem:
        text = translate(request_language(request), problem.key, **problem.values)
        return _relatives_page(request, user, form_values=_redacted(values, saved), errors={problem.field: [text]},
                               status_code=400)  # fmt: skip
    entry: dict[str, Any] = {
        "name": values["name"],
        "notify": config_edit.string_array(urls) if urls else None,
        "phone": values["phone"] or None,
        "language": values["language"] or None,
    }
    try:
        await run_in_threadpool(save_config, ctx, config_edit.put_relative(found[1].name if found else None, entry))
    except ConfigError as exc:
        errors, general = _relative_errors(request, exc.problems, index)
        return _relatives_page(request, user, form_values=_redacted(values, saved), errors=errors, general=general,
                               status_code=400)  # fmt: skip
    except KeyError:  # removed by someone else meanwhile
        return _relatives_page(request, user, notice=say(request, "settings.error.no_relative"),
                               status_code=404)  # fmt: skip
    log.info("web: %s saved relative %r", user.name, values["name"])
    return RedirectResponse("/settings/relatives?done=saved", status_code=303)


def _check_name(cfg: Config, name: str, original: str) -> None:
    if not name:
        raise SettingsProblem("name", "settings.error.name_required")
    if len(name) > MAX_NAME_CHARS:
        raise SettingsProblem("name", "settings.error.name_long")
    if any(unicodedata.category(c).startswith("C") for c in name):  # control and invisible format characters
        raise SettingsProblem("name", "settings.error.name_invalid")
    clash = _find_relative(cfg, name)
    if clash is not None and clash[1].name.casefold() != original.casefold():
        raise SettingsProblem("name", "settings.error.name_taken")


def _redacted(values: dict[str, str], saved: tuple[str, ...]) -> dict[str, str]:
    """The submitted form for showing again: URLs the user just typed are theirs, saved ones stay placeholders."""
    lines = []
    for line in values["notify"].splitlines():
        stripped = line.strip()
        if stripped in saved:  # a saved secret typed again: still never echoed
            stripped = _token(stripped, saved.index(stripped) + 1)
        lines.append(stripped)
    return {**values, "notify": "\n".join(lines)}


async def remove_relative(request: Request) -> Response:
    user = require_user(request)
    ctx = web_ctx(request)
    form = await request.form()
    name = text_field(form, "name", 256)
    if ctx.config_path is None:
        return _relatives_page(request, user, notice=demo_notice(request), status_code=409)
    found = _find_relative(ctx.config(), name)
    if found is None:
        return _relatives_page(request, user, notice=say(request, "settings.error.no_relative"), status_code=404)
    try:
        await run_in_threadpool(save_config, ctx, config_edit.remove_relative(found[1].name))
    except ConfigError as exc:
        return _relatives_page(request, user, general=general_problems(exc.problems), status_code=400)
    except KeyError:
        return _relatives_page(request, user, notice=say(request, "settings.error.no_relative"), status_code=404)
    log.info("web: %s removed relative %r", user.name, found[1].name)
    return RedirectResponse("/settings/relatives?done=removed", status_code=303)


def send_test_alert(ctx: WebContext, cfg: Config, relative: RelativeConfig) -> list[TestLine]:
    """Through the real alert path (outbox, apprise), exactly like `mamoru alert test --to NAME`."""
    labels = {mask(url): channel_label(url) for url in relative.notify}
    with AlertService(ctx.store, cfg, AppriseNotifier()) as service:
        results = service.test_alert(relative.name)
    return [TestLine(labels.get(r.channel, r.channel.split(":", 1)[0]), r.ok, r.error or "") for r in results]


async def test_relative(request: Request) -> Response:
    user = require_user(request)
    ctx = web_ctx(request)
    form = await request.form()
    cfg = ctx.config()
    found = _find_relative(cfg, text_field(form, "name", 256))
    if found is None:
        return _relatives_page(request, user, notice=say(request, "settings.error.no_relative"),
                               status_code=404)  # fmt: skip
    relative = found[1]
    try:
        lines = await run_in_threadpool(send_test_alert, ctx, cfg, relative)
    except Exception:  # noqa: BLE001 -- the outbox or a plugin failing is reported on the page, not as a 500
        log.exception("web: test alert to %s could not be sent", relative.name)
        return _relatives_page(request, user, notice=say(request, "settings.relatives.test_error"), status_code=500)
    log.info("web: %s sent a test alert to %s: %s", user.name, relative.name,
             ", ".join(f"{line.channel} {'ok' if line.ok else 'failed'}" for line in lines) or "no channels")
    return _relatives_page(request, user, test=(relative.name, lines))


routes: list[Route] = [
    Route("/settings/relatives", relatives_page, methods=["GET"]),
    Route("/settings/relatives", save_relative, methods=["POST"]),
    Route("/settings/relatives/remove", remove_relative, methods=["POST"]),
    Route("/settings/relatives/test", test_relative, methods=["POST"]),
]
