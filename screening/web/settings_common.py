"""What the settings pages share: form fields, the demo notice, saving through ``config_edit``, uploads.

The settings pages are rules (``pages_rules``), relatives with a test alert (``pages_relatives``),
announcements (``pages_announcements``, recordings converted in ``recordings``) and the installer's
system page with the bundle upload (``pages_system``).

Every change goes through ``screening.config_edit``: the config file keeps its
comments, the result is validated by the real loader before it replaces the
file, and a mistake is shown next to its field while the file stays as it was.
The running daemon notices the changed file (or a new recording in
``voice.prompts_dir``) and uses it from the next call on.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request

from screening import config_edit
from screening.config import Config, ConfigProblem
from screening.core.model import Role
from screening.web.context import WebContext
from screening.web.i18n import translate
from screening.web.sessions import User
from screening.web.templating import request_language

log = logging.getLogger(__name__)


class SettingsProblem(Exception):
    """A form value refused before the config is touched: a message key for one field."""

    def __init__(self, field: str, key: str, **values: object) -> None:
        super().__init__(key)
        self.field, self.key, self.values = field, key, values


# ---- shared --------------------------------------------------------------------------------


def web_ctx(request: Request) -> WebContext:
    return request.app.state.ctx


def text_field(form: FormData, name: str, limit: int = 4096) -> str:
    """A text field; a file sent under that name, or nothing, counts as empty."""
    value = form.get(name)
    return value[:limit].strip() if isinstance(value, str) else ""


def flash_message(request: Request, known: Mapping[str, str]) -> str | None:
    key = known.get(request.query_params.get("done", ""))
    return translate(request_language(request), key) if key else None


def common_values(request: Request, user: User) -> dict[str, Any]:
    ctx = web_ctx(request)
    return {"editable": ctx.config_path is not None, "config_path": str(ctx.config_path or ""),
            "is_installer": user.role is Role.INSTALLER}  # fmt: skip


def say(request: Request, key: str, **values: object) -> str:
    return translate(request_language(request), key, **values)


def demo_notice(request: Request) -> str:
    return say(request, "settings.error.demo")


def general_problems(problems: Iterable[ConfigProblem]) -> list[str]:
    """Problems of the file that belong to no field here: named by key, for the installer."""
    return [f"{p.key}: {p.message}" if p.key else p.message for p in problems]


def save_config(ctx: WebContext, edit: config_edit.Edit) -> Config:
    assert ctx.config_path is not None
    return config_edit.edit_config(ctx.config_path, edit)


async def read_upload(request: Request, limit: int) -> bytes | str:
    """The ``file`` field's bytes, or a message key. The size is checked before anything is parsed."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit + 64 * 1024:
        return "settings.error.too_large"
    form = await request.form(max_files=1, max_fields=20)
    upload = form.get("file")
    if not isinstance(upload, UploadFile) or not upload.filename:
        return "settings.error.no_file"
    data = await upload.read(limit + 1)
    if len(data) > limit:
        return "settings.error.too_large"
    if not data:
        return "settings.error.no_file"
    return data
