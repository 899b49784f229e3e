"""``status.json``: what the running daemon tells the web page's health view.

The web page must not open the modem to see whether the line works (that
would disturb a live call), so the daemon writes a small JSON file next to the
database: the line's state and since when, the last call, whether a speech
model is loaded, its version and pid, and when it last wrote. The file is
replaced atomically (temp file + rename), on every line state change and
otherwise at most every ``WRITE_INTERVAL_S``; ``updated_at`` then doubles as a
heartbeat, so a reader can tell a stopped or wedged daemon from a quiet one.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import Any

from screening.core.clock import iso_utc, parse_iso_utc, utc_now
from screening.core.files import atomic_write_bytes

log = logging.getLogger(__name__)

STATUS_FILE_NAME = "status.json"  # next to the database (screening.web.context reads the same name)
STATUS_FORMAT = "mamoru-status/1"
WRITE_INTERVAL_S = 30.0  # heartbeat; a reader calls the daemon stale after a few missed ones
STALE_AFTER_S = 120.0
MAX_STATUS_BYTES = 64 * 1024  # a status is a few hundred bytes; never read a huge file


class LineState(StrEnum):
    OK = "ok"
    FAULT = "fault"
    STOPPED = "stopped"  # the daemon ended cleanly (SIGTERM, end of the demo)


class LineProblem(StrEnum):
    """Something about a working line that a person should look at."""

    HANDSET_STUCK = "handset_stuck"  # off-hook far too long, or reported off-hook while the line rang


class StatusError(ValueError):
    """The status file exists but cannot be read as a status."""


@dataclass(frozen=True, slots=True)
class DaemonStatus:
    line_state: LineState
    line_since: datetime
    line_message: str
    last_call_at: datetime | None
    speech_model: bool | None  # None: the daemon was not told (a test rig without voice)
    version: str
    pid: int
    updated_at: datetime
    line_problem: LineProblem | None = None

    def age_s(self, now: datetime) -> float:
        return (now - self.updated_at).total_seconds()

    def stale(self, now: datetime, after_s: float = STALE_AFTER_S) -> bool:
        """No heartbeat for ``after_s``: the daemon is gone or wedged (a clean stop is not stale)."""
        return self.line_state is not LineState.STOPPED and self.age_s(now) > after_s

    def to_json(self) -> dict[str, Any]:
        return {
            "format": STATUS_FORMAT,
            "line": {"state": self.line_state.value, "since": iso_utc(self.line_since, timespec="seconds"),
                     "message": self.line_message,
                     "problem": self.line_problem.value if self.line_problem else None},
            "last_call_at": iso_utc(self.last_call_at, timespec="seconds") if self.last_call_at else None,
            "speech_model_loaded": self.speech_model,
            "version": self.version,
            "pid": self.pid,
            "updated_at": iso_utc(self.updated_at, timespec="seconds"),
        }

    @classmethod
    def from_json(cls, document: object) -> DaemonStatus:
        try:
            if not isinstance(document, Mapping) or document.get("format") != STATUS_FORMAT:
                raise StatusError(f"not a {STATUS_FORMAT} document")
            line = document["line"]
            model = document.get("speech_model_loaded")
            pid = document["pid"]
            if model is not None and not isinstance(model, bool):
                raise StatusError("speech_model_loaded must be true, false or null")
            if not isinstance(pid, int) or isinstance(pid, bool):
                raise StatusError("pid must be an integer")
            last = document.get("last_call_at")
            problem = line.get("problem")
            return cls(
                line_state=LineState(line["state"]),
                line_since=_parse(line["since"]),
                line_message=str(line.get("message", "")),
                last_call_at=_parse(last) if last else None,
                speech_model=model,
                version=str(document.get("version", "")),
                pid=pid,
                updated_at=_parse(document["updated_at"]),
                line_problem=LineProblem(problem) if problem else None,
            )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, StatusError):
                raise
            raise StatusError(f"malformed status: {exc!r}") from None


def read_status(path: Path) -> DaemonStatus | None:
    """The status the daemon last wrote; None if it never wrote one. Raises StatusError if damaged."""
    try:
        with path.open("rb") as source:
            data = source.read(MAX_STATUS_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StatusError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_STATUS_BYTES:
        raise StatusError(f"{path} is too large to be a status file")
    try:
        document = json.loads(data)
    except ValueError as exc:
        raise StatusError(f"{path} is not JSON: {exc}") from None
    return DaemonStatus.from_json(document)


@cache
def mamoru_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mamoru")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


class StatusWriter:
    """Keeps ``status.json`` current for one daemon. Never raises: a full disk must not stop screening.

    No I/O in the constructor; the first write happens at ``started()``.
    """

    def __init__(
        self,
        path: Path,
        *,
        speech_model: bool | None = None,
        interval_s: float = WRITE_INTERVAL_S,
        clock: Callable[[], datetime] = utc_now,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = Path(path)
        self.interval_s = interval_s
        self._clock = clock
        self._monotonic = monotonic
        now = clock()
        self._status = DaemonStatus(LineState.OK, now, "", None, speech_model, mamoru_version(), os.getpid(), now)
        self._written_at: float | None = None

    @classmethod
    def beside(cls, db_path: Path, **kwargs: Any) -> StatusWriter:
        """The writer for the status file next to the database (where the web page looks)."""
        return cls(Path(db_path).parent / STATUS_FILE_NAME, **kwargs)

    @property
    def status(self) -> DaemonStatus:
        return self._status

    def started(self) -> None:
        self._line(LineState.OK, "")

    def line_fault(self, message: str) -> None:
        self._line(LineState.FAULT, message)

    def line_restored(self, message: str) -> None:
        self._line(LineState.OK, message)

    def stopped(self) -> None:
        self._line(LineState.STOPPED, "")

    def line_problem(self, problem: LineProblem | None) -> None:
        """Set (or clear, with None) a problem of a working line; written at once when it changes."""
        if problem is not self._status.line_problem:
            self._status = replace(self._status, line_problem=problem)
            self._write()

    def call_screened(self) -> None:
        """Recorded now, written with the next heartbeat (never delays the call loop by a write)."""
        self._status = replace(self._status, last_call_at=self._clock())

    def tick(self) -> None:
        """From the call loop on every wake-up: writes only when the heartbeat is due."""
        if self._written_at is None or self._monotonic() - self._written_at >= self.interval_s:
            self._write()

    def _line(self, state: LineState, message: str) -> None:
        if state is not self._status.line_state or self._written_at is None:
            self._status = replace(self._status, line_state=state, line_since=self._clock(), line_message=message)
        self._write()

    def _write(self) -> None:
        self._status = replace(self._status, updated_at=self._clock())
        self._written_at = self._monotonic()
        data = (json.dumps(self._status.to_json(), ensure_ascii=False, indent=1) + "\n").encode()
        try:
            # Readers (the web page) may be another user: 0644, it holds nothing secret. Not durable: a
            # heartbeat need not survive a power cut, and an fsync every 30 s would wear the SD card.
            atomic_write_bytes(self.path, data, mode=0o644, durable=False)
        except OSError as exc:
            log.warning("could not write the status file %s: %s", self.path, exc.strerror or exc)


def _parse(text: object) -> datetime:
    if not isinstance(text, str):
        raise ValueError(f"expected a time, got {text!r}")
    return parse_iso_utc(text)
