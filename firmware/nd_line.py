"""A modem line whose caller ID comes from an external Number Display adapter.

The modem answers, plays and listens; the adapter only reads the number. This
adapter-of-adapters pairs the two event streams:

* The adapter's caller is held until the modem's RING for that call: the caller
  ID (sent by the exchange before the first ring) is offered just before the
  first RING that follows it within ``pair_window_s``. A caller the modem never
  rings for (a stray or replayed frame) is dropped with a warning, so mamoru never
  goes off-hook on a line that is not ringing.
* A caller that arrives while the call is already ringing (a slow adapter) is
  offered at once, as long as the daemon has not yet given up on caller ID for
  this call (ring ``no_cid_ring``: then the call is screened as "no caller ID",
  i.e. warned, never dropped, and the late caller is only logged).
* The modem's own caller ID, if it decodes any, is used only while the adapter is
  missing. The adapter's faults are line faults (the family is told caller ID is
  gone); calls still ring through and are screened by ring count.

A pump thread moves the modem's events into one queue with the adapter's.
Everything else (answer, play, dial …) is the modem's.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import TYPE_CHECKING, Any

from firmware.dialects import CADENCE_PERIOD_S
from firmware.modem_line import ModemLine
from firmware.nd_adapter import NdAdapter
from screening.line import (
    AudioClip,
    AudioSink,
    CallOffered,
    EndReason,
    LineEvent,
    Ring,
    RingingStopped,
)

if TYPE_CHECKING:
    from firmware.modem_line import DialResult

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
        self._last_ring_at = 0.0
        self._events: queue.Queue[LineEvent] = queue.Queue(maxsize=1000)
        self._lock = threading.Lock()
        self._pending: CallOffered | None = None  # adapter caller waiting for its RING
        self._ring_count = 0  # rings of the current ringing (0 = idle)
        self._offered = False  # the current ringing already has its caller
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # ---- lifecycle ---------------------------------------------------------------

    def open(self) -> None:
        self.modem.open()
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
        try:
            if timeout <= 0:
                return self._events.get_nowait()
            return self._events.get(timeout=timeout)
        except queue.Empty:
            return None

    # ---- pairing -----------------------------------------------------------------

    def _pump_modem(self) -> None:
        while not self._stop.is_set():
            event = self.modem.next_event(PUMP_WAIT_S)
            if event is not None:
                self.on_modem_event(event)

    def _pump_adapter(self) -> None:
        while not self._stop.is_set():
            event = self.adapter.next_event(PUMP_WAIT_S)
            if event is not None:
                self.on_adapter_event(event)

    def on_modem_event(self, event: LineEvent) -> None:
        with self._lock:
            match event:
                case Ring(count=count, at=at):
                    if count == 1:
                        self._offered = False  # a new call (an answered one never gets RingingStopped)
                    self._ring_count, self._last_ring_at = count, at
                    pending, self._pending = self._pending, None
                    if pending is not None and not self._offered:
                        if at - pending.at <= self.pair_window_s:
                            self._offered = True
                            self._put(pending)
                        else:
                            log.warning("ND adapter caller %s came %.0f s before this ring: not this call's; "
                                        "dropped", _who(pending), at - pending.at)
                case RingingStopped():
                    self._ring_count, self._offered = 0, False
                case CallOffered():
                    if not self.adapter.faulted:
                        log.info("modem caller ID ignored: the ND adapter is the caller-ID source")
                        return
                    self._offered = True
            self._put(event)

    def on_adapter_event(self, event: LineEvent) -> None:
        with self._lock:
            if not isinstance(event, CallOffered):
                self._put(event)  # LineFault / LineRestored
                return
            ringing = self._ring_count > 0 and event.at - self._last_ring_at <= self.ring_gap_s
            if not ringing:
                self._pending = event  # wait for the modem's RING
            elif self._offered or self._ring_count >= self.no_cid_ring:
                log.warning("ND adapter caller %s came too late for this call (ring %d): already screened",
                            _who(event), self._ring_count)
            else:
                self._offered = True
                self._put(event)

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
            self._ring_count = 0  # we took the call: the next caller from the adapter is a new call's
        self.modem.answer(timeout)

    def play(self, clip: AudioClip, timeout: float | None = None) -> EndReason:
        return self.modem.play(clip, timeout)

    def listen(self, seconds: float, sink: AudioSink | None = None, stop_on_silence: bool = False) -> EndReason:
        return self.modem.listen(seconds, sink, stop_on_silence=stop_on_silence)

    def hang_up(self, timeout: float = 5.0) -> None:
        self.modem.hang_up(timeout)

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
