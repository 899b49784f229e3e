#!/usr/bin/env python3
"""Generate the committed Korean test speech under ``tests/data/speech/``.

Run ONCE by a developer (needs ``espeak-ng`` and ``sox``); the WAVs are
committed so CI needs neither. Each sentence is synthesised separately and the
sentences are joined with silence long enough (0.8 s) for Vosk's endpointer to
close a segment, so the recognition tests exercise multi-segment streaming.

Output: 8 kHz, 16-bit, mono -- the telephone format the modem delivers. The
gaps are digital silence: with the model's default feature dither Vosk closes a
segment on most of them (a -58 dB noise floor was tried: fewer segments and
worse words, so the clips stay clean).

    python scripts/make_test_speech.py [--out tests/data/speech]
"""

from __future__ import annotations

import argparse
import logging
import shutil
import subprocess
import sys
import tempfile
import wave
from pathlib import Path

log = logging.getLogger("make_test_speech")

RATE = 8000
GAP_S = 0.8
SPEED_WPM = 130
TIMEOUT_S = 60.0

CLIPS: dict[str, list[str]] = {
    "ko_benign.wav": [
        "안녕하세요 어머니.",
        "오늘 저녁에 같이 밥 먹어요.",
        "내일 병원에 모시고 갈게요.",
    ],
    "ko_fraud.wav": [
        "검찰청 수사관입니다.",
        "고객님 명의로 된 계좌가 범죄에 연루되었습니다.",
        "지금 바로 안전계좌로 송금하세요.",
        "통장 비밀번호를 알려 주세요.",
    ],
}


def synthesize(text: str, workdir: Path) -> bytes:
    """One sentence as 8 kHz 16-bit mono PCM (espeak-ng, then sox to resample with a proper filter)."""
    raw, tel = workdir / "raw.wav", workdir / "tel.wav"
    subprocess.run(["espeak-ng", "-v", "ko", "-s", str(SPEED_WPM), "-w", str(raw), text],
                   check=True, timeout=TIMEOUT_S)
    subprocess.run(["sox", str(raw), "-r", str(RATE), "-c", "1", "-b", "16", str(tel)],
                   check=True, timeout=TIMEOUT_S)
    with wave.open(str(tel), "rb") as wav:
        return wav.readframes(wav.getnframes())


def write_clip(path: Path, sentences: list[str], workdir: Path) -> float:
    """Sentences joined by silence, with silence before and after; returns the duration in seconds."""
    gap = bytes(2 * int(RATE * GAP_S))
    pcm = gap + b"".join(synthesize(s, workdir) + gap for s in sentences)
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(RATE)
        wav.writeframes(pcm)
    return len(pcm) / (2 * RATE)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "tests/data/speech")
    args = parser.parse_args(argv)
    missing = [tool for tool in ("espeak-ng", "sox") if shutil.which(tool) is None]
    if missing:
        log.error("missing tools: %s (apt install espeak-ng sox)", ", ".join(missing))
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name, sentences in CLIPS.items():
            seconds = write_clip(args.out / name, sentences, Path(tmp))
            log.info("%s: %.2f s", args.out / name, seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
