"""A telephone line for benchmarks: what a caller's voice goes through before mamoru hears it.

Definition (every figure in docs/japanese-detection.md "The benchmark's telephone line"):

1. The talker's level is set to an active speech level of -26 dBov (ITU-T P.56 active level,
   pauses excluded; 0 dBov = the G.711 overload point = 1.0 here), the nominal level on a
   digital telephone network.
2. 8 kHz sampling with a polyphase anti-alias filter (scipy ``resample_poly``).
3. Line noise: Gaussian noise added on the analogue loop, band-limited by the same codec filter
   as the speech. The SNR is the active speech level over the noise power, both measured in band
   (300-3400 Hz) -- what a test set on the line would read.
4. 300-3400 Hz band-pass (the G.712 channel filter), then a G.711 mu-law round trip (8 bits).

Output: float32 at 8 kHz in [-1, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LINE_RATE = 8000
NOMINAL_ACTIVE_DBOV = -26.0


@dataclass(frozen=True, slots=True)
class LineSettings:
    snr_db: float | None = 20.0  # None: a quiet line (band limit and codec only)
    active_dbov: float = NOMINAL_ACTIVE_DBOV
    low_hz: float = 300.0
    high_hz: float = 3400.0


def active_speech_power(x: np.ndarray, rate: int = LINE_RATE) -> float:
    """Mean power of the 20 ms frames within 30 dB of the loudest: speech without its pauses (like P.56)."""
    n = rate // 50
    frames = x[: len(x) // n * n].reshape(-1, n)
    power = np.mean(frames ** 2, axis=1)
    if not len(power) or power.max() <= 0:
        return 0.0
    return float(np.mean(power[power >= power.max() * 1e-3]))


def band_pass(x: np.ndarray, settings: LineSettings) -> np.ndarray:
    from scipy.signal import butter, sosfilt

    sos = butter(4, [settings.low_hz, settings.high_hz], btype="bandpass", fs=LINE_RATE, output="sos")
    return np.asarray(sosfilt(sos, x))


def mu_law_round_trip(x: np.ndarray) -> np.ndarray:
    """G.711 mu-law (continuous companding curve, 8-bit code): compress, quantise, expand."""
    mu = 255.0
    y = np.sign(x) * np.log1p(mu * np.minimum(np.abs(x), 1.0)) / np.log1p(mu)
    y = np.round((y + 1) * 127.5) / 127.5 - 1
    return np.asarray(np.sign(y) * np.expm1(np.abs(y) * np.log1p(mu)) / mu)


def telephone_line(audio: np.ndarray, rate: int, settings: LineSettings, seed: int) -> np.ndarray:
    """``audio`` (any rate, any level) as heard at the far end of the line; float32 8 kHz."""
    from scipy.signal import resample_poly

    x = np.asarray(resample_poly(np.asarray(audio, dtype=np.float64), LINE_RATE, rate))
    speech = band_pass(x, settings)
    level = active_speech_power(speech)
    if level > 0:
        gain = np.sqrt(10 ** (settings.active_dbov / 10) / level)
        speech, level = speech * gain, level * gain ** 2
    line = speech
    if settings.snr_db is not None and level > 0:
        noise = band_pass(np.random.default_rng(seed).standard_normal(len(x)), settings)
        noise *= np.sqrt(level / 10 ** (settings.snr_db / 10) / np.mean(noise ** 2))
        line = speech + noise  # both already band-limited: the SNR above is the in-band SNR
    return mu_law_round_trip(np.clip(line, -1.0, 1.0)).astype(np.float32)
