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

    python scripts/make_test_speech.py [--out tests/data/speech] [--only ko_fraud_sip.wav]

``ko_benign.wav`` and ``ko_fraud.wav`` use espeak-ng's plain Korean voice, which the small
Korean model mostly mis-hears: fine for "is it transcribed live", useless for "is it flagged".

``ko_fraud_sip.wav`` is a fraud script the model *does* hear as fraud over a telephone
line (8 kHz, G.711 u-law): "법원입니다. 비밀번호. 알려 주세요." and the keywords again (this is
the court; password; tell me). It was found by searching espeak-ng renderings (voice
variant, speed, pitch, a sox pitch shift) of the ko.toml keywords: each was transcribed by
the real model after a u-law round trip, at six start offsets (the timing a SIP call
changes), and only renderings heard as the keyword every time were kept. Of ~40 keywords
x 60 random renderings only 법원 (court: impersonation) and 비밀번호 (password: payment
instruction) were ever heard right; the ``linda`` renderings below are heard right 6/6
alone. Together they score 8.0 against the fraud threshold 3.0. "알려 주세요" comes out as
noise, as most espeak-ng Korean does. Every sentence is what the caller says; the phrase
pack is unchanged. Check a re-render with ``mamoru transcribe`` before committing it.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import shutil
import subprocess
import sys
import tempfile
import wave
from dataclasses import dataclass, replace
from pathlib import Path

log = logging.getLogger("make_test_speech")

RATE = 8000
GAP_S = 0.8
SPEED_WPM = 130
TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Sentence:
    """One sentence and how espeak-ng says it (voice variant, words per minute, pitch 0-99, sox effects)."""

    text: str
    voice: str = "ko"
    speed: int = SPEED_WPM
    pitch: int | None = None  # None: espeak-ng's default (50)
    effects: str = ""  # sox effects on the way to 8 kHz, e.g. "pitch 150 gain -n -3"
    pause_s: float = GAP_S  # silence after it


# The renderings the model hears right over a u-law line (see the module docstring).
COURT = Sentence("법원입니다.", "ko+linda", 170, 50, "pitch 150 gain -n -3")
PASSWORD = Sentence("비밀번호.", "ko+linda", 180, 70, "gain -n -3", pause_s=1.5)
TELL_ME = Sentence("알려 주세요.", "ko+linda", 150, 60, "gain -n -3", pause_s=1.5)
# Each keyword is said three times. Within a sequence a rendering is heard right at only
# 55-90 % of start offsets (earlier utterances shift the model's online adaptation), and
# the offset a SIP call gives varies by tens of ms from call to call. Said twice (the first
# five sentences) the clip was judged fraud at 39 of 40 offsets of 0.2-1.0 s of line silence
# before it; with the last two sentences appended at 41 of 41, including the offset that had
# failed. Eight orders were tried.
FRAUD_SIP = [COURT, PASSWORD, TELL_ME, PASSWORD, replace(COURT, pause_s=1.5), PASSWORD, COURT]

CLIPS: dict[str, list[str | Sentence]] = {
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
    "ko_fraud_sip.wav": list(FRAUD_SIP),
}


def synthesize(sentence: str | Sentence, workdir: Path) -> bytes:
    """One sentence as 8 kHz 16-bit mono PCM (espeak-ng, then sox to resample with a proper filter)."""
    spec = sentence if isinstance(sentence, Sentence) else Sentence(sentence)
    raw, tel = workdir / "raw.wav", workdir / "tel.wav"
    pitch = [] if spec.pitch is None else ["-p", str(spec.pitch)]
    subprocess.run(["espeak-ng", "-v", spec.voice, "-s", str(spec.speed), *pitch, "-w", str(raw), spec.text],
                   check=True, timeout=TIMEOUT_S)
    # -R: sox's dither from a fixed seed, so a render is byte for byte the committed file
    subprocess.run(["sox", "-R", str(raw), "-r", str(RATE), "-c", "1", "-b", "16", str(tel),
                    *shlex.split(spec.effects)], check=True, timeout=TIMEOUT_S)
    with wave.open(str(tel), "rb") as wav:
        return wav.readframes(wav.getnframes())


def write_clip(path: Path, sentences: list[str | Sentence], workdir: Path) -> float:
    """Sentences joined by silence, with silence before and after; returns the duration in seconds."""
    def pause(sentence: str | Sentence) -> bytes:
        return bytes(2 * int(RATE * (sentence.pause_s if isinstance(sentence, Sentence) else GAP_S)))

    pcm = bytes(2 * int(RATE * GAP_S)) + b"".join(synthesize(s, workdir) + pause(s) for s in sentences)
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
    parser.add_argument("--only", action="append", choices=sorted(CLIPS), help="write only this clip (repeatable)")
    args = parser.parse_args(argv)
    missing = [tool for tool in ("espeak-ng", "sox") if shutil.which(tool) is None]
    if missing:
        log.error("missing tools: %s (apt install espeak-ng sox)", ", ".join(missing))
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name, sentences in CLIPS.items():
            if args.only and name not in args.only:
                continue
            seconds = write_clip(args.out / name, sentences, Path(tmp))
            log.info("%s: %.2f s", args.out / name, seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
