"""Applying a provisioning bundle on the unit: pick the one valid candidate, install it.

:class:`Applier` verifies every candidate (``bundle.verify_bundle``) against the
trusted issuer keys (``keys``), refuses a rollback to an older bundle than the last
one applied (``bundle-state.json`` beside the config), then installs the config
(atomically, keeping a ``.bak``), the web users file and the bundle's feeds.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from screening.config import Config, load_config
from screening.core.clock import iso_utc, utc_now
from screening.core.files import atomic_write_bytes, staged_file

from .bundle import (
    DEVICE_SERIAL_PATH,
    MAX_BUNDLE_BYTES,
    BundleRefused,
    FeedSpec,
    IssuerKey,
    Refusal,
    VerifiedBundle,
    parse_text,
    parse_time,
    read_or_none,
    read_unit_serial,
    verify_bundle,
    write_private_file,
)
from .keys import DEFAULT_ISSUER_KEYS_DIR, load_trusted_keys

if TYPE_CHECKING:
    from blocklist.store import Store

log = logging.getLogger(__name__)

STATE_FILE_NAME = "bundle-state.json"
STATE_FORMAT = "mamoru-bundle-state/1"
WEB_USERS_FILE_NAME = "web-users.json"
WEB_USERS_FORMAT = "mamoru-web-users/1"


class FeedAction(StrEnum):
    ADDED = "added"
    ALREADY = "already followed"
    FAILED = "failed"
    WOULD_ADD = "would be added"


@dataclass(frozen=True, slots=True)
class ApplyResult:
    bundle: VerifiedBundle
    config_path: Path
    config_changed: bool
    backup_path: Path | None
    web_users_path: Path
    state_path: Path
    feeds: tuple[tuple[str, FeedAction, str], ...] = ()  # (name, outcome, detail)
    dry_run: bool = False

    @property
    def ok(self) -> bool:
        return all(outcome is not FeedAction.FAILED for _, outcome, _ in self.feeds)

    def summary(self) -> list[str]:
        c = self.bundle.content
        verb = "would apply" if self.dry_run else "applied"
        issued = iso_utc(c.issued_at, timespec="seconds")
        lines = [f"{verb} bundle for household {c.household.id} ({c.household.label}) from {c.issuer}, issued "
                 + f"{issued}, signed by key {self.bundle.signer.keyid[:16]}"]  # fmt: skip
        if not self.config_changed:
            lines.append(f"  config: {self.config_path} already has this content")
        elif self.dry_run:
            lines.append(f"  config: would write {self.config_path}")
        else:
            kept = f" (previous kept as {self.backup_path.name})" if self.backup_path else ""
            lines.append(f"  config: wrote {self.config_path}{kept}")
        users = ", ".join(f"{u.name} ({u.role.value})" for u in c.web_users) or "none"
        lines.append(f"  web users: {users} -> {self.web_users_path}")
        for name, outcome, detail in self.feeds:
            lines.append(f"  feed {name}: {outcome.value}{': ' + detail if detail else ''}")
        return lines


def state_path_for(config_path: Path) -> Path:
    return config_path.parent / STATE_FILE_NAME


def read_state(path: Path) -> dict[str, Any] | None:
    """The last applied bundle's issued_at and sha256; a damaged file refuses (fails closed)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise BundleRefused(Refusal.ROLLBACK, f"cannot read {path}: {exc.strerror or exc}", str(path)) from None
    try:
        state = json.loads(text)
        parse_time(state["issued_at"], "issued_at")
        parse_text(state["sha256"], "sha256")
    except (ValueError, KeyError, TypeError) as exc:
        raise BundleRefused(Refusal.ROLLBACK, f"the record of the last applied bundle is damaged ({exc});"
                            f" remove {path} to accept any valid bundle again", str(path)) from None  # fmt: skip
    return state


def check_rollback(bundle: VerifiedBundle, state: Mapping[str, Any] | None) -> None:
    """Refuse anything older than the last applied bundle; the same bundle again is fine."""
    if state is None:
        return
    last = parse_time(state["issued_at"], "issued_at")
    issued = bundle.content.issued_at
    if issued < last:
        raise BundleRefused(Refusal.ROLLBACK, f"issued {iso_utc(issued, timespec='seconds')}, older than the bundle"
                            f" applied before (issued {iso_utc(last, timespec='seconds')})", bundle.source)  # fmt: skip
    if issued == last and state["sha256"] != bundle.sha256:
        raise BundleRefused(Refusal.ROLLBACK, "a different bundle issued at the same time"
                            f" ({iso_utc(last, timespec='seconds')}) was applied before", bundle.source)  # fmt: skip


