"""Conversions between the clips we ship (16-bit PCM) and a modem's line format.

Standard library only: the appliance must run without numpy. The two format
conversions are single C-level ``bytes.translate`` calls (an 8-bit linear
sample is the high byte of the 16-bit sample with its sign bit flipped), so
they cost nothing even on a Pi Zero. Reading WAVs and resampling are not
modem-specific and live in ``screening.core.audio``.
"""

from __future__ import annotations

from pathlib import Path

from firmware.dialects import AudioFormat
from screening.core.audio import read_wav_pcm16, resample_pcm16

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


def wav_to_line_u8(path: str | Path, rate: int = 8000) -> bytes:
    """A WAV file as the modem's line format: 8 kHz unsigned 8-bit linear."""
    pcm, source_rate = read_wav_pcm16(path)
    return pcm16_to_u8(resample_pcm16(pcm, source_rate, rate))
