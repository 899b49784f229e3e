"""The daemon's event bus: what happened, published once, heard by every feature that cares.

Publishers (the call loops, the voice service, the feed timer, the composition root) do not know
who listens; alerts, the front panel and the demo printer subscribe by event type. Delivery is
synchronous on the publisher's thread, in subscription order. A subscriber that raises is logged
and skipped: no listener can stop a call loop or keep the others from hearing the event.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from blocklist.feeds import FeedUpdate
from screening.core.line import HandsetStale, LineFault, LineRestored
from screening.core.model import CallerID, Decision
from voice.pipeline import FraudEvent

__all__ = [
    "CallDecided", "CallScreened", "Event", "EventBus", "FeedRefused", "FraudHeard", "HandsetStale", "LineFault",
    "LineRestored", "ModelMissing", "StoreDamaged",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CallScreened:
    """A call loop finished acting on a call (the call may still have been blocked or warned)."""

    call_id: int
    caller: CallerID
    decision: Decision


@dataclass(frozen=True, slots=True)
class CallDecided:
    """A call's decision is recorded and the line is about to be acted on (caller-ID displays, NCID)."""

    call_id: int
    caller: CallerID
    decision: Decision


@dataclass(frozen=True, slots=True)
class FraudHeard:
    """The voice pipeline's verdict first became fraud during a call."""

    fraud: FraudEvent


@dataclass(frozen=True, slots=True)
class FeedRefused:
    """A signed number feed would block far too much: refused, the previous list stays."""

    update: FeedUpdate


@dataclass(frozen=True, slots=True)
class StoreDamaged:
    """At start the database was found damaged, set aside and replaced by a fresh one."""

    message: str


@dataclass(frozen=True, slots=True)
class ModelMissing:
    """Transcription is configured but no speech model loaded: calls are recorded, not checked."""

    message: str


Event = CallScreened | CallDecided | FraudHeard | LineFault | LineRestored | HandsetStale | FeedRefused | StoreDamaged | ModelMissing
E = TypeVar("E", bound=Event)


class EventBus:
    """Synchronous publish/subscribe keyed by the event's dataclass type."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._handlers: dict[type, list[Callable[[Event], object]]] = {}

    def subscribe(self, kind: type[E], handler: Callable[[E], object]) -> Callable[[], None]:
        """Call ``handler`` for every published ``kind`` (its result is ignored); returns the function
        that unsubscribes."""
        erased: Callable[[Event], object] = handler  # type: ignore[assignment]  # keyed by kind: only E arrives
        with self._lock:
            self._handlers.setdefault(kind, []).append(erased)

        def unsubscribe() -> None:
            with self._lock:
                handlers = self._handlers.get(kind, [])
                if erased in handlers:
                    handlers.remove(erased)

        return unsubscribe

    def publish(self, event: Event) -> None:
        # A copy: subscribers may (un)subscribe while an event is delivered, on any thread.
        with self._lock:
            handlers = list(self._handlers.get(type(event), ()))
        for handler in handlers:
            try:
                handler(event)
            except Exception:  # noqa: BLE001 -- one failing listener must not stop the call loop or the others
                log.exception("%s: a subscriber failed", type(event).__name__)
