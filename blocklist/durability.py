"""What "durable" means for the store's own files, in one place.

A call row must survive a power cut once the call has ended, and so must a record that
could only be spooled. SQLite's ``synchronous=FULL`` in WAL mode fsyncs the WAL on every
commit (``NORMAL`` only at checkpoints: a cut loses every commit since the last one —
measured on ext4 with an aborted journal: NORMAL kept 0 of 3 committed calls, FULL all).
The spool is a plain file, so each append is fsync'ed, and its directory entry once when
the file is created.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import IO

__all__ = ["SYNCHRONOUS", "append_durably", "fsync_dir"]

log = logging.getLogger(__name__)

SYNCHRONOUS = "FULL"  # PRAGMA synchronous for every store connection that writes


def fsync_dir(directory: Path) -> None:
    """Make a new file's directory entry durable (a power cut could otherwise lose the file)."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        log.debug("cannot open %s to fsync it: %s", directory, exc)
        return
    try:
        os.fsync(fd)
    except OSError as exc:  # some filesystems refuse fsync on directories; the file itself is synced
        log.debug("cannot fsync directory %s: %s", directory, exc)
    finally:
        os.close(fd)


def append_durably(f: IO[str], text: str) -> None:
    """Append ``text`` to an open file and fsync it; raises OSError as the write would."""
    f.write(text)
    f.flush()
    os.fsync(f.fileno())
