"""WAV reading for prompts and scripted caller audio: every common PCM layout, and broken files."""

from __future__ import annotations

import math
import wave
from array import array
from pathlib import Path

import pytest

from firmware.audio_format import wav_to_line_u8
from screening.core.audio import WavError, read_wav_pcm16


def _write(path: Path, width: int, channels: int, rate: int, seconds: float = 0.5) -> list[float]:
    n = int(rate * seconds)
    signal = [0.5 * math.sin(2 * math.pi * 440 * i / rate) for i in range(n)]
    frames = bytearray()
    for x in signal:
        for _ in range(channels):
            if width == 1:
                frames += bytes([int(round(x * 127)) + 128])
            else:
                frames += int(round(x * (2 ** (8 * width - 1) - 1))).to_bytes(width, "little", signed=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(bytes(frames))
    return signal


@pytest.mark.parametrize("width", [1, 2, 3, 4])
@pytest.mark.parametrize("channels", [1, 2])
def test_every_pcm_layout_reads_as_mono_16bit(tmp_path: Path, width: int, channels: int) -> None:
    path = tmp_path / "a.wav"
    signal = _write(path, width, channels, 16000)
    pcm, rate = read_wav_pcm16(path)
    samples = array("h")
    samples.frombytes(pcm)
    assert rate == 16000 and len(samples) == len(signal)
    tolerance = 300 if width == 1 else 3
    assert max(abs(s - x * 32767) for s, x in zip(samples, signal, strict=True)) < tolerance


def test_line_format_is_8khz_u8(tmp_path: Path) -> None:
    path = tmp_path / "a.wav"
    _write(path, 2, 2, 48000, seconds=1.0)
    u8 = wav_to_line_u8(path)
    assert len(u8) == 8000
    assert 0xC0 - 2 <= max(u8) <= 0xC0 + 2 and 0x40 - 2 <= min(u8) <= 0x40 + 2  # ±0.5 full scale


@pytest.mark.parametrize("content", [b"", b"RIFF\x00\x00\x00\x00WAVE", b"not a wav at all" * 10])
def test_broken_wav_is_a_clear_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "broken.wav"
    path.write_bytes(content)
    with pytest.raises(WavError, match="broken.wav"):
        read_wav_pcm16(path)


def test_missing_wav_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(WavError, match="nope.wav"):
        read_wav_pcm16(tmp_path / "nope.wav")
