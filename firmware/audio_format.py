"""Conversions between the clips we ship (16-bit PCM) and a modem's line format.

Standard library only: the appliance must run without numpy. The two format
conversions are single C-level ``bytes.translate`` calls (an 8-bit linear
sample is the high byte of the 16-bit sample with its sign bit flipped), so
they cost nothing even on a Pi Zero. Resampling is pure Python and only needed
for clips not already recorded at the modem's rate.
"""

from __future__ import annotations

import sys
from array import array

from firmware.dialects import AudioFormat

_FLIP_SIGN = bytes(b ^ 0x80 for b in range(256))


def pcm16_to_u8(pcm16: bytes) -> bytes:
    """Signed 16-bit little-endian -> unsigned 8-bit linear (0x80 = silence).

    Keeps the high byte (truncation, like an arithmetic ``>> 8``); a trailing
    odd byte is ignored.
    """
    return pcm16[1 : len(pcm16) - len(pcm16) % 2 : 2].translate(_FLIP_SIGN)


def u8_to_pcm16(u8: bytes) -> bytes:
    """Unsigned 8-bit linear -> signed 16-bit little-endian (low byte zero)."""
    out = bytearray(2 * len(u8))
    out[1::2] = u8.translate(_FLIP_SIGN)
    return bytes(out)


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


def _block_average(samples: array, factor: int) -> array:
    usable = len(samples) - len(samples) % factor
    return array("h", (sum(samples[i : i + factor]) // factor for i in range(0, usable, factor)))


def _linear_interpolate(samples: array, from_rate: int, to_rate: int) -> array:
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


def to_line_format(pcm16: bytes, sample_rate: int, line_rate: int, fmt: AudioFormat) -> bytes:
    """A clip as the bytes the modem plays (before DLE shielding)."""
    if fmt is not AudioFormat.UNSIGNED_8BIT_LINEAR:
        raise ValueError(f"unsupported modem audio format {fmt}")
    return pcm16_to_u8(resample_pcm16(pcm16, sample_rate, line_rate))


def from_line_format(data: bytes, fmt: AudioFormat) -> bytes:
    """Received line audio as 16-bit PCM for sinks."""
    if fmt is not AudioFormat.UNSIGNED_8BIT_LINEAR:
        raise ValueError(f"unsupported modem audio format {fmt}")
    return u8_to_pcm16(data)
