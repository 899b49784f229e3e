"""Action ``screen`` over SIP with real peers on loopback: pjsua2 callers (tests/sip_peer.py) that
speak (a 440 Hz "voice") and press RFC 2833 keys, and the household phone (tests/sip_phone.py)
whose leg is rung alone, hears the caller's recorded name and answers 1 / 2 / 3.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("pjsua2")

from screening.core.audio import read_wav_pcm16
from screening.core.model import Action, CallOutcome, EventKind, ListKind
from screening.core.rules import Policy
from screening.screen_flow import ChallengeMode, ScreenSettings
from screening.session import SessionSettings
from tests.support.ports import free_udp_port
from tests.support.sip import ROOT, UNKNOWN, SipDaemonRig, result_of

PHONE = ROOT / "tests" / "sip_phone.py"

pytestmark = pytest.mark.timeout(120)

TALKS = ("--tone-s", "60", "--max-s", "40")  # a caller who keeps talking (name, then a message)
PRESSES_3 = ("--dtmf", "3333333333", "--dtmf-from", "3.0", "--dtmf-every", "1.0")


class Phone:
    """The household phone (tests/sip_phone.py) on its own port."""

    def __init__(self, *args: str) -> None:
        self.port = free_udp_port()
        self.proc = subprocess.Popen([sys.executable, str(PHONE), "--port", str(self.port), "--max-s", "40", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        assert self.proc.stdout is not None
        ready = ""
        for _ in range(100):
            ready = self.proc.stdout.readline()
            if not ready or ready.startswith("{"):
                break
        assert ready.startswith("{") and json.loads(ready) == {"ready": True}

    @property
    def uri(self) -> str:
        return f"sip:phone@127.0.0.1:{self.port}"

    def result(self, timeout: float = 60.0) -> dict:
        return result_of(self.proc, timeout)


def rig_for(tmp: Path, household: str | None, **screen: object) -> SipDaemonRig:
    base: dict[str, object] = dict(challenge=ChallengeMode.ANY_KEY, decide_timeout_s=8.0, challenge_timeout_s=6.0,
                                   message_cap_s=3.0, name_cap_s=2.0, messages_dir=tmp / "messages")
    base.update(screen)
    session = SessionSettings(screen=ScreenSettings(**base))  # type: ignore[arg-type]
    extra = {"household": household} if household else {}
    return SipDaemonRig(tmp, ring_timeout_s=30.0, policy=Policy(unknown=Action.SCREEN), session=session,
                        **extra)  # type: ignore[arg-type]


def events(rig: SipDaemonRig, call_id: int) -> list[tuple[str, dict]]:
    return [(e.kind, e.detail) for e in rig.store.events_for(call_id)]


def detail(evs: list[tuple[str, dict]], kind: EventKind) -> dict:
    found = [d for k, d in evs if k == kind]
    assert found, f"no {kind} in {[k for k, _ in evs]}"
    return found[-1]


def prompts(evs: list[tuple[str, dict]]) -> list[str]:
    return [d["prompt"] for k, d in evs if k == EventKind.PLAYED]


def near(freqs: list[int], hz: float, tolerance: float = 60) -> bool:
    return any(abs(f - hz) <= tolerance for f in freqs)


def test_household_hears_the_name_presses_1_and_the_two_talk(tmp_path: Path) -> None:
    phone = Phone("--answer-after", "0.5", "--dtmf", "1", "--dtmf-after", "2.5", "--hang-up-after", "7")
    with rig_for(tmp_path, phone.uri) as rig:
        caller = rig.call(UNKNOWN, *TALKS, *PRESSES_3, timeout=60)
        heard = phone.result()
        row = rig.wait_calls(1, 20)[0]
        evs = events(rig, row.id)
    assert row.end_reason == CallOutcome.CONNECTED, evs
    assert detail(evs, EventKind.CHALLENGE)["passed"] is True
    assert detail(evs, EventKind.HOUSEHOLD)["leg"] == "screening"
    assert detail(evs, EventKind.HOUSEHOLD_DECISION) == {"decision": "connected"}
    assert heard["answered"] and heard["ended_by"] == "us"
    phone_heard = [f for _, _, f in heard["bursts"]]
    assert near(phone_heard, 980, 120), heard  # the announcement, on the household's leg alone
    assert near(phone_heard, 440), heard  # the caller's recorded name, then the caller live
    assert caller["answered"] and near([f for _, _, f in caller["bursts"]], 660), caller  # joined: the household


def test_household_presses_2_caller_hears_refusal_and_leaves_a_message(tmp_path: Path) -> None:
    phone = Phone("--answer-after", "0.5", "--dtmf", "2", "--dtmf-after", "2.0")
    with rig_for(tmp_path, phone.uri) as rig:
        caller = rig.call(UNKNOWN, *TALKS, *PRESSES_3, timeout=60)
        heard = phone.result()
        row = rig.wait_calls(1, 20)[0]
        evs = events(rig, row.id)
    assert detail(evs, EventKind.HOUSEHOLD_DECISION) == {"decision": "refused"}
    assert prompts(evs)[-3:] == ["refused", "message_request", "message_thanks"]
    assert row.end_reason == CallOutcome.MESSAGE
    pcm, _ = read_wav_pcm16(detail(evs, EventKind.MESSAGE)["path"])
    assert len(pcm) >= 8000 * 2 * 2
    assert heard["answered"] and heard["ended_by"] == "them"  # mamoru let the household go
    # The warning has a 660 Hz part, the household's voice is 660 Hz: after the warning, none of it.
    assert not near([f for start, _, f in caller["bursts"] if start > 2500], 660, 25), caller


def test_household_presses_3_refuses_and_blocks_the_number(tmp_path: Path) -> None:
    phone = Phone("--answer-after", "0.5", "--dtmf", "3", "--dtmf-after", "2.0")
    with rig_for(tmp_path, phone.uri) as rig:
        rig.call(UNKNOWN, *TALKS, *PRESSES_3, timeout=60)
        phone.result()
        row = rig.wait_calls(1, 20)[0]
        evs = events(rig, row.id)
        blocked = rig.store.list_entries(ListKind.BLOCK)
        again = rig.call(UNKNOWN, "--hang-up-after", "3", timeout=30)
        second = rig.wait_calls(2, 20)[1]
    assert detail(evs, EventKind.HOUSEHOLD_DECISION) == {"decision": "blocked"}
    assert row.end_reason == CallOutcome.REFUSED and prompts(evs)[-1] == "refused"
    assert [(e.value, e.source) for e in blocked if e.value == "+81662223333"] == [("+81662223333", "local")]
    assert (second.action, second.rule) == (Action.BLOCK, "blocklist:local"), second
    assert again["answered"] or again["final_code"]


def test_nobody_picks_up_so_the_caller_leaves_a_message(tmp_path: Path) -> None:
    phone = Phone("--answer-after", "100")
    with rig_for(tmp_path, phone.uri, decide_timeout_s=3.0) as rig:
        rig.call(UNKNOWN, *TALKS, *PRESSES_3, timeout=60)
        heard = phone.result()
        row = rig.wait_calls(1, 20)[0]
        evs = events(rig, row.id)
    assert not heard["answered"] and heard["offered"]
    assert detail(evs, EventKind.HOUSEHOLD_DECISION) == {"decision": "timeout"}
    assert row.end_reason == CallOutcome.MESSAGE


def test_silent_robocall_never_reaches_the_household(tmp_path: Path) -> None:
    phone = Phone("--answer-after", "0.5")
    with rig_for(tmp_path, phone.uri) as rig:
        caller = rig.call(UNKNOWN, "--tone-s", "0", "--max-s", "40", timeout=60)
        row = rig.wait_calls(1, 20)[0]
        evs = events(rig, row.id)
        phone.proc.kill()
        phone.proc.communicate(timeout=10)
    assert row.end_reason == CallOutcome.SCREENED_OUT
    assert detail(evs, EventKind.CHALLENGE) == {"passed": False, "key": None, "mode": "any_key"}
    assert caller["ended_by"] == "them" and EventKind.HOUSEHOLD not in [k for k, _ in evs]


def test_caller_hanging_up_during_the_prompts_and_both_hanging_up_at_once(tmp_path: Path) -> None:
    phone = Phone("--answer-after", "0.3", "--hang-up-after", "1.0")
    with rig_for(tmp_path, phone.uri) as rig:
        rig.call(UNKNOWN, *TALKS, "--hang-up-after", "2.0", timeout=60)
        first = rig.wait_calls(1, 20)[0]
        # Both leave together while the household hears the name (answers at ~+0.3 s, hangs up 1 s later).
        rig.call(UNKNOWN, *TALKS, *PRESSES_3, "--hang-up-after", "9.5", timeout=60)
        phone.result()
        second = rig.wait_calls(2, 30)[1]
        # The slot is free again afterwards.
        third = rig.call(UNKNOWN, "--tone-s", "0", "--max-s", "40", timeout=60)
        rows = rig.wait_calls(3, 30)
    assert first.end_reason == CallOutcome.CALLER_HUNG_UP
    assert second.end_reason in (CallOutcome.CALLER_HUNG_UP, CallOutcome.MESSAGE), second
    assert third["answered"] and rows[2].end_reason == CallOutcome.SCREENED_OUT


def test_second_call_while_screening_is_refused_busy_not_spoken_into(tmp_path: Path) -> None:
    with rig_for(tmp_path, None) as rig:
        first = rig.start_call(UNKNOWN, *TALKS, "--hang-up-after", "6")
        time.sleep(2.0)
        second = rig.call("0455556666", "--max-s", "10", timeout=30)
        result_of(first, 60)
        rows = rig.wait_calls(1, 20)
    assert not second["answered"] and second["final_code"] == 486, second
    assert len(rows) == 1


def test_passcode_rings_the_household_and_joins_at_once(tmp_path: Path) -> None:
    phone = Phone("--answer-after", "0.5", "--hang-up-after", "2")
    with rig_for(tmp_path, phone.uri, passcode="2580", challenge=ChallengeMode.RANDOM_DIGIT) as rig:
        rig.call(UNKNOWN, "--tone-s", "0", "--max-s", "40", "--dtmf", "2580", "--dtmf-from", "0.5",
                 "--dtmf-every", "0.3", timeout=60)
        heard = phone.result()
        row = rig.wait_calls(1, 20)[0]
        evs = events(rig, row.id)
    assert detail(evs, EventKind.CHALLENGE) == {"passed": True, "key": "passcode"}
    assert row.end_reason == CallOutcome.CONNECTED and heard["answered"]


def test_wrong_household_key_is_ignored_and_the_next_one_decides(tmp_path: Path) -> None:
    phone = Phone("--answer-after", "0.5", "--dtmf", "9#2", "--dtmf-after", "1.5")
    with rig_for(tmp_path, phone.uri) as rig:
        rig.call(UNKNOWN, *TALKS, *PRESSES_3, timeout=60)
        phone.result()
        row = rig.wait_calls(1, 20)[0]
        evs = events(rig, row.id)
    assert detail(evs, EventKind.HOUSEHOLD_DECISION) == {"decision": "refused"}
    # The household's keys are its own: none of them is logged as the caller's.
    assert [d["digit"] for k, d in evs if k == EventKind.DTMF] == ["3"] * len([k for k, _ in evs if k == EventKind.DTMF])


def test_caller_dtmf_burst_during_the_warning_does_not_pass_the_challenge(tmp_path: Path) -> None:
    with rig_for(tmp_path, None) as rig:
        rig.call(UNKNOWN, *TALKS, "--dtmf", "3333399999", "--dtmf-from", "0.2", "--dtmf-every", "0.1", timeout=60)
        row = rig.wait_calls(1, 20)[0]
        evs = events(rig, row.id)
    assert len([k for k, _ in evs if k == EventKind.DTMF]) >= 5  # the burst arrived
    assert detail(evs, EventKind.CHALLENGE)["passed"] is False
    assert row.end_reason == CallOutcome.SCREENED_OUT
