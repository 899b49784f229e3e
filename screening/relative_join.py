"""The voice-call alert placed *during* a live fraud call on SIP, so the relative can join it.

Normally the alert call waits until the line is free (``screening.line_jobs``). With
``[alerts] relative_can_join = true`` and a SIP line, a fraud alert is placed at once, as a
second outgoing call through the upstream beside the live call (``firmware.sip_relative``):
the relative hears the alert and may press 2 to listen or 3 to speak (the household then
hears 「ご家族が通話に参加しました」). With no live call (it ended first) or on a modem line
the queued caller phones them as before. The setting is the household's consent: off, this
module is never built.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, Protocol

from screening.core.line import AudioClip, LineError
from screening.core.model import EventKind, Language
from screening.i18n import lookup
from screening.voice_call import CallAlertResult, CallAlertStatus, dial_string

log = logging.getLogger(__name__)

JOINED_STAY_MAX_S = 3600.0  # a joined relative is hung up with the call, and at the latest after this


class EventStore(Protocol):
    def add_event(self, call_id: int | None, kind: EventKind, **detail: Any) -> None: ...


class QueuedCaller(Protocol):
    def call(self, number: str, message_text: str, language: Language) -> Any: ...


class LiveJoinCaller:
    """The alert service's VoiceCaller when the household allowed joining (SIP lines only)."""

    def __init__(self, line: Any, fallback: QueuedCaller, speech_fn: Callable[[str, Language], AudioClip],
                 joined_prompt: Callable[[Language], AudioClip | None], store: EventStore, *,
                 home_region: str = "JP", ring_timeout_s: float = 45.0, listen_s: float = 15.0) -> None:
        self._line = line  # firmware.sip_line.SipLine (duck-typed: screening does not import pjsua2 eagerly)
        self._fallback = fallback
        self._speech_fn = speech_fn
        self._joined_prompt = joined_prompt
        self._store = store
        self.home_region = home_region
        self.ring_timeout_s = ring_timeout_s
        self.listen_s = listen_s
        self._fraud_call_id: int | None = None
        self._lock = threading.Lock()

    def note_fraud(self, call_id: int) -> None:
        """The call the next fraud alert is about (FraudHeard comes before its alert)."""
        with self._lock:
            self._fraud_call_id = call_id

    def call(self, number: str, message_text: str, language: Language) -> Any:
        from firmware.sip_relative import RelativeLeg, live_call_on

        state = live_call_on(self._line.endpoint)
        digits = _digits(number, self.home_region)
        outbound = self._line.settings.outbound_uri(digits) if digits else None
        if state is None or outbound is None:
            return self._fallback.call(number, message_text, language)  # the call is over: as before
        try:  # the alert, then the relative's choices (the call is still up)
            alert = self._speech_fn(f"{message_text} {lookup('alerts', language, 'join.choices')}", language)
        except (ValueError, OSError) as exc:
            return CallAlertResult(CallAlertStatus.FAILED, 0, detail=f"no message audio: {exc}")
        leg = RelativeLeg(self._line.endpoint, state, allow_join=True, ring_timeout_s=self.ring_timeout_s,
                          listen_s=self.listen_s)
        try:
            result = leg.call(outbound, alert, self._joined_prompt(language))
        except LineError as exc:
            log.warning("phoning a relative beside the live call failed (%s); after the call instead", exc)
            return self._fallback.call(number, message_text, language)
        if result.joined is not None:
            with self._lock:
                call_id = self._fraud_call_id
            self._store.add_event(call_id, EventKind.RELATIVE_JOINED, mode=result.joined.value)
            threading.Thread(target=leg.stay_until_either_ends, args=(JOINED_STAY_MAX_S,),
                             name="relative-joined", daemon=True).start()
        if not result.answered:
            return CallAlertResult(CallAlertStatus.NO_ANSWER, 1, detail=result.detail)
        status = CallAlertStatus.ACKNOWLEDGED if result.acknowledged else CallAlertStatus.NOT_ACKNOWLEDGED
        return CallAlertResult(status, 1, result.digits, result.detail)


def _digits(number: str, home_region: str) -> str:
    try:
        return dial_string(number, home_region)
    except ValueError:
        return ""
