"""Pure PCM/WAV helpers every side uses: read any PCM WAV as mono 16-bit, resample.

Standard library only (the appliance must run without numpy). The modem's own line
format (8-bit unsigned, DLE shielding) stays in ``firmware``; voice, web and the
adapters all meet here at mono 16-bit little-endian PCM.
"""

from __future__ import annotations

import io
import sys
import wave
from array import array
from pathlib import Path


def resample_pcm16(pcm16: bytes, from_rate: int, to_rate: int) -> bytes:
    """Resample mono 16-bit LE PCM.

    Integer down-sampling ratios (16 k, 48 k -> 8 k) average each block, which
    doubles as a crude anti-alias filter; other ratios interpolate linearly.
    Good enough for spoken announcements, which is all we play.
    """
    if from_rate == to_rate or not pcm16:
        return pcm16[: len(pcm16) - len(pcm16) % 2]
    if from_rate <= 0 or to_rate <= 0:
        raise ValueError(f"bad sample rates {from_rate} -> {to_rate}")
    samples = array("h")
    samples.frombytes(pcm16[: len(pcm16) - len(pcm16) % 2])
    if sys.byteorder == "big":
        samples.byteswap()
    if from_rate % to_rate == 0:
        out = _block_average(samples, from_rate // to_rate)
    else:
        out = _linear_interpolate(samples, from_rate, to_rate)
    if sys.byteorder == "big":
        out.byteswap()
    return out.tobytes()


def _block_average(samples: array[int], factor: int) -> array[int]:
    usable = len(samples) - len(samples) % factor
    return array("h", (sum(samples[i : i + factor]) // factor for i in range(0, usable, factor)))


def _linear_interpolate(samples: array[int], from_rate: int, to_rate: int) -> array[int]:
    count = len(samples) * to_rate // from_rate
    last = len(samples) - 1
    out = array("h", bytes(2 * count))
    step = from_rate / to_rate
    for k in range(count):
        pos = k * step
        i = int(pos)
        frac = pos - i
        a = samples[i]
        b = samples[i + 1] if i < last else a
        out[k] = int(round(a + (b - a) * frac))
    return out


class WavError(ValueError):
    """A WAV file that cannot be used as audio (missing, broken, unsupported)."""


def read_wav_pcm16(path: str | Path) -> tuple[bytes, int]:
    """Any PCM WAV (8/16/24/32-bit, any channel count) as mono 16-bit LE PCM and its rate.

    Raises WavError naming the file; never anything else for bad input.
    """
    try:
        with wave.open(str(path), "rb") as wav:
            channels, width, rate = wav.getnchannels(), wav.getsampwidth(), wav.getframerate()
            frames = wav.readframes(wav.getnframes())
    except (OSError, wave.Error, EOFError, ValueError) as exc:
        raise WavError(f"{path}: cannot read WAV: {exc or 'truncated or not a WAV file'}") from exc
    if width not in (1, 2, 3, 4) or channels < 1 or rate <= 0:
        raise WavError(f"{path}: unsupported WAV ({channels} channels, {8 * width}-bit, {rate} Hz)")
    samples = _to_int16(frames[: len(frames) - len(frames) % (width * channels)], width)
    if channels > 1:
        samples = array("h", (sum(samples[i : i + channels]) // channels
                              for i in range(0, len(samples), channels)))
    if sys.byteorder == "big":
        samples.byteswap()
    return samples.tobytes(), rate


def _to_int16(frames: bytes, width: int) -> array[int]:
    if width == 1:  # WAV 8-bit is unsigned
        return array("h", ((b - 128) << 8 for b in frames))
    if width == 2:
        out = array("h")
        out.frombytes(frames)
        if sys.byteorder == "big":
            out.byteswap()
        return out
    # 24/32-bit: keep the top two bytes of each little-endian sample
    return array("h", (int.from_bytes(frames[i + width - 2 : i + width], "little", signed=True)
                       for i in range(0, len(frames), width)))


def wav_bytes(pcm16: bytes, sample_rate: int) -> bytes:
    """A mono 16-bit WAV file holding ``pcm16`` (write it with ``screening.core.files``)."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(pcm16)
    return buffer.getvalue()
