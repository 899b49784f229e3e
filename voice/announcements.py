"""Announcements played to callers.

Until the voice work ships spoken prompts, each prompt is a distinct,
recognisable tone pattern (generated, not stored), so the line plumbing --
conversion, pacing, early stop on hang-up -- is exercised with real audio.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache

from screening.line import AudioClip
from screening.model import Prompt

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
