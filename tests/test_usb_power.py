"""USB power-cycling escalation (firmware/usb_power.py) against a fake sysfs and a fake uhubctl.

What this proves: the tty -> USB device walk over a directory tree laid out like
``/sys`` (symlinks included, for ``ttyACM`` and ``ttyUSB``), the hub/port derived
for uhubctl and the exact argv it gets (a fake ``uhubctl`` placed first on PATH
records it), the fallback to ``authorized`` 0 -> 1 (in that order), the outcome for
each failure, and that a hanging uhubctl is killed within the timeout.

What it does not: real hardware. Whether a given hub honours per-port power, and
whether the kernel re-enumerates a given modem, only a Pi with the modem can tell.
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from firmware.usb_power import CycleOutcome, UsbPowerCycler

PPPS_STATUS = "Current status for hub 1-1 [2109:3431 USB2.0 Hub, USB 2.10, 4 ports, ppps]\\n  Port 3: 0103 power enable connect [0572:1329 Conexant USB Modem]"
GANGED_STATUS = "Current status for hub 1-1 [05e3:0610 USB2.0 Hub, USB 2.10, 4 ports, ganged]"


def build_sysfs(root: Path, tty: str = "ttyACM0", devpath: str = "1.3", usb_serial: bool = False) -> Path:
    """/sys/devices/platform/.../usb1/1-1/1-1.3/1-1.3:1.0/tty/ttyACM0, linked from /sys/class/tty.

    Returns the USB device directory (the one with ``authorized``)."""
    usb1 = root / "devices" / "platform" / "scb" / "fd500000.pcie" / "usb1"
    usb1.mkdir(parents=True)
    for name, value in (("busnum", "1"), ("devpath", "0"), ("authorized", "1")):
        (usb1 / name).write_text(value + "\n")  # the root hub: must not be chosen
    device = usb1 / "1-1" / f"1-{devpath}"
    device.mkdir(parents=True)
    for name, value in (("busnum", "1"), ("devpath", devpath), ("authorized", "1"), ("idVendor", "0572")):
        (device / name).write_text(value + "\n")
    interface = device / f"1-{devpath}:1.0"
    interface.mkdir()
    (interface / "authorized").write_text("1\n")  # interfaces have one too: not the device
    if usb_serial:
        port = interface / tty  # usb-serial: tty/device -> the port device below the interface
        port.mkdir()
        tty_dir, device_target = port / "tty" / tty, port
    else:
        tty_dir, device_target = interface / "tty" / tty, interface
    tty_dir.mkdir(parents=True)
    os.symlink(device_target, tty_dir / "device")
    (root / "class" / "tty").mkdir(parents=True)
    os.symlink(tty_dir, root / "class" / "tty" / tty)
    return device


def fake_uhubctl(bindir: Path, log: Path, status: str, cycle_exit: int = 0, hang: bool = False) -> None:
    """A shell script named uhubctl that appends its argv (one call per line) to ``log``."""
    bindir.mkdir(exist_ok=True)
    script = bindir / "uhubctl"
    cycle = "sleep 30" if hang else f"exit {cycle_exit}"
    script.write_text(f"""#!/bin/sh
echo "$*" >> "{log}"
case "$*" in
  *"-a cycle"*) {cycle} ;;
  *) printf '{status}\\n' ;;
