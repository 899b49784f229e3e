"""A pty-based emulator of a USB voice modem (USR5637 / Conexant CX93001 dialects).

Tests, the demo and the benchmarks run the real host code (pyserial on a tty)
against this instead of hardware, so it behaves like a modem on a phone line,
byte for byte as ``firmware/dialects.py`` describes: V.250 command echo and
result framing, caller ID blocks, RING cadence, voice mode with DLE-shielded
audio (ITU-T V.253), outgoing voice calls (``ATDT<digits>`` with call
progress: BUSY / NO ANSWER / NO DIALTONE / VCON-or-OK once the scripted callee
answers, see "Dialling" in ``firmware/dialects.py``), plus the faults real USB
modems have (firmware hang, device vanishing and reappearing under another tty
name).
On a ``jp_nd`` cadence the line is a Japanese Number Display line as the
exchange runs it (``firmware/virtual_nd.py``): CAR at the fast cadence, the
caller ID as V.23 FSK in the received audio once the host goes off-hook, then
normal ringing; no formatted caller ID is printed, as no real modem decodes ND.

Design:
* One emulator thread owns the pty and all modem state. It sleeps in
  ``select()`` on the master fd and a wake pipe with a timeout taken from the
  next timer, so an idle modem costs no CPU.
* Public methods are thread-safe: they take the modem's lock and wake the
  thread. Anything that opens or closes file descriptors (``vanish()``,
  ``reappear()``, ``stop()``) runs on the emulator thread, so ``select()``
  never watches a closed or reused fd.
* Time on the emulated line is multiplied by ``time_scale`` (ring cadence,
  audio rate, hang-up times), so a 0.02 scale runs a 60 s call in 1.2 s.
* The master fd is non-blocking with an output queue; during ``+VTX`` the
  emulator reads only as fast as it "plays", which is the back-pressure a USB
  modem's flow control gives the host.

Layout: this module is the public face (lifecycle, calls and observation, fault
injection, the pty and the emulator thread); the parts live in ``firmware/vmodem/``:
``at`` (AT command-line parsing), ``records`` (call records and per-call state),
``base`` (shared state, output, timers), ``commands`` (the AT interpreter),
``exchange`` (the line's incoming and dialled calls) and ``voice`` (+VTX/+VRX audio).
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import os
import select
import shutil
import tempfile
import threading
import time
import tty
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path

from firmware.dle import DTMF_DIGITS
from firmware.scenarios import (
    CalleeScript,
    CallScript,
    callee_audio_u8,
    caller_audio_u8,
)
from firmware.vmodem.base import DEVICE_LINK_NAME, MAX_SELECT_S
from firmware.vmodem.commands import AtCommands
from firmware.vmodem.exchange import Exchange
from firmware.vmodem.records import CallOutcome, CallRecord, DialRecord, _Action, _Phase
from firmware.vmodem.voice import VoiceData

log = logging.getLogger(__name__)


class VirtualModem(AtCommands, Exchange, VoiceData):
    """An emulated voice modem on a pty, with a scripted telephone line behind it.

    Constructing does no I/O; ``start()`` opens the pty, publishes the
    ``device_path`` symlink and starts the emulator thread.
    """

    # ---- lifecycle ---------------------------------------------------------------

    def start(self) -> Path:
        """Open the pty, publish the symlink, start the emulator thread; returns device_path."""
        with self._cond:
            if self._thread is not None:
                raise RuntimeError("virtual modem already started")
            self._stop_requested = False
            if self._link_dir is None and self._own_dir is None:
                self._own_dir = Path(tempfile.mkdtemp(prefix="mamoru-vmodem-"))
            self._wake_r, self._wake_w = os.pipe()
            os.set_blocking(self._wake_r, False)
            os.set_blocking(self._wake_w, False)
            self._open_pty()
            self._thread = threading.Thread(target=self._run, name="virtual-modem", daemon=True)
            self._thread.start()
        log.info("virtual %s modem on %s -> %s", self.dialect.key, self.device_path, self._slave_name)
        return self.device_path

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread, close the pty, remove the symlink; unfinished calls are closed out."""
        with self._cond:
            thread = self._thread
            if thread is None:
                return
            self._stop_requested = True
            self._wake()
        thread.join(timeout)
        if thread.is_alive():
            log.error("virtual modem thread did not stop within %.1f s", timeout)
            return
        with self._cond:
            self._thread = None
            for fd in (self._wake_r, self._wake_w):
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._wake_r = self._wake_w = -1
            if self._own_dir is not None:
                shutil.rmtree(self._own_dir, ignore_errors=True)
                self._own_dir = None

    def __enter__(self) -> VirtualModem:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def device_path(self) -> Path:
        """The stable symlink the host opens; survives vanish()/reappear()."""
        directory = self._link_dir or self._own_dir
        if directory is None:
            raise RuntimeError("device_path is known only after start() (or with link_dir)")
        return directory / DEVICE_LINK_NAME

    @property
    def tty_name(self) -> str | None:
        """The current pty slave (changes on reappear(), like ttyACM0 -> ttyACM1)."""
        with self._cond:
            return self._slave_name

    @property
    def running(self) -> bool:
        return self._thread is not None

    # ---- calls and observation ---------------------------------------------------

    def place_call(self, script: CallScript) -> CallRecord:
        """Queue an incoming call; it starts ``gap_s`` after the line is free.

        The caller's audio is loaded here, in the calling thread, so a bad WAV
        raises ``ValueError`` to the test instead of inside the emulator.
        """
        audio = caller_audio_u8(script)
        with self._cond:
            record = CallRecord(index=len(self._records), script=script, queued_at=time.monotonic())
            self._records.append(record)
            self._pending.append((record, audio))
            self._wake()
            return record

    @property
    def calls(self) -> list[CallRecord]:
        return self.records()

    def records(self) -> list[CallRecord]:
        with self._cond:
            return list(self._records)

    def expect_dial(self, number: str, script: CalleeScript) -> None:
        """Script who answers when the host dials ``number`` (separators ignored).

        Scripts for one number queue up: each dial uses the next, and the last
        one repeats (busy, then answered on the retry). The callee's audio is
        loaded here so a bad WAV raises in the test. A number dialled without a
        script rings until the modem's S7 timer gives NO ANSWER.
        """
        digits = "".join(ch for ch in number.upper() if ch in DTMF_DIGITS)
        if not digits:
            raise ValueError(f"no digits to dial in {number!r}")
        audio = callee_audio_u8(script)
        with self._cond:
            self._callees.setdefault(digits, deque()).append((script, audio))

    @property
    def dials(self) -> list[DialRecord]:
        """Every D command the modem accepted, in order."""
        with self._cond:
            return list(self._dials)

    def wait_for_dial_end(self, which: int | DialRecord, timeout: float) -> DialRecord:
        """Block until that outgoing call has an outcome; raises TimeoutError."""
        def ended() -> bool:
            record = self._dial_lookup(which)
            return record is not None and record.ended

        if not self._wait_for(ended, timeout):
            raise TimeoutError(f"dial {which if isinstance(which, int) else which.index} did not end within {timeout} s")
        record = self._dial_lookup(which)
        assert record is not None
        return record

    def _dial_lookup(self, which: int | DialRecord) -> DialRecord | None:
        if isinstance(which, DialRecord):
            return which
        with self._cond:
            return self._dials[which] if 0 <= which < len(self._dials) else None

    @property
    def command_log(self) -> list[tuple[float, str]]:
        """Every AT command line received, with its monotonic time."""
        with self._cond:
            return list(self._command_log)

    @property
    def off_hook(self) -> bool:
        with self._cond:
            return self._off_hook

    @property
    def handset_off_hook(self) -> bool:
        with self._cond:
            return self._handset

    def wait_for_call_end(self, which: int | CallRecord, timeout: float) -> CallRecord:
        """Block until that call has an outcome; raises TimeoutError."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                record = self._lookup(which)
                if record is not None and record.ended:
                    return record
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"call {which if isinstance(which, int) else which.index} "
                                       f"did not end within {timeout} s")
                self._cond.wait(remaining)

    def wait_idle(self, timeout: float) -> None:
        """Block until no call is queued or in progress; raises TimeoutError."""
        if not self._wait_for(self._is_idle, timeout):
            raise TimeoutError(f"virtual modem not idle within {timeout} s")

    def wait_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait (under the modem lock) for a condition on records/state; False on timeout."""
        return self._wait_for(predicate, timeout)

    def _wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(predicate, timeout)

    def is_idle(self) -> bool:
        """No call queued or in progress (the modem may still be off-hook)."""
        with self._cond:
            return self._is_idle()

    def _is_idle(self) -> bool:
        return not self._pending and self._live is None

    def _lookup(self, which: int | CallRecord) -> CallRecord | None:
        if isinstance(which, CallRecord):
            return which
        return self._records[which] if 0 <= which < len(self._records) else None

    # ---- the household's phone -----------------------------------------------------

    def set_handset(self, off_hook: bool) -> None:
        """Lift or replace the household's handset by hand (not from a script)."""
        with self._cond:
            now = time.monotonic()
            call = self._live
            if off_hook and call is not None and call.phase is _Phase.ALERTING:
                self._household_answers(call, now, talk_s=None)
            elif not off_hook and call is not None and call.phase is _Phase.HOUSEHOLD:
                self._end_call(call, CallOutcome.HOUSEHOLD_ANSWERED, now)
            self._set_handset(off_hook, now)
            self._wake()

    # ---- fault injection -----------------------------------------------------------

    def go_silent(self) -> None:
        """Firmware hang: stop echoing, replying and reporting anything."""
        with self._cond:
            self._silent = True
            self._line.clear()
            log.info("virtual modem: gone silent")

    def resume(self) -> None:
        with self._cond:
            self._silent = False
            log.info("virtual modem: answering again")
            self._wake()

    def inject(self, data: bytes) -> None:
        """Write raw bytes to the host (line noise, a confused firmware)."""
        with self._cond:
            if self._master is not None:
                self._queue_out(bytes(data))
            self._wake()

    def vanish(self, timeout: float = 5.0) -> None:
        """The USB device disappears: pty closed, symlink removed, any answered call dropped."""
        self._run_on_thread(self._do_vanish, timeout)

    def reappear(self, timeout: float = 5.0) -> None:
        """The device comes back: a fresh pty in power-on state behind the same symlink path."""
        self._run_on_thread(self._do_reappear, timeout)

    def _run_on_thread(self, fn: Callable[[], None], timeout: float) -> None:
        """Run fd-touching work on the emulator thread; re-raise its exception here."""
        action = _Action(fn)
        with self._cond:
            if self._thread is None:
                raise RuntimeError("virtual modem is not running")
            self._actions.append(action)
            self._wake()
        if not action.done.wait(timeout):
            raise TimeoutError(f"virtual modem did not run {fn.__name__} within {timeout} s")
        if action.error is not None:
            raise action.error

    def _do_vanish(self) -> None:
        now = time.monotonic()
        if self._master is None:
            return
        self._drop_connection(now)
        self._close_pty()
        log.info("virtual modem: vanished")

    def _do_reappear(self) -> None:
        if self._master is not None:
            return
        self._power_on()
        self._open_pty()
        log.info("virtual modem: reappeared as %s", self._slave_name)

    # ---- pty ------------------------------------------------------------------------

    def _open_pty(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)
        os.set_blocking(master, False)
        self._master, self._slave = master, slave
        self._slave_name = os.ttyname(slave)
        self._out.clear()
        self._publish_link()

    def _publish_link(self) -> None:
        link = self.device_path
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.exists() and not link.is_symlink():
            raise FileExistsError(f"{link} exists and is not a symlink; refusing to replace it")
        tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        os.symlink(self._slave_name or "", tmp)
        os.replace(tmp, link)

    def _close_pty(self) -> None:
        for fd in (self._master, self._slave):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._master = self._slave = None
        self._slave_name = None
        self._out.clear()
        with contextlib.suppress(FileNotFoundError, RuntimeError):
            link = self.device_path
            if link.is_symlink():
                link.unlink()

    def _wake(self) -> None:
        if self._wake_w >= 0:
            with contextlib.suppress(BlockingIOError, OSError):
                os.write(self._wake_w, b"x")

    # ---- emulator thread ------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                if self._stop_requested:
                    break
                try:
                    self._step(time.monotonic())
                    rlist, wlist, timeout = self._select_plan(time.monotonic())
                except Exception:  # never let host garbage or a bug kill the modem
                    log.exception("virtual modem: internal error; continuing")
                    rlist, wlist, timeout = [self._wake_r], [], 0.05
            try:
                readable, writable, _ = select.select(rlist, wlist, [], timeout)
            except (OSError, ValueError) as exc:
                log.warning("virtual modem: select failed: %s", exc)
                time.sleep(0.01)
                continue
            with self._cond:
                try:
                    self._handle_io(readable, writable)
                except Exception:
                    log.exception("virtual modem: error handling I/O; continuing")
        with self._cond:
            self._shutdown()

    def _step(self, now: float) -> None:
        while self._actions:
            action = self._actions.popleft()
            try:
                action.fn()
            except Exception as exc:  # reported to the caller of vanish()/reappear()
                action.error = exc
            finally:
                action.done.set()
        self._run_timers(now)
        self._maybe_start_next(now)
        self._pump_mode(now)
        self._flush()

    def _select_plan(self, now: float) -> tuple[list[int], list[int], float]:
        deadline = now + MAX_SELECT_S
        while self._timers and self._timers[0].cancelled:
            heapq.heappop(self._timers)
        if self._timers:
            deadline = min(deadline, self._timers[0].at)
        if self._next_start_at is not None:
            deadline = min(deadline, self._next_start_at)
        deadline = min(deadline, self._mode_deadline(now))
        rlist = [self._wake_r]
        wlist: list[int] = []
        if self._master is not None:
            if self._wants_read(now):
                rlist.append(self._master)
            if self._out:
                wlist.append(self._master)
        return rlist, wlist, max(0.0, deadline - now)

    def _handle_io(self, readable: list[int], writable: list[int]) -> None:
        if self._wake_r in readable:
            with contextlib.suppress(BlockingIOError, OSError):
                while os.read(self._wake_r, 512):
                    pass
        if self._master is None:
            return
        if self._master in writable:
            self._flush()
        if self._master in readable:
            try:
                data = os.read(self._master, self._read_size(time.monotonic()))
            except BlockingIOError:
                return
            except OSError as exc:
                log.warning("virtual modem: read failed: %s", exc)
                return
            if data:
                self._on_input(data, time.monotonic())
                self._flush()

    def _shutdown(self) -> None:
        now = time.monotonic()
        self._drop_connection(now)
        if self._live is not None:
            self._end_call(self._live, CallOutcome.LINE_FAULT, now)
        while self._pending:
            record, _ = self._pending.popleft()
            record.outcome, record.ended_at = CallOutcome.CANCELLED, now
        self._timers.clear()
        self._close_pty()
        self._cond.notify_all()



def play_scenario(modem: VirtualModem, scenario: Sequence[CallScript]) -> list[CallRecord]:
    """Queue every call; the modem plays them in order, each ``gap_s`` after the line frees."""
    return [modem.place_call(script) for script in scenario]


def emulate_forever(
    modem: VirtualModem,
    scenario: Sequence[CallScript],
    stop_event: threading.Event,
    *,
    repeat: bool = True,
    on_ready: Callable[[Path], None] | None = None,
    poll_s: float = 0.5,
) -> Path:
    """What ``mamoru modem emulate`` runs: play the scenario until ``stop_event`` is set.

    Prints nothing: ``on_ready`` gets the device path once the pty is up so the
    CLI can tell the user what to open. Starts (and finally stops) the modem if
    it was not already running. Returns the device path.
    """
    started_here = not modem.running
    if started_here:
        modem.start()
    path = modem.device_path
    try:
        if on_ready is not None:
            on_ready(path)
        play_scenario(modem, scenario)
        while not stop_event.wait(poll_s):
            if repeat and scenario and modem.is_idle():
                play_scenario(modem, scenario)
    finally:
        if started_here:
            modem.stop()
    return path

