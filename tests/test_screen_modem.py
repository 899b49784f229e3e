"""Action ``screen`` on a modem line: the daemon on the virtual modem over a real pty.

The caller's voice, keys and hang-up are scripted in the emulator (line time, 20x faster than
wall time); prompts are played at real time by the host. So caller speech is a long voiced
stream or silence, and keys are pressed repeatedly the way a person presses again when nothing
happens: the flow must count only the presses its step allows.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from firmware.scenarios import UNKNOWN_NUMBER, CallScript, default_caller_audio
from firmware.vmodem.records import CallOutcome as LineOutcome
from screening.core.audio import read_wav_pcm16
from screening.core.model import Action, CallOutcome, EventKind
from screening.core.rules import Policy
from screening.screen_flow import ChallengeMode, ScreenSettings
from screening.session import SessionSettings
from tests.support.daemon import SCALE, ModemDaemonRig, daemon_env

pytestmark = pytest.mark.timeout(120)

SILENCE = bytes([0x80]) * 8000 * 900  # 900 line-seconds of a silent line (a robocall that waits)
TALKER = default_caller_audio() * 300  # a caller who keeps talking (~900 line-seconds)


def line_s(wall_s: float) -> float:
    """Wall seconds after the answer, as the emulator's line time."""
    return wall_s / SCALE


def presses(digit: str, from_wall_s: float = 0.5, to_wall_s: float = 14.0, every_s: float = 0.5) -> tuple:
    n = int((to_wall_s - from_wall_s) / every_s)
    return tuple((line_s(from_wall_s + i * every_s), digit) for i in range(n))


def rig_for(tmp: Path, **screen: object) -> ModemDaemonRig:
    base: dict[str, object] = dict(challenge=ChallengeMode.ANY_KEY, decide_timeout_s=2.0, challenge_timeout_s=3.0,
                                   message_cap_s=4.0, name_cap_s=3.0, messages_dir=tmp / "messages")
    base.update(screen)
    settings = SessionSettings(screen=ScreenSettings(**base))  # type: ignore[arg-type]
    return ModemDaemonRig(tmp, settings=settings, policy=Policy(unknown=Action.SCREEN))


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[ModemDaemonRig]:
    with rig_for(tmp_path) as r:
        yield r


def events(rig: ModemDaemonRig, call_id: int) -> list[tuple[str, dict]]:
    return [(e.kind, e.detail) for e in rig.store.events_for(call_id)]


def detail(evs: list[tuple[str, dict]], kind: EventKind) -> dict:
    found = [d for k, d in evs if k == kind]
    assert found, f"no {kind} in {[k for k, _ in evs]}"
    return found[-1]


def prompts(evs: list[tuple[str, dict]]) -> list[str]:
    return [d["prompt"] for k, d in evs if k == EventKind.PLAYED]


def test_human_who_says_a_name_and_presses_3_leaves_a_message_when_nobody_picks_up(
        rig: ModemDaemonRig, tmp_path: Path) -> None:
    rec = rig.call(CallScript(nmbr=UNKNOWN_NUMBER, caller_audio=TALKER, dtmf=presses("3"),
                              hang_up_after_s=line_s(40)), timeout=60)
    row = rig.wait_calls(1, 20)[0]
    evs = events(rig, row.id)
    assert row.action is Action.SCREEN and row.end_reason == CallOutcome.MESSAGE
    assert detail(evs, EventKind.NAME_RECORDED)["speech_s"] > 0.5
    assert detail(evs, EventKind.CHALLENGE) == {"passed": True, "key": "3", "mode": "any_key"}
    assert detail(evs, EventKind.HOUSEHOLD_DECISION)["decision"] == "timeout"
    message = detail(evs, EventKind.MESSAGE)
    pcm, rate = read_wav_pcm16(message["path"])
    assert rate == 8000 and len(pcm) / 2 / rate == pytest.approx(message["seconds"], abs=0.1)
    assert prompts(evs) == ["warning", "name_request", "challenge", "message_request", "message_thanks"]
    assert detail(evs, EventKind.OUTCOME) == {"outcome": "message"}
    assert rec.outcome is LineOutcome.ANSWERED and len(rec.played_audio) > 8000


