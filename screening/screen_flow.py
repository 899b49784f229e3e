"""The ``screen`` action: the caller says who they are, the household decides.

After the session has answered and played the warning, :class:`ScreenFlow` runs these steps
(each one recorded as an event, the last one always ``OUTCOME`` with a :class:`CallOutcome`):

1. passcode: a caller who keys the household's code at any point is put straight through;
2. name: "we are calling the household, please hold; after the tone say your name" -- the reply
   is recorded until the caller stops talking (energy voice activity), capped;
3. challenge (optional): "press 3" (``any_key``) or "press the number of beeps" (``random_digit``);
   no key, a wrong key or silence ends the call politely (``screened_out``);
4. the household decides:
   - a line with a household leg (SIP, :class:`HouseholdLeg`): the phone rings; once picked up it
     hears the name and presses 1 talk, 2 refuse, 3 refuse and block the number;
   - a modem line (parallel wiring: the phone cannot be rung again): the in-home speaker plays a
     chime, the name and "pick up the phone"; lifting the handset joins the call and mamoru goes
     quiet (still recording). Picking up at any earlier step does the same;
5. message taking when refused or nobody decided within ``decide_timeout_s``.

Everything the line reports meanwhile is drained here, between short listening slices, so a
second call arriving (call waiting) is never acted on or spoken into, and every wait is bounded.
"""

from __future__ import annotations

import logging
import math
import random
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Protocol, runtime_checkable

from screening.core.audio import wav_bytes
from screening.core.files import atomic_write_bytes
from screening.core.line import (
    AudioClip,
    CallAudio,
    CallOffered,
    Dtmf,
    EndReason,
    HandsetOffHook,
    HandsetOnHook,
    HouseholdLeg,
    HouseholdLegState,
    LineAdapter,
    LineFault,
    Ring,
)
from screening.core.model import CallOutcome, EventKind, ListEntry, ListKind, MatchKind, Prompt

log = logging.getLogger(__name__)

RATE = 8000
PLAY_SLACK_S = 10.0
_BEEP = ((1000.0, 0.4),)
_CHIME = ((880.0, 0.3), (660.0, 0.45))
_COUNT_BEEP = ((1000.0, 0.18), (0.0, 0.32))
_DECIDE_KEYS = frozenset("123")


class ChallengeMode(StrEnum):
    """``[screening] challenge``: the robocall test after the name."""

    NONE = "none"
    ANY_KEY = "any_key"  # "press 3": any key passes (a recorded pitch presses nothing)
    RANDOM_DIGIT = "random_digit"  # "press the number of beeps": only that digit passes


class HouseholdChoice(StrEnum):
    """``HOUSEHOLD_DECISION`` event detail."""

    CONNECTED = "connected"
    REFUSED = "refused"
    BLOCKED = "blocked"
    TIMEOUT = "timeout"


@dataclass(frozen=True, slots=True)
class ScreenSettings:
    """How a screened call goes; built by the composition root from ``[screening]``."""

    challenge: ChallengeMode = ChallengeMode.NONE
    name_cap_s: float = 8.0  # longest name reply kept; 0 = do not ask for a name
    decide_timeout_s: float = 30.0  # household pick-up / key, then messages
    passcode: str = ""  # digits that put a caller straight through; "" = none
    challenge_timeout_s: float = 8.0
    message_cap_s: float = 60.0
    messages_dir: Path | None = None  # where left messages are written; None = not kept as files
    speech_start_s: float = 5.0  # no voice within this (audio time) after the tone: nothing said
    speech_end_s: float = 1.5  # this much quiet after speech ends the reply
    slice_s: float = 0.25  # listening slice: how soon a key, a pick-up or a hang-up is seen
    speech_rms: float = 400.0  # 16-bit RMS of a 20 ms frame that counts as voice

    def __post_init__(self) -> None:
        if self.passcode and not self.passcode.isdigit():
            raise ValueError("passcode must be digits")
        if min(self.decide_timeout_s, self.challenge_timeout_s, self.slice_s) <= 0 or self.name_cap_s < 0:
            raise ValueError("screening timeouts must be positive")


class Speaker(Protocol):
    """The in-home speaker (``voice.local_audio.HouseholdSpeaker``)."""

    def play(self, clip: AudioClip, timeout: float) -> None: ...