esac
""")
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


@pytest.fixture
def sysroot(tmp_path: Path) -> Path:
    return tmp_path / "sys"


@pytest.fixture
def argv_log(tmp_path: Path) -> Path:
    return tmp_path / "uhubctl.argv"


@pytest.fixture
def bindir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "bin"
    d.mkdir()
    monkeypatch.setenv("PATH", f"{d}{os.pathsep}{os.environ.get('PATH', '')}")
    return d


def no_sleep(seconds: float) -> None:
    pass


# ---------------------------------------------------------------------- locating


@pytest.mark.parametrize("usb_serial", [False, True])
def test_locates_usb_device(sysroot: Path, usb_serial: bool) -> None:
    device = build_sysfs(sysroot, "ttyUSB0" if usb_serial else "ttyACM0", usb_serial=usb_serial)
    loc = UsbPowerCycler("/dev/ttyUSB0" if usb_serial else "/dev/ttyACM0", sysfs_root=sysroot).locate()
    assert loc is not None
    assert loc.device_dir == device.resolve()
    assert (loc.name, loc.hub, loc.port) == ("1-1.3", "1-1", 3)


def test_device_on_root_hub(sysroot: Path) -> None:
    build_sysfs(sysroot, devpath="2")
    loc = UsbPowerCycler("/dev/ttyACM0", sysfs_root=sysroot).locate()
    assert loc is not None and (loc.hub, loc.port) == ("1", 2)


def test_by_id_symlink_resolves_to_tty(sysroot: Path, tmp_path: Path) -> None:
    build_sysfs(sysroot)
    (tmp_path / "dev" / "serial" / "by-id").mkdir(parents=True)
    (tmp_path / "dev" / "ttyACM0").touch()
    link = tmp_path / "dev" / "serial" / "by-id" / "usb-Conexant_USB_Modem-if00"
    os.symlink(tmp_path / "dev" / "ttyACM0", link)
    assert UsbPowerCycler(link, sysfs_root=sysroot).tty_name() == "ttyACM0"


def test_not_usb(sysroot: Path) -> None:
    uart = sysroot / "devices" / "platform" / "serial8250" / "tty" / "ttyS0"
    uart.mkdir(parents=True)
    os.symlink(uart.parent.parent, uart / "device")
    (sysroot / "class" / "tty").mkdir(parents=True)
    os.symlink(uart, sysroot / "class" / "tty" / "ttyS0")
    result = UsbPowerCycler("/dev/ttyS0", sysfs_root=sysroot, uhubctl=None).power_cycle(1.0)
    assert result.outcome is CycleOutcome.NOT_USB


def test_missing_tty_never_located_is_not_usb(sysroot: Path) -> None:
    result = UsbPowerCycler("/dev/ttyACM9", sysfs_root=sysroot).power_cycle(1.0)
    assert result.outcome is CycleOutcome.NOT_USB


# ---------------------------------------------------------------------- uhubctl


def test_uhubctl_cycles_the_port(sysroot: Path, bindir: Path, argv_log: Path) -> None:
    device = build_sysfs(sysroot)
    fake_uhubctl(bindir, argv_log, PPPS_STATUS)
    result = UsbPowerCycler("/dev/ttyACM0", sysfs_root=sysroot, sleep=no_sleep).power_cycle(10.0)
    assert result.outcome is CycleOutcome.CYCLED_UHUBCTL and result.ok
    assert result.reappeared is True
    assert argv_log.read_text().splitlines() == ["-l 1-1", "-l 1-1 -p 3 -a cycle -d 2"]
    assert (device / "authorized").read_text().strip() == "1"  # not touched


def test_remembered_location_used_when_device_vanished(sysroot: Path, bindir: Path, argv_log: Path) -> None:
    build_sysfs(sysroot)
    fake_uhubctl(bindir, argv_log, PPPS_STATUS)
    cycler = UsbPowerCycler("/dev/ttyACM0", sysfs_root=sysroot, sleep=no_sleep)
    assert cycler.locate() is not None
    (sysroot / "class" / "tty" / "ttyACM0").unlink()  # fell off the bus
    result = cycler.power_cycle(0.5)
    assert result.outcome is CycleOutcome.CYCLED_UHUBCTL
    assert result.reappeared is False  # nothing recreates it in a fake tree
    assert "-l 1-1 -p 3 -a cycle -d 2" in argv_log.read_text()


def test_hub_without_ppps_falls_back_to_authorized(sysroot: Path, bindir: Path, argv_log: Path) -> None:
    device = build_sysfs(sysroot)
    fake_uhubctl(bindir, argv_log, GANGED_STATUS)
    written: list[str] = []

    def watch(seconds: float) -> None:  # runs between the two writes
        written.append((device / "authorized").read_text())

    result = UsbPowerCycler("/dev/ttyACM0", sysfs_root=sysroot, sleep=watch).power_cycle(5.0)
    assert result.outcome is CycleOutcome.REAUTHORIZED
    assert written[0] == "0"
    assert (device / "authorized").read_text() == "1"
    assert argv_log.read_text().splitlines() == ["-l 1-1"]  # asked, never cycled
    assert "no per-port power" in result.message


def test_failing_uhubctl_falls_back(sysroot: Path, bindir: Path, argv_log: Path) -> None:
    build_sysfs(sysroot)
    fake_uhubctl(bindir, argv_log, PPPS_STATUS, cycle_exit=1)
    result = UsbPowerCycler("/dev/ttyACM0", sysfs_root=sysroot, sleep=no_sleep).power_cycle(5.0)
    assert result.outcome is CycleOutcome.REAUTHORIZED
    assert "uhubctl cycle failed (1)" in result.message


def test_hanging_uhubctl_is_killed_within_timeout(sysroot: Path, bindir: Path, argv_log: Path) -> None:
    build_sysfs(sysroot)
    fake_uhubctl(bindir, argv_log, PPPS_STATUS, hang=True)
    started = time.monotonic()
    result = UsbPowerCycler("/dev/ttyACM0", sysfs_root=sysroot, sleep=no_sleep).power_cycle(1.0)
    assert time.monotonic() - started < 5.0  # the shell's `sleep 30` child was killed too
    assert "timed out" in result.message
    assert result.outcome is CycleOutcome.REAUTHORIZED  # the fallback still ran


def test_no_uhubctl_uses_authorized(sysroot: Path, bindir: Path) -> None:
    build_sysfs(sysroot)
    result = UsbPowerCycler("/dev/ttyACM0", sysfs_root=sysroot, uhubctl="uhubctl-not-installed",
                            sleep=no_sleep).power_cycle(5.0)  # fmt: skip
    assert result.outcome is CycleOutcome.REAUTHORIZED
    assert "uhubctl not installed" in result.message


# ---------------------------------------------------------------------- authorized failures


class NoRoot(UsbPowerCycler):
    """Tests run as root in CI, where chmod would not stop a write: refuse it here instead."""

    def _write_attr(self, path: Path, value: str) -> None:
        raise PermissionError(13, "Permission denied", str(path))


def test_without_root_or_uhubctl_is_unsupported(sysroot: Path) -> None:
    build_sysfs(sysroot)
    result = NoRoot("/dev/ttyACM0", sysfs_root=sysroot, uhubctl=None, sleep=no_sleep).power_cycle(1.0)
    assert result.outcome is CycleOutcome.UNSUPPORTED and not result.ok
    assert "needs root" in result.message


def test_failed_uhubctl_and_no_root_is_failed(sysroot: Path, bindir: Path, argv_log: Path) -> None:
    build_sysfs(sysroot)
    fake_uhubctl(bindir, argv_log, PPPS_STATUS, cycle_exit=1)
    result = NoRoot("/dev/ttyACM0", sysfs_root=sysroot, sleep=no_sleep).power_cycle(5.0)
    assert result.outcome is CycleOutcome.FAILED


def test_reauthorize_failing_halfway_says_so(sysroot: Path) -> None:
    build_sysfs(sysroot)

    class HalfWay(UsbPowerCycler):
        def _write_attr(self, path: Path, value: str) -> None:
            if value == "1":
                raise OSError(5, "Input/output error")
            super()._write_attr(path, value)

    result = HalfWay("/dev/ttyACM0", sysfs_root=sysroot, uhubctl=None, sleep=no_sleep).power_cycle(1.0)
    assert result.outcome is CycleOutcome.FAILED
    assert "DEVICE LEFT DEAUTHORIZED" in result.message


def test_unexpected_error_does_not_raise(sysroot: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    build_sysfs(sysroot)
    cycler = UsbPowerCycler("/dev/ttyACM0", sysfs_root=sysroot, uhubctl=None)

    def boom() -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(cycler, "locate", boom)
    assert cycler.power_cycle(1.0).outcome is CycleOutcome.FAILED