def test_silent_robocall_that_presses_nothing_is_screened_out(rig: ModemDaemonRig) -> None:
    rig.call(CallScript(nmbr=UNKNOWN_NUMBER, caller_audio=SILENCE, hang_up_after_s=line_s(40)), timeout=60)
    row = rig.wait_calls(1, 20)[0]
    evs = events(rig, row.id)
    assert row.end_reason == CallOutcome.SCREENED_OUT
    assert detail(evs, EventKind.NAME_RECORDED)["speech_s"] == 0
    assert detail(evs, EventKind.CHALLENGE)["passed"] is False
    assert prompts(evs)[-1] == "screened_out"
    assert not [k for k, _ in evs if k in (EventKind.HOUSEHOLD_DECISION, EventKind.MESSAGE)]


def test_household_lifting_the_handset_joins_the_call_and_mamoru_goes_quiet(tmp_path: Path) -> None:
    # Picks up 6 s (wall) after the first ring: after the challenge (~4.5 s), while mamoru waits.
    with rig_for(tmp_path, decide_timeout_s=6.0) as rig:
        rec = rig.call(CallScript(nmbr=UNKNOWN_NUMBER, caller_audio=TALKER, dtmf=presses("3"),
                                  handset_off_hook_at_s=line_s(6.0), hang_up_after_s=line_s(14)), timeout=60)
        row = rig.wait_calls(1, 20)[0]
        evs = events(rig, row.id)
    assert detail(evs, EventKind.CHALLENGE)["passed"] is True
    assert row.end_reason == CallOutcome.CONNECTED, evs
    assert detail(evs, EventKind.HOUSEHOLD_DECISION) == {"decision": "connected", "via": "handset"}
    assert "message_request" not in prompts(evs)
    assert detail(evs, EventKind.LISTENED)["end"] in ("caller_hung_up", "handset_on_hook")
    assert rec.outcome is LineOutcome.CALLER_HUNG_UP


def test_household_picking_up_during_the_prompts_stops_them(rig: ModemDaemonRig) -> None:
    rig.call(CallScript(nmbr=UNKNOWN_NUMBER, caller_audio=TALKER, handset_off_hook_at_s=line_s(1.0),
                        hang_up_after_s=line_s(8)), timeout=60)
    row = rig.wait_calls(1, 20)[0]
    evs = events(rig, row.id)
    assert row.end_reason == CallOutcome.CONNECTED
    assert "challenge" not in prompts(evs) and EventKind.CHALLENGE not in [k for k, _ in evs]


def test_caller_hanging_up_during_the_name_is_caller_hung_up(rig: ModemDaemonRig) -> None:
    rig.call(CallScript(nmbr=UNKNOWN_NUMBER, caller_audio=TALKER, hang_up_after_s=line_s(2.2)), timeout=60)
    row = rig.wait_calls(1, 20)[0]
    evs = events(rig, row.id)
    assert row.end_reason == CallOutcome.CALLER_HUNG_UP
    assert detail(evs, EventKind.OUTCOME) == {"outcome": "caller_hung_up"}
    assert EventKind.HOUSEHOLD_DECISION not in [k for k, _ in evs]


def test_dtmf_burst_before_the_challenge_and_a_wrong_digit_do_not_pass(tmp_path: Path) -> None:
    burst = tuple((line_s(0.3) + i, d) for i, d in enumerate("3333999911"))
    with rig_for(tmp_path, challenge=ChallengeMode.RANDOM_DIGIT) as rig:
        rig.call(CallScript(nmbr=UNKNOWN_NUMBER, caller_audio=TALKER, dtmf=burst + presses("0", 3.0),
                            hang_up_after_s=line_s(30)), timeout=60)
        row = rig.wait_calls(1, 20)[0]
        evs = events(rig, row.id)
    challenge = detail(evs, EventKind.CHALLENGE)
    assert challenge["passed"] is False and challenge["key"] == "0" and challenge["expected"] != "0"
    assert row.end_reason == CallOutcome.SCREENED_OUT


