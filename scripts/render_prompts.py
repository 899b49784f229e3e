#!/usr/bin/env python3
"""Render voice/prompts/texts.toml to the WAV prompts that ship in the package.

Why a script and not run-time synthesis: the appliance must speak even when
espeak-ng is not installed on the Pi, and a caller must never wait for a
synthesiser. So prompts are rendered once, by a developer, and committed.

Pipeline per prompt: espeak-ng (offline, slower voice) -> 8 kHz mono 16-bit
(sox if present, for its anti-alias filter; otherwise firmware.audio_format) ->
trim the synthesiser's own silence -> normalise loudness -> pad with a short,
fixed silence -> voice/prompts/<lang>/<prompt>.wav.

    python scripts/render_prompts.py                    # everything, in place
    python scripts/render_prompts.py --out /tmp/p --lang en --prompt warning
"""

from __future__ import annotations

import argparse
import logging
import math
import shutil
import subprocess
import sys
import tempfile
import tomllib
import wave
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a plain script from a checkout
    sys.path.insert(0, str(ROOT))

from screening.core.audio import read_wav_pcm16, resample_pcm16
from screening.core.model import Prompt
from voice.speech import MessageFragment

# Everything rendered: caller announcements plus fixed message fragments
# (e.g. the voice-call alert's generic message), same pipeline, same folder.
Renderable = Prompt | MessageFragment
RENDERABLE: tuple[Renderable, ...] = (*Prompt, *MessageFragment)

log = logging.getLogger("render_prompts")

LANGUAGES = ("ja", "en", "ko")
SAMPLE_RATE = 8000  # the modem line rate; also fine for a small household speaker
TARGET_RMS_DBFS = -18.0  # loud on an 8-bit line, same level for every prompt
PEAK_LIMIT_DBFS = -1.0  # never clip
LEAD_SILENCE_S = 0.25  # the line settles after answering; don't clip the first word
TAIL_SILENCE_S = 0.35  # a breath before the hang-up click
SILENCE_THRESHOLD = 300  # |sample| below this counts as silence when trimming (~-40 dBFS)
TIMEOUT_S = 60.0  # per external command


class RenderError(RuntimeError):
    """Rendering cannot proceed (missing tool, bad texts.toml); message says what to do."""


@dataclass(frozen=True, slots=True)
class PromptText:
    language: str
    prompt: Renderable
    text: str
    speech: str
    voice: str
    speed: int
    pitch: int


# ---- texts.toml -------------------------------------------------------------


def load_texts(path: Path) -> list[PromptText]:
    """Every (language, prompt) of texts.toml; RenderError if one is missing or malformed."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise RenderError(f"{path}: cannot read: {exc}") from exc
    return [_prompt_text(path, data, lang, prompt) for lang in LANGUAGES for prompt in Prompt]


def load_fragment_texts(path: Path) -> list[PromptText]:
    """Every (language, message fragment) of texts.toml; RenderError if one is missing."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise RenderError(f"{path}: cannot read: {exc}") from exc
    return [_prompt_text(path, data, lang, fragment) for lang in LANGUAGES for fragment in MessageFragment]


