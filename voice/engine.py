"""The speech-recognition engine interface, and which engine a language uses.

Two engines implement it today:

* Vosk (:mod:`voice.asr`) -- truly streaming, small, the customer's choice;
  used for a language whenever a Vosk model for it is installed.
* Whisper via faster-whisper (:mod:`voice.whisper_engine`) -- pseudo-streaming
  over a sliding window; the Japanese engine while no Japanese Vosk model can
  be fetched (``mamoru model install ja``).

Both are split the same way: a loaded model (:class:`SpeechEngine`, loaded
once per process and shared by every call) hands out one
:class:`CallRecognizer` per call. A recognizer is fed 16-bit PCM in whatever
chunks the line produces and returns final :class:`voice.asr.Segment` objects
with times from the start of the call's recognised audio; ``partial()`` is the
still-changing hypothesis; ``finish()`` flushes. Each recognizer bounds its own
memory (Vosk recycles its decoder; Whisper caps its audio window).

whisper.cpp (``pywhispercpp``) was measured as a possible Pi engine (smaller
RSS, slower here, invents text on silence so it needs a VAD in front): it
would be a third :class:`SpeechEngine` with the same windowing as the Whisper
one, selected by a new :class:`EngineChoice` value. Not built.

Nothing heavy is imported here: the config imports :class:`EngineChoice`.
"""

from __future__ import annotations

import logging
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from screening.core.model import Language

if TYPE_CHECKING:
    from voice.asr import Segment

log = logging.getLogger(__name__)


class EngineChoice(StrEnum):
    """``[voice] engine``: which recogniser to use for the configured language."""

    AUTO = "auto"  # Vosk if a Vosk model for the language is installed, else Whisper if installed
    VOSK = "vosk"
    WHISPER = "whisper"


class CallRecognizer(Protocol):
    """Recognition of ONE call, used from one thread (see ``TranscriptionWorker``)."""

    sample_rate: int
    audio_s: float  # audio accepted so far

    def accept(self, pcm16: bytes) -> list[Segment]:
        """Feed mono 16-bit LE PCM; returns the segments this chunk completed (usually none)."""
        ...

    def partial(self) -> str:
        """The current, still changing hypothesis ("" when there is none)."""
        ...

    def finish(self) -> list[Segment]:
        """End of the call: flush, free per-call memory, return the last segments. Idempotent."""
        ...


class SpeechEngine(Protocol):
    """A loaded model, shared by every call of the process."""

    path: Path

    @property
    def kind(self) -> EngineChoice:
        """Which engine this is (never AUTO)."""
        ...

    def transcriber(self, sample_rate: int) -> CallRecognizer:
        """A fresh recognizer for one call."""
        ...


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
    from voice.asr import ModelError, is_vosk_model_dir, resolve_model_dir
    from voice.whisper_engine import is_whisper_model_dir, resolve_whisper_dir

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
) -> SpeechEngine:
    """Choose (see :func:`choose_engine`) and load the model: once per process, seconds."""
    kind, path = choose_engine(language, choice, model_dir, models_dir)
    if kind is EngineChoice.WHISPER:
        from voice.whisper_engine import WhisperEngine

        return WhisperEngine.load(path, Language(str(language)))
    from voice.asr import SpeechModel

    return SpeechModel.load(path)
