"""Announcements played to callers (and, for one prompt, to the household).

``PromptLibrary`` is what the appliance uses: spoken prompts rendered from
``voice/prompts/texts.toml`` and shipped as 8 kHz WAVs inside the package, each
replaceable by a household's own recording. ``ToneAnnouncements`` is a
generated stand-in (a distinct tone pattern per prompt) for tests and
benchmarks, and the last resort if a shipped prompt is somehow unreadable:
the caller must always hear something.
"""

from __future__ import annotations

import logging
import math
import sys
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from screening.core.audio import WavError, read_wav_pcm16, resample_pcm16
from screening.core.line import AudioClip
from screening.core.model import Prompt

log = logging.getLogger(__name__)

SAMPLE_RATE = 8000
_AMPLITUDE = 0.35 * 32767

# (frequency Hz or 0 for silence, duration s) per prompt: short enough to be played
# before the second ring, distinct enough to tell apart in a recording.
_PATTERNS: dict[Prompt, tuple[tuple[float, float], ...]] = {
    Prompt.WARNING: ((880, 0.25), (0, 0.1), (660, 0.25), (0, 0.1), (880, 0.25), (0, 0.3)),
    Prompt.NUMBER_REQUEST: ((523, 0.3), (0, 0.1), (659, 0.3), (0, 0.1), (784, 0.4), (0, 0.2)),
    Prompt.INTERNATIONAL_BLOCKED: ((950, 0.33), (1400, 0.33), (1800, 0.33), (0, 0.2)),
    Prompt.NUMBER_BLOCKED: ((480, 0.5), (0, 0.25), (480, 0.5), (0, 0.2)),
    Prompt.HOUSEHOLD_WARNING: ((1200, 0.15), (0, 0.1), (1200, 0.15), (0, 0.1), (1200, 0.15), (0, 0.2)),
    # screening (action "screen"): each prompt its own pitch pair, so tests can tell which was heard
    Prompt.NAME_REQUEST: ((700, 0.3), (0, 0.1), (700, 0.3), (0, 0.2)),
    Prompt.CHALLENGE: ((740, 0.3), (0, 0.1), (740, 0.3), (0, 0.2)),
    Prompt.CHALLENGE_DIGIT: ((780, 0.3), (0, 0.1), (780, 0.3), (0, 0.2)),
    Prompt.SCREENED_OUT: ((820, 0.3), (0, 0.1), (820, 0.3), (0, 0.2)),
    Prompt.REFUSED: ((860, 0.3), (0, 0.1), (860, 0.3), (0, 0.2)),
    Prompt.MESSAGE_REQUEST: ((900, 0.3), (0, 0.1), (900, 0.3), (0, 0.2)),
    Prompt.MESSAGE_THANKS: ((940, 0.3), (0, 0.1), (940, 0.3), (0, 0.2)),
    Prompt.SCREEN_ANNOUNCE: ((980, 0.3), (0, 0.1), (980, 0.3), (0, 0.2)),
    Prompt.SCREEN_CHOICES: ((1020, 0.3), (0, 0.1), (1020, 0.3), (0, 0.2)),
    Prompt.PICK_UP: ((1060, 0.3), (0, 0.1), (1060, 0.3), (0, 0.2)),
    Prompt.FAMILY_JOINED: ((1100, 0.3), (0, 0.1), (1100, 0.3), (0, 0.2)),
}


def tone_pattern(segments: Sequence[tuple[float, float]], sample_rate: int = SAMPLE_RATE) -> bytes:
    """16-bit mono PCM for a sequence of (frequency, seconds); 0 Hz is silence."""
    samples = array("h")
    for freq, seconds in segments:
        n = int(seconds * sample_rate)
        if freq <= 0:
            samples.extend([0] * n)
            continue
        step = 2 * math.pi * freq / sample_rate
        ramp = max(1, int(0.005 * sample_rate))  # 5 ms fade avoids clicks
        for i in range(n):
            gain = min(1.0, i / ramp, (n - i) / ramp)
            samples.append(int(_AMPLITUDE * gain * math.sin(step * i)))
    if samples.itemsize == 2 and array("h", [1]).tobytes() != b"\x01\x00":
        samples.byteswap()  # PCM on the wire is little-endian
    return samples.tobytes()


@dataclass(slots=True)
class ToneAnnouncements:
    """Placeholder prompts: one tone pattern per Prompt, generated on first use."""

    sample_rate: int = SAMPLE_RATE
    _cache: dict[Prompt, AudioClip] = field(default_factory=dict)

    def clip_for(self, prompt: Prompt) -> AudioClip:
        clip = self._cache.get(prompt)
        if clip is None:
            clip = AudioClip(f"tone:{prompt.value}", _pattern_pcm(prompt, self.sample_rate), self.sample_rate)
            self._cache[prompt] = clip
        return clip


@cache
def _pattern_pcm(prompt: Prompt, sample_rate: int) -> bytes:
    return tone_pattern(_PATTERNS[prompt], sample_rate)


# ---- spoken prompts -----------------------------------------------------------

LANGUAGES = ("ja", "en", "ko")
PROMPTS_PACKAGE = "voice"
PROMPTS_DIR = "prompts"
MAX_OVERRIDE_S = 30.0  # a longer "prompt" is almost certainly the wrong file
_SILENT_PEAK = 100  # |sample| at or below this everywhere: effectively silent (-50 dBFS)