@runtime_checkable
class NumberBlocker(Protocol):
    """The store's list writer, for "3 = refuse and block"."""

    def add_entry(self, entry: ListEntry) -> ListEntry: ...


class EventLog(Protocol):
    def add_event(self, call_id: int | None, kind: EventKind, **detail: object) -> None: ...


class Clips(Protocol):
    def clip_for(self, prompt: Prompt) -> AudioClip: ...


class _CallerGone(Exception):
    """The caller hung up (or the line failed) during a step."""


class _HouseholdJoined(Exception):
    """Modem line: the household lifted the handset; mamoru goes quiet."""


class SpeechEnd:
    """Energy voice activity over audio time: done once speech ended, nothing came, or the cap.

    Counted in whole 20 ms frames (integers), so a cap of 8 s is 400 frames exactly.
    """

    FRAME_S = 0.02

    def __init__(self, start_s: float, end_s: float, cap_s: float, rms: float) -> None:
        self._start, self._end, self._cap = (round(x / self.FRAME_S) for x in (start_s, end_s, cap_s))
        self.rms = rms
        self._heard = self._voiced = self._quiet = 0
        self._rest = b""

    @property
    def heard_s(self) -> float:
        return self._heard * self.FRAME_S

    @property
    def speech_s(self) -> float:
        return self._voiced * self.FRAME_S

    @property
    def spoke(self) -> bool:
        return self._voiced > 0

    @property
    def done(self) -> bool:
        if self._heard >= self._cap:
            return True
        if not self.spoke:
            return self._heard >= self._start
        return self._quiet >= self._end

    def feed(self, pcm16: bytes) -> None:
        data = self._rest + pcm16
        frame = int(RATE * self.FRAME_S) * 2
        whole = len(data) - len(data) % frame
        self._rest = data[whole:]
        for i in range(0, whole, frame):
            samples = array("h", data[i:i + frame])
            level = math.sqrt(sum(s * s for s in samples) / len(samples))
            self._heard += 1
            if level >= self.rms:
                self._voiced += 1
                self._quiet = 0
            else:
                self._quiet += 1


