"""Whisper (faster-whisper, CTranslate2 int8, CPU): the ONLY module that imports ``faster_whisper``.

Whisper is not a streaming recogniser: it decodes whole windows of audio (and
always encodes a 30 s window, so a short chunk costs as much as a long one).
The per-call :class:`WhisperTranscriber` therefore pseudo-streams:

* audio is collected into the *open speech segment* (everything since the
  last cut, at 16 kHz); every ``step_s`` of new audio (3 s) one step runs:
* Silero VAD (bundled with faster-whisper) looks at the open segment. No
  speech: it is dropped but for a short tail. Speech that ended at least
  ``END_SILENCE_S`` ago: the segment is closed and decoded ONCE more with
  beam 5 -- that text is the stored transcript (``Segment``).
* Speech still going: a greedy (beam 1) pass over the last ``window_s`` (6 s)
  gives the live hypothesis (``partial()``), which the pipeline scores for
  fraud so the family hears about it during the call.
* An open segment longer than ``MAX_SEGMENT_S`` is closed by force (Whisper
  sees 30 s at most), so a call's memory is bounded whatever the caller does.

Every decode uses ``vad_filter=True`` (silence must not produce text) and no
``initial_prompt``: prompting Whisper with fraud words made it print them on
silence and raised false alarms. Our own announcements never reach this class
(the pipeline feeds only the caller's audio).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from screening.core.audio import resample_pcm16
from screening.core.model import Language
from voice.asr import release_free_memory
from voice.engine import EngineChoice, ModelError, Segment
from voice.line_audio import Upsampler2x

if TYPE_CHECKING:
    from numpy.typing import NDArray

log = logging.getLogger(__name__)

WHISPER_RATE = 16000
DEFAULT_WINDOW_S = 6.0
DEFAULT_STEP_S = 3.0
MAX_SEGMENT_S = 28.0  # one Whisper pass sees 30 s; longer speech is cut here
END_SILENCE_S = 0.6  # trailing non-speech that closes a segment
KEEP_TAIL_S = 0.5  # kept when silence is dropped, so a word starting at the edge is whole
FINAL_BEAM = 5
LIVE_BEAM = 1
DEFAULT_CPU_THREADS = 2
WHISPER_DIR_NAME = "whisper-base"  # under models_dir; the model is multilingual
REQUIRED_FILES = ("model.bin", "config.json", "tokenizer.json", "vocabulary.txt")
JA_EXTRA_HINT = "pip install 'mamoru[ja]' (or: pip install faster-whisper)"


def is_whisper_model_dir(path: Path) -> bool:
    """A CTranslate2 Whisper model: the four files faster-whisper loads."""
    return all((Path(path) / name).is_file() for name in REQUIRED_FILES)


def resolve_whisper_dir(model_dir: Path | None, models_dir: Path) -> Path:
    """``model_dir`` if given (never a silent fallback), else ``<models_dir>/whisper-base``."""
    candidate = Path(model_dir) if model_dir is not None else Path(models_dir) / WHISPER_DIR_NAME
    if is_whisper_model_dir(candidate):
        return candidate
    hint = "" if model_dir is not None else \
        "; install it with: mamoru model install ja (other languages: add --engine whisper)"
    raise ModelError(f"no Whisper model in {candidate} (needs {', '.join(REQUIRED_FILES)}){hint}")


def _import_faster_whisper() -> Any:
    try:
        import faster_whisper  # type: ignore[import-untyped]  # lazy: only the Whisper engine needs it (~100 MB of libraries)
    except ImportError as exc:
        raise ModelError(f"the Whisper engine needs faster-whisper: {JA_EXTRA_HINT} ({exc})") from exc
    return faster_whisper


@dataclass(frozen=True, slots=True)
class Decoded:
    """One Whisper segment, times in seconds from the start of the decoded audio."""

    start_s: float
    end_s: float
    text: str


class WhisperEngine:
    """A loaded Whisper model (CTranslate2, int8), shared by every call of the process."""

    def __init__(self, model: Any, path: Path, language: Language, vad: Any) -> None:
        """Wrap an already loaded ``faster_whisper.WhisperModel``; use :meth:`load`."""
        self._model = model
        self._vad = vad  # faster_whisper.vad module (Silero VAD, ONNX)
        self.path = path
        self.language = language
        self.step_s = DEFAULT_STEP_S  # live pass every step_s of audio, over the last 2 x step_s

    @property
    def kind(self) -> EngineChoice:
        return EngineChoice.WHISPER

    @classmethod
    def load(cls, path: Path, language: Language, cpu_threads: int = DEFAULT_CPU_THREADS) -> WhisperEngine:
        """Load the model in ``path`` (under a second, ~150 MB of weights): once per process."""
        path = Path(path)
        if not is_whisper_model_dir(path):
            raise ModelError(f"{path} is not a Whisper model (needs {', '.join(REQUIRED_FILES)}); "
                             "install it with: mamoru model install ja")
        fw = _import_faster_whisper()
        import faster_whisper.vad as vad  # type: ignore[import-untyped]

        started = time.monotonic()
        try:
            model = fw.WhisperModel(str(path), device="cpu", compute_type="int8",
                                    cpu_threads=cpu_threads, num_workers=1)
        except Exception as exc:  # CTranslate2 raises RuntimeError/ValueError for a bad model.bin
            raise ModelError(f"{path}: corrupt or incompatible Whisper model ({exc}); "
                             "reinstall it with: mamoru model install ja") from exc
        log.info("Whisper model %s loaded in %.1f s", path, time.monotonic() - started)
        return cls(model, path, Language(str(language)), vad)

    def transcriber(self, sample_rate: int) -> WhisperTranscriber:
        """A fresh per-call transcriber (the :class:`voice.engine.SpeechEngine` interface)."""
        return WhisperTranscriber(self, sample_rate, window_s=2 * self.step_s, step_s=self.step_s)

    def decode(self, audio: NDArray[np.float32], beam_size: int) -> list[Decoded]:
        """Transcribe 16 kHz float audio: VAD-filtered, no prompt, no conditioning on earlier text."""
        segments, _info = self._model.transcribe(
            audio, language=self.language.value, beam_size=beam_size, temperature=0.0,
            vad_filter=True, condition_on_previous_text=False, initial_prompt=None,
            without_timestamps=beam_size == LIVE_BEAM,
        )
        return [Decoded(float(s.start), float(s.end), str(s.text).strip()) for s in segments if str(s.text).strip()]

    def speech_spans(self, audio: NDArray[np.float32]) -> list[tuple[int, int]]:
        """Silero VAD's speech spans in samples (16 kHz)."""
        options = self._vad.VadOptions(min_silence_duration_ms=int(END_SILENCE_S * 1000), speech_pad_ms=100)
        return [(int(s["start"]), int(s["end"])) for s in self._vad.get_speech_timestamps(audio, options)]


