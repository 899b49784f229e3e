"""systemd readiness and watchdog notifications for ``mamoru run``.

Why: the appliance sits on a landline in a house where nobody can log in and
fix it. If the call loop wedges (a stuck serial read, a deadlock), the phone
silently stops being screened. With ``Type=notify`` + ``WatchdogSec=`` systemd
restarts the service when the heartbeat stops, so the *loop itself* must send
the heartbeat: :meth:`Watchdog.beat` is called on every wake-up of
``Daemon.run`` (at least every 0.5 s) and rate-limits itself to one
``WATCHDOG=1`` per WatchdogSec/3. A wedged loop stops calling it, the
datagrams stop, and systemd acts -- there is deliberately no background thread
that could keep beating for a dead loop.

Some work legitimately blocks the loop for longer than WatchdogSec (an
answered call may last up to ``line.call_timeout_s``; dialling a relative up
to a minute). :meth:`Watchdog.busy` raises the deadline for that one piece of
work (``WATCHDOG_USEC=`` at runtime, systemd >= 236) and puts it back after,
so a call that hangs forever is still caught, just later.

Outside systemd (``NOTIFY_SOCKET`` unset: tests, the demo, a developer's
shell) every method is a no-op with a debug log. Constructing does no I/O: the
socket is connected on the first message.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Protocol

log = logging.getLogger(__name__)

NOTIFY_SOCKET_ENV = "NOTIFY_SOCKET"
WATCHDOG_USEC_ENV = "WATCHDOG_USEC"
WATCHDOG_PID_ENV = "WATCHDOG_PID"
BEATS_PER_PERIOD = 3  # beat at most every WatchdogSec/3: two beats may be lost before systemd acts
STATUS_MAX_CHARS = 200  # `systemctl status` shows one line; keep datagrams small


class _Notifier(Protocol):
    """What we need of ``sdnotify.SystemdNotifier`` (a fake in tests, if ever needed)."""

    def notify(self, state: str) -> None: ...


def _default_notifier() -> _Notifier:
    """sdnotify connects in its constructor, so it is built lazily, on first send.

    ``debug=True`` makes it raise instead of swallowing errors; we catch them
    ourselves so a failure is logged once rather than lost.
    """
    import sdnotify  # type: ignore[import-untyped]

    return sdnotify.SystemdNotifier(debug=True)


def watchdog_interval_s(env: Mapping[str, str], pid: int) -> float | None:
    """Seconds between beats, or None when systemd is not watching this process.

    Mirrors ``sd_watchdog_enabled()``: ``WATCHDOG_USEC`` must be a positive
    integer, and if ``WATCHDOG_PID`` is set it must be our pid (a child that
    inherited the environment must not feed the parent's watchdog).
    """
    raw = env.get(WATCHDOG_USEC_ENV, "").strip()
    if not raw:
        return None
    watchdog_pid = env.get(WATCHDOG_PID_ENV, "").strip()
    if watchdog_pid and watchdog_pid != str(pid):
        log.debug("watchdog: %s=%s is not us (%d)", WATCHDOG_PID_ENV, watchdog_pid, pid)
        return None
    try:
        usec = int(raw)
    except ValueError:
        log.warning("watchdog: ignoring malformed %s=%r", WATCHDOG_USEC_ENV, raw)
        return None
    if usec <= 0:
        return None
    return usec / 1_000_000 / BEATS_PER_PERIOD


class Watchdog:
    """Readiness, heartbeat, status and stop notifications to systemd.

    Thread-safe; :meth:`beat` is cheap enough to call many times a second.
    """

    def __init__(
        self,
        env: Mapping[str, str] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        notifier_factory: Callable[[], _Notifier] = _default_notifier,
        pid: int | None = None,
    ) -> None:
        """No I/O: reads the (given or process) environment only.

        ``env`` is captured now so a later change of ``os.environ`` (or systemd
        advice to unset it for children) does not change behaviour mid-run.
        """
        source = os.environ if env is None else env
        self._socket_path = source.get(NOTIFY_SOCKET_ENV, "").strip() or None
        self._interval_s = watchdog_interval_s(source, os.getpid() if pid is None else pid)
        self._clock = clock
        self._notifier_factory = notifier_factory
        self._notifier: _Notifier | None = None
        self._lock = threading.Lock()
        self._last_beat: float | None = None
        self._failed = False  # a send failed: logged once, then quiet until one succeeds

    # ---- state ---------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        """True when running under systemd with a notify socket."""
        return self._socket_path is not None

    @property
    def interval_s(self) -> float | None:
        """Minimum seconds between ``WATCHDOG=1`` messages; None if no watchdog."""
        return self._interval_s

    # ---- messages ---------------------------------------------------------------

    def ready(self, status: str = "") -> None:
        """Tell systemd start-up is done (call after the line opened). Also beats."""
        lines = ["READY=1"]
        if status:
            lines.append(_status_line(status))
        if self._interval_s is not None:
            lines.append("WATCHDOG=1")
        with self._lock:
            if self._send("\n".join(lines)) and self._interval_s is not None:
                self._last_beat = self._clock()

    def beat(self) -> bool:
        """Heartbeat from the call loop; sends at most once per interval. True if sent."""
        if self._interval_s is None:
            return False
        with self._lock:
            now = self._clock()
            if self._last_beat is not None and now - self._last_beat < self._interval_s:
                return False
            if not self._send("WATCHDOG=1"):
                return False
            self._last_beat = now
            return True

    def status(self, text: str) -> None:
        """One line for ``systemctl status`` (e.g. "screening; 12 calls today")."""
        with self._lock:
            self._send(_status_line(text))

    def stopping(self, status: str = "") -> None:
        """Tell systemd we are shutting down on purpose (not a crash)."""
        lines = ["STOPPING=1"]
        if status:
            lines.append(_status_line(status))
        with self._lock:
            self._send("\n".join(lines))

    @contextmanager
    def busy(self, seconds: float, why: str) -> Iterator[None]:
        """Allow the loop to block for up to ``seconds`` (a call, dialling a relative).

        Sends ``WATCHDOG_USEC=<seconds + normal timeout>`` plus a beat, and on
        exit restores the configured timeout with a fresh beat. No-op without a
        watchdog. Not re-entrant in a useful way: the inner exit restores the
        normal timeout, so do not nest.
        """
        if self._interval_s is None:
            yield
            return
        normal_usec = round(self._interval_s * BEATS_PER_PERIOD * 1_000_000)
        extended_usec = normal_usec + round(max(0.0, seconds) * 1_000_000)
        log.debug("watchdog: busy for up to %.0f s (%s)", seconds, why)
        with self._lock:
            if self._send(f"WATCHDOG_USEC={extended_usec}\nWATCHDOG=1"):
                self._last_beat = self._clock()
        try:
            yield
        finally:
            with self._lock:
                if self._send(f"WATCHDOG_USEC={normal_usec}\nWATCHDOG=1"):
                    self._last_beat = self._clock()

    def close(self) -> None:
        """Close the notify socket (sdnotify keeps it open for the process' life)."""
        with self._lock:
            self._drop_notifier()

    # ---- plumbing -------------------------------------------------------------------

    def _drop_notifier(self) -> None:
        sock = getattr(self._notifier, "socket", None)
        self._notifier = None
        if sock is not None:
            sock.close()

    def _send(self, message: str) -> bool:
        """Send one datagram (caller holds the lock). Never raises: screening goes on."""
        if self._socket_path is None:
            log.debug("watchdog: %s unset, not sending %r", NOTIFY_SOCKET_ENV, message)
            return False
        try:
            if self._notifier is None:
                self._notifier = self._notifier_factory()
            self._notifier.notify(message)
        except Exception as exc:  # noqa: BLE001 -- sdnotify raises anything; a lost beat must not crash the loop
            if not self._failed:
                log.warning("watchdog: cannot notify systemd on %s: %s", self._socket_path, exc)
            self._failed = True
            self._drop_notifier()  # reconnect next time (systemd may have been re-executed)
            return False
        if self._failed:
            log.info("watchdog: notifying systemd again")
            self._failed = False
        return True


def _status_line(text: str) -> str:
    """STATUS= takes one line; newlines would start a new (bogus) assignment."""
    flat = " ".join(str(text).split())
    return f"STATUS={flat[:STATUS_MAX_CHARS]}"
