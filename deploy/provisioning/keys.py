"""Issuer key files: the office's private signing key and the public keys a unit trusts.

``issuer.key`` (PKCS#8 PEM, 0600) stays at the issuing office; ``issuer.pub.json`` is
baked into images (``/etc/mamoru/issuer-keys``). Key ids are recomputed from the key
material, never read from the file, because signatures name keys by id.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from securesystemslib.exceptions import FormatError
from securesystemslib.formats import encode_canonical
from securesystemslib.signer import CryptoSigner, SSlibKey

from .bundle import BundleError, IssuerKey

log = logging.getLogger(__name__)

DEFAULT_ISSUER_KEYS_DIR = Path("/etc/mamoru/issuer-keys")
PRIVATE_KEY_NAME = "issuer.key"
PUBLIC_KEY_NAME = "issuer.pub.json"


def public_key_document(key: SSlibKey, issuer: str) -> dict[str, Any]:
    return {"issuer": issuer, "keyid": key.keyid, **key.to_dict()}


def generate_issuer_key(directory: Path, issuer: str) -> tuple[Path, Path]:
    """Write ``issuer.key`` (PKCS#8 PEM, 0600) and ``issuer.pub.json``; never overwrite a key."""
    if not issuer.strip():
        raise BundleError("the issuer needs a name, e.g. 'Tokyo MPD Setagaya'")
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    private, public = directory / PRIVATE_KEY_NAME, directory / PUBLIC_KEY_NAME
    for path in (private, public):
        if path.exists():
            raise BundleError(f"{path} already exists: a new key would orphan every unit built with the old one")
    signer = CryptoSigner.generate_ed25519()
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(signer.private_bytes)
        out.flush()
        os.fsync(out.fileno())
    document = public_key_document(signer.public_key, issuer.strip())
    public.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    log.info("issuer key %s for %r written to %s", signer.public_key.keyid[:16], issuer, directory)
    return private, public


def load_signer(path: Path) -> CryptoSigner:
    """The issuer's private key (PEM); BundleError names the file."""
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        pem = path.read_bytes()
    except OSError as exc:
        raise BundleError(f"{path}: cannot read the issuer key: {exc.strerror or exc}") from None
    if path.stat().st_mode & 0o077:
        log.warning("%s is readable by others (mode %o): it can sign bundles every unit accepts",
                    path, path.stat().st_mode & 0o777)  # fmt: skip
    try:
        signer = CryptoSigner(load_pem_private_key(pem, password=None))
    except (ValueError, TypeError) as exc:
        raise BundleError(f"{path}: not an unencrypted ed25519 PEM private key ({exc})") from None
    if signer.public_key.keytype != "ed25519":
        raise BundleError(f"{path}: a {signer.public_key.keytype} key; units only trust ed25519 issuer keys")
    return signer


def load_public_key(path: Path) -> IssuerKey:
    """One ``*.pub.json`` written by :func:`generate_issuer_key`; ValueError names the problem."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a readable JSON key file ({exc})") from None
    if not isinstance(document, dict):
        raise ValueError(f"{path}: expected a JSON object")  # noqa: TRY004 -- bad input, not a bug
    document = dict(document)
    issuer = str(document.pop("issuer", "") or path.stem)
    document.pop("keyid", None)
    try:
        # The key id is recomputed (TUF's definition), never trusted from the file: it is what signatures name.
        canonical = encode_canonical({k: document[k] for k in ("keytype", "scheme", "keyval")})
        key = SSlibKey.from_dict(hashlib.sha256(str(canonical).encode()).hexdigest(), document)
    except (KeyError, TypeError, ValueError, FormatError) as exc:
        raise ValueError(f"{path}: not a public key ({exc})") from None
    if key.keytype != "ed25519":
        raise ValueError(f"{path}: key type {key.keytype!r}; mamoru issuer keys are ed25519")
    return IssuerKey(issuer, key, path)


def load_trusted_keys(directory: Path) -> list[IssuerKey]:
    """Every ``*.json`` key in ``directory``; a broken file is logged and skipped."""
    keys: list[IssuerKey] = []
    try:
        candidates = sorted(directory.glob("*.json"))
    except OSError as exc:
        log.error("cannot list issuer keys in %s: %s", directory, exc)
        return keys
    for path in candidates:
        try:
            keys.append(load_public_key(path))
        except ValueError as exc:
            log.error("ignoring issuer key file: %s", exc)
    return keys