@dataclass(slots=True)
class ScreenFlow:
    """One screened call, from the warning having played to the outcome (the session hangs up)."""

    call_id: int
    line: LineAdapter
    calls: EventLog
    clips: Clips
    settings: ScreenSettings
    caller_e164: str | None = None
    audio: CallAudio | None = None  # the call's recording and live transcription
    tick: Callable[[], object] | None = None
    blocker: NumberBlocker | None = None
    speaker: Speaker | None = None
    call_timeout_s: float = 600.0
    rng: random.Random | None = None
    _keys: str = ""  # the caller's digits so far
    _household_keys: str = ""
    _picked_up: bool = False  # modem: the handset was lifted during this call
    _handset_down: bool = False

    def run(self) -> CallOutcome:
        try:
            outcome = self._run()
        except _CallerGone:
            outcome = CallOutcome.CALLER_HUNG_UP
        except _HouseholdJoined:
            outcome = self._talk(via="handset")
        self.calls.add_event(self.call_id, EventKind.OUTCOME, outcome=outcome.value)
        log.info("call %s: screened: %s", self.call_id, outcome.value)
        return outcome

    # ---- the steps ---------------------------------------------------------------------

    def _run(self) -> CallOutcome:
        self._drain()
        if self._passcode_keyed():  # keyed during the warning: no name asked
            return self._put_through()
        name = self._take_name()
        if self._passcode_keyed():
            return self._put_through()
        if self.settings.challenge is not ChallengeMode.NONE:
            if not self._challenge():
                self._play(Prompt.SCREENED_OUT)
                return CallOutcome.SCREENED_OUT
        elif name is not None and not name[1]:
            # Silence where a name was asked, and no other test: a robocall, or nobody there.
            self.calls.add_event(self.call_id, EventKind.CHALLENGE, passed=False, key=None, silent=True)
            self._play(Prompt.SCREENED_OUT)
            return CallOutcome.SCREENED_OUT
        if self._passcode_keyed():
            return self._put_through()
        if isinstance(self.line, HouseholdLeg) and self.line.ring_household_leg():
            choice = self._ask_household_leg(name[0] if name else None)
        else:
            choice = self._ask_in_home(name[0] if name else None)
        self.calls.add_event(self.call_id, EventKind.HOUSEHOLD_DECISION, decision=choice.value)
        if choice is HouseholdChoice.CONNECTED:
            return self._talk(via="household_leg")
        if choice is HouseholdChoice.BLOCKED:
            self._block()
            self._play(Prompt.REFUSED)
            return CallOutcome.REFUSED
        if choice is HouseholdChoice.REFUSED:
            self._play(Prompt.REFUSED)
        return self._take_message(CallOutcome.REFUSED)

    def _take_name(self) -> tuple[AudioClip, bool] | None:
        """The caller's recorded reply, and whether any voice was in it; None if not asked."""
        if self.settings.name_cap_s <= 0:
            return None
        self._play(Prompt.NAME_REQUEST)
        self._play_tone("tone:beep", _BEEP)
        pcm = bytearray()
        vad = self._vad(self.settings.name_cap_s)
        self._wait(self.settings.name_cap_s + 2.0, lambda: vad.done or self._passcode_keyed(), pcm, vad)
        self.calls.add_event(self.call_id, EventKind.NAME_RECORDED, seconds=round(vad.heard_s, 2),
                             speech_s=round(vad.speech_s, 2))
        return AudioClip("caller:name", bytes(pcm), RATE), vad.spoke

    def _challenge(self) -> bool:
        """Robocall test; True if passed. Keys pressed before the prompt (a burst) do not count."""
        mode = self.settings.challenge
        since = len(self._keys)
        if mode is ChallengeMode.ANY_KEY:
            self._play(Prompt.CHALLENGE)
            wanted = None
        else:
            digit = (self.rng or random.Random()).randint(1, 9)
            wanted = str(digit)
            self._play(Prompt.CHALLENGE_DIGIT)
            self._play_tone(f"tone:count{digit}", _COUNT_BEEP * digit)
        self._wait(self.settings.challenge_timeout_s, lambda: len(self._keys) > since)
        key = self._keys[since] if len(self._keys) > since else None
        passed = key is not None and (wanted is None or key == wanted)
        self.calls.add_event(self.call_id, EventKind.CHALLENGE, passed=passed, key=key, mode=mode.value,
                             **({"expected": wanted} if wanted else {}))
        return passed

    def _ask_household_leg(self, name: AudioClip | None) -> HouseholdChoice:
        """SIP: the household phone rings; picked up, it hears the name and answers with a key."""
        line = self.line
        assert isinstance(line, HouseholdLeg)
        self.calls.add_event(self.call_id, EventKind.HOUSEHOLD, leg="screening")
        joined = False
        try:
            self._wait(self.settings.decide_timeout_s, lambda: line.household_state() is not HouseholdLegState.RINGING)
            if line.household_state() is not HouseholdLegState.PICKED_UP:
                return HouseholdChoice.TIMEOUT
            self._household_keys = ""
            for _ in range(2):  # said twice: the first may be missed while lifting the handset
                for clip in (self.clips.clip_for(Prompt.SCREEN_ANNOUNCE), name,
                             self.clips.clip_for(Prompt.SCREEN_CHOICES)):
                    if clip is None or not clip.pcm16 or self._household_choice() is not None:
                        continue
                    if line.play_to_household(clip, clip.duration_s + PLAY_SLACK_S) is not EndReason.COMPLETED:
                        break
                    self._drain()
                self._wait(self.settings.decide_timeout_s / 2, lambda: self._household_choice() is not None
                           or line.household_state() is not HouseholdLegState.PICKED_UP)
                choice = self._household_choice()
                if choice is not None or line.household_state() is not HouseholdLegState.PICKED_UP:
                    break
            choice = self._household_choice()
            if choice is HouseholdChoice.CONNECTED:
                if line.join_household():
                    joined = True
                    return choice
                self._drain()
                self._wait(0.2, lambda: False)  # raises if it was the caller who left meanwhile
                return HouseholdChoice.TIMEOUT  # the household hung up right after pressing 1
            return choice if choice is not None else HouseholdChoice.TIMEOUT
        finally:
            if not joined:
                line.drop_household()

    def _household_choice(self) -> HouseholdChoice | None:
        first = next((k for k in self._household_keys if k in _DECIDE_KEYS), None)
        return {"1": HouseholdChoice.CONNECTED, "2": HouseholdChoice.REFUSED, "3": HouseholdChoice.BLOCKED,
                None: None}[first]

    def _ask_in_home(self, name: AudioClip | None) -> HouseholdChoice:
        """Modem: chime, the name and "pick up the phone" on the speaker; the handset joins the call."""
        self.calls.add_event(self.call_id, EventKind.HOUSEHOLD, leg="speaker" if self.speaker else "handset")
        if self.speaker is not None:
            chime = AudioClip("tone:chime", _tone(_CHIME), RATE)
            for clip in (chime, self.clips.clip_for(Prompt.SCREEN_ANNOUNCE), name,
                         self.clips.clip_for(Prompt.PICK_UP)):
                if clip is not None and clip.pcm16:
                    try:
                        self.speaker.play(clip, clip.duration_s + PLAY_SLACK_S)
                    except Exception:  # noqa: BLE001 -- a broken speaker must not lose the call
                        log.exception("call %s: in-home speaker failed; waiting for the handset anyway", self.call_id)
                        break
        self._wait(self.settings.decide_timeout_s, lambda: False)  # a pick-up raises _HouseholdJoined
        return HouseholdChoice.TIMEOUT

    def _put_through(self) -> CallOutcome:
        self.calls.add_event(self.call_id, EventKind.CHALLENGE, passed=True, key="passcode")
        if isinstance(self.line, HouseholdLeg) and self.line.ring_household_leg():
            self.calls.add_event(self.call_id, EventKind.HOUSEHOLD, leg="passcode")
            line = self.line
            self._wait(self.settings.decide_timeout_s,
                       lambda: line.household_state() is not HouseholdLegState.RINGING)
            if line.household_state() is HouseholdLegState.PICKED_UP and line.join_household():
                self.calls.add_event(self.call_id, EventKind.HOUSEHOLD_DECISION, decision="connected")
                return self._talk(via="passcode")
            line.drop_household()
            self.calls.add_event(self.call_id, EventKind.HOUSEHOLD_DECISION, decision="timeout")
            return self._take_message(CallOutcome.REFUSED)
        self._ask_in_home(None)
        self.calls.add_event(self.call_id, EventKind.HOUSEHOLD_DECISION, decision="timeout")
        return self._take_message(CallOutcome.REFUSED)

    def _talk(self, via: str) -> CallOutcome:
        """Caller and household talk; mamoru stays silent and keeps recording until the end."""
        if via == "handset":
            self.calls.add_event(self.call_id, EventKind.HOUSEHOLD_DECISION, decision="connected", via=via)
        try:
            end = self.line.listen(self.call_timeout_s, self._sink(None, None))
        except Exception:  # noqa: BLE001 -- the conversation happened; record it as such
            log.exception("call %s: listening to the conversation failed", self.call_id)
            end = EndReason.LINE_FAULT
        self.calls.add_event(self.call_id, EventKind.LISTENED, end=end.value)
        return CallOutcome.CONNECTED

    def _take_message(self, otherwise: CallOutcome) -> CallOutcome:
        self._play(Prompt.MESSAGE_REQUEST)
        self._play_tone("tone:beep", _BEEP)
        pcm = bytearray()
        cap = self.settings.message_cap_s
        vad = SpeechEnd(self.settings.speech_start_s, 3.0, cap, self.settings.speech_rms)
        gone = False
        try:
            self._wait(cap + 2.0, lambda: vad.done, pcm, vad)
        except _CallerGone:
            gone = True
        if not vad.spoke:
            if gone:
                raise _CallerGone()
            return otherwise
        path = self._save_message(bytes(pcm))
        self.calls.add_event(self.call_id, EventKind.MESSAGE, seconds=round(vad.heard_s, 2),
                             speech_s=round(vad.speech_s, 2), path=str(path) if path else None)
        if not gone:
            try:
                self._play(Prompt.MESSAGE_THANKS)
            except _CallerGone:
                pass
        return CallOutcome.MESSAGE

    def _block(self) -> None:
        if self.caller_e164 is None or self.blocker is None:
            self.calls.add_event(self.call_id, EventKind.ERROR, message="no number to block")
            return
        try:
            self.blocker.add_entry(ListEntry(ListKind.BLOCK, MatchKind.EXACT, self.caller_e164, source="local",
                                             note=f"refused by the household (call {self.call_id})"))
        except (ValueError, OSError) as exc:
            log.error("call %s: could not block %s: %s", self.call_id, self.caller_e164, exc)

    def _save_message(self, pcm16: bytes) -> Path | None:
        directory = self.settings.messages_dir
        if directory is None:
            return None
        path = directory / f"message-{self.call_id}.wav"
        try:
            directory.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, wav_bytes(pcm16, RATE))
        except OSError as exc:
            log.error("call %s: message not saved: %s", self.call_id, exc)
            return None
        return path

    # ---- line helpers ------------------------------------------------------------------

    def _passcode_keyed(self) -> bool:
        return bool(self.settings.passcode) and self.settings.passcode in self._keys

    def _vad(self, cap_s: float) -> SpeechEnd:
        s = self.settings
        return SpeechEnd(s.speech_start_s, s.speech_end_s, cap_s, s.speech_rms)

    def _play(self, prompt: Prompt) -> None:
        clip = self.clips.clip_for(prompt)
        self._play_clip(clip)
        self.calls.add_event(self.call_id, EventKind.PLAYED, prompt=prompt.value, clip=clip.name)

    def _play_tone(self, name: str, pattern: tuple[tuple[float, float], ...]) -> None:
        self._play_clip(AudioClip(name, _tone(pattern), RATE))

    def _play_clip(self, clip: AudioClip) -> None:
        self._drain()
        end = self.line.play(clip, timeout=clip.duration_s + PLAY_SLACK_S)
        if self.audio is not None:
            self.audio.played(clip)
        self._drain()
        if end in (EndReason.CALLER_HUNG_UP, EndReason.LINE_FAULT, EndReason.HANDSET_ON_HOOK):
            raise _CallerGone()

    def _wait(self, seconds: float, until: Callable[[], bool], capture: bytearray | None = None,
              vad: SpeechEnd | None = None) -> bool:
        """Listen to the caller for at most ``seconds`` (wall time); True once ``until()`` holds."""
        deadline = time.monotonic() + seconds
        sink = self._sink(capture, vad)
        while True:
            self._drain()
            if until():
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            end = self.line.listen(min(self.settings.slice_s, left), sink)
            if end in (EndReason.CALLER_HUNG_UP, EndReason.LINE_FAULT, EndReason.HANDSET_ON_HOOK):
                self._drain()
                raise _CallerGone()

    def _sink(self, capture: bytearray | None, vad: SpeechEnd | None) -> Callable[[bytes], None]:
        def sink(pcm16: bytes) -> None:
            if self.tick is not None:
                self.tick()
            if self.audio is not None:
                self.audio.received(pcm16)
            if vad is not None and vad.done:
                return  # the reply is complete: what follows is not part of it
            if capture is not None:
                capture.extend(pcm16)
            if vad is not None:
                vad.feed(pcm16)

        return sink

    def _drain(self) -> None:
        """Take every queued line event: keys, the handset, and calls we must not touch now."""
        while (event := self.line.next_event(0)) is not None:
            match event:
                case Dtmf(digit=digit, household=True):
                    self._household_keys += digit
                case Dtmf(digit=digit):
                    self._keys += digit
                    self.calls.add_event(self.call_id, EventKind.DTMF, digit=digit)
                case HandsetOffHook():
                    self._picked_up = True
                case HandsetOnHook():
                    self._handset_down = True
                case CallOffered(caller=caller):
                    # Call waiting: another call's caller ID while we hold this one. Never answered
                    # or spoken into; its caller hears what the exchange gives a busy line.
                    log.warning("call %s: another call (%s) arrived while screening: not touched",
                                self.call_id, caller.raw_number or caller.reason)
                    self.calls.add_event(self.call_id, EventKind.OFFERED, waiting=True,
                                         raw_number=caller.raw_number)
                case Ring() | LineFault():
                    log.debug("call %s: %s during screening", self.call_id, type(event).__name__)
                case _:
                    pass
        if self._picked_up and not self._handset_down and not isinstance(self.line, HouseholdLeg):
            raise _HouseholdJoined()


def _tone(pattern: tuple[tuple[float, float], ...]) -> bytes:
    samples = array("h")
    for freq, seconds in pattern:
        n = int(seconds * RATE)
        step = 2 * math.pi * freq / RATE
        ramp = max(1, int(0.005 * RATE))
        for i in range(n):
            gain = 0.0 if freq <= 0 else min(1.0, i / ramp, (n - i) / ramp)
            samples.append(int(0.3 * 32767 * gain * math.sin(step * i)))
    return samples.tobytes()
