"""One call, from complete caller ID to hang-up.

The session writes the call row *before* it touches the line and completes it
after, so a crash mid-call leaves a row the store marks interrupted on restart.
It talks only to the line protocol, the rules and the store; it never blocks
without a timeout.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import NamedTuple, Protocol

from screening.core.clock import utc_now
from screening.core.line import AudioClip, CallAudio, CallRouting, EndReason, LineAdapter, LineError
from screening.core.model import Action, CallerID, CallOutcome, CallState, Decision, EventKind, Prompt
from screening.core.numbers import national_format
from screening.core.rules import ListLookup, Policy, decide
from screening.events import CallDecided, EventBus
from screening.screen_flow import NumberBlocker, ScreenFlow, ScreenSettings, Speaker

log = logging.getLogger(__name__)


class Announcements(Protocol):
    def clip_for(self, prompt: Prompt) -> AudioClip: ...


class CallLog(Protocol):
    """The part of blocklist.store.Store a session writes to."""

    def begin_call(self, line: str, caller: CallerID, *, decision: Decision,
                   events: Sequence[tuple[EventKind, dict[str, object]]]) -> int: ...

    def set_state(self, call_id: int, state: CallState) -> None: ...

    def finish_call(self, call_id: int, end_reason: str, error: str | None = None) -> None: ...

    def add_event(self, call_id: int | None, kind: EventKind, **detail: object) -> None: ...


class Outcome(StrEnum):
    """End reasons stored with a call that are not line EndReasons."""

    RINGING = "allowed_to_ring"
    LINE_IN_USE = "line_in_use"  # call-waiting guard: household already on the line
    ANNOUNCED = "announced_and_hung_up"
    REJECTED = "rejected"  # declined without answering: the phone never rang
    FAILED = "failed"


class VoiceHooks(Protocol):
    def start_call(self, call_id: int) -> CallAudio: ...


class Screened(NamedTuple):
    """What became of one offered call."""

    call_id: int
    decision: Decision
    end_reason: str  # an EndReason or Outcome value, as stored with the call


@dataclass(frozen=True, slots=True)
class CallSettings:
    """What the next call is screened with; the call loop may replace it between calls (a reload)."""

    policy: Policy
    announcements: Announcements
    call_timeout_s: float = 600.0  # longest we stay on a warned (or connected screened) call


@dataclass(frozen=True, slots=True)
class SessionSettings:
    """What a call loop's sessions are built with once, at start (a change needs a restart)."""

    voice: VoiceHooks | None = None  # recording + live transcription; None = neither
    tick: Callable[[], object] | None = None  # liveness while on a long call (the systemd watchdog)
    screen: ScreenSettings = field(default_factory=ScreenSettings)  # how action "screen" goes
    speaker: Speaker | None = None  # in-home speaker: a modem line's screening plays the caller's name on it


