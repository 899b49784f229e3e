"""A virtual modem that answers exactly as a recorded one did (``mamoru-line-transcript/1``).

A transcript from ``mamoru modem probe`` or ``mamoru line record-calls`` on a real modem becomes a
dialect test: ``ModemLine`` starts against this pty and must reach "ready" on the recorded replies
alone, and the recorded unsolicited lines (RING, caller ID, DLE events) are played after start-up
at their recorded offsets (scaled by ``time_scale``). A command the transcript does not hold is
answered ERROR, as a real modem answers one it does not know (a bare ``AT``, the idle health
check, is answered OK); a recorded TIMEOUT stays silent.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import select
import shutil
import tempfile
import threading
import time
import tty
from pathlib import Path

from firmware.line_transcript import LineTranscript

__all__ = ["ReplayModem"]

log = logging.getLogger("firmware.virtual_modem")

LINK_NAME = "mamoru-modem"
MAX_COMMAND = 256
SELECT_S = 0.05


class ReplayModem:
    """A pty replaying ``transcript``; a context manager (started on enter)."""

    def __init__(self, transcript: LineTranscript, *, time_scale: float = 1.0) -> None:
        self.transcript = transcript
        self.time_scale = time_scale
        self.commands: list[str] = []  # what the host sent, in order
        self._dir: Path | None = None
        self._master = self._slave = -1
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._echo = True
        self._last_command = transcript.exchanges[-1].command if transcript.exchanges else None
        self._timeline_started: float | None = None
        self._next_unsolicited = 0

    @property
    def device_path(self) -> Path:
        if self._dir is None:
            raise RuntimeError("device_path is known only after start()")
        return self._dir / LINK_NAME

    def start(self) -> Path:
        self._dir = Path(tempfile.mkdtemp(prefix="mamoru-replay-"))
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        os.set_blocking(self._master, False)
        os.symlink(os.ttyname(self._slave), self.device_path)
        if self._last_command is None:
            self._timeline_started = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="replay-modem", daemon=True)
        self._thread.start()
        return self.device_path

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        for fd in (self._master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> ReplayModem:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def unsolicited_done(self) -> bool:
        return self._next_unsolicited >= len(self.transcript.unsolicited)

    # ---- the pty thread ------------------------------------------------------------------

    def _run(self) -> None:
        pending = b""
        while not self._stop.is_set():
            ready, _, _ = select.select([self._master], [], [], SELECT_S)
            if ready:
                try:
                    data = os.read(self._master, 1024)
                except (BlockingIOError, OSError):
                    data = b""
                pending += data
                while (cut := re.search(rb"[\r\n]", pending)) is not None:
                    line, pending = pending[: cut.start()], pending[cut.end() :]
                    if line.strip():
                        self._command(line.decode("latin-1").strip())
                if len(pending) > MAX_COMMAND:
                    pending = b""
                    self._write("\r\nERROR\r\n")
            self._play_unsolicited()

    def _command(self, command: str) -> None:
        self.commands.append(command)
        if self._echo:
            self._write(command + "\r")
        upper = re.sub(r"\s+", "", command).upper()
        exchange = self.transcript.reply_to(command)
        if exchange is None and upper == "AT":  # every modem says OK to a bare AT (the idle health check)
            self._write("\r\nOK\r\n")
            return
        if exchange is None:
            self._write("\r\nERROR\r\n")
            return
        if exchange.final != "TIMEOUT":
            self._write("".join(f"\r\n{line}\r\n" for line in exchange.lines) + f"\r\n{exchange.final}\r\n")
            if upper in ("ATZ", "ATE1", "AT&F"):
                self._echo = True
            elif upper == "ATE0":
                self._echo = False
        if self._timeline_started is None and upper == re.sub(r"\s+", "", self._last_command or "").upper():
            self._timeline_started = time.monotonic()  # start-up is done: the line's own traffic begins

    def _play_unsolicited(self) -> None:
        if self._timeline_started is None:
            return
        items = self.transcript.unsolicited
        elapsed = (time.monotonic() - self._timeline_started) / max(self.time_scale, 1e-6)
        while self._next_unsolicited < len(items) and items[self._next_unsolicited].at_s <= elapsed:
            text = items[self._next_unsolicited].text
            self._next_unsolicited += 1
            if text.startswith("<DLE>") and len(text) == 6:
                self._write_bytes(b"\x10" + text[5].encode("latin-1"))
            else:
                self._write(f"\r\n{text}\r\n")

    def _write(self, text: str) -> None:
        self._write_bytes(text.encode("latin-1", "replace"))

    def _write_bytes(self, data: bytes) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._master, data)
