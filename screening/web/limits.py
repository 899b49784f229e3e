"""How much of a request body is read, by whom and where it is kept.

- Without any session (not even the pre-session of the login form) an unsafe request is
  refused before one byte of its body is read: it could not pass the CSRF check anyway.
- Anonymous visitors (login, first-run setup, language switch) send a few hundred bytes:
  ANONYMOUS_BODY_BYTES, never a multipart upload.
- Logged-in users: a form is FORM_BODY_BYTES; a multipart body only on the upload routes,
  each with its own cap.
- The body is spooled to a file in the data directory once it outgrows
  SPOOL_IN_MEMORY_BYTES (not /tmp, which is RAM on current Debian), so twenty uploads at
  once cost disk, not the memory screening needs.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import AsyncIterator
from enum import StrEnum
from pathlib import Path
from typing import IO

from starlette.types import Message, Receive

ANONYMOUS_BODY_BYTES = 16 * 1024
FORM_BODY_BYTES = 64 * 1024
MULTIPART_OVERHEAD_BYTES = 64 * 1024  # boundaries, part headers and the other fields of an upload form
# The file caps of the pages (pages_lists.MAX_IMPORT_BYTES, recordings.MAX_RECORDING_BYTES,
# provisioning MAX_BUNDLE_BYTES) plus the overhead; tests/test_web_hardening.py keeps them in step.
UPLOAD_ROUTES: tuple[tuple[re.Pattern[str], int], ...] = (
    (re.compile(r"/lists/import"), 20 * 1024 * 1024 + MULTIPART_OVERHEAD_BYTES),
    (re.compile(r"/settings/announcements/[^/]+"), 16 * 1024 * 1024 + MULTIPART_OVERHEAD_BYTES),
    (re.compile(r"/settings/provision"), 4 * 1024 * 1024 + MULTIPART_OVERHEAD_BYTES),
)
MAX_BODY_BYTES = max(limit for _, limit in UPLOAD_ROUTES)
# A body over its cap is still read (and dropped) up to this much, so a browser sees the 413 page
# instead of a reset connection; beyond it the connection is simply closed.
DRAIN_LIMIT_BYTES = MAX_BODY_BYTES + 1024 * 1024
SPOOL_IN_MEMORY_BYTES = 256 * 1024
# The whole body must arrive within this (slow-body slowloris): login forms are tiny; a user's
# 20 MB upload over a poor Wi-Fi link (1 Mbit/s) takes under three minutes.
ANONYMOUS_BODY_TIMEOUT_S = 10.0
USER_BODY_TIMEOUT_S = 300.0
REPLAY_CHUNK_BYTES = 64 * 1024
MULTIPART = "multipart/form-data"


class Sender(StrEnum):
    """Who sends an unsafe request, as far as the session cookie tells before the body is read."""

    NOBODY = "nobody"  # no valid session at all
    ANONYMOUS = "anonymous"  # the pre-session of the login and setup forms
    USER = "user"


def body_limit(sender: Sender, path: str, content_type: str) -> int:
    """The most body bytes this request may send (0 = none: refuse before reading)."""
    if sender is Sender.NOBODY:
        return 0
    if sender is Sender.ANONYMOUS:
        return 0 if content_type == MULTIPART else ANONYMOUS_BODY_BYTES
    if content_type == MULTIPART:
        return next((limit for pattern, limit in UPLOAD_ROUTES if pattern.fullmatch(path)), FORM_BODY_BYTES)
    return FORM_BODY_BYTES


class BodyTooLarge(Exception):
    pass


class ClientGone(Exception):
    pass


class SpooledBody:
    """A request body read once (up to a limit) into memory, then a file; replayed as often as needed."""

    def __init__(self, spool_dir: Path | None) -> None:
        self._spool_dir = spool_dir
        self._file: IO[bytes] | None = None
        self.size = 0

    async def read(self, receive: Receive, limit: int, *, drain: bool) -> None:
        """Read the whole body; BodyTooLarge beyond ``limit`` (with ``drain``, after reading and dropping
        up to DRAIN_LIMIT_BYTES, so that a browser shows the 413 page)."""
        spool_dir = str(self._spool_dir) if self._spool_dir and self._spool_dir.is_dir() else None
        self._file = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY_BYTES, dir=spool_dir)
        too_large = False
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise BodyTooLarge if too_large else ClientGone
            chunk = message.get("body", b"")
            self.size += len(chunk)
            if self.size > limit:
                too_large = True
                if not drain or self.size > DRAIN_LIMIT_BYTES:
                    raise BodyTooLarge
            elif chunk:
                self._file.write(chunk)
            if not message.get("more_body", False):
                break
        if too_large:
            raise BodyTooLarge

    async def _chunks(self) -> AsyncIterator[bytes]:
        assert self._file is not None
        self._file.seek(0)
        while chunk := self._file.read(REPLAY_CHUNK_BYTES):
            yield chunk

    def replay(self, receive: Receive) -> Receive:
        """A ``receive`` that hands out the stored body again, then passes on to the real one."""
        chunks = self._chunks()
        done = False

        async def replayed() -> Message:
            nonlocal done
            if not done:
                chunk = await anext(chunks, None)
                if chunk is not None:
                    return {"type": "http.request", "body": chunk, "more_body": True}
                done = True
                return {"type": "http.request", "body": b"", "more_body": False}
            return await receive()

        return replayed

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
