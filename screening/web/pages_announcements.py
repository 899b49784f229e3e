"""Settings: the announcements callers hear, played back, replaced by a household recording or reset."""

from __future__ import annotations

import contextlib
import logging
import tomllib
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from screening.config import Config, ConfigError
from screening.core.audio import wav_bytes
from screening.core.model import Language, Prompt
from screening.web.i18n import translate
from screening.web.recordings import MAX_RECORDING_BYTES, store_recording
from screening.web.sessions import User, require_user
from screening.web.settings_common import (
    SettingsProblem,
    common_values,
    demo_notice,
    flash_message,
    general_problems,
    read_upload,
    say,
    web_ctx,
)
from screening.web.templating import render, request_language
from voice.announcements import (
    MAX_OVERRIDE_S,
    PromptLibrary,
)

log = logging.getLogger(__name__)

PROMPTS = tuple(Prompt)  # every announcement, the screening ones too, can be the household's own voice
ANNOUNCEMENTS_DONE = {"saved": "settings.done.recording_saved", "reset": "settings.done.recording_reset"}

# ---- announcements -------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _prompt_texts() -> dict[str, Any]:
    resource = resources.files("voice") / "prompts" / "texts.toml"
    return tomllib.loads(resource.read_text(encoding="utf-8"))


def prompt_text(language: Language, prompt: Prompt) -> str:
    return str(_prompt_texts().get(language.value, {}).get(prompt.value, {}).get("text", ""))


def _prompt(request: Request) -> Prompt:
    try:
        return Prompt(request.path_params["prompt"])
    except ValueError:
        raise HTTPException(status_code=404) from None


@dataclass(frozen=True, slots=True)
class PromptView:
    prompt: str
    text: str
    source: str  # shipped | household | broken


def _prompt_views(cfg: Config) -> list[PromptView]:
    library = PromptLibrary(cfg.voice.language.value, cfg.voice.prompts_dir)
    views = []
    for prompt in PROMPTS:
        path = library.override_path(prompt)
        if path is None or not path.is_file():
            source = "shipped"
        else:
            source = "household" if library.clip_for(prompt).name.startswith("override:") else "broken"
        views.append(PromptView(prompt.value, prompt_text(cfg.voice.language, prompt), source))
    return views


async def _announcements_page(request: Request, user: User, *, errors: dict[str, list[str]] | None = None,
                              general: list[str] | None = None, notice: str | None = None,
                              status_code: int = 200) -> Response:  # fmt: skip
    cfg = web_ctx(request).config()
    views = await run_in_threadpool(_prompt_views, cfg)
    return render(request, "announcements.html", {
        **common_values(request, user), "prompts": views, "errors": errors or {}, "general": general or [],
        "notice": notice,
        "done": flash_message(request, ANNOUNCEMENTS_DONE), "max_seconds": int(MAX_OVERRIDE_S),
    }, status_code=status_code)  # fmt: skip


async def announcements_page(request: Request) -> Response:
    user = require_user(request)
    return await _announcements_page(request, user)


def _current_clip_wav(cfg: Config, prompt: Prompt) -> bytes:
    clip = PromptLibrary(cfg.voice.language.value, cfg.voice.prompts_dir).clip_for(prompt)
    return wav_bytes(clip.pcm16, clip.sample_rate)


async def announcement_audio(request: Request) -> Response:
    """What callers hear now (household recording, else shipped): the same PromptLibrary the daemon uses."""
    require_user(request)
    prompt = _prompt(request)
    data = await run_in_threadpool(_current_clip_wav, web_ctx(request).config(), prompt)
    disposition = f'inline; filename="{prompt.value}.wav"'
    return Response(data, media_type="audio/wav", headers={"content-disposition": disposition})


async def upload_announcement(request: Request) -> Response:
    user = require_user(request)
    ctx = web_ctx(request)
    prompt = _prompt(request)
    lang = request_language(request)
    if ctx.config_path is None:
        return await _announcements_page(request, user, notice=demo_notice(request),
                                         status_code=409)  # fmt: skip
    data = await read_upload(request, MAX_RECORDING_BYTES)
    if isinstance(data, str):
        text = translate(lang, data, mb=MAX_RECORDING_BYTES // 2**20)
        return await _announcements_page(request, user, errors={prompt.value: [text]}, status_code=400)
    try:
        path = await run_in_threadpool(store_recording, ctx, prompt, data)
    except SettingsProblem as problem:
        text = translate(lang, problem.key, **problem.values)
        return await _announcements_page(request, user, errors={prompt.value: [text]}, status_code=400)
    except ConfigError as exc:
        return await _announcements_page(request, user, general=general_problems(exc.problems), status_code=400)
    except OSError as exc:
        log.error("web: cannot save the %s recording: %s", prompt.value, exc)
        errors = {prompt.value: [say(request, "settings.error.save_failed")]}
        return await _announcements_page(request, user, errors=errors, status_code=500)
    log.info("web: %s replaced the %s announcement (%s)", user.name, prompt.value, path)
    return RedirectResponse("/settings/announcements?done=saved", status_code=303)


async def reset_announcement(request: Request) -> Response:
    user = require_user(request)
    ctx = web_ctx(request)
    prompt = _prompt(request)
    if ctx.config_path is None:
        return await _announcements_page(request, user, notice=demo_notice(request),
                                         status_code=409)  # fmt: skip
    directory = ctx.config().voice.prompts_dir
    if directory is not None:
        with contextlib.suppress(FileNotFoundError):
            (Path(directory) / f"{prompt.value}.wav").unlink()
    log.info("web: %s reset the %s announcement", user.name, prompt.value)
    return RedirectResponse("/settings/announcements?done=reset", status_code=303)


routes: list[Route] = [
    Route("/settings/announcements", announcements_page, methods=["GET"]),
    Route("/settings/announcements/{prompt}.wav", announcement_audio, methods=["GET"]),
    Route("/settings/announcements/{prompt}/reset", reset_announcement, methods=["POST"]),
    Route("/settings/announcements/{prompt}", upload_announcement, methods=["POST"]),
]
