"""The Whisper engine on Japanese: the words come out, memory is bounded, auto picks it, the CLI works.

Speech is OpenJTalk's (robotic but clear) at the telephone's 8 kHz; the model is the one
``mamoru model install ja`` installs (tests/support/whisper_model.py). Whisper base often hears
the right sounds with the wrong kanji, so words are checked on the kana reading too.
"""

from __future__ import annotations

import json
import subprocess
import sys
import wave
from pathlib import Path

import pytest

from blocklist.store import Store
from screening.config import ConfigError, load_config
from screening.core.line import AudioClip
from screening.core.model import CallerID, EventKind, Language
from tests.support.whisper_model import whisper_model_dir
from tests.test_asr_engines import JA_FRAUD, RATE, japanese_speech, silence
from voice.asr import ModelError, Segment
from voice.detector import PhrasePack
from voice.engine import EngineChoice
from voice.engine_choice import choose_engine, load_engine
from voice.pipeline import VoiceCallAudio, VoiceService
from voice.whisper_engine import DEFAULT_STEP_S, WHISPER_DIR_NAME, WhisperEngine, WhisperTranscriber

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def whisper() -> WhisperEngine:
    return WhisperEngine.load(whisper_model_dir(), Language.JA)


def _kana(text: str) -> str:
    import pyopenjtalk

    return str(pyopenjtalk.g2p(text, kana=True))


def _feed(transcriber: WhisperTranscriber, pcm: bytes, chunk: int = 320) -> list[Segment]:
    segments: list[Segment] = []
    for i in range(0, len(pcm), chunk):
        segments += transcriber.accept(pcm[i : i + chunk])
    return segments + transcriber.finish()


def test_japanese_fraud_words_are_transcribed(whisper: WhisperEngine) -> None:
    segments = _feed(whisper.transcriber(RATE), silence(1.0) + japanese_speech(JA_FRAUD) + silence(1.5))
    text = "".join(s.text for s in segments)
    kana = _kana(text)
    assert "警察" in text, text
    assert "教えて" in text, text
    assert "バンゴー" in kana or "バンゴウ" in kana, (text, kana)  # 暗証番号, whatever the kanji
    assert "カード" in kana, (text, kana)  # キャッシュカード


def test_innocent_japanese_is_transcribed_too(whisper: WhisperEngine) -> None:
    segments = _feed(whisper.transcriber(RATE), japanese_speech("お母さん、今度の日曜日に孫を連れて遊びに行くね。") + silence(1.0))
    kana = _kana("".join(s.text for s in segments))
    assert "マゴ" in kana and "アソビ" in kana, kana


def test_long_continuous_speech_is_cut_and_memory_stays_bounded(whisper: WhisperEngine) -> None:
    """No pause for 25 s: the open segment is cut at max_segment_s, never held whole."""
    speech = japanese_speech("今日はとても良い天気ですね、散歩に行きましょう、それから買い物もしましょう")
    pcm = b""
    while len(pcm) < 25 * 2 * RATE:
        pcm += speech
    transcriber = WhisperTranscriber(whisper, RATE, window_s=6.0, step_s=3.0, max_segment_s=9.0)
    live: list[Segment] = []
    peak = 0.0
    for i in range(0, len(pcm), 1600):
        live += transcriber.accept(pcm[i : i + 1600])
        peak = max(peak, transcriber.buffered_s)
    assert peak <= 9.0 + 3.0 + 0.01  # the cap plus at most one step not yet processed
    assert live, "continuous speech produced nothing until the end of the call"
    transcriber.finish()
    assert transcriber.buffered_s == 0


