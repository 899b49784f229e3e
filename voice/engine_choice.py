"""Which engine serves a language, and loading it (see :mod:`voice.engine` for the interface)."""

from __future__ import annotations

from pathlib import Path

from screening.core.model import Language
from voice.asr import SpeechModel, is_vosk_model_dir, resolve_model_dir
from voice.engine import EngineChoice, ModelError, SpeechEngine
from voice.whisper_engine import WhisperEngine, is_whisper_model_dir, resolve_whisper_dir


def choose_engine(
    language: Language | str,
    choice: EngineChoice,
    model_dir: Path | None,
    models_dir: Path,
) -> tuple[EngineChoice, Path]:
    """Which engine and model directory serve ``language`` (raises ``ModelError`` if none).

    ``model_dir`` (an explicit directory) is used as is, its layout telling the
    engine; otherwise AUTO prefers an installed Vosk model for the language (it
    streams, and is lighter) and falls back to the Whisper model.
    """
    language = Language(str(language))
    if model_dir is not None and choice is EngineChoice.AUTO:
        if is_whisper_model_dir(Path(model_dir)):
            return EngineChoice.WHISPER, Path(model_dir)
        if is_vosk_model_dir(Path(model_dir)):
            return EngineChoice.VOSK, Path(model_dir)
        raise ModelError(f"{model_dir} is neither a Vosk nor a Whisper (CTranslate2) model directory")
    if choice is EngineChoice.VOSK:
        return EngineChoice.VOSK, resolve_model_dir(language, model_dir, models_dir)
    if choice is EngineChoice.WHISPER:
        return EngineChoice.WHISPER, resolve_whisper_dir(model_dir, models_dir)
    try:
        return EngineChoice.VOSK, resolve_model_dir(language, None, models_dir)
    except ModelError as vosk_missing:
        try:
            return EngineChoice.WHISPER, resolve_whisper_dir(None, models_dir)
        except ModelError as whisper_missing:
            raise ModelError(f"no speech model for '{language}': {vosk_missing}; {whisper_missing}") from None


def load_engine(
    language: Language | str,
    choice: EngineChoice = EngineChoice.AUTO,
    model_dir: Path | None = None,
    models_dir: Path = Path("/var/lib/mamoru/models"),
    *,
    whisper_step_s: float | None = None,
) -> SpeechEngine:
    """Choose (see :func:`choose_engine`) and load the model: once per process, seconds."""
    kind, path = choose_engine(language, choice, model_dir, models_dir)
    if kind is EngineChoice.WHISPER:
        engine = WhisperEngine.load(path, Language(str(language)))
        if whisper_step_s is not None:
            engine.step_s = whisper_step_s
        return engine
    return SpeechModel.load(path)
