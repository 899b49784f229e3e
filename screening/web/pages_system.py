"""Settings: the installer's system page and the provisioning bundle upload."""

from __future__ import annotations

import logging
import re
import tempfile
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from deploy.provisioning.apply import Applier
from deploy.provisioning.bundle import (
    BUNDLE_SUFFIX,
    MAX_BUNDLE_BYTES,
    BundleRefused,
)
from screening import config_edit
from screening.config import Config, ConfigError
from screening.core.model import Language, Role
from screening.web.context import WebContext
from screening.web.i18n import translate
from screening.web.sessions import User, require_user
from screening.web.settings_common import (
    common_values,
    demo_notice,
    flash_message,
    general_problems,
    read_upload,
    save_config,
    text_field,
    web_ctx,
)
from screening.web.templating import render, request_language

log = logging.getLogger(__name__)

SYSTEM_DONE = {"saved": "settings.done.system_saved"}

# ---- system (installer) -------------------------------------------------------------------------

SYSTEM_FIELDS = {  # form field -> (section, key)
    "line_uri": ("line", "uri"),
    "home_region": ("line", "home_region"),
    "voice_language": ("voice", "language"),
    "keep_days": ("recording", "keep_days"),
    "web_host": ("web", "host"),
    "web_port": ("web", "port"),
}
_INTEGER_FIELDS = ("keep_days", "web_port")
_SYSTEM_ERRORS = {"line_uri": "settings.error.line_uri", "home_region": "settings.error.region",
                  "voice_language": "settings.error.choice", "keep_days": "settings.error.keep_days",
                  "web_host": "settings.error.web_host", "web_port": "settings.error.web_port"}  # fmt: skip


def _system_values(cfg: Config) -> dict[str, str]:
    values: dict[str, str] = {}
    for field, (section, key) in SYSTEM_FIELDS.items():
        value = getattr(getattr(cfg, section), key)
        values[field] = str(value.value if isinstance(value, Language) else value)
    return values


def _system_page(request: Request, user: User, *, values: dict[str, str] | None = None,
                 errors: dict[str, list[str]] | None = None, general: list[str] | None = None,
                 notice: str | None = None, provision: dict[str, Any] | None = None,
                 status_code: int = 200) -> Response:  # fmt: skip
    cfg = web_ctx(request).config()
    return render(request, "system.html", {
        **common_values(request, user), "values": values or _system_values(cfg), "errors": errors or {},
        "general": general or [], "notice": notice, "languages": [lang.value for lang in Language],
        "provision": provision,
        "done": flash_message(request, SYSTEM_DONE),
    }, status_code=status_code)  # fmt: skip


async def system_page(request: Request) -> Response:
    user = require_user(request, Role.INSTALLER)
    return _system_page(request, user)


async def save_system(request: Request) -> Response:
    user = require_user(request, Role.INSTALLER)
    ctx = web_ctx(request)
    form = await request.form()
    cfg = ctx.config()
    current = _system_values(cfg)
    values = {field: text_field(form, field, 512) for field in SYSTEM_FIELDS}
    lang = request_language(request)
    if ctx.config_path is None:
        return _system_page(request, user, values=values, notice=demo_notice(request),
                            status_code=409)  # fmt: skip
    errors: dict[str, list[str]] = {}
    changes: dict[str, dict[str, Any]] = {}
    for field, (section, key) in SYSTEM_FIELDS.items():
        value: Any = values[field]
        if value == current[field]:
            continue
        if field in _INTEGER_FIELDS:
            if not re.fullmatch(r"-?\d{1,9}", value):
                errors[field] = [translate(lang, "settings.error.number")]
                continue
            value = int(value)
        changes.setdefault(section, {})[key] = value
    if errors:
        return _system_page(request, user, values=values, errors=errors, status_code=400)
    edit = config_edit.combine(*(config_edit.set_values(section, keys) for section, keys in changes.items()))
    try:
        await run_in_threadpool(save_config, ctx, edit)
    except ConfigError as exc:
        fields = {f"{section}.{key}": field for field, (section, key) in SYSTEM_FIELDS.items()}
        by_field, rest = config_edit.field_errors(exc.problems, fields)
        errors = {field: [translate(lang, _SYSTEM_ERRORS[field]), *(p.message for p in found)]
                  for field, found in by_field.items()}  # fmt: skip
        return _system_page(request, user, values=values, errors=errors, general=general_problems(rest),
                            status_code=400)
    log.info("web: %s changed system settings: %s", user.name,
             ", ".join(f"{s}.{k}" for s, keys in changes.items() for k in keys) or "nothing")
    return RedirectResponse("/settings/system?done=saved", status_code=303)


def issuer_keys_dir(ctx: WebContext) -> Path:
    """The keys baked into the image; a WebContext may name others (a test unit)."""
    return Path(ctx.issuer_keys_dir)


def apply_bundle(ctx: WebContext, data: bytes) -> list[str]:
    """``Applier`` on the uploaded file (written to a private temp dir). Raises BundleRefused."""
    assert ctx.config_path is not None
    with tempfile.TemporaryDirectory(prefix="mamoru-bundle-") as directory:
        path = Path(directory) / f"upload{BUNDLE_SUFFIX}"
        path.write_bytes(data)
        applier = Applier(issuer_keys_dir=issuer_keys_dir(ctx), config_path=ctx.config_path,
                          db_override=Path(ctx.store.path))  # fmt: skip
        result = applier.apply([path])
    return result.summary()


async def provision(request: Request) -> Response:
    user = require_user(request, Role.INSTALLER)
    ctx = web_ctx(request)
    lang = request_language(request)
    if ctx.config_path is None:
        return _system_page(request, user, notice=demo_notice(request), status_code=409)
    data = await read_upload(request, MAX_BUNDLE_BYTES)
    if isinstance(data, str):
        text = translate(lang, data, mb=MAX_BUNDLE_BYTES // 2**20)
        return _system_page(request, user, provision={"ok": False, "message": text, "detail": []}, status_code=400)
    try:
        summary = await run_in_threadpool(apply_bundle, ctx, data)
    except BundleRefused as exc:
        log.warning("web: %s uploaded a bundle that was refused: %s", user.name, exc)
        reason = translate(lang, f"settings.refusal.{exc.reason.value}")
        message = translate(lang, "settings.provision.refused", reason=reason)
        return _system_page(request, user, provision={"ok": False, "message": message, "detail": [exc.detail]},
                            status_code=400)  # fmt: skip
    except (OSError, ConfigError) as exc:
        log.error("web: applying an uploaded bundle failed: %s", exc)
        failed = {"ok": False, "message": translate(lang, "settings.provision.failed"), "detail": [str(exc)]}
        return _system_page(request, user, provision=failed, status_code=500)
    log.warning("web: %s applied a provisioning bundle: %s", user.name, summary[0] if summary else "")
    return _system_page(request, user, provision={"ok": True, "message": translate(lang, "settings.provision.applied"),
                                                  "detail": summary})  # fmt: skip


routes: list[Route] = [
    Route("/settings/system", system_page, methods=["GET"]),
    Route("/settings/system", save_system, methods=["POST"]),
    Route("/settings/provision", provision, methods=["POST"]),
]