def test_window_step_timing_is_what_was_asked(whisper: WhisperEngine) -> None:
    """One step per 3 s of audio, whatever the chunking: 13 s of audio is four steps, then finish."""
    transcriber = whisper.transcriber(RATE)
    pcm = (japanese_speech(JA_FRAUD) + silence(13.0))[: 13 * 2 * RATE]
    _feed(transcriber, pcm, chunk=999 * 2)
    assert transcriber.steps == int(13.0 // DEFAULT_STEP_S)


def test_configured_step_reaches_every_call() -> None:
    """``[voice] whisper_step_s = 6``: one live pass per 6 s over the last 12 s."""
    engine = load_engine(Language.JA, EngineChoice.WHISPER, whisper_model_dir(), Path("/nonexistent"),
                         whisper_step_s=6.0)
    transcriber = engine.transcriber(RATE)
    assert isinstance(transcriber, WhisperTranscriber)
    _feed(transcriber, silence(13.0), chunk=999 * 2)
    assert transcriber.steps == 2


def test_bad_window_settings_are_refused(whisper: WhisperEngine) -> None:
    with pytest.raises(ValueError):
        WhisperTranscriber(whisper, RATE, window_s=6.0, step_s=7.0)
    with pytest.raises(ValueError):
        WhisperTranscriber(whisper, RATE, window_s=6.0, step_s=3.0, max_segment_s=40.0)


# ---- choosing the engine -------------------------------------------------------------------


def _fake_vosk(path: Path) -> Path:
    (path / "conf").mkdir(parents=True)
    (path / "conf" / "model.conf").write_text("--min-active=200\n")
    return path


def test_auto_picks_whisper_for_japanese_without_a_vosk_model(tmp_path: Path) -> None:
    (tmp_path / WHISPER_DIR_NAME).symlink_to(whisper_model_dir())
    assert choose_engine(Language.JA, EngineChoice.AUTO, None, tmp_path) == (EngineChoice.WHISPER,
                                                                             tmp_path / WHISPER_DIR_NAME)
    _fake_vosk(tmp_path / "ja")
    assert choose_engine(Language.JA, EngineChoice.AUTO, None, tmp_path) == (EngineChoice.VOSK, tmp_path / "ja")
    assert choose_engine(Language.JA, EngineChoice.WHISPER, None, tmp_path)[0] is EngineChoice.WHISPER


def test_an_explicit_model_dir_says_its_engine(tmp_path: Path) -> None:
    assert choose_engine("ja", EngineChoice.AUTO, whisper_model_dir(), tmp_path)[0] is EngineChoice.WHISPER
    assert choose_engine("ja", EngineChoice.AUTO, _fake_vosk(tmp_path / "v"), tmp_path)[0] is EngineChoice.VOSK
    with pytest.raises(ModelError, match="neither"):
        choose_engine("ja", EngineChoice.AUTO, tmp_path, tmp_path)


def test_nothing_installed_says_how_to_install(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="mamoru model install ja"):
        load_engine(Language.JA, EngineChoice.AUTO, None, tmp_path)
    with pytest.raises(ModelError, match="Whisper"):
        load_engine(Language.JA, EngineChoice.WHISPER, None, tmp_path)


def test_corrupt_whisper_model_is_a_model_error(tmp_path: Path) -> None:
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        (tmp_path / name).write_bytes((whisper_model_dir() / name).read_bytes())
    (tmp_path / "model.bin").write_bytes(b"\0" * 1000)
    with pytest.raises(ModelError, match="corrupt"):
        WhisperEngine.load(tmp_path, Language.JA)


def test_config_engine_key(tmp_path: Path) -> None:
    config = tmp_path / "mamoru.toml"
    config.write_text('[voice]\nengine = "whisper"\n', encoding="utf-8")
    assert load_config(config).voice.engine is EngineChoice.WHISPER
    config.write_text('[voice]\nengine = "kaldi"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="auto, vosk, whisper"):
        load_config(config)


# ---- the CLI, as a newcomer runs it ----------------------------------------------------------------


def test_transcribe_cli_japanese_json(tmp_path: Path) -> None:
    """After ``mamoru model install ja``: ``mamoru transcribe --lang ja call.wav --json``, nothing else."""
    models = tmp_path / "models"
    models.mkdir()
    (models / WHISPER_DIR_NAME).symlink_to(whisper_model_dir())
    config = tmp_path / "mamoru.toml"
    config.write_text(f'[voice]\nmodels_dir = "{models}"\n', encoding="utf-8")
    wav = tmp_path / "call.wav"
    with wave.open(str(wav), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes(silence(0.5) + japanese_speech(JA_FRAUD) + silence(1.0))
    done = subprocess.run([sys.executable, "-m", "screening.cli", "transcribe", "--lang", "ja", str(wav),
                           "--json", "--config", str(config)],
                          capture_output=True, text=True, timeout=300, cwd=REPO, check=False)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["engine"] == "whisper"
    assert "警察" in result["text"]
    assert result["segments"] and result["detection"] is not None


# ---- in a call: only the caller is transcribed ------------------------------------------------------


def _call(tmp_path: Path, whisper: WhisperEngine) -> tuple[Store, int, VoiceCallAudio]:
    store = Store(tmp_path / "calls.db")
    store.open()
    call_id = store.begin_call("test", CallerID(raw_number="0312345678"))
    service = VoiceService(store=store, recordings_dir=tmp_path / "rec", pack=PhrasePack.load(Language.JA),
                           model=whisper)
    return store, call_id, service.start_call(call_id)


def test_our_own_prompt_is_recorded_but_never_transcribed(tmp_path: Path, whisper: WhisperEngine) -> None:
    """The announcement we play says fraud words; the caller stays silent: no transcript, no flag."""
    store, call_id, audio = _call(tmp_path, whisper)
    prompt = japanese_speech(JA_FRAUD)
    audio.played(AudioClip("warning", prompt, RATE))
    for i in range(0, 6 * 2 * RATE, 320):
        audio.received(silence(0.02))
    audio.finish()
    row = store.get_call(call_id)
    assert not (row.transcript or "").strip()
    assert row.verdict != "fraud"
    assert store.flags_for(call_id) == []
    assert row.recording_seconds is not None and row.recording_seconds >= len(prompt) / 2 / RATE + 5.9
    store.close()


def test_the_caller_is_transcribed_into_the_call_row(tmp_path: Path, whisper: WhisperEngine) -> None:
    store, call_id, audio = _call(tmp_path, whisper)
    audio.played(AudioClip("warning", japanese_speech("この電話は録音されます。"), RATE))
    pcm = silence(0.5) + japanese_speech(JA_FRAUD) + silence(1.5)
    for i in range(0, len(pcm), 320):
        audio.received(pcm[i : i + 320])
    audio.finish()
    row = store.get_call(call_id)
    assert "警察" in (row.transcript or "")
    assert "録音" not in (row.transcript or "")
    timed = [e for e in store.events_for(call_id) if e.kind == EventKind.TRANSCRIPT and "start_s" in e.detail]
    assert timed and all(0.0 <= e.detail["start_s"] <= len(pcm) / 2 / RATE for e in timed)
    store.close()
