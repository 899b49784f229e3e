"""The voice-call alert message as audio: synthesised if we can, a shipped message if not.

Why both: the message a relative hears should say what happened in words the
alert service chose (``render_message`` speaks any text with espeak-ng), but
a Pi without espeak-ng, a synthesiser that hangs or crashes, or Japanese text
espeak-ng cannot read must still produce a meaningful call, never silence. So
every failure falls back to a generic message per language, rendered once by
``scripts/render_prompts.py`` from ``voice/prompts/texts.toml`` and shipped as
``voice/prompts/<lang>/voice_call_alert.wav``.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import tempfile
from enum import StrEnum
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from screening.core.audio import WavError, read_wav_pcm16
from screening.core.line import AudioClip
from screening.core.model import Language
from voice.announcements import (
    LANGUAGES,
    PROMPTS_DIR,
    PROMPTS_PACKAGE,
    SAMPLE_RATE,
    convert_rate,
    is_silent,
)

log = logging.getLogger(__name__)

ESPEAK = "espeak-ng"
SYNTH_TIMEOUT_S = 15.0  # espeak-ng renders a sentence in well under a second even on a Pi
# Same voices and pace as the shipped prompts (texts.toml): slow and low for elderly listeners.
VOICES: dict[str, str] = {"ja": "ja", "en": "en-us", "ko": "ko"}
SPEED_WPM = 140
PITCH = 40


class MessageFragment(StrEnum):
    """Fixed message audio shipped beside the prompts (not caller announcements)."""

    VOICE_CALL_ALERT = "voice_call_alert"  # "Mamoru here: your family got a suspected fraud call; press 1"


class MessageSource(StrEnum):
    """Which audio a rendered message is; logged, and visible in ``AudioClip.name``."""

    SYNTHESISED = "speech"
    FALLBACK = "fallback"


def render_message(text: str, language: Language, *, espeak: str | None = None,
                   timeout_s: float = SYNTH_TIMEOUT_S) -> AudioClip:
    """``text`` spoken in ``language`` as 8 kHz mono 16-bit; the shipped message if that fails.

    ``espeak`` is the synthesiser's path (default: found on PATH). Never raises
    for synthesis problems; raises ValueError only for a language we ship no
    fallback for, since then there is nothing meaningful to play.
    """
    if language not in LANGUAGES:
        raise ValueError(f"no voice-call message for language {language!r}; choose one of {', '.join(LANGUAGES)}")
    clip = synthesise(text, language, espeak=espeak, timeout_s=timeout_s)
    if clip is not None:
        log.info("voice-call message: synthesised %s text with espeak-ng (%.1f s)", language, clip.duration_s)
        return clip
    clip = fallback_message(language)
    log.warning("voice-call message: playing the generic shipped %s message (%.1f s) instead of the text",
                language, clip.duration_s)
    return clip


def synthesise(text: str, language: str, *, espeak: str | None = None,
               timeout_s: float = SYNTH_TIMEOUT_S) -> AudioClip | None:
    """espeak-ng's rendering of ``text``, or None (logged) if it cannot be had or used."""
    if not text.strip():
        log.warning("voice-call message: empty text")
        return None
    if language == "ja" and _has_kanji(text):
        # espeak-ng reads every kanji as "Chinese letter": worse than the generic message.
        log.warning("voice-call message: Japanese text contains kanji, which espeak-ng cannot read")
        return None
    program = espeak or shutil.which(ESPEAK)
    if program is None:
        log.warning("voice-call message: %s not installed (apt install espeak-ng)", ESPEAK)
        return None
    with tempfile.TemporaryDirectory(prefix="mamoru-speech-") as tmp:
        wav = Path(tmp) / "message.wav"
        if not _run_espeak(program, text, VOICES[language], wav, timeout_s):
            return None
        return _clip_from_wav(wav, f"{MessageSource.SYNTHESISED.value}:{language}")


def fallback_message(language: str) -> AudioClip:
    """The shipped generic alert for ``language``; raises WavError only on a broken install."""
    resource = shipped_fragment(language, MessageFragment.VOICE_CALL_ALERT)
    try:
        with resources.as_file(resource) as path:
            pcm, rate = read_wav_pcm16(path)
    except OSError as exc:
        raise WavError(f"{resource}: {exc}") from exc
    if is_silent(pcm):
        raise WavError(f"{resource}: silent or empty")
    name = f"{MessageSource.FALLBACK.value}:{language}:{MessageFragment.VOICE_CALL_ALERT.value}"
    return AudioClip(name, convert_rate(pcm, rate, SAMPLE_RATE), SAMPLE_RATE)


def shipped_fragment(language: str, fragment: MessageFragment) -> Traversable:
    return resources.files(PROMPTS_PACKAGE) / PROMPTS_DIR / language / f"{fragment.value}.wav"


def _run_espeak(program: str, text: str, voice: str, out: Path, timeout_s: float) -> bool:
    """Write espeak-ng's WAV to ``out``; text via stdin so no quoting or option injection.

    A file, not --stdout: a streamed WAV header carries no length.
    """
    cmd = [program, "-v", voice, "-s", str(SPEED_WPM), "-p", str(PITCH), "-w", str(out), "--stdin"]
    try:
        done = subprocess.run(cmd, input=text.encode("utf-8"), capture_output=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        log.warning("voice-call message: %s did not finish within %.0f s", program, timeout_s)
        return False
    except OSError as exc:
        log.warning("voice-call message: cannot run %s: %s", program, exc)
        return False
    if done.returncode != 0:
        log.warning("voice-call message: %s failed (%d): %s", program, done.returncode,
                    done.stderr.decode("utf-8", "replace").strip()[:200])
        return False
    return True


def _clip_from_wav(wav: Path, name: str) -> AudioClip | None:
    try:
        pcm, rate = read_wav_pcm16(wav)
    except WavError as exc:
        log.warning("voice-call message: synthesiser output unusable: %s", exc)
        return None
    pcm = convert_rate(pcm, rate, SAMPLE_RATE)
    if is_silent(pcm):
        log.warning("voice-call message: synthesiser produced silence")
        return None
    return AudioClip(name, pcm, SAMPLE_RATE)


def _has_kanji(text: str) -> bool:
    return any("\u4e00" <= ch <= "\u9fff" or "\u3400" <= ch <= "\u4dbf" for ch in text)