def pcm16_to_float(pcm16: bytes, sample_rate: int) -> NDArray[np.float32]:
    """PCM (any rate) as the float32 16 kHz mono Whisper wants (8 kHz line audio: use :class:`Upsampler2x`)."""
    data = resample_pcm16(pcm16, sample_rate, WHISPER_RATE)
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0


class WhisperTranscriber:
    """Pseudo-streaming Whisper for ONE call; not thread-safe (see ``TranscriptionWorker``).

    Memory per call is bounded: at most ``MAX_SEGMENT_S`` of 16 kHz float audio
    (1.8 MB) plus less than one step of pending input.
    """

    def __init__(
        self,
        engine: WhisperEngine,
        sample_rate: int,
        *,
        window_s: float = DEFAULT_WINDOW_S,
        step_s: float = DEFAULT_STEP_S,
        max_segment_s: float = MAX_SEGMENT_S,
    ) -> None:
        if sample_rate <= 0:
            raise ValueError(f"bad sample rate {sample_rate}")
        if not 0 < step_s <= window_s <= max_segment_s <= 30.0:
            raise ValueError(f"need 0 < step_s <= window_s <= max_segment_s <= 30 (got {step_s}, {window_s}, "
                             f"{max_segment_s})")
        self.sample_rate = sample_rate
        self.audio_s = 0.0
        self._engine = engine
        self._window = int(window_s * WHISPER_RATE)
        self._step_bytes = 2 * int(step_s * sample_rate)
        self._max_segment = int(max_segment_s * WHISPER_RATE)
        self._pending = bytearray()
        # 8 kHz line audio: a half-band filter, not linear interpolation (which droops 3 kHz by 4 dB and
        # leaves images at 4-8 kHz that Whisper hears; docs/japanese-detection.md measures it).
        self._upsampler = Upsampler2x() if 2 * sample_rate == WHISPER_RATE else None
        self._open = np.zeros(0, dtype=np.float32)  # the open speech segment, 16 kHz
        self._open_start_s = 0.0  # where it starts in the call's audio
        self._partial = ""
        self._finished = False
        self.steps = 0
        self.step_seconds: list[float] = []  # wall time of each live step (benchmarks)
        self.step_cpu_seconds: list[float] = []  # the process's CPU time in them (all threads)
        self.final_seconds: list[float] = []  # wall time of each final pass

    @property
    def buffered_s(self) -> float:
        """Audio held for this call right now (the memory bound's measure)."""
        return len(self._open) / WHISPER_RATE + len(self._pending) / (2 * self.sample_rate)

    def accept(self, pcm16: bytes) -> list[Segment]:
        if self._finished:
            raise RuntimeError("transcriber already finished")
        self._pending += pcm16
        self.audio_s += len(pcm16) / (2 * self.sample_rate)
        segments: list[Segment] = []
        while len(self._pending) >= self._step_bytes:
            chunk = bytes(self._pending[: self._step_bytes])
            del self._pending[: self._step_bytes]
            segments.extend(self._step(chunk))
        return segments

    def partial(self) -> str:
        return "" if self._finished else self._partial

    def finish(self) -> list[Segment]:
        if self._finished:
            return []
        tail = bytes(self._pending[: len(self._pending) - len(self._pending) % 2])
        self._pending.clear()
        if tail:
            self._append(tail)
        segments = self._close_segment(len(self._open)) if len(self._open) else []
        self._finished = True
        self._partial = ""
        self._open = np.zeros(0, dtype=np.float32)
        release_free_memory()
        return segments

    # ---- one step ---------------------------------------------------------------------

    def _append(self, pcm16: bytes) -> None:
        if self._upsampler is not None:
            line = np.frombuffer(pcm16[: len(pcm16) - len(pcm16) % 2], dtype="<i2").astype(np.float32) / 32768.0
            audio = self._upsampler.feed(line)
        else:
            audio = pcm16_to_float(pcm16, self.sample_rate)
        self._open = np.concatenate([self._open, audio])

    def _drop(self, samples: int) -> None:
        self._open = self._open[samples:].copy()  # copy: the old array's memory goes now
        self._open_start_s += samples / WHISPER_RATE

    def _step(self, pcm16: bytes) -> list[Segment]:
        started, cpu_started = time.monotonic(), time.process_time()
        self._append(pcm16)
        self.steps += 1
        spans = self._engine.speech_spans(self._open)
        if not spans:
            self._partial = ""
            self._drop(max(0, len(self._open) - int(KEEP_TAIL_S * WHISPER_RATE)))
            return []
        speech_end = spans[-1][1]
        if len(self._open) - speech_end >= int(END_SILENCE_S * WHISPER_RATE):
            return self._close_segment(speech_end)  # the caller paused: the utterance is complete
        if len(spans) > 1:
            # A pause inside, and a new utterance under way: close up to the pause now, so segments
            # follow the caller's sentences and the open buffer (and every VAD/decode) stays short.
            return self._close_segment(spans[-2][1], limit=spans[-1][0])
        if len(self._open) >= self._max_segment:
            return self._close_segment(len(self._open))  # continuous speech: cut it here
        window = self._open[-self._window:]
        self._partial = " ".join(d.text for d in self._engine.decode(window, LIVE_BEAM))
        self.step_seconds.append(time.monotonic() - started)
        self.step_cpu_seconds.append(time.process_time() - cpu_started)
        return []

    def _close_segment(self, end: int, limit: int | None = None) -> list[Segment]:
        """Final beam-5 pass over the open segment up to ``end`` (+ a little air, never past ``limit``)."""
        started = time.monotonic()
        end = min(len(self._open), end + int(0.2 * WHISPER_RATE), len(self._open) if limit is None else limit)
        offset = self._open_start_s
        decoded = self._engine.decode(self._open[:end], FINAL_BEAM)
        self._drop(end)
        self._partial = ""
        self.final_seconds.append(time.monotonic() - started)
        return [Segment(d.text, offset + d.start_s, offset + d.end_s, ()) for d in decoded]
