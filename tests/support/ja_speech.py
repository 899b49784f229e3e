"""Japanese test speech: OpenJTalk (pyopenjtalk-plus) through a telephone channel, made in the test.

Why synthesised in the test and not committed: the scripts are part of the test
that uses them (what a caller says is next to what is asserted about it), and
OpenJTalk renders a sentence in ~0.05 x real time, so nothing needs storing.
OpenJTalk's HTS voice ("Mei", CC BY 3.0) is robotic but clear.

The channel is what a landline does to a caller's voice, in this order:
band-pass 300-3400 Hz and resample to 8 kHz (one windowed-sinc FIR, then
decimation) -> level to ``SPEECH_RMS_DBFS`` -> line noise at ``snr_db`` below the
speech (white, from a seeded generator: the same seed gives the same bytes) ->
G.711 mu-law encode and decode (the ITU-T reference algorithm, as
tests/support/sip_hostile.py implements it per sample). Sentences are joined by
``gap_s`` of noise-only line, so a recogniser's VAD sees real pauses, and the
times of every sentence are kept: latency is measured from the end of a phrase.
"""

from __future__ import annotations

import wave
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

LINE_RATE = 8000
LOW_HZ = 300.0
HIGH_HZ = 3400.0
FIR_TAPS = 255
SPEECH_RMS_DBFS = -20.0  # a normal telephone talker level, well clear of clipping
DEFAULT_SNR_DB = 20.0
DEFAULT_GAP_S = 0.8  # a breath between sentences; long enough for a VAD to close a segment
# What the Japanese end-to-end tests and the web page's demo call say. The fraud script is the
# commonest opener (オレオレ詐欺) as a scammer says it, with several tells, not one.
FRAUD_OPENER = (
    "もしもし、おれだけど。",
    "携帯をなくして、番号が変わったんだ。",
    "会社のお金を使い込んでしまって、今日中にお金が必要なんだ。",
    "今から同僚が、キャッシュカードを受け取りに行きます。",
    "暗証番号も教えて。誰にも言わないでね。",
)
EVERYDAY = (
    "もしもし、田中です。",
    "来週の日曜日、お昼ごろそちらに伺います。",
    "お土産にお団子を持っていきますね。",
    "それでは、また電話します。",
)
_ULAW_BIAS = 0x84
_ULAW_CLIP_14 = 8159


@dataclass(frozen=True, slots=True)
class SpokenSentence:
    text: str
    start_s: float  # from the start of the clip
    end_s: float


