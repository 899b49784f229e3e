"""Household announcement recordings: any PCM WAV converted to the line's 8 kHz mono and stored atomically.

Uploaded recordings are converted here, so the daemon never has to resample a phone's
44.1 kHz file between two rings.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from screening import config_edit
from screening.core.audio import WavError, read_wav_pcm16, wav_bytes
from screening.core.files import atomic_write_bytes
from screening.core.model import Prompt
from screening.web.context import WebContext
from screening.web.settings_common import SettingsProblem, save_config
from voice.announcements import (
    MAX_OVERRIDE_S,
    SAMPLE_RATE,
    convert_rate,
    is_silent,
)

log = logging.getLogger(__name__)

PROMPTS_DIR_NAME = "prompts"  # under the data directory, when [voice] prompts_dir is not set yet
MAX_RECORDING_BYTES = 16 * 1024 * 1024  # 30 s of 48 kHz stereo 32-bit is 11.5 MB
MIN_RECORDING_RATE, MAX_RECORDING_RATE = 4000, 192_000  # an absurd rate would make resampling explode


def convert_recording(data: bytes) -> bytes:
    """Any PCM WAV (a phone's 44.1 kHz stereo recording …) as the line's 8 kHz mono WAV. Raises SettingsProblem."""
    with tempfile.NamedTemporaryFile(suffix=".wav") as temp:
        temp.write(data)
        temp.flush()
        try:
            pcm, rate = read_wav_pcm16(temp.name)
        except WavError:
            raise SettingsProblem("file", "settings.error.not_wav") from None
    if not MIN_RECORDING_RATE <= rate <= MAX_RECORDING_RATE:
        raise SettingsProblem("file", "settings.error.bad_rate")
    if len(pcm) / 2 / rate > MAX_OVERRIDE_S:  # checked before resampling: that is the slow part
        raise SettingsProblem("file", "settings.error.too_long", max=int(MAX_OVERRIDE_S))
    line_pcm = convert_rate(pcm, rate, SAMPLE_RATE)
    if is_silent(line_pcm):
        raise SettingsProblem("file", "settings.error.silent")
    return wav_bytes(line_pcm, SAMPLE_RATE)


def prompts_dir(ctx: WebContext) -> Path:
    """``[voice] prompts_dir``, set to ``<data dir>/prompts`` the first time a family records one."""
    cfg = ctx.config()
    if cfg.voice.prompts_dir is not None:
        return Path(cfg.voice.prompts_dir)
    directory = Path(ctx.store.path).parent / PROMPTS_DIR_NAME
    cfg = save_config(ctx, config_edit.set_values("voice", {"prompts_dir": str(directory)}))
    assert cfg.voice.prompts_dir is not None
    return Path(cfg.voice.prompts_dir)


def store_recording(ctx: WebContext, prompt: Prompt, data: bytes) -> Path:
    """Convert, then write atomically (the daemon watches the file and must never read half of it)."""
    wav = convert_recording(data)
    directory = prompts_dir(ctx)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"{prompt.value}.wav"
    atomic_write_bytes(target, wav, mode=0o644)  # nothing secret; the daemon may run as another user
    return target
