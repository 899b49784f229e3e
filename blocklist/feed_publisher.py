"""Issuer side of signed number feeds: a TUF repository made with python-tuf's Metadata API.

A feed repository is one directory::

    DIR/keys/<role>.pem     ed25519 private keys (PKCS#8 PEM, mode 0600); never served.
                            keys/root.pem belongs offline: only `init` and `rotate-keys` need it.
    DIR/metadata/           served: N.root.json (every version, units walk the chain), root.json,
                            N.targets.json, N.snapshot.json (consistent snapshots), targets.json,
                            snapshot.json (the latest, for people) and timestamp.json
    DIR/targets/            served: <sha256>.numbers.csv, the list in the mamoru-feed/1 format

Serve ``metadata/`` and ``targets/`` under one base URL (any static web server);
a unit is given that URL and a copy of ``metadata/root.json``.

Every publish writes the new files first and ``timestamp.json`` last, each
atomically, so a unit polling mid-publish sees the old repository or the new
one. One publish at a time per directory (a lock file).
"""

from __future__ import annotations

import copy
import fcntl
import logging
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path

from cryptography.hazmat.primitives.serialization import load_pem_private_key
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import Metadata, MetaFile, Root, Signed, Snapshot, TargetFile, Targets, Timestamp
from tuf.api.serialization.json import JSONSerializer

from blocklist.feeds import TARGET_NAME  # the one target units look for
from blocklist.formats import FEED_FORMAT_ID, ListFormat, read_feed, write_entries
from screening.core.clock import utc_now
from screening.core.files import DEFAULT_MODE, atomic_write_bytes
from screening.core.model import ListEntry, ListKind

__all__ = ["TARGET_NAME", "Expiry", "FeedRepository", "PublishError", "PublishResult", "KeyRole", "feed_file"]

log = logging.getLogger(__name__)

HASH_ALGORITHM = "sha256"
ROOT_EXPIRY_WARNING = timedelta(days=60)
_SERIALIZER = JSONSerializer(compact=False)  # indented: issuers read these files


class KeyRole(StrEnum):
    """A TUF signing role: which key signs which metadata (a web account's is ``screening.core.model.Role``)."""

    ROOT = "root"
    TARGETS = "targets"
    SNAPSHOT = "snapshot"
    TIMESTAMP = "timestamp"


class PublishError(Exception):
    """The repository cannot do what was asked (not initialised, key missing, list refused ...)."""


@dataclass(frozen=True, slots=True)
class Expiry:
    """When metadata signed now expires: a lifetime from now, or a fixed moment.

    Short timestamp, longer snapshot and targets, a year for root: a unit treats
    an expired timestamp as "publisher went silent", so the issuer's cron job
    (``mamoru publish refresh``) must run well within ``timestamp``.
    A fixed moment in the past makes expired metadata (tests of frozen repositories).
    """

    root: timedelta | datetime = timedelta(days=365)
    targets: timedelta | datetime = timedelta(days=90)
    snapshot: timedelta | datetime = timedelta(days=30)
    timestamp: timedelta | datetime = timedelta(days=7)

    def at(self, role: KeyRole, now: datetime) -> datetime:
        value = getattr(self, role.value)
        moment = value if isinstance(value, datetime) else now + value
        return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class PublishResult:
    """Versions now served, and what the list holds."""

    root_version: int
    targets_version: int
    snapshot_version: int
    timestamp_version: int
    entries: int
    target_hash: str
    timestamp_expires: datetime
    warnings: tuple[str, ...] = ()