def test_passcode_puts_a_friend_straight_through(tmp_path: Path) -> None:
    code = tuple((line_s(0.5) + i * 0.5, d) for i, d in enumerate("2580"))
    with rig_for(tmp_path, passcode="2580", challenge=ChallengeMode.RANDOM_DIGIT, decide_timeout_s=6.0) as rig:
        rig.call(CallScript(nmbr=UNKNOWN_NUMBER, caller_audio=SILENCE, dtmf=code,
                            handset_off_hook_at_s=line_s(5.0), hang_up_after_s=line_s(9)), timeout=60)
        row = rig.wait_calls(1, 20)[0]
        evs = events(rig, row.id)
    assert detail(evs, EventKind.CHALLENGE) == {"passed": True, "key": "passcode"}
    assert row.end_reason == CallOutcome.CONNECTED


def test_second_call_while_screening_is_never_answered_or_spoken_into(rig: ModemDaemonRig) -> None:
    first = rig.modem.place_call(CallScript(nmbr=UNKNOWN_NUMBER, caller_audio=TALKER, dtmf=presses("3"),
                                            hang_up_after_s=line_s(30)))
    # A caller-ID block arriving while the line is held (what call waiting delivers on some exchanges).
    time.sleep(2.5)
    rig.modem.inject(b"\r\nDATE = 1206\r\nTIME = 0101\r\nNMBR = 0455557777\r\n")
    rig.modem.wait_for_call_end(first, timeout=60)
    rows = rig.wait_calls(1, 20)
    assert len(rows) == 1 and rows[0].end_reason == CallOutcome.MESSAGE
    # In voice mode the block is line audio to the modem; between steps it is a CallOffered the flow
    # drains. Either way no second row appears and nothing is answered or played for it.
    assert not [c for c in rig.store.recent_calls() if c.raw_number == "0455557777"]


def test_calls_json_shows_action_and_outcome(rig: ModemDaemonRig, tmp_path: Path) -> None:
    rig.call(CallScript(nmbr=UNKNOWN_NUMBER, caller_audio=SILENCE, hang_up_after_s=line_s(40)), timeout=60)
    rig.call(CallScript(nmbr="0398765432", hang_up_after_s=200), timeout=60)
    rig.wait_calls(2, 20)
    out = subprocess.run([sys.executable, "-m", "screening.cli", "calls", "--db", str(rig.store.path), "--json"],
                         capture_output=True, text=True, env=daemon_env(tmp_path), timeout=60, check=True)
    calls = json.loads(out.stdout)
    assert [(c["action"], c["outcome"]) for c in calls] == [("block", None), ("screen", "screened_out")]


@pytest.mark.parametrize("hang_up_wall_s", [0.8, 2.6, 4.0, 6.0, 8.5])
def test_caller_hanging_up_at_any_step_ends_cleanly_with_one_outcome(tmp_path: Path, hang_up_wall_s: float) -> None:
    """Warning, name, challenge, waiting for the household, leaving a message: the row is completed,
    the line is put back on-hook and exactly one outcome is recorded."""
    with rig_for(tmp_path) as rig:
        rec = rig.call(CallScript(nmbr=UNKNOWN_NUMBER, caller_audio=TALKER, dtmf=presses("3"),
                                  hang_up_after_s=line_s(hang_up_wall_s)), timeout=60)
        row = rig.wait_calls(1, 20)[0]
        evs = events(rig, row.id)
        assert not rig.modem.off_hook
    outcomes = [d["outcome"] for k, d in evs if k == EventKind.OUTCOME]
    assert len(outcomes) == 1 and outcomes[0] in ("caller_hung_up", "message"), evs
    assert row.end_reason == outcomes[0] and [k for k, _ in evs][-1] == EventKind.HUNG_UP
    # The last case may outlast the flow (the message was complete): then mamoru hung up first.
    assert rec.outcome in (LineOutcome.CALLER_HUNG_UP, LineOutcome.ANSWERED)