@dataclass(slots=True)
class PromptLibrary:
    """Spoken prompts for one language, with per-prompt household overrides.

    ``clip_for`` never raises for a bad file: an override that cannot be used is
    logged and the shipped prompt plays instead; a shipped prompt that cannot be
    read (a broken install) falls back to the tone pattern. Clips are converted
    to ``sample_rate`` mono 16-bit and cached on first use, so a changed override
    takes effect on restart. Converting a 44.1/48 kHz override is pure Python
    and can take seconds on a Pi: call ``check()`` at start-up, which loads (and
    so caches) every clip before the first call arrives.
    """

    language: str
    override_dir: Path | None = None
    sample_rate: int = SAMPLE_RATE
    _cache: dict[Prompt, AudioClip] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.language not in LANGUAGES:
            raise ValueError(f"no shipped prompts for language {self.language!r}; choose one of {', '.join(LANGUAGES)}")
        if self.sample_rate <= 0:
            raise ValueError(f"bad sample rate {self.sample_rate}")

    def clip_for(self, prompt: Prompt) -> AudioClip:
        clip = self._cache.get(prompt)
        if clip is None:
            clip, _ = self._resolve(prompt)
            self._cache[prompt] = clip
        return clip

    def override_path(self, prompt: Prompt) -> Path | None:
        return None if self.override_dir is None else self.override_dir / f"{prompt.value}.wav"

    def check(self) -> list[str]:
        """Problems a relative or installer should fix, one sentence each; [] if all is well.

        Re-reads every prompt from disk and caches the result, so calling it at
        start-up also means no call waits for a conversion. Reports unusable or
        implausibly long overrides, stray files in the override directory, and
        a broken install.
        """
        problems = self._check_override_dir()
        for prompt in Prompt:
            clip, found = self._resolve(prompt)
            self._cache[prompt] = clip
            problems.extend(found)
            if clip.name.startswith("override:") and clip.duration_s > MAX_OVERRIDE_S:
                problems.append(f"{self.override_path(prompt)}: {clip.duration_s:.0f} s long; "
                                "callers hang up long before the end")
        return problems

    # -- loading --

    def _resolve(self, prompt: Prompt) -> tuple[AudioClip, list[str]]:
        """The clip to play -- override, else shipped, else tone -- and what went wrong on the way.

        Every problem is also logged here, naming the file, because ``clip_for``
        callers (the call loop) have no one to report to.
        """
        problems: list[str] = []
        path = self.override_path(prompt)
        if path is not None and path.is_file():
            try:
                return self._override_clip(prompt, path), problems
            except WavError as exc:
                log.error("prompt override %s cannot be used, playing the shipped %s prompt instead: %s",
                          path, prompt.value, exc)
                problems.append(f"{exc}; the shipped prompt plays instead")
        try:
            return self._shipped_clip(prompt), problems
        except WavError as exc:
            log.error("shipped prompt %s/%s is unreadable (broken install?), playing a tone instead: %s",
                      self.language, prompt.value, exc)
            problems.append(f"shipped prompt {self.language}/{prompt.value}.wav unusable, reinstall mamoru: {exc}")
            return ToneAnnouncements(self.sample_rate).clip_for(prompt), problems

    def _override_clip(self, prompt: Prompt, path: Path) -> AudioClip:
        pcm, rate = read_wav_pcm16(path)
        pcm = convert_rate(pcm, rate, self.sample_rate)
        if is_silent(pcm):  # an empty or silent recording would leave the caller hearing nothing
            raise WavError(f"{path}: silent or empty recording")
        return AudioClip(f"override:{prompt.value}", pcm, self.sample_rate)

    def _shipped_clip(self, prompt: Prompt) -> AudioClip:
        resource = shipped_prompt(self.language, prompt)
        try:
            with resources.as_file(resource) as path:
                pcm, rate = read_wav_pcm16(path)
        except OSError as exc:  # as_file may have to extract from a zip
            raise WavError(f"{resource}: {exc}") from exc
        if is_silent(pcm):
            raise WavError(f"{resource}: silent or empty")
        return AudioClip(f"{self.language}:{prompt.value}", convert_rate(pcm, rate, self.sample_rate),
                         self.sample_rate)

    # -- checking --

    def _check_override_dir(self) -> list[str]:
        if self.override_dir is None:
            return []
        if not self.override_dir.is_dir():
            return [f"prompts_dir {self.override_dir} is not a directory; the shipped prompts play instead"]
        names = {f"{p.value}.wav" for p in Prompt}
        return [f"{path}: ignored, not a prompt name (expected one of {', '.join(sorted(names))})"
                for path in sorted(self.override_dir.iterdir())
                if path.suffix.lower() == ".wav" and path.name not in names]


def shipped_prompt(language: str, prompt: Prompt) -> Traversable:
    """The packaged WAV for a prompt; a Traversable so it works from a wheel or zip too."""
    return resources.files(PROMPTS_PACKAGE) / PROMPTS_DIR / language / f"{prompt.value}.wav"


def convert_rate(pcm16: bytes, from_rate: int, to_rate: int) -> bytes:
    """Resample, filtering a little before decimating from rates that are no multiple of the target.

    ``resample_pcm16`` block-averages for integer ratios (a crude anti-alias
    filter) but only interpolates otherwise, which folds everything above
    4 kHz of a 44.1 kHz recording back into the speech band. Interpolating up
    to the next multiple of the target first (44.1 -> 48 kHz) and then
    block-averaging keeps that filter.
    """
    if from_rate > to_rate and from_rate % to_rate:
        upper = to_rate * math.ceil(from_rate / to_rate)
        pcm16 = resample_pcm16(pcm16, from_rate, upper)
        from_rate = upper
    return resample_pcm16(pcm16, from_rate, to_rate)


def is_silent(pcm16: bytes) -> bool:
    samples = array("h")
    samples.frombytes(pcm16[: len(pcm16) - len(pcm16) % 2])
    if sys.byteorder == "big":
        samples.byteswap()
    return not samples or max(max(samples), -min(samples)) <= _SILENT_PEAK
