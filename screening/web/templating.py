"""Jinja2 rendering with the user's language, the CSRF token and the navigation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse

from screening.core.model import Language
from screening.web.i18n import DEFAULT_LANGUAGE, page_language, translate

TEMPLATES_DIR = Path(__file__).parent / "templates"
_ENV = Environment(
    loader=FileSystemLoader(TEMPLATES_DIR),
    autoescape=select_autoescape(["html"]),  # every value is escaped unless marked safe
    trim_blocks=True,
    lstrip_blocks=True,
)
LANG_COOKIE = "mamoru_lang"


def request_language(request: Request) -> Language:
    """The logged-in user's language, else the language cookie, else Japanese."""
    user = getattr(request.state, "user", None)
    if user is not None:
        return user.language
    try:
        return page_language(request.cookies.get(LANG_COOKIE, DEFAULT_LANGUAGE))
    except ValueError:
        return DEFAULT_LANGUAGE


def render(request: Request, template: str, context: dict[str, Any] | None = None, *,
           status_code: int = 200) -> HTMLResponse:  # fmt: skip
    lang = request_language(request)
    values = {
        "request": request,
        "lang": lang.value,
        "t": lambda key, **kw: translate(lang, key, **kw),
        "user": getattr(request.state, "user", None),
        "csrf_token": getattr(request.state, "csrf_token", ""),
        **(context or {}),
    }
    html = _ENV.get_template(template).render(values)
    return HTMLResponse(html, status_code=status_code)