@dataclass(slots=True)
class CallSession:
    """Screens one offered call on one line."""

    line: LineAdapter
    calls: CallLog
    call: CallSettings
    settings: SessionSettings = field(default_factory=SessionSettings)
    bus: EventBus | None = None  # hears CallDecided before the line is acted on (NCID, displays)
    # When this call last put the line back on-hook (monotonic), or None: anything the line
    # reports after it belongs to the next call, however long the recording takes to close.
    released_at: float | None = None
    _caller_e164: str | None = None  # the call being screened's number ("3 = refuse and block")

    def screen(self, caller: CallerID, lists: ListLookup) -> Screened:
        """Record, decide, act. Never raises for line trouble."""
        started = time.monotonic()
        self._caller_e164 = caller.number_e164
        decision = decide(caller, lists, self.call.policy, at=utc_now())  # the time picks the [[schedule]]
        decide_ms = round((time.monotonic() - started) * 1000, 3)
        # One write, before the line is touched: a crash from here on leaves a row to recover.
        call_id = self.calls.begin_call(self.line.name, caller, decision=decision, events=(
            (EventKind.OFFERED, {"raw_number": caller.raw_number,
                                 "reason_code": caller.reason.value if caller.reason else None,
                                 "caller_id_lines": list(caller.raw_lines)}),
            (EventKind.DECIDED, {"rule": decision.rule, "decide_ms": decide_ms}),
        ))
        log.info("call %s from %s: %s (%s) -- %s", call_id, _who(caller, self.call.policy.home_region),
                 decision.action.value.upper(), decision.rule, decision.reason)
        self._tell_decided(call_id, caller, decision)
        return Screened(call_id, decision, self.act(call_id, decision))

    def _tell_decided(self, call_id: int, caller: CallerID, decision: Decision) -> None:
        if self.bus is not None:  # the bus logs and skips a failing subscriber: the call is acted on regardless
            self.bus.publish(CallDecided(call_id, caller, decision))

    def act(self, call_id: int, decision: Decision) -> str:
        """Act on a recorded decision and complete its row; returns the stored end reason.

        Also for a call the call-waiting guard held back when the line has since shown the
        handset is down after all: the same row is completed again, no second call appears.
        """
        self.released_at = None
        try:
            end_reason = self._act(call_id, decision)
        except LineError as exc:
            log.error("call %s: line failed while acting: %s", call_id, exc)
            self.calls.add_event(call_id, EventKind.ERROR, message=str(exc))
            self._safe_hang_up(call_id)
            self.calls.finish_call(call_id, Outcome.FAILED, error=str(exc))
            return Outcome.FAILED
        self.calls.finish_call(call_id, end_reason)
        return end_reason

    def _act(self, call_id: int, decision: Decision) -> str:
        routing = self.line if isinstance(self.line, CallRouting) else None
        if decision.action is Action.ALLOW:
            if routing is not None and routing.ring_household():
                self.calls.add_event(call_id, EventKind.HOUSEHOLD, leg="ringing")
            return Outcome.RINGING
        if self.line.handset_off_hook():
            # Never answer or play into a conversation the household is having.
            self.calls.add_event(call_id, EventKind.HANDSET, guard="line in use: not answering")
            log.warning("call %s: household is on the line, not answering", call_id)
            return Outcome.LINE_IN_USE
        if decision.action is Action.BLOCK and routing is not None and routing.reject_unanswered():
            self.calls.add_event(call_id, EventKind.REJECTED)
            return Outcome.REJECTED
        self.line.answer()  # first: nothing but the one row write stands between caller ID and this
        self.calls.set_state(call_id, CallState.ACTING)
        self.calls.add_event(call_id, EventKind.ANSWERED)
        audio = self._start_audio(call_id)
        try:
            return self._announce_and_listen(call_id, decision, audio, routing)
        finally:
            if audio is not None:
                audio.finish()

    def _announce_and_listen(self, call_id: int, decision: Decision, audio: CallAudio | None,
                             routing: CallRouting | None) -> str:
        assert decision.prompt is not None  # every non-ALLOW decision names its prompt
        clip = self.call.announcements.clip_for(decision.prompt)
        end = self.line.play(clip, timeout=clip.duration_s + 10.0)
        if audio is not None:
            audio.played(clip)
        self.calls.add_event(call_id, EventKind.PLAYED, prompt=decision.prompt.value, clip=clip.name,
                             end=end.value)
        if decision.action is Action.SCREEN:
            return self._screen_caller(call_id, decision, audio, end)
        if decision.action is Action.WARN and end is EndReason.COMPLETED:
            if routing is not None and routing.connect_household():
                self.calls.add_event(call_id, EventKind.HOUSEHOLD, leg="connecting")
            end = self.line.listen(self.call.call_timeout_s, self._sink(audio))
            self.calls.add_event(call_id, EventKind.LISTENED, end=end.value)
        # Even when the caller hung up first, the modem is still off-hook.
        self.line.hang_up()
        self.released_at = time.monotonic()
        self.calls.add_event(call_id, EventKind.HUNG_UP)
        if decision.action is Action.WARN:
            return end.value
        return Outcome.ANNOUNCED if end is EndReason.COMPLETED else end.value

    def _screen_caller(self, call_id: int, decision: Decision, audio: CallAudio | None, warned: EndReason) -> str:
        """Action "screen": the caller says who they are, the household decides (screening.screen_flow)."""
        if warned is EndReason.COMPLETED:
            flow = ScreenFlow(call_id, self.line, self.calls, self.call.announcements, self.settings.screen,
                              caller_e164=self._caller_e164, audio=audio, tick=self.settings.tick,
                              blocker=self.calls if isinstance(self.calls, NumberBlocker) else None,
                              speaker=self.settings.speaker, call_timeout_s=self.call.call_timeout_s)
            outcome = flow.run()
        else:
            outcome = CallOutcome.CALLER_HUNG_UP
            self.calls.add_event(call_id, EventKind.OUTCOME, outcome=outcome.value)
        self.line.hang_up()
        self.released_at = time.monotonic()
        self.calls.add_event(call_id, EventKind.HUNG_UP)
        return outcome.value

    def _sink(self, audio: CallAudio | None) -> Callable[[bytes], None] | None:
        """Audio from the line: to the recorder/recogniser, and proof of life for the watchdog."""
        tick = self.settings.tick
        if tick is None:
            return audio.received if audio else None

        def sink(pcm16: bytes) -> None:
            tick()
            if audio is not None:
                audio.received(pcm16)

        return sink

    def _start_audio(self, call_id: int) -> CallAudio | None:
        if self.settings.voice is None:
            return None
        try:
            return self.settings.voice.start_call(call_id)
        except Exception:  # noqa: BLE001 -- a recording/ASR failure must never stop screening
            log.exception("call %s: could not start recording/transcription", call_id)
            return None

    def _safe_hang_up(self, call_id: int) -> None:
        try:
            self.line.hang_up()
            self.released_at = time.monotonic()
        except LineError as exc:  # the line is already in trouble; recovery is the adapter's job
            log.warning("call %s: hang-up after failure also failed: %s", call_id, exc)


def _who(caller: CallerID, home_region: str) -> str:
    if caller.number_e164:
        return national_format(caller.number_e164, home_region)
    if caller.reason is not None:
        return f"<{caller.reason.name.lower()}>"
    return caller.raw_number or "<no caller ID>"
