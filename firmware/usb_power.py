"""Last resort for a USB modem that stopped answering: power-cycle it, or re-enumerate it.

Why: a wedged USB modem often survives closing and reopening its tty and even a
re-init (``ModemLine``'s recovery loop); only losing power resets its controller.
Unattended in an elderly household's hallway, nobody will pull the plug, so the
appliance does it itself:

1. ``uhubctl -l <hub> -p <port> -a cycle`` when uhubctl is installed and the hub
   switches power per port (``ppps`` in its status line): a real power cut.
   (A Raspberry Pi 4/5 gangs its ports: the cycle cuts all of them.)
2. Otherwise write ``0`` then ``1`` to the USB device's ``authorized`` attribute
   in sysfs: the kernel unbinds and re-enumerates it. No power cut, but it resets
   the device's USB state, and it works on any hub. Needs root (or a udev rule).

The tty is resolved through sysfs: ``/sys/class/tty/<ttyACM0>/device`` points at
the USB *interface* (or, for ``ttyUSB``, a port below it); the USB *device* is the
first ancestor with ``busnum``, ``devpath`` and ``authorized``. Its hub location
for uhubctl is ``<busnum>-<devpath minus its last part>`` and the port is the last
part (``1-1.3`` -> hub ``1-1`` port 3; ``1-2`` -> root hub ``1`` port 2).

Call :meth:`UsbPowerCycler.locate` while the modem works (at open): if it later falls
off the bus entirely, its sysfs entry is gone and only the remembered location
lets uhubctl cut its port. Close the serial port *before* cycling, or the kernel
hands the re-enumerated modem a new name (``ttyACM1``) since the old one is held.

Nothing here raises: :meth:`power_cycle` returns a :class:`CycleResult`. Every
subprocess runs in its own process group with a timeout and is killed as a group.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 20.0
UHUBCTL_OFF_S = 2  # seconds the port stays unpowered (uhubctl -d); capacitors must drain
DEAUTHORIZED_S = 1.0  # between authorized=0 and =1: let the unbind finish
STATUS_TIMEOUT_S = 5.0  # cap for the uhubctl status query
KILL_WAIT_S = 1.0
REAPPEAR_POLL_S = 0.1


class CycleOutcome(StrEnum):
    CYCLED_UHUBCTL = "cycled_uhubctl"  # the hub port's power was cut and restored
    REAUTHORIZED = "reauthorized"  # the device was de- and re-authorised (re-enumerated)
    NOT_USB = "not_usb"  # the tty is not (or no longer, and was never located) a USB device
    UNSUPPORTED = "unsupported"  # no uhubctl for this hub, and no permission to write authorized
    FAILED = "failed"  # a method was available but failed or timed out


@dataclass(frozen=True, slots=True)
class CycleResult:
    outcome: CycleOutcome
    message: str
    reappeared: bool | None = None  # the tty came back within the timeout (None: not checked)

    @property
    def ok(self) -> bool:
        return self.outcome in (CycleOutcome.CYCLED_UHUBCTL, CycleOutcome.REAUTHORIZED)


@dataclass(frozen=True, slots=True)
class UsbLocation:
    """Where the modem sits on the USB tree."""

    tty: str  # ttyACM0
    device_dir: Path  # the USB device's sysfs directory (with ``authorized``)
    busnum: int
    devpath: str  # "1.3": port 3 of the hub on root port 1

    @property
    def name(self) -> str:
        """The kernel's name for the device, e.g. ``1-1.3``."""
        return f"{self.busnum}-{self.devpath}"

    @property
    def hub(self) -> str:
        """uhubctl's location of the hub the device is plugged into (``1`` is the root hub)."""
        parent, _, _ = self.devpath.rpartition(".")
        return f"{self.busnum}-{parent}" if parent else str(self.busnum)

    @property
    def port(self) -> int:
        return int(self.devpath.rpartition(".")[2])


@dataclass(frozen=True, slots=True)
class _Run:
    returncode: int | None  # None: timed out (killed)
    output: str


