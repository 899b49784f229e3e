#!/usr/bin/env python3
"""Why is Japanese recognition through our telephone channel poor? One factor changed at a time.

Each variant changes ONE thing against the benchmark's old channel/decode (``old``):
where the speech comes from (no line at all, the line without noise), how the SNR is
defined (active speech vs whole-file RMS; noise white before the band limit vs
measured in band), how 8 kHz becomes Whisper's 16 kHz (scipy polyphase vs the
product's ``pcm16_to_float``), and the decode options (beam, temperature fallback,
VAD filter). Kana CER is measured on the same subset of our scripts for every
variant, so the differences are the factor's effect.

    .venv/bin/python benchmarks/diag_asr_ja_channel.py --model DIR [--every 4] [--json-out F]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_detector_ja import SCRIPTS, kana_error_rate  # noqa: E402
from telephone_line import LINE_RATE, LineSettings, active_speech_power, telephone_line  # noqa: E402

from voice.kana import OpenJTalkReader  # noqa: E402
from voice.line_audio import upsample_2x  # noqa: E402
from voice.whisper_engine import pcm16_to_float  # noqa: E402

log = logging.getLogger("diag_asr_ja_channel")


def old_channel(audio: np.ndarray, rate: int, snr_db: float, seed: int, rms_snr: bool = False) -> np.ndarray:
    """The benchmark's channel before this change (white noise before the band-pass, SNR vs active level)."""
    from scipy.signal import butter, resample_poly, sosfiltfilt

    x = audio.astype(np.float64)
    x = x / (np.max(np.abs(x)) or 1.0) * 0.5
    x = resample_poly(x, LINE_RATE, rate)
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(len(x))
    level = float(np.mean(x ** 2)) if rms_snr else active_speech_power(x)
    noise *= np.sqrt(level / (10 ** (snr_db / 10)) / np.mean(noise ** 2))
    x = np.clip(x + noise, -1, 1)
    x = sosfiltfilt(butter(6, [300, 3400], btype="bandpass", fs=LINE_RATE, output="sos"), x)
    mu = 255.0
    y = np.sign(x) * np.log1p(mu * np.minimum(np.abs(x), 1.0)) / np.log1p(mu)
    y = np.round((y + 1) * 127.5) / 127.5 - 1
    return (np.sign(y) * np.expm1(np.abs(y) * np.log1p(mu)) / mu).astype(np.float32)


