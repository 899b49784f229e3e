"""The voice-call alert end to end: VoiceCallAlerter -> ModemLine -> virtual modem over a real pty.

The virtual modem is time-scaled (ringing, answer detection, the callee's
DTMF), but playback is paced in real time by the host, so messages are short.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
import tomllib
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from firmware.audio_format import u8_to_pcm16
from firmware.dialects import CADENCE_PERIOD_S, DIALECTS, RingCadence
from firmware.modem_line import ModemLine
from firmware.scenarios import CalleeScript
from firmware.virtual_modem import VirtualModem
from firmware.vmodem.records import DialOutcome
from screening.core.audio import read_wav_pcm16
from screening.core.line import AudioClip
from screening.voice_call import CallAlertStatus, VoiceCallAlerter, dial_string
from voice import speech
from voice.announcements import LANGUAGES
from voice.speech import MessageFragment, fallback_message, render_message

pytestmark = pytest.mark.timeout(30)

SCALE = 0.05
ROOT = Path(__file__).resolve().parent.parent
PROMPTS = ROOT / "voice" / "prompts"
RELATIVE = "090-1234-5678"
RELATIVE_DIALLED = "09012345678"


@contextlib.contextmanager
def modem_and_line(dialect_key: str = "conexant") -> Iterator[tuple[VirtualModem, ModemLine]]:
    modem = VirtualModem(DIALECTS[dialect_key], cadence=RingCadence.JAPAN, time_scale=SCALE)
    modem.start()
    line = ModemLine(str(modem.device_path), home_region="JP", command_timeout_s=1.0, reset_timeout_s=1.0,
                     health_interval_s=None, ring_gap_s=1.5 * CADENCE_PERIOD_S[RingCadence.JAPAN] * SCALE)
    try:
        line.open()
        yield modem, line
    finally:
        line.close()
        modem.stop()


def _message(seconds: float = 0.3) -> tuple[AudioClip, bytes]:
    """A clip whose line bytes include DLE/ETX, so what the callee heard is checked exactly."""
    u8 = bytes((i * 7 + (i >> 8)) & 0xFF for i in range(int(seconds * 8000)))
    return AudioClip("message", u8_to_pcm16(u8)), u8


class FakeSpeech:
    def __init__(self, clip: AudioClip) -> None:
        self.clip = clip
        self.calls: list[tuple[str, str]] = []

    def __call__(self, text: str, language: str) -> AudioClip:
        self.calls.append((text, language))
        return self.clip


def _alerter(line: ModemLine, clip: AudioClip, **kw: Any) -> tuple[VoiceCallAlerter, FakeSpeech]:
    fake = FakeSpeech(clip)
    kw.setdefault("listen_s", 0.6)
    kw.setdefault("listen_slice_s", 0.2)
    kw.setdefault("retry_pause_s", 0.1)
    return VoiceCallAlerter(line, fake, **kw), fake


# ---- dial strings ---------------------------------------------------------------------


@pytest.mark.parametrize(("number", "region", "expected"), [
    ("090-1234-5678", "JP", "09012345678"),
    ("(03) 1234 5678", "JP", "0312345678"),
    ("０９０－１２３４－５６７８", "JP", "09012345678"),  # full-width, as typed on a Japanese keyboard
    ("+81 90 1234 5678", "JP", "09012345678"),  # domestic E.164: national form
    ("+44 20 7946 0000", "JP", "010442079460000"),  # KDDI-style 010 international prefix
    ("+44 20 7946 0000", "US", "011442079460000"),
    ("+81 3 1234 5678", "GB", "0081312345678"),
])
def test_dial_string(number: str, region: str, expected: str) -> None:
    assert dial_string(number, region) == expected


@pytest.mark.parametrize("bad", ["", "12", "+", "call me", "+999 123"])
def test_dial_string_rejects_garbage(bad: str) -> None:
    with pytest.raises(ValueError):
        dial_string(bad, "JP")


# ---- calls ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dialect_key", ["usr", "conexant"])
def test_relative_presses_1(dialect_key: str) -> None:
    clip, u8 = _message()
    with modem_and_line(dialect_key) as (modem, line):
        modem.expect_dial(RELATIVE_DIALLED, CalleeScript(answer_after_s=3.0, dtmf=((7.0, "1"),)))
        alerter, fake = _alerter(line, clip)
        result = alerter.call(RELATIVE, "Mamoru here. Press 1.", "en")
        record = modem.wait_for_dial_end(0, 2.0)
    assert (result.status, result.attempts, result.digits) == (CallAlertStatus.ACKNOWLEDGED, 1, ("1",))
    assert fake.calls == [("Mamoru here. Press 1.", "en")]
    assert record.dial_string == f"ATDT{RELATIVE_DIALLED}"
    assert record.final == DIALECTS[dialect_key].dial_answered_replies[0]
    assert record.played_audio in (u8, u8 * 2)  # what the relative heard, byte for byte
    assert [d for _, d in record.dtmf_sent] == ["1"]
    assert record.outcome is DialOutcome.ANSWERED  # we hung up
    assert not modem.off_hook


def test_international_number_is_dialled_with_the_home_prefix() -> None:
    clip, _ = _message(0.1)
    with modem_and_line() as (modem, line):
        modem.expect_dial("010442079460000", CalleeScript(answer_after_s=1.0, dtmf=((5.5, "1"),)))
        alerter, _ = _alerter(line, clip)
        result = alerter.call("+44 20 7946 0000", "x", "en")
    assert result.status is CallAlertStatus.ACKNOWLEDGED
    assert [c for _, c in modem.command_log if c.startswith("ATD")] == ["ATDT010442079460000"]


def test_no_digit_replays_then_not_acknowledged() -> None:
    clip, u8 = _message(0.2)
    with modem_and_line() as (modem, line):
        modem.expect_dial(RELATIVE_DIALLED, CalleeScript(answer_after_s=2.0, dtmf=((1.0, "5"),)))
        alerter, _ = _alerter(line, clip, listen_s=0.4)
        t0 = time.monotonic()
        result = alerter.call(RELATIVE, "x", "ja")
        elapsed = time.monotonic() - t0
        record = modem.wait_for_dial_end(0, 2.0)
    assert result.status is CallAlertStatus.NOT_ACKNOWLEDGED
    assert record.played_audio == u8 * 2  # the message, twice
    assert elapsed < 5.0  # bounded: two plays and the listening window


def test_busy_then_answered_on_retry() -> None:
    clip, _ = _message(0.1)
    with modem_and_line() as (modem, line):
        modem.expect_dial(RELATIVE_DIALLED, CalleeScript.busy())
        modem.expect_dial(RELATIVE_DIALLED, CalleeScript(answer_after_s=2.0, dtmf=((5.5, "1"),)))
        alerter, _ = _alerter(line, clip)
        result = alerter.call(RELATIVE, "x", "ja")
        modem.wait_for_dial_end(1, 2.0)
    assert (result.status, result.attempts) == (CallAlertStatus.ACKNOWLEDGED, 2)
    assert [d.outcome for d in modem.dials] == [DialOutcome.BUSY, DialOutcome.ANSWERED]
    assert [d.final for d in modem.dials] == ["BUSY", "OK"]


def test_no_answer_after_every_attempt() -> None:
    clip, _ = _message(0.1)
    with modem_and_line() as (modem, line):
        modem.expect_dial(RELATIVE_DIALLED, CalleeScript.no_answer())
        alerter, fake = _alerter(line, clip, attempts=2, ring_timeout_s=10)
        t0 = time.monotonic()
        result = alerter.call(RELATIVE, "x", "ja")
        elapsed = time.monotonic() - t0
        commands = [c for _, c in modem.command_log]
    assert (result.status, result.attempts) == (CallAlertStatus.NO_ANSWER, 2)
    assert [d.outcome for d in modem.dials] == [DialOutcome.NO_ANSWER] * 2
    assert commands.count("ATS7=10") == 2  # the modem rings for our timeout, not its default
    assert elapsed < 3.0
    assert len(fake.calls) == 1  # the message is rendered once, before dialling


def test_household_off_hook_refuses_without_dialling() -> None:
    clip, _ = _message(0.1)
    with modem_and_line() as (modem, line):
        modem.set_handset(True)
        deadline = time.monotonic() + 2.0
        while not line.handset_off_hook() and time.monotonic() < deadline:
            time.sleep(0.01)
        modem.expect_dial(RELATIVE_DIALLED, CalleeScript(answer_after_s=1.0))
        alerter, fake = _alerter(line, clip)
        result = alerter.call(RELATIVE, "x", "ja")
        commands = [c for _, c in modem.command_log]
    assert (result.status, result.attempts) == (CallAlertStatus.FAILED, 0)
    assert "household" in result.detail
    assert modem.dials == [] and not any(c.startswith(("ATD", "ATS7")) for c in commands)
    assert fake.calls == []


def test_relative_hanging_up_mid_message_ends_the_call() -> None:
    clip, _ = _message(1.0)
    with modem_and_line() as (modem, line):
        modem.expect_dial(RELATIVE_DIALLED, CalleeScript(answer_after_s=1.0, hang_up_after_s=8.0))
        alerter, _ = _alerter(line, clip)
        t0 = time.monotonic()
        result = alerter.call(RELATIVE, "x", "ja")
        elapsed = time.monotonic() - t0
        record = modem.wait_for_dial_end(0, 2.0)
    assert result.status is CallAlertStatus.NOT_ACKNOWLEDGED and "caller_hung_up" in result.detail
    assert record.outcome is DialOutcome.CALLEE_HUNG_UP
    assert elapsed < 1.5  # not both plays of a 1 s message
    assert not modem.off_hook


# ---- message audio ---------------------------------------------------------------------


def test_missing_espeak_falls_back_to_the_shipped_message(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="voice.speech"):
        clip = render_message("Mamoru here.", "en", espeak=str(tmp_path / "no-espeak-ng"))
    pcm, rate = read_wav_pcm16(PROMPTS / "en" / "voice_call_alert.wav")
    assert (clip.name, clip.sample_rate, clip.pcm16, rate) == ("fallback:en:voice_call_alert", 8000, pcm, 8000)
    assert "generic shipped en message" in caplog.text


def test_espeak_not_on_path_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(speech.shutil, "which", lambda name: None)
    assert render_message("hello", "ko").name == "fallback:ko:voice_call_alert"


def test_hanging_synthesiser_is_bounded(tmp_path: Path) -> None:
    slow = tmp_path / "espeak-ng"
    slow.write_text("#!/bin/sh\nexec sleep 10\n")
    slow.chmod(0o755)
    t0 = time.monotonic()
    clip = render_message("hello", "en", espeak=str(slow), timeout_s=0.3)
    assert clip.name.startswith("fallback:") and time.monotonic() - t0 < 3.0


def test_japanese_kanji_text_uses_the_generic_message(caplog: pytest.LogCaptureFixture) -> None:
    """espeak-ng reads kanji as "Chinese letter": the shipped message says more."""
    with caplog.at_level(logging.WARNING, logger="voice.speech"):
        clip = render_message("詐欺の疑いがある電話です", "ja")
    assert clip.name == "fallback:ja:voice_call_alert" and "kanji" in caplog.text


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed (apt install espeak-ng)")
def test_espeak_renders_the_message_at_line_rate() -> None:
    clip = render_message("Mamoru here. Please press 1.", "en")
    assert clip.name == "speech:en" and clip.sample_rate == 8000
    assert 1.0 < clip.duration_s < 10.0


def test_unknown_language_is_an_error() -> None:
    with pytest.raises(ValueError, match="fr"):
        render_message("bonjour", "fr")


@pytest.mark.parametrize("lang", LANGUAGES)
def test_shipped_alert_message_is_line_ready(lang: str) -> None:
    texts = tomllib.loads((PROMPTS / "texts.toml").read_text(encoding="utf-8"))
    assert texts[lang][MessageFragment.VOICE_CALL_ALERT.value]["text"].strip()
    with wave.open(str(PROMPTS / lang / "voice_call_alert.wav"), "rb") as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, 8000)
        assert 2.0 < wav.getnframes() / 8000 < 15.0
    assert fallback_message(lang).duration_s > 2.0