class UsbPowerCycler:
    """Power-cycle (or re-enumerate) the USB device behind one tty. No I/O until called."""

    def __init__(
        self,
        device_path: str | Path,
        *,
        sysfs_root: str | Path = "/sys",
        uhubctl: str | None = "uhubctl",  # name looked up on PATH, or a path; None: never use it
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.device_path = Path(device_path)
        self.sysfs_root = Path(sysfs_root)
        self.uhubctl = uhubctl
        self._sleep = sleep
        self._remembered: UsbLocation | None = None

    # ---- locating ------------------------------------------------------------------

    def tty_name(self) -> str:
        """``/dev/serial/by-id/usb-…-if00`` and ``/dev/ttyACM0`` both give ``ttyACM0``."""
        return Path(os.path.realpath(self.device_path)).name

    def locate(self) -> UsbLocation | None:
        """Resolve the tty to its USB device now, and remember it for when it has vanished."""
        try:
            found = self._resolve(self.tty_name())
        except OSError as exc:
            log.info("%s: cannot resolve in sysfs: %s", self.device_path, exc)
            found = None
        if found is not None:
            self._remembered = found
        return found

    def _resolve(self, tty: str) -> UsbLocation | None:
        link = self.sysfs_root / "class" / "tty" / tty / "device"
        if not link.exists():
            return None
        node = link.resolve()
        devices = (self.sysfs_root / "devices").resolve()
        while node != node.parent and node.is_relative_to(devices):
            if all((node / attr).is_file() for attr in ("busnum", "devpath", "authorized")):
                busnum = int((node / "busnum").read_text().strip())
                return UsbLocation(tty, node, busnum, (node / "devpath").read_text().strip())
            node = node.parent
        return None

    # ---- cycling -------------------------------------------------------------------

    def power_cycle(self, timeout: float = DEFAULT_TIMEOUT_S) -> CycleResult:
        """Cut the modem's power (uhubctl) or re-enumerate it (authorized); never raises.

        ``timeout`` bounds the whole escalation, including waiting for the tty to come back.
        """
        try:
            return self._power_cycle(time.monotonic() + timeout)
        except Exception as exc:
            log.exception("%s: power cycle failed unexpectedly", self.device_path)
            return CycleResult(CycleOutcome.FAILED, f"unexpected error: {exc}")

    def _power_cycle(self, deadline: float) -> CycleResult:
        location = self.locate() or self._remembered
        if location is None:
            return CycleResult(CycleOutcome.NOT_USB, f"{self.device_path} is not a USB device (or is gone "
                                                      "and was never located)")  # fmt: skip
        notes: list[str] = []
        result = self._try_uhubctl(location, deadline, notes)
        if result is None:
            result = self._try_reauthorize(location, deadline, notes)
        if result.ok:
            result = CycleResult(result.outcome, result.message, self._wait_reappear(location.tty, deadline))
        log.warning("%s (USB %s): %s: %s%s", self.device_path, location.name, result.outcome, result.message,
                    "" if result.reappeared is not False else "; the tty did not come back in time")  # fmt: skip
        return result

    def _try_uhubctl(self, location: UsbLocation, deadline: float, notes: list[str]) -> CycleResult | None:
        """The CycleResult if uhubctl did the job, else None with why in ``notes``."""
        exe = shutil.which(self.uhubctl) if self.uhubctl else None
        if exe is None:
            notes.append("uhubctl not installed")
            return None
        status = _run([exe, "-l", location.hub], min(STATUS_TIMEOUT_S, _left(deadline)))
        if status.returncode != 0 or "ppps" not in status.output:
            notes.append(f"hub {location.hub} has no per-port power switching"
                         if status.returncode is not None else "uhubctl status timed out")  # fmt: skip
            return None
        argv = [exe, "-l", location.hub, "-p", str(location.port), "-a", "cycle", "-d", str(UHUBCTL_OFF_S)]
        run = _run(argv, _left(deadline))
        if run.returncode == 0:
            return CycleResult(CycleOutcome.CYCLED_UHUBCTL, f"hub {location.hub} port {location.port} cycled")
        notes.append("uhubctl cycle timed out" if run.returncode is None
                     else f"uhubctl cycle failed ({run.returncode}): {_last_line(run.output)}")  # fmt: skip
        return None

    def _try_reauthorize(self, location: UsbLocation, deadline: float, notes: list[str]) -> CycleResult:
        attr = location.device_dir / "authorized"
        try:
            self._write_attr(attr, "0")
        except PermissionError as exc:
            notes.append(f"cannot write {attr} (needs root): {exc}")
            outcome = CycleOutcome.FAILED if any("uhubctl cycle" in n for n in notes) else CycleOutcome.UNSUPPORTED
            return CycleResult(outcome, "; ".join(notes))
        except OSError as exc:
            notes.append(f"writing 0 to {attr} failed: {exc}")
            return CycleResult(CycleOutcome.FAILED, "; ".join(notes))
        self._sleep(min(DEAUTHORIZED_S, _left(deadline)))
        try:
            self._write_attr(attr, "1")
        except OSError as exc:
            # The modem is now unbound: say so loudly, the next attempt will try again.
            notes.append(f"DEVICE LEFT DEAUTHORIZED: writing 1 to {attr} failed: {exc}")
            return CycleResult(CycleOutcome.FAILED, "; ".join(notes))
        notes.append(f"{location.name} re-authorised")
        return CycleResult(CycleOutcome.REAUTHORIZED, "; ".join(notes))

    def _write_attr(self, path: Path, value: str) -> None:
        """One write, as sysfs wants it (no truncation games, a single ``write``)."""
        with open(path, "w", encoding="ascii") as f:
            f.write(value)

    def _wait_reappear(self, tty: str, deadline: float) -> bool:
        """Poll sysfs until the tty is back (udev then recreates /dev), or the deadline."""
        entry = self.sysfs_root / "class" / "tty" / tty
        while True:
            if entry.exists():
                return True
            if time.monotonic() >= deadline:
                return False
            self._sleep(min(REAPPEAR_POLL_S, _left(deadline)))


def _left(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


def _run(argv: list[str], timeout: float) -> _Run:
    """Run with a timeout; on expiry kill the whole process group (a shell's children too,
    which would otherwise hold the pipe open and make the wait hang)."""
    try:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)  # fmt: skip
    except OSError as exc:
        return _Run(127, str(exc))
    try:
        out, _ = proc.communicate(timeout=timeout)
        return _Run(proc.returncode, out or "")
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.communicate(timeout=KILL_WAIT_S)
        log.warning("%s timed out after %.1f s; killed", argv[0], timeout)
        return _Run(None, "")
