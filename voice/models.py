"""Installing Vosk speech models: download, verify, unpack, swap in atomically.

The appliance is installed once by a relative and then left alone, often on a
flaky home connection and an SD card that may lose power mid-write. So:

* the model list (``model-list.json``, published by alphacephei with name, url,
  size and md5 for every model) is the source of truth for what to fetch and
  how to verify it; a download is checked for BOTH size and md5;
* every network read has a timeout (a stalled server fails, never hangs);
* everything is staged next to the target in ``models_dir`` (same filesystem,
  so the final step is a ``rename``), and the old model is only removed after
  the new one is in place: at any moment ``<models_dir>/<lang>`` is either the
  old complete model or the new complete one, and a failure leaves no debris;
* zip entries with absolute paths or ``..`` are refused (zip slip).

Standard library only (urllib, zipfile, hashlib): no vosk needed to install.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import IO, Any
from urllib.parse import urljoin

from screening.core.clock import iso_utc, utc_now
from voice.asr import is_vosk_model_dir

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://alphacephei.com/vosk/models"
MODEL_LIST_FILE = "model-list.json"
DEFAULT_TIMEOUT_S = 30.0
CHUNK_BYTES = 1 << 16
PROGRESS_EVERY_S = 5.0
VOSK_LICENCE = "Apache-2.0"  # the official small models (alphacephei.com/vosk/models)
INSTALL_INFO_FILE = "mamoru-model.json"  # written into an installed model: what it is and where from

# The small (Raspberry Pi sized) official models, one per supported language.
OFFICIAL_MODELS: dict[str, str] = {
    "ja": "vosk-model-small-ja-0.22",
    "en": "vosk-model-small-en-us-0.15",
    "ko": "vosk-model-small-ko-0.22",
}


class ModelInstallError(Exception):
    """Installing a model failed; nothing was changed in ``models_dir``."""


@dataclass(frozen=True, slots=True)
class ModelEntry:
    """One model of ``model-list.json``: what to download and how to verify it."""

    name: str
    url: str
    size: int
    md5: str


# ---- the model list ------------------------------------------------------------------


def open_url(url: str, timeout: float) -> Any:
    """urlopen with the socket timeout applying to the connect and to every read."""
    request = urllib.request.Request(url, headers={"User-Agent": "mamoru-model-installer"})
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        raise ModelInstallError(f"{url}: HTTP {exc.code} {exc.reason}") from exc
    except urllib.error.URLError as exc:
        raise ModelInstallError(f"{url}: cannot connect: {exc.reason}") from exc
    except TimeoutError as exc:
        raise ModelInstallError(f"{url}: no answer within {timeout:g} s") from exc
    except (OSError, HTTPException) as exc:
        raise ModelInstallError(f"{url}: {exc}") from exc


def fetch_model_list(list_url: str, timeout: float) -> list[dict[str, Any]]:
    """Download and parse ``model-list.json`` (a JSON array of model objects)."""
    with open_url(list_url, timeout) as response:
        try:
            data = response.read(16 << 20)
        except TimeoutError as exc:
            raise ModelInstallError(f"{list_url}: stalled (no data for {timeout:g} s)") from exc
        except (OSError, HTTPException) as exc:
            raise ModelInstallError(f"{list_url}: {exc}") from exc
    try:
        entries = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelInstallError(f"{list_url}: not a valid model list ({exc})") from exc
    if not isinstance(entries, list):
        raise ModelInstallError(f"{list_url}: not a valid model list (expected a JSON array)")
    return [e for e in entries if isinstance(e, dict)]


def find_entry(entries: list[dict[str, Any]], name: str, list_url: str) -> ModelEntry:
    """The entry called ``name``; its url resolved against the list's URL (mirrors may be relative)."""
    for entry in entries:
        if entry.get("name") != name:
            continue
        try:
            size, md5, url = int(entry["size"]), str(entry["md5"]).lower(), str(entry["url"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelInstallError(f"{list_url}: entry {name} lacks url/size/md5 ({exc})") from exc
        if size <= 0 or len(md5) != 32:
            raise ModelInstallError(f"{list_url}: entry {name} has a bad size or md5")
        return ModelEntry(name, urljoin(list_url, url), size, md5)
    raise ModelInstallError(f"{list_url}: no model called {name}")


# ---- download ------------------------------------------------------------------------


def download(entry: ModelEntry, out: IO[bytes], timeout: float) -> None:
    """Stream ``entry.url`` into ``out``; verify size and md5. Logs progress."""
    md5 = hashlib.md5(usedforsecurity=False)
    received = 0
    last_log = time.monotonic()
    with open_url(entry.url, timeout) as response:
        announced = response.headers.get("Content-Length")
        if announced is not None and announced.isdigit() and int(announced) != entry.size:
            raise ModelInstallError(f"{entry.url}: server announces {announced} bytes, "
                                    f"the model list says {entry.size}: refusing")
        while True:
            chunk = read_chunk(response, entry.url, timeout)
            if not chunk:
                break
            received += len(chunk)
            if received > entry.size:
                raise ModelInstallError(f"{entry.url}: more data than the {entry.size} bytes listed: refusing")
            md5.update(chunk)
            out.write(chunk)
            if time.monotonic() - last_log >= PROGRESS_EVERY_S:
                last_log = time.monotonic()
                log.info("%s: %d%% (%.1f of %.1f MB)", entry.name, 100 * received // entry.size,
                         received / 1e6, entry.size / 1e6)
    if received != entry.size:
        raise ModelInstallError(f"{entry.url}: download truncated ({received} of {entry.size} bytes)")
    if md5.hexdigest() != entry.md5:
        raise ModelInstallError(f"{entry.url}: md5 mismatch (got {md5.hexdigest()}, "
                                f"expected {entry.md5}): corrupt download")
    log.info("%s: downloaded %.1f MB, size and md5 verified", entry.name, received / 1e6)


def read_chunk(response: Any, url: str, timeout: float) -> bytes:
    try:
        return bytes(response.read(CHUNK_BYTES))
    except TimeoutError as exc:
        raise ModelInstallError(f"{url}: download stalled (no data for {timeout:g} s)") from exc
    except (OSError, HTTPException) as exc:
        raise ModelInstallError(f"{url}: download failed: {exc}") from exc


# ---- unpacking -------------------------------------------------------------------------


def _check_member(name: str) -> None:
    """Refuse absolute paths, drive letters and ``..`` anywhere (zip slip)."""
    for path in (PurePosixPath(name), PureWindowsPath(name)):
        if path.is_absolute() or path.drive or path.root or ".." in path.parts:
            raise ModelInstallError(f"unsafe path in model zip: {name!r}: refusing")


def unpack(zip_path: Path, dest: Path) -> Path:
    """Unpack into the empty dir ``dest`` after checking every entry; returns the model root."""
    try:
        with zipfile.ZipFile(zip_path) as archive:
            members = archive.infolist()
            for member in members:
                _check_member(member.filename)
            needed = sum(m.file_size for m in members)
            free = shutil.disk_usage(dest).free
            if needed > free:
                raise ModelInstallError(f"not enough disk space in {dest}: the model needs "
                                        f"{needed / 1e6:.0f} MB, {free / 1e6:.0f} MB free")
            archive.extractall(dest)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as exc:
        raise ModelInstallError(f"{zip_path.name}: not a valid zip ({exc})") from exc
    return model_root(dest)


def model_root(unpacked: Path) -> Path:
    """The model inside an unpacked zip: the dir itself or its single top-level folder."""
    if is_vosk_model_dir(unpacked):
        return unpacked
    children = [c for c in unpacked.iterdir() if c.is_dir()]
    if len(children) == 1 and is_vosk_model_dir(children[0]):
        return children[0]
    raise ModelInstallError("the zip does not contain a Vosk model (no am/final.mdl or conf/model.conf)")


# ---- swapping in ------------------------------------------------------------------------


def swap_in(new: Path, target: Path) -> None:
    """Make ``new`` be ``target``: old aside, new in, old removed; restore the old one on failure."""
    old: Path | None = None
    if target.exists() or target.is_symlink():
        old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.old-"))
        os.rmdir(old)
        os.rename(target, old)
    try:
        os.rename(new, target)
    except OSError:
        if old is not None:
            os.rename(old, target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextmanager
def install_lock(models_dir: Path) -> Iterator[None]:
    """One install at a time per models_dir (two would fight over the same names)."""
    with open(models_dir / ".install.lock", "a+b") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise ModelInstallError(f"another model install is running in {models_dir}") from exc
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def remove_leftovers(models_dir: Path, language: str) -> None:
    """Staging dirs of an install that lost power; safe under the install lock."""
    for prefix in (f".{language}.installing-", f".{language}.old-"):
        for stale in models_dir.glob(prefix + "*"):
            log.info("removing leftover %s", stale)
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)


def install_model(
    language: str,
    models_dir: Path,
    base_url: str = DEFAULT_BASE_URL,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> Path:
    """Download, verify and install the official small model for ``language``.

    Returns ``<models_dir>/<language>``. Raises ModelInstallError (one clear
    sentence) on any failure, leaving ``models_dir`` as it was.
    """
    language = str(language)
    if language not in OFFICIAL_MODELS:
        raise ModelInstallError(f"no model for language {language!r} (choose {', '.join(OFFICIAL_MODELS)})")
    models_dir = Path(models_dir)
    try:
        models_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelInstallError(f"cannot create {models_dir}: {exc.strerror or exc}") from exc
    list_url = base_url.rstrip("/") + "/" + MODEL_LIST_FILE
    with install_lock(models_dir):
        remove_leftovers(models_dir, language)
        entry = find_entry(fetch_model_list(list_url, timeout), OFFICIAL_MODELS[language], list_url)
        free = shutil.disk_usage(models_dir).free
        if entry.size > free:
            raise ModelInstallError(f"not enough disk space in {models_dir}: {entry.name} is "
                                    f"{entry.size / 1e6:.0f} MB, {free / 1e6:.0f} MB free")
        log.info("downloading %s (%.1f MB) from %s", entry.name, entry.size / 1e6, entry.url)
        staging = Path(tempfile.mkdtemp(dir=models_dir, prefix=f".{language}.installing-"))
        try:
            root = _fetch_and_unpack(entry, staging, timeout)
            _write_install_info(root, entry)
            target = models_dir / language
            swap_in(root, target)
        except OSError as exc:
            raise ModelInstallError(f"installing into {models_dir} failed: {exc}") from exc
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    log.info("installed %s as %s", entry.name, target)
    return target


def _fetch_and_unpack(entry: ModelEntry, staging: Path, timeout: float) -> Path:
    zip_path = staging / "model.zip"
    with open(zip_path, "wb") as out:
        download(entry, out, timeout)
    unpacked = staging / "unpacked"
    unpacked.mkdir()
    root = unpack(zip_path, unpacked)
    zip_path.unlink()
    return root


def _write_install_info(root: Path, entry: ModelEntry) -> None:
    info = {"name": entry.name, "url": entry.url, "md5": entry.md5, "size": entry.size,
            "engine": "vosk", "licence": VOSK_LICENCE, "source": "url",
            "installed_at": iso_utc(utc_now(), timespec="seconds")}
    (root / INSTALL_INFO_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")


def installed_model_info(model_dir: Path) -> dict[str, Any] | None:
    """What ``install_model`` recorded about an installed model, or None."""
    try:
        return dict(json.loads((Path(model_dir) / INSTALL_INFO_FILE).read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None
