"""The voice-call alert: mamoru phones a relative over the household's own line.

Why a phone call: the relative most likely to help an elderly person after a
suspected fraud call may have no smartphone app, but everyone answers the
phone. The call says what happened and asks them to press 1, so the alert
service knows a human heard it (and can try the next relative if not).

Only one analog line exists, so this must never run while the household is on
it: the alert service starts it after the fraud call has ended, and the
alerter checks ``handset_off_hook()`` before every attempt (the modem adapter
refuses to dial then too). Every wait here is bounded: ring time, playback,
listening and the pause between attempts.

The alerter owns the line's event stream while it runs: DTMF arrives as
``Dtmf`` events, which it drains between play/listen steps.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from screening.core.line import (
    AudioClip,
    DialResult,
    Dtmf,
    EndReason,
    HandsetOffHook,
    LineError,
    LineEvent,
    LineFault,
)
from screening.core.model import Language
from screening.core.numbers import NumberError, clean_digits, dialled_from

log = logging.getLogger(__name__)

ACK_DIGIT = "1"
PLAY_SLACK_S = 5.0  # beyond a clip's length before playback counts as stuck
HANG_UP_TIMEOUT_S = 5.0


class CallAlertStatus(StrEnum):
    ACKNOWLEDGED = "acknowledged"  # the relative pressed 1
    NOT_ACKNOWLEDGED = "not_acknowledged"  # answered (maybe a voicemail), nobody pressed 1
    BUSY = "busy"  # every attempt was busy (or the last one was)
    NO_ANSWER = "no_answer"
    FAILED = "failed"  # not dialled (household on the line, bad number) or the line failed


@dataclass(frozen=True, slots=True)
class CallAlertResult:
    status: CallAlertStatus
    attempts: int  # calls dialled; 0 when refused before dialling
    digits: tuple[str, ...] = ()  # DTMF the relative pressed, in order
    detail: str = ""  # one line for the log / the alert service's report


class DialingLine(Protocol):
    """What the alerter needs of a line adapter (``firmware.modem_line.ModemLine`` has it)."""

    def dial(self, number: str, timeout: float) -> DialResult: ...

    def handset_off_hook(self) -> bool: ...

    def play(self, clip: AudioClip, timeout: float | None = None) -> EndReason: ...

    def listen(self, seconds: float, sink: Callable[[bytes], None] | None = None) -> EndReason: ...

    def hang_up(self, timeout: float = 5.0) -> None: ...

    def next_event(self, timeout: float) -> LineEvent | None: ...


SpeechFn = Callable[[str, Language], AudioClip]  # (text, language) -> clip, e.g. voice.speech.render_message


def dial_string(number: str, home_region: str = "JP") -> str:
    """The digits to dial for ``number`` from a line in ``home_region``.

    A number written nationally (``090-1234-5678``) dials its digits; an E.164
    number (``+44 20 7946 0000``) is formatted the way someone in the home
    region dials it -- the region's international prefix for foreign numbers
    (``010 44 …`` from Japan), the national form for domestic ones.
    Raises ValueError for something that cannot be dialled.
    """
    text = clean_digits(number)
    if text.startswith("+"):
        try:
            text = dialled_from(text, home_region)
        except NumberError as exc:
            raise ValueError(f"not a phone number: {number!r} ({exc})") from exc
        if "+" in text:  # a region without one international prefix: nothing to dial
            raise ValueError(f"cannot tell how to dial {number!r} from {home_region}")
        text = "".join(ch for ch in text if ch.isdigit())
    if not 3 <= len(text) <= 20 or not text.isdigit():
        raise ValueError(f"not a dialable number: {number!r}")
    return text


class VoiceCallAlerter:
    """Calls a relative, plays the alert, and waits for them to press 1.

    ``attempts`` dials at most (retrying on busy / no answer after
    ``retry_pause_s``), each ringing up to ``ring_timeout_s``. On answer the
    message plays up to ``plays`` times (stopping once 1 is pressed), then the
    alerter listens up to ``listen_s`` for the digit, in ``listen_slice_s``
    steps so a press ends the call promptly. No I/O happens here until ``call``.
    """

    def __init__(
        self,
        line: DialingLine,
        speech_fn: SpeechFn,
        attempts: int = 2,
        ring_timeout_s: float = 45.0,
        *,
        home_region: str = "JP",
        plays: int = 2,
        listen_s: float = 10.0,
        listen_slice_s: float = 1.0,
        retry_pause_s: float = 30.0,
        ack_digit: str = ACK_DIGIT,
    ) -> None:
        if attempts < 1 or plays < 1:
            raise ValueError("attempts and plays must be at least 1")
        if min(ring_timeout_s, listen_s, listen_slice_s) <= 0 or retry_pause_s < 0:
            raise ValueError("timeouts must be positive")
        self._line = line
        self._speech_fn = speech_fn
        self.attempts = attempts
        self.ring_timeout_s = ring_timeout_s
        self.home_region = home_region
        self.plays = plays
        self.listen_s = listen_s
        self.listen_slice_s = listen_slice_s
        self.retry_pause_s = retry_pause_s
        self.ack_digit = ack_digit
        self._cancel = threading.Event()

    def cancel(self) -> None:
        """Stop waiting between attempts (shutdown); a call in progress finishes its step."""
        self._cancel.set()

    def call(self, number: str, message_text: str, language: Language) -> CallAlertResult:
        """Phone ``number`` and play ``message_text`` in ``language``; never raises for line trouble."""
        try:
            digits = dial_string(number, self.home_region)
        except ValueError as exc:
            log.error("voice-call alert: %s", exc)
            return CallAlertResult(CallAlertStatus.FAILED, 0, detail=str(exc))
        if self._line.handset_off_hook():
            return self._refused(0)
        try:
            clip = self._speech_fn(message_text, language)  # before dialling: the relative must not wait for it
        except (ValueError, OSError) as exc:  # unknown language, broken install: nothing to say
            log.error("voice-call alert: no message audio: %s", exc)
            return CallAlertResult(CallAlertStatus.FAILED, 0, detail=f"no message audio: {exc}")
        return self._dial_until_answered(digits, clip)

    # ---- attempts ---------------------------------------------------------------------

    def _dial_until_answered(self, digits: str, clip: AudioClip) -> CallAlertResult:
        last = DialResult.NO_ANSWER
        for attempt in range(1, self.attempts + 1):
            if self._line.handset_off_hook():
                return self._refused(attempt - 1)
            log.info("voice-call alert: calling %s (attempt %d of %d)", digits, attempt, self.attempts)
            started = time.monotonic()
            try:
                last = self._line.dial(digits, self.ring_timeout_s)
            except LineError as exc:
                log.error("voice-call alert: dialling failed: %s", exc)
                return CallAlertResult(CallAlertStatus.FAILED, attempt, detail=str(exc))
            if last is DialResult.ANSWERED:
                return self._deliver(clip, attempt, started)
            if last in (DialResult.NO_DIALTONE, DialResult.FAILED):
                log.warning("voice-call alert: %s; not retrying now", last.value)
                return CallAlertResult(CallAlertStatus.FAILED, attempt, detail=f"dial: {last.value}")
            log.info("voice-call alert: %s", last.value)
            if attempt < self.attempts and self._cancel.wait(self.retry_pause_s):
                return CallAlertResult(_STATUS_FOR[last], attempt, detail="cancelled")
        return CallAlertResult(_STATUS_FOR[last], self.attempts, detail=f"dial: {last.value}")

    def _refused(self, attempts: int) -> CallAlertResult:
        log.warning("voice-call alert: the household is on the line; not dialling")
        return CallAlertResult(CallAlertStatus.FAILED, attempts, detail="household is on the line")

    # ---- the answered call ------------------------------------------------------------

    def _deliver(self, clip: AudioClip, attempt: int, since: float) -> CallAlertResult:
        """Play, listen, and always hang up: the line must be free again for the household."""
        pressed: list[str] = []
        try:
            status, detail = self._converse(clip, pressed, since)
        finally:
            self._line.hang_up(timeout=HANG_UP_TIMEOUT_S)
        log.info("voice-call alert: %s (%s), digits %s", status.value, detail, "".join(pressed) or "none")
        return CallAlertResult(status, attempt, tuple(pressed), detail)

    def _converse(self, clip: AudioClip, pressed: list[str], since: float) -> tuple[CallAlertStatus, str]:
        for _ in range(self.plays):
            reason = self._line.play(clip, timeout=clip.duration_s + PLAY_SLACK_S)
            if (outcome := self._check(pressed, since, reason)) is not None:
                return outcome
        deadline = time.monotonic() + self.listen_s
        while (left := deadline - time.monotonic()) > 0:
            reason = self._line.listen(min(self.listen_slice_s, left))
            if (outcome := self._check(pressed, since, reason)) is not None:
                return outcome
        return CallAlertStatus.NOT_ACKNOWLEDGED, f"no {self.ack_digit} within {self.listen_s:.0f} s"

    def _check(self, pressed: list[str], since: float, reason: EndReason) -> tuple[CallAlertStatus, str] | None:
        """Acknowledged, ended (hang-up, household, fault), or None to go on."""
        stop = self._drain_events(pressed, since)
        if self.ack_digit in pressed:
            return CallAlertStatus.ACKNOWLEDGED, f"pressed {self.ack_digit}"
        if stop is not None:
            return CallAlertStatus.NOT_ACKNOWLEDGED, stop
        if reason not in (EndReason.COMPLETED, EndReason.SILENCE, EndReason.TIMEOUT):
            return CallAlertStatus.NOT_ACKNOWLEDGED, f"call ended: {reason.value}"
        return None

    def _drain_events(self, pressed: list[str], since: float) -> str | None:
        """Collect the relative's digits; a reason to stop if the household or a fault intervened."""
        stop: str | None = None
        while (event := self._line.next_event(0)) is not None:
            if isinstance(event, Dtmf):
                if event.at >= since:  # older digits belong to an earlier call
                    pressed.append(event.digit)
            elif isinstance(event, HandsetOffHook):
                stop = stop or "the household picked up the phone"
            elif isinstance(event, LineFault):
                stop = stop or f"line fault: {event.message}"
            else:
                log.debug("voice-call alert: ignoring %s during the call", type(event).__name__)
        return stop


_STATUS_FOR: dict[DialResult, CallAlertStatus] = {
    DialResult.BUSY: CallAlertStatus.BUSY,
    DialResult.NO_ANSWER: CallAlertStatus.NO_ANSWER,
    DialResult.NO_DIALTONE: CallAlertStatus.FAILED,
    DialResult.FAILED: CallAlertStatus.FAILED,
    DialResult.ANSWERED: CallAlertStatus.NOT_ACKNOWLEDGED,
}
