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

Choosing and loading an engine: :mod:`voice.engine_choice`. This module imports
nothing of ours and nothing heavy: the config imports :class:`EngineChoice`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Protocol


class ModelError(Exception):
    """A speech model that cannot be used: missing, corrupt, or its engine not installed."""


@dataclass(frozen=True, slots=True)
class Word:
    """One recognised word; ``conf`` is the engine's confidence in [0, 1] (Vosk's posterior)."""

    text: str
    start_s: float
    end_s: float
    conf: float


@dataclass(frozen=True, slots=True)
class Segment:
    """A final (no longer changing) utterance, exactly as the engine gives it; times from call start.

    ``words`` may be empty (Whisper gives segment times only).
    """

    text: str
    start_s: float
    end_s: float
    words: tuple[Word, ...]


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