class FeedRepository:
    """One feed repository directory (see the module docstring). The constructor touches nothing."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.keys_dir = self.path / "keys"
        self.metadata_dir = self.path / "metadata"
        self.targets_dir = self.path / "targets"

    # ----------------------------------------------------------------- operations

    def init(self, feed_bytes: bytes, entries: int = 0, *, expiry: Expiry = Expiry(),
             now: datetime | None = None) -> PublishResult:
        """Create keys and version 1 of every role, publishing ``feed_bytes`` (normally the empty list)."""
        now = now or utc_now()
        if (self.metadata_dir / "root.json").exists() or (self.keys_dir.exists() and any(self.keys_dir.iterdir())):
            raise PublishError(f"{self.path} is already a feed repository (keys/ or metadata/root.json exist)")
        for directory in (self.keys_dir, self.metadata_dir, self.targets_dir):
            directory.mkdir(parents=True, exist_ok=True)
        os.chmod(self.keys_dir, 0o700)
        with self._locked():
            signers = {role: CryptoSigner.generate_ed25519() for role in KeyRole}
            for role, signer in signers.items():
                atomic_write_bytes(self._key_path(role), signer.private_bytes, mode=0o600)
            root = Metadata(Root(expires=expiry.at(KeyRole.ROOT, now), consistent_snapshot=True))
            for role, signer in signers.items():
                root.signed.add_key(signer.public_key, role.value)
            root.sign(signers[KeyRole.ROOT])
            self._write_root(root)
            targets = Metadata(Targets(expires=expiry.at(KeyRole.TARGETS, now)))
            return self._publish(root.signed, targets, signers, feed_bytes, entries, expiry, now, fresh=True)

    def publish_numbers(self, feed_bytes: bytes, entries: int, *, expiry: Expiry = Expiry(),
                        now: datetime | None = None) -> PublishResult:
        """Make ``feed_bytes`` (a mamoru-feed/1 file holding ``entries`` rows) the list units apply."""
        now = now or utc_now()
        with self._locked():
            root = self._load(KeyRole.ROOT, Root)
            signers = self._signers(root.signed, (KeyRole.TARGETS, KeyRole.SNAPSHOT, KeyRole.TIMESTAMP))
            targets = self._load(KeyRole.TARGETS, Targets)
            targets.signed.version += 1
            targets.signed.expires = expiry.at(KeyRole.TARGETS, now)
            return self._publish(root.signed, targets, signers, feed_bytes, entries, expiry, now)

    def refresh(self, *, expiry: Expiry = Expiry(), now: datetime | None = None) -> PublishResult:
        """Re-sign timestamp and snapshot with fresh expiry, list unchanged (the issuer's cron job).

        Targets is re-signed too when it would otherwise expire before the new snapshot.
        """
        now = now or utc_now()
        with self._locked():
            root = self._load(KeyRole.ROOT, Root)
            signers = self._signers(root.signed, (KeyRole.TARGETS, KeyRole.SNAPSHOT, KeyRole.TIMESTAMP))
            targets = self._load(KeyRole.TARGETS, Targets)
            renew_targets = targets.signed.expires <= expiry.at(KeyRole.SNAPSHOT, now)
            if renew_targets:
                targets.signed.version += 1
                targets.signed.expires = expiry.at(KeyRole.TARGETS, now)
                self._sign(targets, root.signed, signers)
            return self._commit(root.signed, targets, signers, expiry, now, write_targets=renew_targets)

    def rotate_keys(self, roles: Iterable[KeyRole], *, expiry: Expiry = Expiry(),
                    now: datetime | None = None) -> PublishResult:
        """New keys for ``roles``; a new root version signed by the old and the new root keys.

        Units verify each root version with the previous one, so they follow the
        rotation on their next update. Metadata of rotated roles is re-signed with
        a new version; snapshot and timestamp always get a new version.
        Needs keys/root.pem (bring the offline root key back for this).
        """
        now = now or utc_now()
        rotating = set(roles)
        if not rotating:
            raise PublishError("no role to rotate")
        with self._locked():
            old_root = self._load(KeyRole.ROOT, Root)
            signers = self._signers(old_root.signed, tuple(KeyRole))
            new_signers = {role: CryptoSigner.generate_ed25519() for role in rotating}
            # The new keys are on disk before any metadata names them: a crash in between
            # leaves an unused .next key, never metadata whose key is lost.
            for role, signer in new_signers.items():
                atomic_write_bytes(self._next_key_path(role), signer.private_bytes, mode=0o600)
            root = Metadata(copy.deepcopy(old_root.signed))
            root.signed.version += 1
            root.signed.expires = expiry.at(KeyRole.ROOT, now)
            for role, signer in new_signers.items():
                for keyid in list(root.signed.roles[role.value].keyids):
                    root.signed.revoke_key(keyid, role.value)
                root.signed.add_key(signer.public_key, role.value)
            # Signed by the old root keys (the chain) and the new ones (self-signature).
            root.sign(signers[KeyRole.ROOT])
            if KeyRole.ROOT in new_signers:
                root.sign(new_signers[KeyRole.ROOT], append=True)
            signers.update(new_signers)
            self._write_root(root)
            targets = self._load(KeyRole.TARGETS, Targets)
            if KeyRole.TARGETS in rotating:
                targets.signed.version += 1
                targets.signed.expires = expiry.at(KeyRole.TARGETS, now)
                self._sign(targets, root.signed, signers)
            result = self._commit(root.signed, targets, signers, expiry, now,
                                  write_targets=KeyRole.TARGETS in rotating)  # fmt: skip
            for role in new_signers:  # the old private keys go: rotated means retired
                os.replace(self._next_key_path(role), self._key_path(role))
            return result

    def status(self) -> dict[str, object]:
        """Versions, expiry and list size as served now (for `mamoru publish status`-like output)."""
        out: dict[str, object] = {}
        for role, cls in ((KeyRole.ROOT, Root), (KeyRole.TARGETS, Targets), (KeyRole.SNAPSHOT, Snapshot),
                          (KeyRole.TIMESTAMP, Timestamp)):  # fmt: skip
            md = self._load(role, cls)
            out[role.value] = {"version": md.signed.version, "expires": md.signed.expires.isoformat()}
        info = self._load(KeyRole.TARGETS, Targets).signed.targets.get(TARGET_NAME)
        out["entries"] = (info.custom or {}).get("entries") if info else None
        return out

    # ----------------------------------------------------------------- internals

    def _publish(self, root: Root, targets: Metadata[Targets], signers: dict[KeyRole, CryptoSigner],
                 feed_bytes: bytes, entries: int, expiry: Expiry, now: datetime, *,
                 fresh: bool = False) -> PublishResult:
        info = TargetFile.from_data(TARGET_NAME, feed_bytes, [HASH_ALGORITHM])
        info.unrecognized_fields["custom"] = {"format": FEED_FORMAT_ID, "entries": entries}
        previous = targets.signed.targets.get(TARGET_NAME)
        digest = info.hashes[HASH_ALGORITHM]
        # Consistent snapshots: the unit fetches targets/<sha256>.numbers.csv.
        atomic_write_bytes(self.targets_dir / f"{digest}.{TARGET_NAME}", feed_bytes, mode=DEFAULT_MODE)
        targets.signed.targets[TARGET_NAME] = info
        self._sign(targets, root, signers)
        result = self._commit(root, targets, signers, expiry, now, write_targets=True, fresh=fresh)
        # Keep the list just replaced too: a unit that read the previous snapshot may still fetch it.
        keep = {f"{digest}.{TARGET_NAME}"} | (set(previous.get_prefixed_paths()) if previous else set())
        for old in self.targets_dir.glob(f"*.{TARGET_NAME}"):
            if old.name not in keep:
                old.unlink(missing_ok=True)
        return result

    def _commit(self, root: Root, targets: Metadata[Targets], signers: dict[KeyRole, CryptoSigner],
                expiry: Expiry, now: datetime, *, write_targets: bool, fresh: bool = False) -> PublishResult:
        """Write targets (if changed), then a new snapshot, then a new timestamp: the order units read them."""
        versioned_targets = self.metadata_dir / f"{targets.signed.version}.targets.json"
        if write_targets:
            targets_bytes = targets.to_bytes(_SERIALIZER)
            atomic_write_bytes(versioned_targets, targets_bytes, mode=DEFAULT_MODE)
        else:  # the served bytes, not a re-serialisation: snapshot pins their hash
            targets_bytes = versioned_targets.read_bytes()
        if fresh:
            snapshot = Metadata(Snapshot(expires=expiry.at(KeyRole.SNAPSHOT, now)))
            timestamp = Metadata(Timestamp(expires=expiry.at(KeyRole.TIMESTAMP, now)))
        else:
            snapshot = self._load(KeyRole.SNAPSHOT, Snapshot)
            snapshot.signed.version += 1
            timestamp = self._load(KeyRole.TIMESTAMP, Timestamp)
            timestamp.signed.version += 1
        snapshot.signed.expires = expiry.at(KeyRole.SNAPSHOT, now)
        # Hashes pin each file to the one signed above it: files mixed from two publishes fail.
        snapshot.signed.meta["targets.json"] = MetaFile.from_data(targets.signed.version, targets_bytes,
                                                                  [HASH_ALGORITHM])  # fmt: skip
        self._sign(snapshot, root, signers)
        snapshot_bytes = snapshot.to_bytes(_SERIALIZER)
        versioned_snapshot = self.metadata_dir / f"{snapshot.signed.version}.snapshot.json"
        atomic_write_bytes(versioned_snapshot, snapshot_bytes, mode=DEFAULT_MODE)
        timestamp.signed.expires = expiry.at(KeyRole.TIMESTAMP, now)
        timestamp.signed.snapshot_meta = MetaFile.from_data(snapshot.signed.version, snapshot_bytes, [HASH_ALGORITHM])
        self._sign(timestamp, root, signers)
        if write_targets:
            atomic_write_bytes(self.metadata_dir / "targets.json", targets_bytes, mode=DEFAULT_MODE)
        atomic_write_bytes(self.metadata_dir / "snapshot.json", snapshot_bytes, mode=DEFAULT_MODE)
        # last: goes live
        atomic_write_bytes(self.metadata_dir / "timestamp.json", timestamp.to_bytes(_SERIALIZER), mode=DEFAULT_MODE)
        info = targets.signed.targets.get(TARGET_NAME)
        warnings = []
        if root.expires - now < ROOT_EXPIRY_WARNING:
            warnings.append(f"root metadata expires {root.expires.isoformat()}: sign a new root version with the "
                            "offline root key (`mamoru publish rotate-keys --role root`) before then")  # fmt: skip
        log.info("published: targets v%d, snapshot v%d, timestamp v%d (expires %s)", targets.signed.version,
                 snapshot.signed.version, timestamp.signed.version, timestamp.signed.expires.isoformat())
        return PublishResult(
            root_version=root.version,
            targets_version=targets.signed.version,
            snapshot_version=snapshot.signed.version,
            timestamp_version=timestamp.signed.version,
            entries=int((info.custom or {}).get("entries", 0)) if info else 0,
            target_hash=info.hashes[HASH_ALGORITHM] if info else "",
            timestamp_expires=timestamp.signed.expires,
            warnings=tuple(warnings),
        )

    def _sign(self, md: Metadata, root: Root, signers: dict[KeyRole, CryptoSigner]) -> None:
        role = KeyRole(md.signed.type)
        md.sign(signers[role])
        # Refuse to publish what a unit would refuse: the signature must satisfy root.
        root.verify_delegate(role.value, md.signed_bytes, md.signatures)

    def _write_root(self, root: Metadata[Root]) -> None:
        data = root.to_bytes(_SERIALIZER)
        atomic_write_bytes(self.metadata_dir / f"{root.signed.version}.root.json", data, mode=DEFAULT_MODE)
        atomic_write_bytes(self.metadata_dir / "root.json", data, mode=DEFAULT_MODE)

    def _load(self, role: KeyRole, cls: type[Signed]) -> Metadata:
        path = self.metadata_dir / f"{role.value}.json"
        try:
            md = Metadata.from_file(str(path))
        except Exception as exc:  # noqa: BLE001 -- StorageError, DeserializationError: one message
            if not path.exists():
                raise PublishError(f"{path} not found: is {self.path} a feed repository "
                                   "(`mamoru publish init`)?") from exc  # fmt: skip
            raise PublishError(f"{path}: unreadable TUF metadata ({exc})") from exc
        if not isinstance(md.signed, cls):
            raise PublishError(f"{path}: holds {md.signed.type} metadata, expected {role.value}")
        return md

    def _signers(self, root: Root, roles: Iterable[KeyRole]) -> dict[KeyRole, CryptoSigner]:
        """Load each role's private key and check that root names it (a stale key file would sign in vain)."""
        signers = {}
        for role in roles:
            keyids = set(root.roles[role.value].keyids)
            for path in (self._key_path(role), self._next_key_path(role)):  # .next: a rotation cut short
                if not path.exists():
                    continue
                try:
                    signer = CryptoSigner(load_pem_private_key(path.read_bytes(), None))
                except (ValueError, TypeError) as exc:
                    raise PublishError(f"{path}: not an unencrypted PEM private key ({exc})") from exc
                if signer.public_key.keyid in keyids:
                    signers[role] = signer
                    break
            else:
                where = self._key_path(role)
                hint = " (the root key is kept offline: put it back for this operation)" if role is KeyRole.ROOT else ""
                raise PublishError(f"no key for {role.value} that root version {root.version} trusts in "
                                   f"{where}{hint}")  # fmt: skip
        return signers

    def _key_path(self, role: KeyRole) -> Path:
        return self.keys_dir / f"{role.value}.pem"

    def _next_key_path(self, role: KeyRole) -> Path:
        return self.keys_dir / f"{role.value}.next.pem"

    @contextmanager
    def _locked(self) -> Iterator[None]:
        if not self.path.is_dir():
            raise PublishError(f"{self.path} not found: create a feed repository with `mamoru publish init`")
        with open(self.path / ".publish.lock", "a+b") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise PublishError(f"another publish is running in {self.path}") from None
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def feed_file(entries: list[ListEntry], home_region: str) -> bytes:
    """The mamoru-feed/1 bytes for ``entries``, checked by reading them back as a unit will.

    Raises PublishError if the round trip does not give back the same entries
    (never sign a file the units would refuse or read differently).
    """
    if any(e.list is not ListKind.BLOCK for e in entries):
        raise PublishError("a feed only blocks: remove the allow entries")
    data = write_entries(entries, ListFormat.FEED, home_region=home_region)
    back = read_feed(data, source="check", expires_at=None)
    if back.problems:
        first = back.problems[0]
        raise PublishError(f"the feed file would be refused by units: line {first.line}: {first.problem}")
    want = {(e.match, e.value, e.value_end) for e in entries}
    got = {(e.match, e.value, e.value_end) for e in back.entries}
    if want != got or len(back.entries) != len(entries):
        raise PublishError(f"the feed file reads back as {len(back.entries)} entries, not {len(entries)}")
    return data
