"""Telephone audio made ready for Whisper: a clean 8 -> 16 kHz upsampler and a line-hiss suppressor.

Why (measured in docs/japanese-detection.md, "Why recognition was poor"):

* Whisper's log-mel features reach 8 kHz. Upsampling line audio by linear interpolation
  droops the top of the band (-4 dB at 3 kHz) and leaves images of the speech at 4-8 kHz
  (-13 dB at 5 kHz), a band where Whisper expects either real speech or nothing. A windowed-
  sinc half-band filter keeps 0-3.6 kHz flat and puts nothing above 4 kHz.
* Steady noise on the line (hiss) is what makes Whisper base fail on phone speech: at 20 dB
  in-band SNR its kana error rate is four times that of a quiet line. Spectral subtraction
  with a noise floor estimated from the quietest frames of the audio removes most of a
  steady hiss and leaves speech and quiet lines alone.

numpy only (no scipy on the device).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from numpy.typing import NDArray

HALF_BAND_TAPS = 63  # odd: a linear-phase filter with an integer delay
FRAME = 512  # at 16 kHz: 32 ms (the STFT of the hiss suppressor)
HOP = FRAME // 2
QUIET_SHARE = 0.1  # the quietest 10 % of frames: the noise floor
MIN_FRAMES = 20  # fewer frames than this: too little audio to estimate noise, pass through
OVER_SUBTRACT = 2.0
GAIN_FLOOR = 0.1  # -20 dB: residual noise stays a little audible, so speech is not swallowed


def _half_band() -> NDArray[np.float64]:
    n = np.arange(HALF_BAND_TAPS) - HALF_BAND_TAPS // 2
    taps = np.sinc(n / 2.0) * np.kaiser(HALF_BAND_TAPS, 8.0)
    return taps / taps.sum() * 2.0  # x2: zero stuffing halves the level


_HALF_BAND = _half_band()


def upsample_2x(x: NDArray[np.float32]) -> NDArray[np.float32]:
    """8 kHz -> 16 kHz: zero stuffing + a windowed-sinc half-band low-pass (cut at 4 kHz)."""
    if len(x) == 0:
        return np.zeros(0, dtype=np.float32)
    stuffed = np.zeros(2 * len(x), dtype=np.float64)
    stuffed[::2] = x
    delay = HALF_BAND_TAPS // 2
    out = np.convolve(stuffed, _HALF_BAND)[delay: delay + len(stuffed)]
    return out.astype(np.float32)


class Upsampler2x:
    """:func:`upsample_2x` over a stream of chunks, seamless across chunk edges (2 ms behind)."""

    HISTORY = 32  # input samples kept from the previous chunk (> half the filter at 8 kHz)
    LAG = HALF_BAND_TAPS // 4 + 1  # input samples held back until the filter has seen what follows them

    def __init__(self) -> None:
        self._history = np.zeros(self.HISTORY, dtype=np.float32)

    def feed(self, x: NDArray[np.float32]) -> NDArray[np.float32]:
        z = np.concatenate([self._history, np.asarray(x, dtype=np.float32)])
        y = upsample_2x(z)
        self._history = z[-self.HISTORY:]
        return y[2 * (self.HISTORY - self.LAG): 2 * (len(z) - self.LAG)]


def suppress_hiss(x: NDArray[np.float32]) -> NDArray[np.float32]:
    """Spectral subtraction of the steady noise floor (estimated from the quietest frames of ``x``)."""
    if len(x) < FRAME * MIN_FRAMES // 2:
        return x
    window = np.sqrt(np.hanning(FRAME + 1)[:FRAME])  # sqrt-Hann in and out, 50 % overlap: sums to one
    pad = np.concatenate([np.zeros(HOP), x.astype(np.float64), np.zeros(FRAME)])
    count = (len(pad) - FRAME) // HOP + 1
    index = np.arange(FRAME)[None, :] + HOP * np.arange(count)[:, None]
    spectra = np.fft.rfft(pad[index] * window, axis=1)
    power = np.abs(spectra) ** 2
    energy = power.sum(axis=1)
    quiet = energy <= np.quantile(energy, QUIET_SHARE)
    noise = power[quiet].mean(axis=0)
    # Smooth the power over 3 frames before the gain, so single noisy bins do not "sing".
    kernel = np.ones(3) / 3
    smooth_power = np.apply_along_axis(lambda col: np.convolve(col, kernel, mode="same"), 0, power)
    gain = np.maximum(1.0 - OVER_SUBTRACT * noise / np.maximum(smooth_power, 1e-20), GAIN_FLOOR ** 2)
    frames = np.fft.irfft(spectra * np.sqrt(gain), n=FRAME, axis=1) * window
    out = np.zeros(len(pad))
    for i in range(count):
        out[i * HOP: i * HOP + FRAME] += frames[i]
    return out[HOP: HOP + len(x)].astype(np.float32)