def select_bundle(
    candidates: Sequence[Path], keys: Sequence[IssuerKey], *, now: datetime, unit_serial: str | None,
    state: Mapping[str, Any] | None,
) -> VerifiedBundle:  # fmt: skip
    """The one candidate acceptable for this unit (a USB stick may carry a whole office's bundles)."""
    accepted: list[VerifiedBundle] = []
    refusals: list[BundleRefused] = []
    for path in candidates:
        try:
            data = _read_limited(path)
            bundle = verify_bundle(data, keys, now=now, unit_serial=unit_serial, source=str(path))
            check_rollback(bundle, state)
            accepted.append(bundle)
        except BundleRefused as exc:
            log.info("%s", exc)
            refusals.append(exc)
        except Exception as exc:  # noqa: BLE001 -- one bad file on the stick must never stop the good one
            log.warning("%s: unexpected failure while checking it", path, exc_info=True)
            refusals.append(BundleRefused(Refusal.UNREADABLE, f"could not be checked ({type(exc).__name__})",
                                          str(path)))  # fmt: skip
    if len(candidates) == 1:
        if refusals:
            raise refusals[0]
        return accepted[0]
    if not accepted:
        detail = "; ".join(str(r) for r in refusals) or "no bundle files given"
        raise BundleRefused(Refusal.NONE_VALID, detail, f"{len(candidates)} bundles")
    if len(accepted) > 1:
        names = ", ".join(b.source for b in accepted)
        raise BundleRefused(Refusal.AMBIGUOUS, f"{len(accepted)} are valid for this unit ({names}); leave only one",
                            f"{len(candidates)} bundles")  # fmt: skip
    return accepted[0]


def _read_limited(path: Path) -> bytes:
    try:
        with path.open("rb") as source:
            data = source.read(MAX_BUNDLE_BYTES + 1)
    except OSError as exc:
        raise BundleRefused(Refusal.UNREADABLE, f"cannot read: {exc.strerror or exc}", str(path)) from None
    return data


@dataclass(slots=True)
class Applier:
    """Applies bundles on a unit. No I/O until :meth:`apply`."""

    issuer_keys_dir: Path = DEFAULT_ISSUER_KEYS_DIR
    config_path: Path = Path("/etc/mamoru/mamoru.toml")
    serial_path: Path = DEVICE_SERIAL_PATH
    db_override: Path | None = None
    first_feed_update: bool = True
    clock: Callable[[], datetime] = utc_now

    def apply(self, candidates: Sequence[Path], *, dry_run: bool = False) -> ApplyResult:
        keys = load_trusted_keys(self.issuer_keys_dir)
        if not keys:
            raise BundleRefused(Refusal.NO_TRUSTED_KEYS, f"no issuer keys in {self.issuer_keys_dir}: this unit"
                                " accepts no bundle", "unit")  # fmt: skip
        state_path = state_path_for(self.config_path)
        bundle = select_bundle(candidates, keys, now=self.clock(), unit_serial=read_unit_serial(self.serial_path),
                               state=read_state(state_path))  # fmt: skip
        config_bytes = bundle.content.config_toml.encode("utf-8")
        changed = read_or_none(self.config_path) != config_bytes
        config = bundle.config
        db = self.db_override or config.store.db
        web_users_path = Path(db).parent / WEB_USERS_FILE_NAME
        if dry_run:
            feeds = tuple((f.name, FeedAction.WOULD_ADD, f.url) for f in bundle.content.feeds)
            return ApplyResult(bundle, self.config_path, changed, None, web_users_path, state_path, feeds, True)

        backup = self._install_config(config_bytes) if changed else None
        _write_private_json(web_users_path, _web_users_document(bundle))
        hub_files = _install_hub_credentials(bundle, config)
        feeds = self._add_feeds(bundle, config, Path(db))
        _give_to_directory_owner([Path(db), Path(f"{db}-wal"), Path(f"{db}-shm"), config.feeds.dir, *hub_files])
        result = ApplyResult(bundle, self.config_path, changed, backup, web_users_path, state_path, feeds)
        if result.ok:
            # Recorded only when everything is in: a failed feed can be retried with the same bundle.
            _write_private_json(state_path, self._state(bundle))
        log.info("bundle %s (household %s, issuer %s) applied%s", bundle.source, bundle.content.household.id,
                 bundle.content.issuer, "" if result.ok else " except for a feed")  # fmt: skip
        return result

    def _state(self, bundle: VerifiedBundle) -> dict[str, Any]:
        c = bundle.content
        return {"format": STATE_FORMAT, "issued_at": iso_utc(c.issued_at, timespec="seconds"), "sha256": bundle.sha256,
                "household": c.household.id, "issuer": c.issuer,
                "applied_at": iso_utc(self.clock(), timespec="seconds")}  # fmt: skip

    def _install_config(self, data: bytes) -> Path | None:
        """temp + fsync, validated as a file, then rename; the previous file stays as ``.bak``."""
        path = self.config_path
        path.parent.mkdir(parents=True, exist_ok=True)
        previous = path.stat() if path.exists() else None
        mode = previous.st_mode & 0o777 if previous else 0o640
        with staged_file(path, data, mode=mode, owner_like=previous) as temp:
            load_config(temp, env={})  # the exact bytes about to go live, read back as a file
            backup = None
            if previous is not None:
                backup = path.with_name(path.name + ".bak")
                _replace_with_link_or_copy(path, backup)
        return backup

    def _add_feeds(self, bundle: VerifiedBundle, config: Config, db: Path) -> tuple[tuple[str, FeedAction, str], ...]:
        if not bundle.content.feeds:
            return ()
        from blocklist.store import Store

        db.parent.mkdir(parents=True, exist_ok=True)
        outcomes: list[tuple[str, FeedAction, str]] = []
        store = Store(db, recover_calls=False)
        store.open()
        try:
            for feed in bundle.content.feeds:
                outcomes.append(self._add_one_feed(store, config, feed))
        finally:
            store.close()
        return tuple(outcomes)

    def _add_one_feed(self, store: Store, config: Config, feed: FeedSpec) -> tuple[str, FeedAction, str]:
        from blocklist.feeds import add_feed
        from screening.feed_wiring import feed_limits

        known = store.feed(feed.name) is not None
        try:
            # Re-adding the same feed is harmless (the feed module compares URL and root bytes).
            add_feed(store, config.feeds.dir, feed.name, feed.url, feed.root_bytes(),
                     first_update=self.first_feed_update, max_age_days=config.feeds.max_age_days,
                     limits=feed_limits(config))  # fmt: skip
        except Exception as exc:  # noqa: BLE001 -- FeedError, StoreError ...: the rest of the bundle stays applied
            log.error("feed %s from the bundle could not be added: %s", feed.name, exc)
            return (feed.name, FeedAction.FAILED, str(exc))
        row = store.feed(feed.name) or {}
        detail = f"last check failed: {row['error']}" if row.get("error") else f"{row.get('entries', 0)} numbers"
        return (feed.name, FeedAction.ALREADY if known else FeedAction.ADDED, detail)


