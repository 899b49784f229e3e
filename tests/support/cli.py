"""``mamoru ARGS`` run in this process: the same ``main`` the console script runs, with its stdin,
stdout and stderr captured (a subprocess costs ~0.6 s of imports each; keep a few real ones)."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping


@contextlib.contextmanager
def _environment(changes: Mapping[str, str | None]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in changes}
    try:
        for name, value in changes.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def run_mamoru(*args: str, stdin: str | None = None,
               env: Mapping[str, str | None] | None = None) -> subprocess.CompletedProcess[str]:
    """Exit code and output of ``mamoru ARGS``; ``env`` sets (or, with None, removes) variables for the
    run. ``MAMORU_CONFIG`` is removed unless given. Never raises for a failing command."""
    from screening.cli import main

    changes: dict[str, str | None] = {"MAMORU_CONFIG": None, **(env or {})}
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", write_through=True)  # exports write bytes
    err = io.StringIO()
    saved_stdin = sys.stdin
    sys.stdin = io.StringIO(stdin or "")  # not a terminal, like a pipe
    try:
        with _environment(changes), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as exc:  # argparse's usage errors
                code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.stdin = saved_stdin
    return subprocess.CompletedProcess(["mamoru", *args], code, out.buffer.getvalue().decode("utf-8"), err.getvalue())