@dataclass(frozen=True, slots=True)
class SpokenScript:
    """A caller's speech as it arrives over the line: 8 kHz mono 16-bit PCM, and where each sentence is."""

    pcm16: bytes
    sentences: tuple[SpokenSentence, ...]
    sample_rate: int = LINE_RATE

    @property
    def duration_s(self) -> float:
        return len(self.pcm16) / 2 / self.sample_rate

    def write_wav(self, path: Path) -> Path:
        with wave.open(str(path), "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(self.sample_rate)
            out.writeframes(self.pcm16)
        return path


def _pyopenjtalk() -> Any:
    import pyopenjtalk  # type: ignore[import-untyped]  # no stubs; test extra (pyopenjtalk-plus)

    return pyopenjtalk


def openjtalk(text: str, speed: float = 1.0, half_tone: float = 0.0) -> tuple[NDArray[np.float64], int]:
    """OpenJTalk's rendering of ``text``: float samples in 16-bit range, and their rate (48 kHz)."""
    audio, rate = _pyopenjtalk().tts(text, speed=speed, half_tone=half_tone)
    return np.asarray(audio, dtype=np.float64), int(rate)


def reading(text: str) -> str:
    """The katakana reading of ``text`` (OpenJTalk's), to compare what was said with what was heard."""
    return str(_pyopenjtalk().g2p(text, kana=True))


def band_limit(audio: NDArray[np.float64], rate: int) -> NDArray[np.float64]:
    """300-3400 Hz and 8 kHz: a windowed-sinc band-pass at ``rate``, then every (rate/8000)th sample."""
    if rate % LINE_RATE:
        raise ValueError(f"{rate} Hz is not a multiple of {LINE_RATE} Hz")
    n = np.arange(FIR_TAPS) - (FIR_TAPS - 1) / 2
    taps = (2 * HIGH_HZ / rate) * np.sinc(2 * HIGH_HZ / rate * n) - (2 * LOW_HZ / rate) * np.sinc(2 * LOW_HZ / rate * n)
    taps *= np.hamming(FIR_TAPS)
    return np.convolve(audio, taps, mode="same")[:: rate // LINE_RATE]


def ulaw_encode(samples: NDArray[np.int16]) -> NDArray[np.uint8]:
    """ITU-T G.711 mu-law (the reference g711.c algorithm, on 14-bit magnitudes), vectorised."""
    value = samples.astype(np.int32) >> 2
    mask = np.where(value < 0, 0x7F, 0xFF)
    magnitude = np.minimum(np.abs(value), _ULAW_CLIP_14) + (_ULAW_BIAS >> 2)
    segment = np.maximum(np.floor(np.log2(magnitude)).astype(np.int32) - 5, 0)
    code = np.where(segment >= 8, 0x7F, (np.minimum(segment, 7) << 4) | ((magnitude >> (segment + 1)) & 0x0F))
    return (code ^ mask).astype(np.uint8)


def ulaw_decode(codes: NDArray[np.uint8]) -> NDArray[np.int16]:
    c = ~codes.astype(np.int32) & 0xFF
    exponent = (c >> 4) & 0x07
    magnitude = ((((c & 0x0F) << 3) + _ULAW_BIAS) << exponent) - _ULAW_BIAS
    return np.where(c & 0x80, -magnitude, magnitude).astype(np.int16)


def telephone(sentences: Sequence[NDArray[np.float64]], rate: int, *, snr_db: float = DEFAULT_SNR_DB,
              gap_s: float = DEFAULT_GAP_S, lead_s: float = 0.3, seed: int = 0) -> tuple[bytes, list[tuple[int, int]]]:
    """Sentences (float samples at ``rate``) through the channel; the PCM and each sentence's sample span."""
    band = [band_limit(s, rate) for s in sentences]
    speech = np.concatenate(band) if band else np.zeros(0)
    rms = (float(np.sqrt(np.mean(speech**2))) if speech.size else 0.0) or 1.0  # silence: noise only
    gain = 32767 * 10 ** (SPEECH_RMS_DBFS / 20) / rms
    gap = np.zeros(int(gap_s * LINE_RATE))
    parts: list[NDArray[np.float64]] = [np.zeros(int(lead_s * LINE_RATE))]
    spans: list[tuple[int, int]] = []
    at = len(parts[0])
    for piece in band:
        parts += [piece * gain, gap]
        spans.append((at, at + len(piece)))
        at += len(piece) + len(gap)
    line = np.concatenate(parts)
    noise_rms = 32767 * 10 ** ((SPEECH_RMS_DBFS - snr_db) / 20)
    line = line + np.random.default_rng(seed).normal(0.0, noise_rms, line.size)
    pcm = np.clip(np.round(line), -32768, 32767).astype(np.int16)
    return ulaw_decode(ulaw_encode(pcm)).astype("<i2").tobytes(), spans


def spoken_script(sentences: Sequence[str], *, speed: float = 1.0, half_tone: float = 0.0,
                  snr_db: float = DEFAULT_SNR_DB, gap_s: float = DEFAULT_GAP_S, lead_s: float = 0.3,
                  seed: int = 0) -> SpokenScript:
    """A caller saying ``sentences`` over a telephone line (deterministic for a given ``seed``).

    ``lead_s`` of line noise comes first: a caller who listens to our warning before speaking.
    """
    rendered = [openjtalk(text, speed, half_tone) for text in sentences]
    rates = {rate for _, rate in rendered}
    if len(rates) != 1:
        raise ValueError(f"OpenJTalk rendered at several rates: {sorted(rates)}")
    pcm, spans = telephone([audio for audio, _ in rendered], rates.pop(), snr_db=snr_db, gap_s=gap_s,
                            lead_s=lead_s, seed=seed)
    return SpokenScript(pcm, tuple(SpokenSentence(text, start / LINE_RATE, end / LINE_RATE)
                                   for text, (start, end) in zip(sentences, spans, strict=True)))
