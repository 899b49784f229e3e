"""A relative phoned during a live SIP call joins it (2 listen, 3 speak) -- only with consent.

Real peers on loopback: the caller is tests/sip_peer.py (speaks 440 Hz, saves what it hears),
the relative is tests/sip_phone.py (answers, speaks 660 Hz for 8 s, presses a key), the unit
is a SipDaemonRig call loop that answers, warns and records the unknown caller.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

pytest.importorskip("pjsua2")

from firmware.sip_relative import JoinMode, RelativeLeg  # noqa: E402
from screening.core.audio import read_wav_pcm16  # noqa: E402
from screening.core.line import AudioClip  # noqa: E402
from screening.core.model import Prompt  # noqa: E402
from tests.support.sip import UNKNOWN, SipDaemonRig, result_of  # noqa: E402
from tests.test_sip_routing import Phone, tone_level  # noqa: E402
from voice.announcements import ToneAnnouncements  # noqa: E402

pytestmark = pytest.mark.timeout(90)

RELATIVE_HZ = 660  # what tests/sip_phone.py speaks once answered
CALLER_HZ = 440  # what tests/sip_peer.py speaks


def live_call(rig: SipDaemonRig, timeout: float = 15.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (state := rig.line.live_call()) is not None and state.media_up.is_set():
            return state
        time.sleep(0.05)
    raise AssertionError("the unknown caller's call was never answered")


JOINED_HZ = 1100  # the tone stand-in for 「ご家族が通話に参加しました」 (espeak/Kokoro are not needed here)
WARNING_BYTES = 2 * 8000 * 2  # the caller's first 2 s: our warning, which has a 660 Hz note of its own


def joined_prompt() -> AudioClip:
    return ToneAnnouncements().clip_for(Prompt.FAMILY_JOINED)


def run_join(tmp_path: Path, digit: str, *, allow_join: bool) -> tuple[dict, dict, bytes, object]:
    """The caller stays 14 s; the relative is phoned once the call is live and presses ``digit``."""
    heard_wav = tmp_path / "caller-heard.wav"
    with SipDaemonRig(tmp_path, call_timeout_s=40) as rig:
        caller = rig.start_call(UNKNOWN, "--hang-up-after", "14", "--tone-s", "14", "--max-s", "30",
                                "--save-heard", str(heard_wav))
        state = live_call(rig)
        relative = Phone("--answer-after", "0.3", "--dtmf", digit, "--dtmf-after", "1.0", "--max-s", "25")
        alert = ToneAnnouncements().clip_for(Prompt.SCREEN_CHOICES)  # 1020 Hz
        leg = RelativeLeg(rig.line.endpoint, state, allow_join=allow_join, ring_timeout_s=10, listen_s=4)
        result = leg.call(relative.uri, alert, joined_prompt())
        if result.joined is not None:
            leg.stay_until_either_ends(30)
        caller_result = result_of(caller, 40)
        relative_result = relative.result(30)
    pcm, rate = read_wav_pcm16(heard_wav)
    assert rate == 8000 and len(pcm) > 2 * WARNING_BYTES
    return caller_result, relative_result, pcm[WARNING_BYTES:], result


def test_pressing_3_lets_the_relative_speak_into_the_live_call(tmp_path: Path) -> None:
    _, heard_by_relative, caller_pcm, result = run_join(tmp_path, "3", allow_join=True)
    assert result.joined is JoinMode.SPEAK and result.acknowledged, result  # type: ignore[attr-defined]
    relative_level = tone_level(caller_pcm, RELATIVE_HZ)
    assert relative_level > 50, relative_level  # the caller hears the relative's voice
    assert tone_level(caller_pcm, JOINED_HZ) > 20  # after "your family has joined"
    # the relative hears the caller too
    assert any(abs(f - CALLER_HZ) < 60 for _, _, f in heard_by_relative["bursts"]), heard_by_relative


def test_with_joining_off_pressing_3_does_nothing(tmp_path: Path) -> None:
    _, heard_by_relative, caller_pcm, result = run_join(tmp_path, "3", allow_join=False)
    assert result.joined is None and "3" in result.digits, result  # type: ignore[attr-defined]
    relative_level = tone_level(caller_pcm, RELATIVE_HZ)
    assert relative_level < 5, relative_level  # nothing of the relative reached the caller
    assert tone_level(caller_pcm, JOINED_HZ) < 5
    assert not any(abs(f - CALLER_HZ) < 60 for _, _, f in heard_by_relative["bursts"]), heard_by_relative


def test_pressing_2_lets_the_relative_listen_without_being_heard(tmp_path: Path) -> None:
    _, heard_by_relative, caller_pcm, result = run_join(tmp_path, "2", allow_join=True)
    assert result.joined is JoinMode.LISTEN, result  # type: ignore[attr-defined]
    assert tone_level(caller_pcm, RELATIVE_HZ) < 5  # nobody hears the relative
    assert tone_level(caller_pcm, JOINED_HZ) < 5  # and nobody is told: listening is silent
    assert any(abs(f - CALLER_HZ) < 60 for _, _, f in heard_by_relative["bursts"]), heard_by_relative


def test_the_household_hears_that_the_family_joined_and_then_the_relative(tmp_path: Path) -> None:
    household = Phone("--answer-after", "0.3", "--hang-up-after", "12", "--max-s", "30")
    with SipDaemonRig(tmp_path, call_timeout_s=40, household=household.uri) as rig:
        caller = rig.start_call(UNKNOWN, "--tone-s", "1", "--max-s", "30")  # quiet after 1 s
        state = live_call(rig)
        assert state.household_up.wait(10), "the household phone was never connected"
        relative = Phone("--answer-after", "0.3", "--dtmf", "3", "--dtmf-after", "1.0", "--max-s", "25")
        leg = RelativeLeg(rig.line.endpoint, state, allow_join=True, ring_timeout_s=10, listen_s=4)
        result = leg.call(relative.uri, ToneAnnouncements().clip_for(Prompt.SCREEN_CHOICES), joined_prompt())
        assert result.joined is JoinMode.SPEAK, result
        leg.stay_until_either_ends(30)
        heard = household.result(30)
        result_of(caller, 40)
        relative.result(30)
    tones = [f for _, _, f in heard["bursts"]]
    assert any(abs(f - JOINED_HZ) < 80 for f in tones), tones  # 「ご家族が通話に参加しました」 (its tone stand-in)
    assert any(abs(f - RELATIVE_HZ) < 60 for f in tones), tones  # then the relative's voice
