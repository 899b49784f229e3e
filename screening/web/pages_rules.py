"""Settings: the rules page (what happens to each kind of call)."""

from __future__ import annotations

import logging

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from screening import config_edit
from screening.config import Config, ConfigError
from screening.core.model import Action, Language
from screening.web.i18n import translate
from screening.web.sessions import User, require_user
from screening.web.settings_common import (
    common_values,
    demo_notice,
    flash_message,
    general_problems,
    save_config,
    text_field,
    web_ctx,
)
from screening.web.templating import render, request_language

log = logging.getLogger(__name__)

# The situations a family decides about, in the order a person thinks of them (every Action field of [rules]).
RULES = ("withheld", "international", "out_of_area", "payphone", "no_caller_id", "unknown", "service_conflict",
         "invalid")  # fmt: skip
ACTIONS = (Action.ALLOW, Action.WARN, Action.REQUEST_NUMBER, Action.BLOCK)
SETTINGS_DONE = {"saved": "settings.done.saved"}

# ---- rules -----------------------------------------------------------------------------------


def _settings_values(cfg: Config) -> dict[str, str]:
    values = {rule: getattr(cfg.rules, rule).value for rule in RULES}
    values["voice_language"] = cfg.voice.language.value
    return values


def _settings_page(request: Request, user: User, *, values: dict[str, str] | None = None,
                   errors: dict[str, list[str]] | None = None, general: list[str] | None = None,
                   notice: str | None = None, status_code: int = 200) -> Response:  # fmt: skip
    cfg = web_ctx(request).config()
    return render(request, "settings.html", {
        **common_values(request, user), "rules": RULES, "actions": [a.value for a in ACTIONS],
        "languages": [lang.value for lang in Language], "values": values or _settings_values(cfg),
        "errors": errors or {}, "general": general or [], "notice": notice,
        "done": flash_message(request, SETTINGS_DONE), "schedules": cfg.rules.schedules,
    }, status_code=status_code)  # fmt: skip


async def settings_page(request: Request) -> Response:
    user = require_user(request)
    return _settings_page(request, user)


async def save_rules(request: Request) -> Response:
    user = require_user(request)
    ctx = web_ctx(request)
    form = await request.form()
    cfg = ctx.config()
    values = _settings_values(cfg)
    submitted = {name: text_field(form, name, 64) for name in (*RULES, "voice_language") if text_field(form, name, 64)}
    # shown again after a mistake: a value that is no choice would show as the first option, so keep the saved one
    choices = {a.value for a in ACTIONS} | {lang.value for lang in Language}
    values.update({name: value for name, value in submitted.items() if value in choices})
    if ctx.config_path is None:
        return _settings_page(request, user, values=values, notice=demo_notice(request), status_code=409)
    rules = {name: value for name, value in submitted.items()
             if name in RULES and value != getattr(cfg.rules, name).value}  # fmt: skip
    edits = [config_edit.set_values("rules", rules)] if rules else []
    language = submitted.get("voice_language")
    if language is not None and language != cfg.voice.language.value:
        edits.append(config_edit.set_values("voice", {"language": language}))
    try:
        await run_in_threadpool(save_config, ctx, config_edit.combine(*edits))
    except ConfigError as exc:
        fields = {f"rules.{name}": name for name in RULES} | {"voice.language": "voice_language"}
        by_field, rest = config_edit.field_errors(exc.problems, fields)
        lang = request_language(request)
        errors = {name: [translate(lang, "settings.error.choice")] for name in by_field}
        return _settings_page(request, user, values=values, errors=errors, general=general_problems(rest),
                              status_code=400)
    log.info("web: %s changed the rules (%s)", user.name, ", ".join(f"{k}={v}" for k, v in rules.items()) or "voice")
    return RedirectResponse("/settings?done=saved", status_code=303)


routes: list[Route] = [
    Route("/settings", settings_page, methods=["GET"]),
    Route("/settings/rules", save_rules, methods=["POST"]),
]
