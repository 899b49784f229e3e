"""The call slots of a SIP endpoint and the state of the call each holds (no pjsua2 here)."""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from firmware.sip_media import FramePort
from screening.core.line import LineEvent
from screening.core.model import CallerID


class Leg(StrEnum):
    CALLER = "caller"
    HOUSEHOLD = "household"


@dataclass(slots=True)
class CallState:
    """One call in one slot. Events are read by any thread; pjsua2 objects only by the owner thread."""

    call: Any
    caller: CallerID
    offered_at: float
    rings: int = 1
    decided: bool = False  # the daemon acted: no more Ring events
    ringing_sent: bool = False
    answered: threading.Event = field(default_factory=threading.Event)  # our 200 OK went out
    media_up: threading.Event = field(default_factory=threading.Event)
    gone: threading.Event = field(default_factory=threading.Event)
    final_code: int | None = None
    media: Any = None  # the caller's AudioMedia
    household: Any = None  # the household leg's _Call
    household_media: Any = None
    household_up: threading.Event = field(default_factory=threading.Event)  # the phone was picked up
    household_ended: threading.Event = field(default_factory=threading.Event)
    answer_when_household_answers: bool = False  # an allowed call is answered by the household
    outgoing: bool = False  # we placed it (an alert call): answered = the far end picked up
    household_rung_at: float | None = None  # monotonic; the household leg gives up after ring_timeout_s
    answered_at: float | None = None  # monotonic, when our 200 OK went out
    acked: bool = False  # the caller's ACK came (the dialog is confirmed)
    # Screening (action "screen"): the household leg is rung alone and hears our prompts; the two
    # are joined only when the household says so (then ``screening_joined``).
    screening: bool = False
    screening_joined: bool = False
    household_key: threading.Event = field(default_factory=threading.Event)  # the household pressed a key


@dataclass(slots=True)
class Slot:
    index: int
    # Each event with the call it belongs to: the slot's SipLine acts on that call only.
    events: queue.Queue[tuple[LineEvent, CallState | None]] = field(default_factory=queue.Queue)
    port: FramePort | None = None
    current: CallState | None = None
    attached: bool = False
    in_use: bool = False  # the slot's call loop is still acting on a call (perhaps one already gone)
    last_key: str | None = None  # admission key of the slot's latest call: held by it while the call is up

    def busy(self) -> bool:
        return self.in_use or (self.current is not None and not self.current.gone.is_set())