def _install_hub_credentials(bundle: VerifiedBundle, config: Config) -> list[Path]:
    """The unit's broker password (0600) and the broker's CA (0644) where ``[hub]`` says; the files written."""
    hub = bundle.content.hub
    if hub is None:
        return []
    assert config.hub.credentials_file is not None  # verify_bundle refused a bundle without a place for them
    write_private_file(config.hub.credentials_file, (hub.password + "\n").encode())
    written = [config.hub.credentials_file]
    if hub.ca_pem is not None and config.hub.ca_file is not None:
        config.hub.ca_file.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(config.hub.ca_file, hub.ca_pem.encode(), mode=0o644)
        written.append(config.hub.ca_file)
    log.info("hub credentials for unit %s written to %s", config.hub.unit_id, config.hub.credentials_file)
    return written


def _give_to_directory_owner(paths: Sequence[Path]) -> None:
    """Run as root (first boot), the database and feed files must still be the service user's to write."""
    if os.geteuid() != 0:
        return
    for path in paths:
        if not path.exists():
            continue
        owner = path.parent.stat()
        if owner.st_uid == 0:
            continue
        for item in (path, *path.rglob("*")) if path.is_dir() else (path,):
            os.chown(item, owner.st_uid, owner.st_gid, follow_symlinks=False)


def _web_users_document(bundle: VerifiedBundle) -> dict[str, Any]:
    c = bundle.content
    return {
        "format": WEB_USERS_FORMAT,
        "issuer": c.issuer,
        "issued_at": iso_utc(c.issued_at, timespec="seconds"),
        "household": {"id": c.household.id, "label": c.household.label},
        "users": [{"name": u.name, "role": u.role.value, "password_hash": u.password_hash} for u in c.web_users],
    }


def _replace_with_link_or_copy(path: Path, backup: Path) -> None:
    """Make ``backup`` the current ``path`` content, atomically, keeping its mode and owner."""
    staging = backup.with_name(backup.name + ".tmp")
    with contextlib.suppress(FileNotFoundError):
        staging.unlink()
    try:
        os.link(path, staging)
    except OSError:  # a file system without hard links (e.g. FAT)
        import shutil

        shutil.copy2(path, staging)
    os.replace(staging, backup)


def _write_private_json(path: Path, document: Mapping[str, Any]) -> None:
    write_private_file(path, (json.dumps(document, ensure_ascii=False, indent=2) + "\n").encode())
