"""The modem line's state, command channel, port handling and signalling, shared by its parts.

The parts (voice audio, reader, recovery) are mixins over :class:`ModemLineBase`; a method
one part calls in another is declared here, so each part reads on its own.
"""


from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from typing import Any

import serial  # type: ignore[import-untyped]

from firmware.at_channel import (
    IDENTIFY,
    Direction,
    LineSplitter,
    Transcript,
    VoiceStreamDecoder,
)
from firmware.dialects import (
    CADENCE_PERIOD_S,
    DIALECTS,
    ModemDialect,
    RingCadence,
    dialect_for_ati3,
)
from firmware.handset_state import HandsetState
from firmware.modemline.support import (
    AUTO_DIALECT,
    DEFAULT_HANDSET_STALE_S,
    DEFAULT_POWER_CYCLE_AFTER,
    EVENT_QUEUE_SIZE,
    IDLE_TICK_S,
    CommandReply,
    CommandTimeout,
    DataMode,
    ModemFault,
    UnsupportedModem,
    _dialect_default,
    _PendingCommand,
    _RingTracker,
    _StopSignal,
    _StreamState,
    _supported_modems,
)
from firmware.number_display import NdTiming, NumberDisplayReceiver
from screening.core.callerid import CallerIdBuilder
from screening.core.line import (
    EndReason,
    LineError,
    LineEvent,
)

# Every part logs as the one line adapter it is.
log = logging.getLogger("firmware.modem_line")


