"""Which INVITEs may have media sockets: decided before pjsua opens any (issue 12).

pjsua opens an RTP and an RTCP socket for every INVITE with an SDP offer *before* the
application sees the call, and pjlib gives a closed socket's ioqueue slot back only about
0.5 s later. The x86_64 ``pjsua2-python`` wheel has 64 slots and assertions on: a burst of
INVITEs that are each refused at once (about 100/s) runs the slots out and aborts the
process. So the endpoint asks :class:`Admission` first, from pjsua's account-selection hook,
and an INVITE it refuses goes to an account whose calls have a loopback media transport (no
socket); it is then refused there with the code given here.

What is admitted to a real call (with sockets):

* only from ``trusted_upstreams`` when they are set (others: 403);
* one call slot at a time per source address, or per calling number when the INVITE comes
  from the configured upstream (which carries every caller of the household's line); callers
  without a number through the upstream share one key that may hold every slot but one, so
  a flood of anonymous calls cannot take the last (486 when the slots are held);
* at most ``source_rate_per_s`` new calls a second per source / number, with a burst (503);
* only while the sockets in use, counting closed ones until their slot is free again, stay
  under the budget (503). The budget, not the rates, is what keeps the process alive.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from enum import IntEnum
from functools import lru_cache

from screening.core.sip_callerid import is_trusted

log = logging.getLogger(__name__)


class Refusal(IntEnum):
    """The final response an INVITE that is not admitted gets (the value is the SIP status)."""

    NOT_UPSTREAM = 403
    BUSY = 486
    OVERLOADED = 503


@dataclass(frozen=True, slots=True)
class AdmissionLimits:
    # pjlib's ioqueue slots for media sockets (PJ_IOQUEUE_MAX_HANDLES): 64 in the x86_64 wheel;
    # scripts/build_pjproject.sh builds the Pi's pjproject with more.
    media_handles: int = 64
    handles_per_call: int = 2  # RTP and RTCP
    reserve_handles: int = 4  # never planned for: a margin for anything pjsua opens besides calls
    # pjlib frees a closed socket's slot PJ_IOQUEUE_KEY_FREE_DELAY (500 ms) later; counted twice as long.
    handle_free_delay_s: float = 1.0
    source_rate_per_s: float = 5.0  # new calls a second from one source (or one number via the upstream)
    source_burst: float = 10.0

    @property
    def max_media_calls(self) -> int:
        """Calls that may hold media sockets at once (including ones closed too recently)."""
        return max(1, (self.media_handles - self.reserve_handles) // self.handles_per_call)


class _Bucket:
    """A token bucket: ``burst`` calls at once, then ``rate`` a second."""

    __slots__ = ("tokens", "at")

    def __init__(self, tokens: float, at: float) -> None:
        self.tokens = tokens
        self.at = at

    def take(self, now: float, rate: float, burst: float) -> bool:
        self.tokens = min(burst, self.tokens + (now - self.at) * rate)
        self.at = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


WITHHELD = "withheld"  # the key of the upstream's callers without a number
_MAX_BUCKETS = 4096  # sources remembered; beyond that the fullest (idle) buckets are forgotten


class Admission:
    """Owned by the SIP owner thread (no locking): admission of INVITEs and media socket accounting."""

    def __init__(self, trusted_upstreams: frozenset[str], limits: AdmissionLimits | None = None) -> None:
        self.limits = limits or AdmissionLimits()
        self._trusted = trusted_upstreams
        self._live = 0  # calls holding media sockets now
        self._closing: deque[float] = deque()  # monotonic times the closed calls' slots are free again
        self._buckets: dict[str, _Bucket] = {}
        self.refused: dict[Refusal, int] = dict.fromkeys(Refusal, 0)  # counts, for the log and benchmarks
        self._upstream = lru_cache(maxsize=1024)(self._is_upstream)

    # ---- who is calling -----------------------------------------------------------

    def _is_upstream(self, source_ip: str) -> bool:
        return bool(self._trusted) and is_trusted(source_ip, self._trusted)

    def from_upstream(self, source_ip: str) -> bool:
        """The INVITE comes from a configured upstream (gateway, adapter, trunk)."""
        return self._upstream(source_ip)

    def refuses_source(self, source_ip: str) -> bool:
        """``trusted_upstreams`` are set and this address is not one of them."""
        return bool(self._trusted) and not self._upstream(source_ip)

    def key_for(self, source_ip: str, number: str | None) -> str:
        """What "one caller" is: the number for the upstream's calls, else the address."""
        if self.from_upstream(source_ip):
            return f"number:{number}" if number else WITHHELD
        return f"source:{source_ip}"

    @staticmethod
    def slots_for(key: str, slots: int) -> int:
        """Call slots one key may hold at once."""
        return max(1, slots - 1) if key == WITHHELD else 1

    # ---- the decision ---------------------------------------------------------------

    def decide(self, key: str, now: float, *, slot_free: bool, key_holds_slot: bool) -> Refusal | None:
        """None to admit (the caller then opens media: :meth:`media_opened`), else the refusal.

        ``key_holds_slot``: the key already holds as many slots as :meth:`slots_for` allows.
        """
        refusal = self._decide(key, now, slot_free=slot_free, key_holds_slot=key_holds_slot)
        if refusal is not None:
            self.refused[refusal] += 1
        return refusal

    def refuse_source(self) -> Refusal:
        self.refused[Refusal.NOT_UPSTREAM] += 1
        return Refusal.NOT_UPSTREAM

    def _decide(self, key: str, now: float, *, slot_free: bool, key_holds_slot: bool) -> Refusal | None:
        if not slot_free or key_holds_slot:
            return Refusal.BUSY
        if not self._take(key, now):
            return Refusal.OVERLOADED
        if self.media_calls(now) >= self.limits.max_media_calls:
            return Refusal.OVERLOADED
        return None

    def _take(self, key: str, now: float) -> bool:
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= _MAX_BUCKETS:
                self._forget_idle(now)
            bucket = self._buckets[key] = _Bucket(self.limits.source_burst, now)
        return bucket.take(now, self.limits.source_rate_per_s, self.limits.source_burst)

    def _forget_idle(self, now: float) -> None:
        full_after_s = self.limits.source_burst / self.limits.source_rate_per_s
        for key in [k for k, b in self._buckets.items() if now - b.at >= full_after_s]:
            del self._buckets[key]
        if len(self._buckets) >= _MAX_BUCKETS:  # all recent: a spread-out flood; start over
            self._buckets.clear()

    # ---- media socket accounting ---------------------------------------------------

    def media_opened(self) -> None:
        """A call now holds media sockets (admitted INVITE, household leg, outgoing call)."""
        self._live += 1

    def media_closed(self, now: float) -> None:
        """That call ended: its sockets are closed, their slots free only a little later."""
        if self._live > 0:
            self._live -= 1
        self._closing.append(now + self.limits.handle_free_delay_s)

    def media_calls(self, now: float) -> int:
        """Calls counted against the budget: live, and closed whose slots are not free yet."""
        while self._closing and self._closing[0] <= now:
            self._closing.popleft()
        return self._live + len(self._closing)

    def has_room(self, now: float) -> bool:
        """Whether one more call may open media sockets (a household leg, an outgoing call)."""
        return self.media_calls(now) < self.limits.max_media_calls + 1  # our own calls may use the margin
