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

from screening.core.audio import WavError, read_wav_pcm16
from screening.config import Config, load_config
from screening.core.model import Language
from voice.asr import ModelError, Segment, packaged_model_dir, resolve_model_dir
from voice.engine import EngineChoice, SpeechEngine, load_engine

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
    return load_engine(Language(language), choice, model_dir, cfg.voice.models_dir)


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
    """Download and install the official small model for a language."""
    from voice.models import DEFAULT_BASE_URL, ModelInstallError, install_model

    cfg = _config(args)
    models_dir = Path(args.models_dir) if args.models_dir else cfg.voice.models_dir
    logging.getLogger("voice.models").setLevel(logging.INFO)  # progress, even under the CLI's warning level
    try:
        target = install_model(args.language, models_dir, base_url=args.base_url or DEFAULT_BASE_URL,
                               timeout=args.timeout)
    except ModelInstallError as exc:
        return _fail(f"model install failed: {exc}")
    print(target)
    return EXIT_OK


def model_status(language: str, models_dir: Path) -> dict[str, Any]:
    """Where a language's model would be loaded from (and what it is), without loading it."""
    from voice.models import OFFICIAL_MODELS, installed_model_info

    status: dict[str, Any] = {"language": language, "official": OFFICIAL_MODELS.get(language)}
    try:
        path = resolve_model_dir(language, None, models_dir)
    except ModelError:
        return status | {"installed": False, "path": None, "name": None}
    info = installed_model_info(path) or {}
    packaged = packaged_model_dir(language)
    source = "pip package" if packaged is not None and path == packaged else "installed"
    return status | {"installed": True, "path": str(path), "name": info.get("name"), "source": source}


def cmd_model_list(args: argparse.Namespace) -> int:
    """Which languages have a usable model, and where it is."""
    cfg = _config(args)
    models_dir = Path(args.models_dir) if args.models_dir else cfg.voice.models_dir
    rows = [model_status(lang, models_dir) for lang in LANGUAGES]
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return EXIT_OK
    for row in rows:
        where = f"{row['path']} ({row['source']})" if row["installed"] else \
            f"not installed (mamoru model install {row['language']})"
        print(f"{row['language']}  {row['official']:<30} {where}")
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
    q = msub.add_parser("install", help="download, verify and install the official small model")
    q.add_argument("language", choices=LANGUAGES)
    q.add_argument("--models-dir", metavar="D", help="install under D (default: the config's voice.models_dir)")
    q.add_argument("--base-url", metavar="URL", help="mirror of https://alphacephei.com/vosk/models")
    q.add_argument("--timeout", type=float, default=30.0, help="seconds without data before giving up")
    _config_flag(q)
    q.set_defaults(func=cmd_model_install)
    q = msub.add_parser("list", help="which languages have a model, and where")
    q.add_argument("--models-dir", metavar="D", help="default: the config's voice.models_dir")
    _config_flag(q)
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(func=cmd_model_list)