class ModemLineBase:
    """State and plumbing every part of the modem line uses (see the module docstring)."""

    def __init__(
        self,
        port: str,
        dialect: str = AUTO_DIALECT,
        home_region: str = "JP",
        cadence: RingCadence = RingCadence.JAPAN,
        baudrate: int = 115200,
        cid_quiet_s: float = 0.005,
        name: str = "modem",
        *,
        ring_gap_s: float | None = None,
        command_timeout_s: float = 2.0,
        reset_timeout_s: float = 5.0,
        health_interval_s: float | None = 30.0,
        reconnect_min_s: float = 0.2,
        reconnect_max_s: float = 5.0,
        write_timeout_s: float = 2.0,
        transcript_size: int = 2000,
        handset_stale_s: float | None = DEFAULT_HANDSET_STALE_S,
        number_display: NdTiming | None = None,
    ) -> None:
        """No I/O here: :meth:`open` touches the device.

        ``ring_gap_s`` defaults to 1.5 x the cadence period (a longer silence
        means a new call / ringing stopped); tests with a time-scaled modem set
        it. ``health_interval_s`` is how long the line may be idle before the
        reader sends ``AT`` to notice a silently dead modem (None: never).
        ``handset_stale_s``: a handset off-hook this long is reported (HandsetStale; None: never).
        ``number_display``: ND timing for a ``jp_nd`` line (scaled like ``ring_gap_s``).
        """
        if dialect != AUTO_DIALECT and dialect not in DIALECTS:
            raise ValueError(f"unknown modem dialect {dialect!r}; use {AUTO_DIALECT!r} or one of {sorted(DIALECTS)}")
        self.name = name
        self.port = port
        self.dialect_key = dialect
        self.home_region = home_region
        self.cadence = RingCadence(cadence)
        self.baudrate = baudrate
        self.cid_quiet_s = cid_quiet_s
        self.command_timeout_s = command_timeout_s
        self.reset_timeout_s = reset_timeout_s
        self.health_interval_s = health_interval_s
        self.reconnect_min_s = reconnect_min_s
        self.reconnect_max_s = reconnect_max_s
        self.write_timeout_s = write_timeout_s
        gap = ring_gap_s if ring_gap_s is not None else 1.5 * CADENCE_PERIOD_S[self.cadence]
        self._tick_s = min(IDLE_TICK_S, gap / 4)

        self._serial: Any = None  # serial.Serial while open
        self._reader: threading.Thread | None = None
        self._closing = threading.Event()
        self._events: queue.Queue[LineEvent] = queue.Queue(maxsize=EVENT_QUEUE_SIZE)
        self._transcript = Transcript(transcript_size)

        self._cmd_lock = threading.RLock()  # one command (or play/listen step) at a time
        self._write_lock = threading.Lock()  # serialises writes and port swaps
        self._state_lock = threading.RLock()  # pending slot, ring tracker, call flags
        self._pending: _PendingCommand | None = None

        self._dialect: ModemDialect | None = DIALECTS.get(dialect)
        self._initialised = False
        self._recovering = False
        self._recovery_reason: str | None = None

        # Escalation when reconnecting does not help: firmware.usb_power.UsbPowerCycler (set by the
        # composition root; None = never power-cycle).
        self.power_cycler: Any = None
        self.power_cycle_after = DEFAULT_POWER_CYCLE_AFTER

        # Reader-owned parsing state (replaced on every (re)open).
        self._splitter = LineSplitter()
        self._stream = _StreamState.COMMAND
        self._decoder: VoiceStreamDecoder | None = None
        self._cid = CallerIdBuilder()
        self._cid_opened_at = 0.0
        self._rings = _RingTracker(gap)
        self._last_rx_at = 0.0
        self._last_traffic_at = 0.0
        self._current_timeout: float | None = None

        # Call state shared with the caller's thread.
        self._handset = HandsetState(ring_grace_s=gap / 4, stale_after_s=handset_stale_s)
        self._off_hook = False
        self._stop = _StopSignal()
        self._stop_on_silence = False
        self._rx_queue: queue.Queue[bytes | EndReason | None] | None = None

        # Japanese Number Display decoded here (the modem cannot): only on a jp_nd line.
        self.number_display: NumberDisplayReceiver | None = None
        self._held_ring_at: float | None = None  # a RING that may be CAR's first burst
        if self.cadence is RingCadence.JAPAN_ND:
            self.number_display = self._number_display_receiver(home_region, number_display)

    # ---- commands ------------------------------------------------------------------------

    def _require_dialect(self) -> ModemDialect:
        if self._dialect is None or not self._initialised:
            raise LineError(f"{self.name}: line is not open")
        return self._dialect

    def _command(self, command: str, *, timeout: float, expect: tuple[str, ...] = ("OK",)) -> CommandReply:
        return self._exchange(command, timeout=timeout, expect=expect)[0]

    def _exchange(
        self,
        command: str,
        *,
        timeout: float,
        expect: tuple[str, ...] = ("OK",),
        data_mode: DataMode | None = None,
        recover: bool = True,
    ) -> tuple[CommandReply, _PendingCommand | None]:
        """Send one command and wait for its final reply. Raises LineError / ModemFault.

        ``recover=False``: a timeout is the caller's to handle (a dial it will abort).
        """
        on_reader = threading.current_thread() is self._reader
        if self._recovering and not on_reader:
            raise LineError(f"{self.name}: line is recovering from a fault; {command} not sent")
        if not self._cmd_lock.acquire(timeout=timeout):
            raise LineError(f"{self.name}: modem busy; {command} not sent")
        try:
            pending = self._send_command(command, data_mode)
            if on_reader:
                self._pump_until(pending.done, time.monotonic() + timeout)
            else:
                pending.done.wait(timeout)
            return self._reply_of(pending, expect, timeout), pending.data_phase
        except CommandTimeout as exc:
            if recover and not on_reader and self._initialised:
                self._request_recovery(str(exc))
            raise
        finally:
            self._cmd_lock.release()

    def _send_command(self, command: str, data_mode: DataMode | None) -> _PendingCommand:
        pending = _PendingCommand(command, data_mode)
        with self._state_lock:
            self._pending = pending
        log.debug("%s -> %s", self.name, command)
        try:
            self._send(command.encode("ascii") + b"\r", record=True)
        except LineError:
            with self._state_lock:
                if self._pending is pending:
                    self._pending = None
            raise
        return pending

    def _reply_of(self, pending: _PendingCommand, expect: tuple[str, ...], timeout: float) -> CommandReply:
        if not pending.done.is_set():
            with self._state_lock:
                if self._pending is pending:
                    self._pending = None
            raise CommandTimeout(f"{self.name}: no reply to {pending.command} within {timeout:.2f} s")
        if pending.failure is not None:
            raise ModemFault(f"{self.name}: {pending.command} interrupted: {pending.failure}")
        assert pending.final is not None
        if pending.final not in expect:
            raise LineError(f"{self.name}: {pending.command} failed: modem replied {pending.final}")
        return CommandReply(pending.command, pending.final, tuple(pending.lines))

    def _send(self, data: bytes, *, record: bool) -> None:
        """Write to the modem; a failing port starts recovery and raises ModemFault."""
        with self._write_lock:
            port = self._serial
            if port is None:
                raise ModemFault(f"{self.name}: port is closed")
            failure: str | None
            try:
                port.write(data)
            except (serial.SerialException, OSError) as exc:
                failure = f"write to {self.port} failed: {exc}"
            else:
                failure = None
        now = time.monotonic()
        self._last_traffic_at = now
        if record:
            self._transcript.add(now, Direction.SENT, data)
        if failure is not None:
            self._request_recovery(failure)
            raise ModemFault(f"{self.name}: {failure}")

    def _initialise(self) -> None:
        """Reset, identify, and configure voice mode. Runs on open and after recovery."""
        timeout = self.command_timeout_s
        self._command(_dialect_default("reset"), timeout=self.reset_timeout_s)
        self._command(_dialect_default("echo_off"), timeout=timeout)
        dialect = self._identify() if self.dialect_key == AUTO_DIALECT else DIALECTS[self.dialect_key]
        for command in dialect.init_commands:
            self._command(command, timeout=timeout)
        for command in (dialect.voice_mode, dialect.voice_format, dialect.silence_detection):
            self._command(command, timeout=timeout)
        self._dialect = dialect

    def _identify(self) -> ModemDialect:
        reply = self._command(IDENTIFY, timeout=self.command_timeout_s)
        text = " ".join(reply.lines).strip()
        dialect = dialect_for_ati3(text)
        if dialect is None:
            raise UnsupportedModem(
                f"{self.name}: unsupported modem on {self.port}: {IDENTIFY} replied {text!r}. "
                f"Supported: {_supported_modems()}. Set the dialect explicitly if your modem is compatible."
            )
        log.info("%s: %s identified as %s", self.name, text, dialect.key)
        return dialect

    # ---- port handling -------------------------------------------------------------------

    def _open_port(self) -> None:
        try:
            port = serial.Serial(
                self.port,
                self.baudrate,
                timeout=self._tick_s,
                write_timeout=self.write_timeout_s,
                exclusive=True,
            )
        except (serial.SerialException, OSError, ValueError) as exc:
            raise LineError(f"{self.name}: cannot open {self.port}: {exc}") from exc
        with contextlib.suppress(serial.SerialException, OSError):
            port.reset_input_buffer()
        self._current_timeout = self._tick_s
        self._splitter = LineSplitter()
        self._stream = _StreamState.COMMAND
        self._decoder = None
        self._cid.reset()
        self._last_rx_at = self._last_traffic_at = time.monotonic()
        with self._write_lock:
            self._serial = port

    def _close_port(self) -> None:
        with self._write_lock:
            port, self._serial = self._serial, None
        if port is not None:
            with contextlib.suppress(Exception):
                port.close()

    def _wake_reader(self) -> None:
        port = self._serial
        if port is not None:
            with contextlib.suppress(Exception):
                port.cancel_read()

    # ---- signalling ---------------------------------------------------------------------------

    def _emit(self, event: LineEvent) -> None:
        log.debug("%s: event %s", self.name, event)
        try:
            self._events.put_nowait(event)
        except queue.Full:
            with contextlib.suppress(queue.Empty):
                dropped = self._events.get_nowait()
                log.warning("%s: event queue full; dropped %s", self.name, dropped)
            with contextlib.suppress(queue.Full):
                self._events.put_nowait(event)

    def _signal_stop(self, reason: EndReason) -> None:
        if self._stop.set(reason):
            rx = self._rx_queue
            if rx is not None:
                rx.put(reason)

    def _abandon_pending(self, why: str) -> None:
        with self._state_lock:
            pending, self._pending = self._pending, None
        if pending is not None:
            pending.abandon(why)


    # ---- what one part calls in another (implemented by the part named) --------------

    def _number_display_receiver(self, home_region: str, timing: NdTiming | None) -> NumberDisplayReceiver:
        raise NotImplementedError  # ModemLine: the receiver drives the line's public call control

    def _pump_until(self, done: threading.Event, deadline: float) -> None:
        raise NotImplementedError  # Reader

    def _request_recovery(self, reason: str) -> None:
        raise NotImplementedError  # Recovery

    def _recover(self, message: str) -> None:
        raise NotImplementedError  # Recovery
