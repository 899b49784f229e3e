"""The screen action's pure parts: the rules, the voice-activity end, its settings and config.

The flow itself runs only against real lines: tests/test_screen_modem.py (virtual modem on a pty)
and tests/test_screen_sip.py (pjsua2 peers).
"""

from __future__ import annotations

import math
from array import array

import pytest

from screening.config import parse_config
from screening.core.model import Action, CallerID, Prompt, Reason
from screening.core.rules import NoLists, Policy, decide
from screening.runner import screen_settings_from_config
from screening.screen_flow import ChallengeMode, ScreenSettings, SpeechEnd


def _pcm(seconds: float, amplitude: float) -> bytes:
    n = int(seconds * 8000)
    return array("h", (int(amplitude * math.sin(2 * math.pi * 300 * i / 8000)) for i in range(n))).tobytes()


def test_unknown_and_reason_codes_can_be_screened_after_the_warning() -> None:
    policy = Policy(unknown=Action.SCREEN, withheld=Action.SCREEN)
    unknown = decide(CallerID("0662223333", "+81662223333"), NoLists(), policy)
    withheld = decide(CallerID(reason=Reason.WITHHELD), NoLists(), policy)
    assert (unknown.action, unknown.prompt, unknown.rule) == (Action.SCREEN, Prompt.WARNING, "unknown")
    assert "household decides" in unknown.reason
    assert (withheld.action, withheld.rule) == (Action.SCREEN, "withheld")


def test_speech_end_waits_for_quiet_after_speech() -> None:
    vad = SpeechEnd(start_s=5.0, end_s=1.5, cap_s=30.0, rms=400.0)
    vad.feed(_pcm(2.0, 8000))
    assert vad.spoke and not vad.done
    vad.feed(_pcm(1.0, 0))
    assert not vad.done  # a pause between words
    vad.feed(_pcm(0.6, 0))
    assert vad.done and vad.speech_s == pytest.approx(2.0, abs=0.05)


def test_speech_end_gives_up_on_silence_and_caps_a_talker() -> None:
    silent = SpeechEnd(5.0, 1.5, 30.0, 400.0)
    silent.feed(_pcm(4.9, 50))  # line noise is not speech
    assert not silent.done
    silent.feed(_pcm(0.2, 50))
    assert silent.done and not silent.spoke
    talker = SpeechEnd(5.0, 1.5, 8.0, 400.0)
    for _ in range(7):
        talker.feed(_pcm(1.0, 8000))
        assert not talker.done
    talker.feed(_pcm(1.0, 8000))
    assert talker.done


def test_speech_end_frames_across_odd_chunks() -> None:
    vad = SpeechEnd(5.0, 0.1, 30.0, 400.0)
    data = _pcm(1.0, 8000) + _pcm(0.2, 0)
    for i in range(0, len(data), 37 * 2):  # chunks that split 20 ms frames
        vad.feed(data[i:i + 37 * 2])
    assert vad.done and vad.heard_s == pytest.approx(1.2, abs=0.03)


@pytest.mark.parametrize("bad", [dict(passcode="12a"), dict(decide_timeout_s=0), dict(name_cap_s=-1)])
def test_screen_settings_refuse_nonsense(bad: dict) -> None:
    with pytest.raises(ValueError):
        ScreenSettings(**bad)


def test_screening_config_maps_into_the_flow_settings(tmp_path) -> None:
    cfg = parse_config({"rules": {"unknown": "screen"},
                        "screening": {"challenge": "random_digit", "name_prompt": 12, "decide_timeout_s": 45,
                                      "passcode": "2580", "message_cap_s": 90}}, source="test")
    settings = screen_settings_from_config(cfg, tmp_path)
    assert cfg.rules.unknown is Action.SCREEN
    assert (settings.challenge, settings.name_cap_s, settings.decide_timeout_s, settings.passcode,
            settings.message_cap_s) == (ChallengeMode.RANDOM_DIGIT, 12.0, 45.0, "2580", 90.0)
    assert settings.messages_dir == tmp_path / "messages"
    off = screen_settings_from_config(parse_config({"screening": {"name_prompt": False}}, source="t"), None)
    assert off.name_cap_s == 0 and off.messages_dir is None
    assert screen_settings_from_config(parse_config({}, source="t"), None).name_cap_s == 8.0
