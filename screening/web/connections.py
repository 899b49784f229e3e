"""Connection limits for the web server: slowloris and connection floods cost a bounded number of sockets.

uvicorn has no limit on open connections and no deadline for a request head: 1,100
idle connections used up the process's file descriptors. :func:`guarded_protocol` makes
an h11 protocol class for one server that

- closes a new connection at once when its source (IPv4 address, IPv6 /64) already holds
  ``max_per_source``; when the server holds ``max_connections``, it drops the connection that
  has waited longest without sending a request (else the new one), so a flood spread over
  many sources cannot starve a browser that sends its request at once;
- closes a connection whose request head is not complete ``header_timeout_s`` after it
  opened or after the previous response (trickling bytes does not reset the clock).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from screening.web.login_throttle import source_of

log = logging.getLogger(__name__)

REFUSAL_LOG_INTERVAL_S = 60.0  # a flood is logged once a minute, not once per connection


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    max_connections: int = 128  # well under the 1024 descriptors a process gets by default
    max_per_source: int = 32  # a browser opens about 6; a household has a few devices behind one NAT
    header_timeout_s: float = 10.0


class _Tally:
    """Open connections per source, and when a refusal was last logged (one per server)."""

    def __init__(self) -> None:
        self.per_source: Counter[str] = Counter()
        self.refused = 0
        self.logged_at = float("-inf")

    def note_refusal(self, why: str, source: str) -> None:
        self.refused += 1
        now = time.monotonic()
        if now - self.logged_at >= REFUSAL_LOG_INTERVAL_S:
            self.logged_at = now
            log.warning("web: connection from %s closed at once (%s); %d refused so far", source, why, self.refused)


class _GuardedH11Protocol(H11Protocol):
    limits = ConnectionLimits()
    tally = _Tally()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._source: str | None = None  # set while this connection is counted
        self._opened = 0.0
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        source = source_of(self.client[0]) if self.client else "unknown"
        self._opened = time.monotonic()
        # Aborted connections stay in the set until the loop reports them lost: count the live ones.
        live = sum(1 for c in self.connections if not getattr(c, "transport", None) or not c.transport.is_closing())
        if live > self.limits.max_connections and not self._evict_one_waiting():
            self.tally.note_refusal(f"{self.limits.max_connections} connections open", source)
            transport.abort()
            return
        if self.tally.per_source[source] >= self.limits.max_per_source:
            self.tally.note_refusal(f"{self.limits.max_per_source} connections from it open", source)
            transport.abort()
            return
        self.tally.per_source[source] += 1
        self._source = source
        self._arm_head_timer()

    def _waiting_for_head(self) -> bool:
        return (self._source is not None and not self.transport.is_closing() and self.conn.their_state is h11.IDLE
                and (self.cycle is None or self.cycle.response_complete))  # fmt: skip

    def _evict_one_waiting(self) -> bool:
        """Full: drop the connection that has waited longest without a request head (slowloris, or an
        idle keep-alive). A real browser sends its head at once, so a flood cannot starve it."""
        waiting = [c for c in self.connections if isinstance(c, _GuardedH11Protocol) and c._waiting_for_head()]
        if not waiting:
            return False
        oldest = min(waiting, key=lambda c: c._opened)
        self.tally.note_refusal("full: the longest-waiting connection without a request was dropped",
                                oldest._source or "unknown")  # fmt: skip
        oldest.transport.abort()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        if self._source is not None:
            self.tally.per_source[self._source] -= 1
            if self.tally.per_source[self._source] <= 0:
                del self.tally.per_source[self._source]
            self._source = None
        super().connection_lost(exc)

    def handle_events(self) -> None:
        super().handle_events()
        if self.conn.their_state is not h11.IDLE:  # the request head is complete
            self._cancel_head_timer()

    def on_response_complete(self) -> None:
        # Armed before the next cycle starts: a pipelined request already here cancels it again.
        if not self.transport.is_closing():
            self._arm_head_timer()
        super().on_response_complete()

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self.limits.header_timeout_s, self._head_too_slow)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            log.debug("web: %s sent no complete request head in %.0f s: closed", self._source,
                      self.limits.header_timeout_s)  # fmt: skip
            self.transport.abort()


def guarded_protocol(limits: ConnectionLimits) -> type[H11Protocol]:
    """An h11 protocol class with its own limits and its own tally (one per server)."""
    return type("GuardedH11Protocol", (_GuardedH11Protocol,), {"limits": limits, "tally": _Tally()})
