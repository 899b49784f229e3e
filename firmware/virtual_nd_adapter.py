"""A fake Number Display adapter on a real pty, for tests and the demo.

It behaves like the adapter ``screening/core/nd_adapter_frame.py`` describes: each
caller is one frame; a NAK or no answer within ``resend_wait_s`` makes it send
the frame again, up to ``max_sends`` times. It can also misbehave on purpose:
corrupt the block check of the first sends, write raw garbage, vanish (the
USB-serial chip unplugged) and reappear behind the same symlink.

One reader thread collects what the host writes (ACK/NAK bytes). ``send_caller``
runs on the caller's thread and waits for the host's answer with a timeout.
Constructing does no I/O; ``start()`` opens the pty.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import tempfile
import threading
import time
import tty
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from screening.core.callerid import CidField
from screening.core.model import Reason
from screening.core.nd_adapter_frame import ACK, DEFAULT_FORMAT, NAK, NdFrameFormat, build_frame

log = logging.getLogger(__name__)

LINK_NAME = "mamoru-nd-adapter"
POLL_S = 0.05


@dataclass(frozen=True, slots=True)
class SendResult:
    acked: bool
    sends: int  # how many times the frame went out
    naks: int  # NAKs received for it


class VirtualNdAdapter:
    """A fake ND adapter; ``device_path`` is a symlink to its pty, like a udev name."""

    def __init__(self, fmt: NdFrameFormat = DEFAULT_FORMAT, link_dir: Path | None = None) -> None:
        self.fmt = fmt
        self._link_dir = link_dir
        self._cond = threading.Condition()
        self._answers: list[int] = []  # ACK/NAK bytes from the host, not yet consumed
        self._received = bytearray()  # everything the host ever wrote
        self._master: int | None = None
        self._slave: int | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    @property
    def device_path(self) -> Path:
        if self._link_dir is None:
            self._link_dir = Path(tempfile.mkdtemp(prefix="mamoru-nd-"))
        return self._link_dir / LINK_NAME

    def start(self) -> Path:
        self._open_pty()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="virtual-nd-adapter", daemon=True)
        self._thread.start()
        return self.device_path

    def stop(self, timeout: float = 3.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)
            self._thread = None
        self._close_pty()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def vanish(self) -> None:
        """The USB-serial chip is unplugged: the pty closes and the symlink goes."""
        self.stop()

    def reappear(self) -> Path:
        """Plugged back in: a fresh pty behind the same symlink."""
        return self.start()

    @property
    def received(self) -> bytes:
        with self._cond:
            return bytes(self._received)

    # ---- what the adapter sends --------------------------------------------------

    def send_caller(self, number: str | None = None, reason: Reason | None = None, *, date: str | None = None,
                    time_: str | None = None, corrupt_sends: int = 0,
                    wait_answer: bool = True) -> SendResult:
        """One caller as the adapter reports it (a number, or a reason letter), resent on NAK/silence.

        ``corrupt_sends``: that many first sends carry a wrong block check (a line hit).
        """
        if number is not None and reason is None:
            shown = number
        elif number is None and reason is not None:
            shown = Reason(reason).value
        else:
            raise ValueError("give a number or a reason")
        now = time.localtime()
        values = {CidField.DATE: date or time.strftime("%m%d", now), CidField.TIME: time_ or time.strftime("%H%M", now),
                  CidField.NMBR: shown}
        good = build_frame(self.fmt, values)
        bad = good[:-1] + bytes([good[-1] ^ 0x01]) if self.fmt.bcc else good[:-1]
        naks = 0
        for send in range(1, self.fmt.max_sends + 1):
            self.send_raw(bad if send <= corrupt_sends else good)
            if not wait_answer:
                return SendResult(False, send, naks)
            answer = self._wait_answer(self.fmt.resend_wait_s)
            if answer == ACK:
                return SendResult(True, send, naks)
            if answer == NAK:
                naks += 1
        return SendResult(False, self.fmt.max_sends, naks)

    def send_raw(self, data: bytes) -> None:
        """Bytes straight onto the serial line (garbage, half frames)."""
        master = self._master
        if master is None:
            raise OSError("virtual ND adapter is not running")
        os.write(master, data)

    def _wait_answer(self, timeout: float) -> int | None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._answers:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)
            return self._answers.pop(0)

    # ---- pty ------------------------------------------------------------------------

    def _open_pty(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)
        self._master, self._slave = master, slave
        link = self.device_path
        tmp = link.with_name(f".{link.name}.tmp")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        os.symlink(os.ttyname(slave), tmp)
        os.replace(tmp, link)
        with self._cond:
            self._answers.clear()

    def _close_pty(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.device_path.unlink()
        for fd in (self._master, self._slave):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._master = self._slave = None

    def _run(self) -> None:
        master = self._master
        while not self._stop.is_set() and master is not None:
            ready, _, _ = select.select([master], [], [], POLL_S)
            if not ready:
                continue
            try:
                data = os.read(master, 256)
            except OSError:
                continue  # no host has the slave open right now (EIO); keep waiting
            with self._cond:
                self._received += data
                self._answers += [b for b in data if b in (ACK, NAK)]
                self._cond.notify_all()
