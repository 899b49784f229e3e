"""The Japanese test speech really is telephone speech: band, codec, noise, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from tests.support.ja_speech import (
    DEFAULT_SNR_DB,
    LINE_RATE,
    SPEECH_RMS_DBFS,
    band_limit,
    reading,
    spoken_script,
    telephone,
    ulaw_decode,
    ulaw_encode,
)
from tests.support.sip_hostile import linear_to_ulaw

SENTENCES = ("もしもし、山田です。", "来週の日曜日、そちらに行きます。")


def _samples(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, dtype="<i2").astype(np.float64)


def _band_energy(x: np.ndarray, lo: float, hi: float) -> float:
    spectrum = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(x.size, 1 / LINE_RATE)
    return float(spectrum[(freqs >= lo) & (freqs < hi)].sum())


def test_ulaw_is_the_reference_g711_for_every_16_bit_value() -> None:
    samples = np.arange(-32768, 32768, dtype=np.int32).astype(np.int16)
    expected = np.array([linear_to_ulaw(int(v)) for v in samples], dtype=np.uint8)
    assert np.array_equal(ulaw_encode(samples), expected)
    decoded = ulaw_decode(ulaw_encode(samples)).astype(np.int32)
    small = np.abs(samples.astype(np.int32)) < 1000
    assert np.abs(decoded - samples)[small].max() <= 40  # fine steps near zero, as G.711 intends


def test_same_seed_same_bytes_other_seed_other_noise() -> None:
    one = spoken_script(SENTENCES, seed=3)
    assert one.pcm16 == spoken_script(SENTENCES, seed=3).pcm16
    assert one.pcm16 != spoken_script(SENTENCES, seed=4).pcm16


def test_script_is_8khz_band_limited_speech_at_the_asked_noise_level() -> None:
    script = spoken_script(SENTENCES, seed=1)
    x = _samples(script.pcm16)
    assert script.sample_rate == LINE_RATE and len(script.sentences) == 2
    first, second = script.sentences
    assert 0 < first.start_s < first.end_s < second.start_s < second.end_s < script.duration_s
    speech = np.concatenate([x[int(s.start_s * LINE_RATE):int(s.end_s * LINE_RATE)] for s in script.sentences])
    gap = x[int((first.end_s + 0.1) * LINE_RATE):int((second.start_s - 0.1) * LINE_RATE)]
    rms_dbfs = 20 * np.log10(np.sqrt(np.mean(speech**2)) / 32767)
    assert abs(rms_dbfs - SPEECH_RMS_DBFS) < 1.5
    snr = 10 * np.log10(np.mean(speech**2) / np.mean(gap**2))
    assert abs(snr - DEFAULT_SNR_DB) < 3.0, snr  # noisy, not clean: what a recogniser must cope with
    assert _band_energy(speech, 0, 200) < 0.02 * _band_energy(speech, 300, 3400)


def test_band_limit_removes_hum_and_keeps_voice_band() -> None:
    rate = 48000
    t = np.arange(rate) / rate
    hum, voice = np.sin(2 * np.pi * 100 * t), np.sin(2 * np.pi * 1000 * t)
    assert np.sqrt(np.mean(band_limit(hum, rate)[200:-200] ** 2)) < 0.1 * np.sqrt(np.mean(hum**2))
    assert np.sqrt(np.mean(band_limit(voice, rate)[200:-200] ** 2)) > 0.9 * np.sqrt(np.mean(voice**2))
    with pytest.raises(ValueError, match="multiple"):
        band_limit(voice, 44100)


def test_silence_in_is_line_noise_out_not_digital_zero() -> None:
    pcm, spans = telephone([np.zeros(48000)], 48000, seed=0)
    x = _samples(pcm)
    assert spans == [(int(0.3 * LINE_RATE), int(0.3 * LINE_RATE) + LINE_RATE)]
    expected = 32767 * 10 ** ((SPEECH_RMS_DBFS - DEFAULT_SNR_DB) / 20)  # the noise of a -20 dBFS talker
    assert abs(np.sqrt(np.mean(x**2)) / expected - 1) < 0.1


def test_reading_is_katakana() -> None:
    assert reading("暗証番号") == "アンショーバンゴー"