def suppress_hiss(x: np.ndarray) -> np.ndarray:
    """Spectral subtraction (x2) of the mean spectrum of the quietest 10 % of 32 ms frames, floor -20 dB."""
    frame, hop = 512, 256
    window = np.sqrt(np.hanning(frame + 1)[:frame])
    pad = np.concatenate([np.zeros(hop), x.astype(np.float64), np.zeros(frame)])
    index = np.arange(frame)[None, :] + hop * np.arange((len(pad) - frame) // hop + 1)[:, None]
    spectra = np.fft.rfft(pad[index] * window, axis=1)
    power = np.abs(spectra) ** 2
    energy = power.sum(axis=1)
    noise = power[energy <= np.quantile(energy, 0.1)].mean(axis=0)
    smooth = np.apply_along_axis(lambda c: np.convolve(c, np.ones(3) / 3, mode="same"), 0, power)
    gain = np.maximum(1.0 - 2.0 * noise / np.maximum(smooth, 1e-20), 0.01)
    frames = np.fft.irfft(spectra * np.sqrt(gain), n=frame, axis=1) * window
    out = np.zeros(len(pad))
    for i, f in enumerate(frames):
        out[i * hop: i * hop + frame] += f
    return out[hop: hop + len(x)].astype(np.float32)


def to16_poly(line: np.ndarray) -> np.ndarray:
    from scipy.signal import resample_poly

    return resample_poly(line, 2, 1).astype(np.float32)


def to16_product(line: np.ndarray) -> np.ndarray:
    pcm = (np.clip(line, -1, 1) * 32767).astype("<i2").tobytes()
    return pcm16_to_float(pcm, LINE_RATE)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--every", type=int, default=4, help="take every Nth script")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only", nargs="*", help="run only these variants")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import pyopenjtalk
    from faster_whisper import WhisperModel
    from scipy.signal import resample_poly

    scripts = json.loads(SCRIPTS.read_text(encoding="utf-8"))
    texts = [r["text"] for label in ("fraud", "benign", "check_fraud", "check_benign")
             for r in scripts.get(label, [])][:: args.every]
    voices = [pyopenjtalk.tts(t) for t in texts]
    model = WhisperModel(str(args.model), device="cpu", compute_type="int8", cpu_threads=args.threads)
    reader = OpenJTalkReader()
    bench = {"beam_size": 5, "vad_filter": True, "condition_on_previous_text": False}
    product = {**bench, "temperature": 0.0}
    line20 = LineSettings(snr_db=20.0)

    def clean16(a: np.ndarray, r: int, s: int) -> np.ndarray:
        return resample_poly(a / np.max(np.abs(a)) * 0.5, 16000, r).astype(np.float32)

    Audio = Callable[[np.ndarray, int, int], np.ndarray]
    variants: dict[str, tuple[Audio, dict[str, Any]]] = {
        "no_line_16k": (clean16, bench),
        "line_no_noise": (lambda a, r, s: to16_poly(telephone_line(a, r, LineSettings(snr_db=None), s)), bench),
        "old_20dB": (lambda a, r, s: to16_poly(old_channel(a, r, 20.0, s)), bench),
        "old_20dB_rms_snr": (lambda a, r, s: to16_poly(old_channel(a, r, 20.0, s, rms_snr=True)), bench),
        "old_30dB": (lambda a, r, s: to16_poly(old_channel(a, r, 30.0, s)), bench),
        "new_line_20dB": (lambda a, r, s: to16_poly(telephone_line(a, r, line20, s)), bench),
        "new_line_20dB_product_resample": (lambda a, r, s: to16_product(telephone_line(a, r, line20, s)), bench),
        "new_line_20dB_product_decode": (lambda a, r, s: to16_poly(telephone_line(a, r, line20, s)), product),
        "new_line_20dB_greedy": (lambda a, r, s: to16_poly(telephone_line(a, r, line20, s)),
                                 {**product, "beam_size": 1}),
        "new_line_20dB_sinc_upsample": (lambda a, r, s: upsample_2x(telephone_line(a, r, line20, s)), bench),
        "new_line_20dB_hiss_suppressed": (lambda a, r, s: suppress_hiss(upsample_2x(telephone_line(a, r, line20, s))),
                                          bench),
        "new_line_quiet_hiss_suppressed": (lambda a, r, s: suppress_hiss(upsample_2x(
            telephone_line(a, r, LineSettings(snr_db=None), s))), bench),
        "new_line_30dB": (lambda a, r, s: to16_poly(telephone_line(a, r, LineSettings(snr_db=30.0), s)), bench),
        "new_line_30dB_hiss_suppressed": (lambda a, r, s: suppress_hiss(upsample_2x(
            telephone_line(a, r, LineSettings(snr_db=30.0), s))), bench),
        "new_line_20dB_no_vad": (lambda a, r, s: to16_poly(telephone_line(a, r, line20, s)),
                                 {**bench, "vad_filter": False}),
    }
    out: dict[str, Any] = {"scripts": len(texts), "every": args.every, "variants": {}}
    for name, (channel, options) in variants.items():
        if args.only and name not in args.only:
            continue
        began = time.perf_counter()
        cers, heard = [], []
        for seed, (text, (wave, rate)) in enumerate(zip(texts, voices, strict=True)):
            audio = channel(np.asarray(wave, dtype=np.float64), int(rate), seed)
            segments, _ = model.transcribe(audio, language="ja", **options)
            h = "".join(s.text for s in segments).strip()
            heard.append(h)
            cers.append(kana_error_rate(reader, text, h))
        out["variants"][name] = {"kana_cer": round(float(np.mean(cers)), 3), "options": options,
                                 "seconds": round(time.perf_counter() - began, 1), "heard": heard}
        log.info("%-34s kana CER %.3f  (%.0f s)", name, np.mean(cers), time.perf_counter() - began)
        if args.json_out:
            args.json_out.write_text(json.dumps(out, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
