"""What "durable" means for the store's own files, in one place.

A call row must survive a power cut once the call has ended, and so must a record that
could only be spooled. SQLite's ``synchronous=FULL`` in WAL mode fsyncs the WAL on every
commit (``NORMAL`` only at checkpoints: a cut loses every commit since the last one —
measured on ext4 with an aborted journal: NORMAL kept 0 of 3 committed calls, FULL all).
The spool is a plain file, so each append is fsync'ed, and its directory entry once when
the file is created (``screening.core.files.fsync_dir``).
"""

from __future__ import annotations

import os
from typing import IO

__all__ = ["SYNCHRONOUS", "append_durably"]

SYNCHRONOUS = "FULL"  # PRAGMA synchronous for every store connection that writes


def append_durably(f: IO[str], text: str) -> None:
    """Append ``text`` to an open file and fsync it; raises OSError as the write would."""
    f.write(text)
    f.flush()
    os.fsync(f.fileno())
