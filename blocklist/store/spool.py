"""The outage spool: a JSON-lines file of records not yet in the database.

``<db name>.spool.jsonl`` beside the database (or in ``spool_dir``). Appends are
durable (fsync, and the directory once when the file is created) and every access
holds an ``flock``, so two processes sharing a database never interleave or replay
each other's half-written lines. The engine decides *when* to spool and replay;
this module only knows the file.
"""

from __future__ import annotations

import fcntl
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from blocklist.durability import append_durably
from blocklist.store.records import Record
from screening.core.files import fsync_dir

__all__ = ["SPOOL_MARKER", "Spool", "nothing"]

log = logging.getLogger(__name__)

SPOOL_MARKER = "spool_last_rid"  # meta key: rid of the last spooled record applied


class Spool:
    """One database's spool file; waits at most ``busy_timeout`` for another process's lock."""

    def __init__(self, path: Path, busy_timeout: float) -> None:
        self.path = path
        self._busy_timeout = busy_timeout

    def has_data(self) -> bool:
        try:
            return self.path.stat().st_size > 0
        except OSError:
            return False

    def append(self, rec: Record) -> None:
        """Append one record durably. Raises OSError when the file cannot be written."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        created = not self.path.exists()
        with self.locked() as spool:
            append_durably(spool, rec.to_json() + "\n")
        if created:
            fsync_dir(self.path.parent)

    @contextmanager
    def locked(self) -> Iterator[Any]:
        """The spool file, opened for append and flock'ed; waits at most busy_timeout."""
        with open(self.path, "a+", encoding="utf-8") as spool:
            deadline = time.monotonic() + self._busy_timeout
            while True:
                try:
                    fcntl.flock(spool, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise TimeoutError(f"spool {self.path} is locked by another process") from None
                    time.sleep(0.01)
            try:
                yield spool
            finally:
                fcntl.flock(spool, fcntl.LOCK_UN)

    @staticmethod
    def read(spool: Any) -> list[Record]:
        """Records in file order; a torn last line (power cut mid-write) is skipped with a warning."""
        spool.seek(0)
        records = []
        for number, line in enumerate(spool, 1):
            if not line.strip():
                continue
            try:
                records.append(Record.from_json(line))
            except (ValueError, KeyError) as exc:
                log.warning("skipping unreadable spool line %d (%s): %r", number, exc, line[:200])
        return records


@contextmanager
def nothing() -> Iterator[None]:
    """Stands in for ``Spool.locked()`` when there is no spool to read."""
    yield None