def _prompt_text(path: Path, data: dict[str, Any], lang: str, prompt: Renderable) -> PromptText:
    section = data.get(lang)
    if not isinstance(section, dict):
        raise RenderError(f"{path}: no [{lang}] section")
    entry = section.get(prompt.value)
    if not isinstance(entry, dict) or not isinstance(entry.get("text"), str) or not entry["text"].strip():
        raise RenderError(f"{path}: [{lang}.{prompt.value}] needs a non-empty text")
    try:
        return PromptText(
            language=lang,
            prompt=prompt,
            text=entry["text"],
            speech=str(entry.get("speech", entry["text"])),
            voice=str(section["voice"]),
            speed=int(entry["speed"] if "speed" in entry else section.get("speed", 140)),
            pitch=int(section.get("pitch", 50)),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise RenderError(f"{path}: [{lang}] needs voice (and numeric speed/pitch): {exc}") from exc


# ---- synthesis and conversion ---------------------------------------------


def find_tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RenderError(f"{name} not found on PATH: install it (Debian/Raspberry Pi OS: sudo apt install {package})")
    return path


def synthesize(item: PromptText, espeak: str, workdir: Path) -> Path:
    """espeak-ng's WAV (22.05 kHz) for one prompt. Text goes through stdin: no quoting issues."""
    out = workdir / f"{item.language}-{item.prompt.value}.espeak.wav"
    cmd = [espeak, "-v", item.voice, "-s", str(item.speed), "-p", str(item.pitch), "-w", str(out), "--stdin"]
    _run(cmd, item.speech.encode("utf-8"))
    return out


def to_line_rate(wav: Path, sox: str | None, workdir: Path) -> bytes:
    """Mono 16-bit PCM at SAMPLE_RATE. sox band-limits properly; the fallback interpolates."""
    if sox is not None:
        converted = wav.with_suffix(".8k.wav")
        _run([sox, str(wav), "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", str(converted)], b"")
        pcm, rate = read_wav_pcm16(converted)
    else:
        pcm, rate = read_wav_pcm16(wav)
    return resample_pcm16(pcm, rate, SAMPLE_RATE)


def _run(cmd: Sequence[str], stdin: bytes) -> None:
    try:
        subprocess.run(cmd, input=stdin, capture_output=True, check=True, timeout=TIMEOUT_S)
    except subprocess.CalledProcessError as exc:
        raise RenderError(f"{cmd[0]} failed ({exc.returncode}): {exc.stderr.decode(errors='replace').strip()}") from exc
    except subprocess.TimeoutExpired as exc:
        raise RenderError(f"{cmd[0]} did not finish within {TIMEOUT_S:.0f}s") from exc


# ---- level and padding -------------------------------------------------------


def _samples(pcm: bytes) -> array:
    out = array("h")
    out.frombytes(pcm)
    if sys.byteorder == "big":
        out.byteswap()
    return out


def _pcm(samples: array) -> bytes:
    if sys.byteorder == "big":
        samples = array("h", samples)
        samples.byteswap()
    return samples.tobytes()


def trim_silence(samples: array) -> array:
    """Drop the synthesiser's leading/trailing silence so our padding is the only padding."""
    loud = [i for i, s in enumerate(samples) if abs(s) >= SILENCE_THRESHOLD]
    if not loud:
        raise RenderError("synthesiser produced silence")
    return samples[loud[0] : loud[-1] + 1]


def normalise(samples: array) -> array:
    """Scale to TARGET_RMS_DBFS, but never past PEAK_LIMIT_DBFS: equal loudness, no clipping."""
    rms = math.sqrt(sum(s * s for s in samples) / len(samples))
    peak = max(abs(s) for s in samples)
    gain = min(32767 * 10 ** (TARGET_RMS_DBFS / 20) / rms, 32767 * 10 ** (PEAK_LIMIT_DBFS / 20) / peak)
    return array("h", (max(-32768, min(32767, round(s * gain))) for s in samples))


def pad(samples: array) -> array:
    lead = array("h", bytes(2 * int(LEAD_SILENCE_S * SAMPLE_RATE)))
    tail = array("h", bytes(2 * int(TAIL_SILENCE_S * SAMPLE_RATE)))
    return lead + samples + tail


def write_wav(path: Path, pcm: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(pcm)


def render_one(item: PromptText, out_dir: Path, espeak: str, sox: str | None, workdir: Path) -> Path:
    raw = to_line_rate(synthesize(item, espeak, workdir), sox, workdir)
    samples = pad(normalise(trim_silence(_samples(raw))))
    target = out_dir / item.language / f"{item.prompt.value}.wav"
    write_wav(target, _pcm(samples))
    log.info("%s: %.2f s, %d bytes", target, len(samples) / SAMPLE_RATE, target.stat().st_size)
    return target


def render(texts: Path, out_dir: Path, languages: Sequence[str], prompts: Sequence[Renderable]) -> list[Path]:
    """Render the selected prompts and fragments; returns the files written."""
    espeak = find_tool("espeak-ng", "espeak-ng")
    sox = shutil.which("sox")
    if sox is None:
        log.warning("sox not found: resampling without an anti-alias filter (sudo apt install sox)")
    everything = load_texts(texts) + load_fragment_texts(texts)
    items = [t for t in everything if t.language in languages and t.prompt in prompts]
    with tempfile.TemporaryDirectory(prefix="mamoru-render-") as tmp:
        return [render_one(item, out_dir, espeak, sox, Path(tmp)) for item in items]


def _args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--texts", type=Path, default=ROOT / "voice" / "prompts" / "texts.toml")
    parser.add_argument("--out", type=Path, default=ROOT / "voice" / "prompts")
    parser.add_argument("--lang", action="append", choices=LANGUAGES, help="repeatable; default all")
    parser.add_argument("--prompt", action="append", choices=[p.value for p in RENDERABLE], help="repeatable")
    return parser.parse_args(argv)


def _renderable(name: str) -> Renderable:
    return next(r for r in RENDERABLE if r.value == name)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    args = _args(argv)
    prompts = [_renderable(p) for p in args.prompt] if args.prompt else list(RENDERABLE)
    try:
        written = render(args.texts, args.out, args.lang or LANGUAGES, prompts)
    except RenderError as exc:
        log.error("%s", exc)
        return 2
    log.info("rendered %d prompts into %s", len(written), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
