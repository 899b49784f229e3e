"""A modem line whose caller ID comes from an external Number Display adapter.

The modem answers, plays and listens; the adapter only reads the number. This
adapter-of-adapters merges the two event streams and keeps the call boundaries
itself, because the modem cannot see the adapter's frames:

* The adapter's caller is held until the modem's next RING: the caller ID (sent
  by the exchange before the first ring) is offered just before the first RING
  that follows it within ``pair_window_s``. A caller the modem never rings for (a
  stray or replayed frame) is dropped with a warning, so mamoru never goes
  off-hook on a line that is not ringing. (While the household's handset is off
  the hook it is offered at once: a waiting call rings no RING, and the daemon
  only logs it.)
* A caller that arrives while the call is already ringing (a slow adapter) is
  offered at once, as long as the daemon has not yet given up on caller ID for
  this call (ring ``no_cid_ring``: then the call is screened as "no caller ID",
  i.e. warned, never dropped, and the late caller is only logged).
* One ND message per call: a caller arriving while a call that already has its
  caller still rings starts a new call (the previous caller gave up). So rings
  are counted here, per call, and ``RingingStopped`` is sent here: before the
  next call, or once neither a ring nor a caller came for ``ring_gap_s``. The
  modem's own ``RingingStopped`` (it does not know the adapter's callers) is not
  passed on.
* The modem's own caller ID, if it decodes any, is used only while the adapter is
  missing. The adapter's faults are line faults (the family is told caller ID is
  gone); calls still ring through and are screened by ring count.

Two pump threads move the modem's and the adapter's events into one queue.
Everything else (answer, play, dial …) is the modem's.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any

from firmware.dialects import CADENCE_PERIOD_S
from firmware.modem_line import ModemLine
from firmware.nd_adapter import NdAdapter
from screening.core.line import (
    AudioClip,
    AudioSink,
    CallOffered,
    DialResult,
    EndReason,
    LineEvent,
    Ring,
    RingingStopped,
    next_queued,
)

log = logging.getLogger(__name__)

PAIR_WINDOW_S = 10.0  # ND: the number comes ~1-2 s before the first ring; allow a slow adapter
PUMP_WAIT_S = 0.2


class NdAdapterLine:
    """``ModemLine`` + ``NdAdapter`` as one LineAdapter."""

    def __init__(self, modem: ModemLine, adapter: NdAdapter, no_cid_ring: int = 2,
                 pair_window_s: float = PAIR_WINDOW_S, ring_gap_s: float | None = None) -> None:  # fmt: skip
        self.modem = modem
        self.adapter = adapter
        self.name = modem.name
        self.no_cid_ring = no_cid_ring
        self.pair_window_s = pair_window_s
        # A ring more than this after the last one belongs to a new call (as ModemLine counts them).
        self.ring_gap_s = ring_gap_s if ring_gap_s is not None else 1.5 * CADENCE_PERIOD_S[modem.cadence]
        self._events: queue.Queue[LineEvent] = queue.Queue(maxsize=1000)
        self._lock = threading.Lock()
        self._pending: CallOffered | None = None  # adapter caller waiting for its RING
        self._open = False  # a call is ringing (or was offered) and has not stopped
        self._ring_count = 0  # rings of the open call, counted here
        self._offered = False  # the open call has its caller
        self._last_activity = 0.0  # monotonic time of the open call's last ring or caller
        self._last_caller: CallOffered | None = None  # the adapter's last frame, to know its resends
        self._resend_s = 1.5 * adapter.fmt.resend_wait_s  # it resends after resend_wait_s without our ACK
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # ---- lifecycle ---------------------------------------------------------------

    def open(self) -> None:
        self.modem.open()
        self._start()

    def open_or_retry(self) -> None:
        """Like :meth:`open`, but a modem missing at start-up is retried, not raised (see ModemLine)."""
        self.modem.open_or_retry()
        self._start()

    def _start(self) -> None:
        self.adapter.open()
        self._stop.clear()
        for target, name in ((self._pump_modem, "nd-line-modem"), (self._pump_adapter, "nd-line-adapter")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=3.0)
        self._threads.clear()
        self.adapter.close()
        self.modem.close()

    def next_event(self, timeout: float) -> LineEvent | None:
        return next_queued(self._events, timeout)

    # ---- pairing -----------------------------------------------------------------

    def _pump_modem(self) -> None:
        while not self._stop.is_set():
            event = self.modem.next_event(min(PUMP_WAIT_S, self.ring_gap_s / 4))
            if event is not None:
                self.on_modem_event(event)
            self.tick(time.monotonic())

    def _pump_adapter(self) -> None:
        while not self._stop.is_set():
            event = self.adapter.next_event(PUMP_WAIT_S)
            if event is not None:
                self.on_adapter_event(event)

    def on_modem_event(self, event: LineEvent) -> None:
        with self._lock:
            match event:
                case Ring(at=at):
                    if self._open and at - self._last_activity > self.ring_gap_s:
                        self._end_call(at)  # the last call stopped ringing and this is a new one
                    self._open, self._last_activity = True, at
                    self._ring_count += 1
                    pending, self._pending = self._pending, None
                    if pending is not None and not self._offered:
                        if at - pending.at <= self.pair_window_s:
                            self._offered = True
                            self._put(pending)
                        else:
                            log.warning("ND adapter caller %s came %.0f s before this ring: not this call's; "
                                        "dropped", _who(pending), at - pending.at)
                    self._put(Ring(self._ring_count, at))
                case RingingStopped():
                    pass  # ours come from tick() and new callers: the modem does not see the adapter's frames
                case CallOffered(at=at):
                    if not self.adapter.faulted:
                        log.info("modem caller ID ignored: the ND adapter is the caller-ID source")
                        return
                    self._open, self._offered, self._last_activity = True, True, at
                    self._put(event)
                case _:
                    self._put(event)

    def on_adapter_event(self, event: LineEvent) -> None:
        with self._lock:
            if not isinstance(event, CallOffered):
                self._put(event)  # LineFault / LineRestored
                return
            if self._resent(event):
                log.debug("ND adapter resent caller %s (our ACK was lost): same call", _who(event))
                return
            if self._open and self._offered:
                self._end_call(event.at)  # one ND message per call: this caller's call is a new one
            if not self._open:
                if self.modem.handset_off_hook():
                    self._open, self._offered, self._last_activity = True, True, event.at
                    self._put(event)  # call waiting: no RING will come; the daemon logs it, never answers
                else:
                    self._pending = event  # wait for the modem's RING
            elif self._ring_count >= self.no_cid_ring:
                log.warning("ND adapter caller %s came too late for this call (ring %d): already screened as "
                            "no caller ID", _who(event), self._ring_count)
            else:
                self._offered, self._last_activity = True, event.at
                self._put(event)

    def _resent(self, event: CallOffered) -> bool:
        """The same caller again within the adapter's resend time, with no answer between."""
        last, self._last_caller = self._last_caller, event
        return (last is not None and last.caller == event.caller and event.at - last.at < self._resend_s
                and (self._pending is not None or (self._open and self._offered)))

    def tick(self, now: float) -> None:
        """A call with neither a ring nor a caller for ``ring_gap_s`` has stopped ringing."""
        with self._lock:
            if self._open and now - self._last_activity > self.ring_gap_s:
                self._end_call(now)

    def _end_call(self, at: float) -> None:
        self._open = self._offered = False
        self._ring_count = 0
        self._put(RingingStopped(at))

    def _put(self, event: LineEvent) -> None:
        try:
            self._events.put_nowait(event)
        except queue.Full:
            log.error("line %s: event queue full; dropping %r", self.name, event)

    # ---- the modem does the rest -----------------------------------------------------

    def handset_off_hook(self) -> bool:
        return self.modem.handset_off_hook()

    def answer(self, timeout: float = 5.0) -> None:
        with self._lock:
            # We took the call: it rings no more, and the daemon needs no RingingStopped for it.
            self._open = self._offered = False
            self._ring_count = 0
        self.modem.answer(timeout)

    def play(self, clip: AudioClip, timeout: float | None = None) -> EndReason:
        return self.modem.play(clip, timeout)

    def listen(self, seconds: float, sink: AudioSink | None = None, stop_on_silence: bool = False) -> EndReason:
        return self.modem.listen(seconds, sink, stop_on_silence=stop_on_silence)

    def hang_up(self, timeout: float = 5.0) -> None:
        self.modem.hang_up(timeout)

    def can_dial(self) -> bool:
        """A modem always can (a missing one fails the dial itself)."""
        return True

    def dial(self, number: str, timeout: float = 60.0) -> DialResult:
        return self.modem.dial(number, timeout)

    def ping(self, timeout: float = 2.0) -> bool:
        return self.modem.ping(timeout)

    @property
    def power_cycler(self) -> Any:
        return self.modem.power_cycler

    @power_cycler.setter
    def power_cycler(self, value: Any) -> None:
        self.modem.power_cycler = value


def _who(event: CallOffered) -> str:
    return event.caller.raw_number or str(event.caller.reason)
