"""Replacing a file so that a reader, or a power cut, sees the old bytes or the new ones, never half.

One recipe for every file the unit rewrites (config, accounts, feed metadata, prompts,
bundle state, status): write a temp file in the same directory (a rename is only atomic
within one file system), fsync it, rename it over the target, fsync the directory (the
rename is a directory entry, lost in a power cut unless that is synced too). Stdlib only.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["DEFAULT_MODE", "atomic_write_bytes", "atomic_write_text", "fsync_dir", "staged_file"]

log = logging.getLogger(__name__)

DEFAULT_MODE = 0o644  # a new file's mode when none is given: readable by the other services' users


def fsync_dir(directory: Path) -> None:
    """Make a new or renamed file's directory entry durable (a power cut could otherwise lose it)."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        log.debug("cannot open %s to fsync it: %s", directory, exc)
        return
    try:
        os.fsync(fd)
    except OSError as exc:  # some file systems refuse fsync on directories; the file itself is synced
        log.debug("cannot fsync directory %s: %s", directory, exc)
    finally:
        os.close(fd)


def _mode_for(path: Path, mode: int | None) -> int:
    if mode is not None:
        return mode
    try:
        return path.stat().st_mode & 0o777  # keep a private file private
    except FileNotFoundError:
        return DEFAULT_MODE


@contextlib.contextmanager
def staged_file(
    path: Path,
    data: bytes,
    *,
    mode: int | None = None,
    owner_like: os.stat_result | None = None,
    durable: bool = True,
) -> Iterator[Path]:
    """A sibling temp file holding ``data``, renamed over ``path`` when the block ends without error.

    The block may read the temp file back (validate the exact bytes about to go live) or
    raise to abandon it: then ``path`` is untouched and the temp file removed. ``mode``
    None keeps ``path``'s current mode (``DEFAULT_MODE`` for a new file). Run as root,
    the file gets ``owner_like``'s owner, so a service user can still read what ``sudo``
    wrote. ``durable=False`` skips the fsyncs, for files rewritten too often to be worth an
    SD-card write each (a heartbeat); the rename is atomic all the same.
    """
    path = Path(path)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    temp = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), _mode_for(path, mode))  # before the data: secrets are never world-readable
            if owner_like is not None and os.geteuid() == 0:
                os.fchown(out.fileno(), owner_like.st_uid, owner_like.st_gid)
            out.write(data)
            out.flush()
            if durable:
                os.fsync(out.fileno())
        yield temp
        os.replace(temp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
    if durable:
        fsync_dir(path.parent)


def atomic_write_bytes(
    path: Path,
    data: bytes,
    *,
    mode: int | None = None,
    owner_like: os.stat_result | None = None,
    durable: bool = True,
) -> None:
    """Replace ``path`` with ``data`` atomically (see ``staged_file`` for the arguments)."""
    with staged_file(path, data, mode=mode, owner_like=owner_like, durable=durable):
        pass


def atomic_write_text(
    path: Path,
    text: str,
    *,
    encoding: str = "utf-8",
    mode: int | None = None,
    owner_like: os.stat_result | None = None,
    durable: bool = True,
) -> None:
    """Replace ``path`` with ``text`` atomically (see ``staged_file`` for the arguments)."""
    atomic_write_bytes(path, text.encode(encoding), mode=mode, owner_like=owner_like, durable=durable)
