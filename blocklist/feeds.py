"""Unit side of signed number feeds: follow an issuer's TUF repository and apply its list.

A feed is a TUF repository (``blocklist.feed_publisher`` makes one) holding one
target, ``numbers.csv`` in the ``mamoru-feed/1`` format. The unit trusts exactly
one root metadata file per feed, given when the feed is added; python-tuf's
``ngclient`` does the whole client workflow (root chain, timestamp, snapshot,
targets, target hash), so a list reaches the store only if the issuer's keys
signed it, it is not older than what the unit already saw, and its signatures
are not expired.

On disk, per feed, under ``[feeds] dir``::

    NAME/root.json        the trust anchor, exactly as given to ``mamoru feed add``
    NAME/metadata/        ngclient's verified metadata cache (root history, timestamp, ...)
    NAME/.lock            one update of a feed at a time (CLI and daemon may overlap)

Any failure leaves the feed's previous entries in force until they expire:
every verified check renews them for ``max_age_days``, so a publisher that goes
silent (or an attacker who freezes the repository) makes them lapse, not stick.
"""

from __future__ import annotations

import fcntl
import logging
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import tuf
import urllib3
from tuf.api import exceptions as tuf_errors
from tuf.api.metadata import Metadata, Root, Targets
from tuf.ngclient import Updater
from tuf.ngclient.fetcher import FetcherInterface

from blocklist.feed_breadth import BreadthLimits, feed_breadth_problem
from blocklist.formats import FEED_FORMAT_ID, read_feed
from blocklist.store import Store
from blocklist.store.rows import FEED_SOURCE_PREFIX, StoreError
from screening.core.clock import iso_utc, utc_now
from screening.core.files import DEFAULT_MODE, atomic_write_bytes
from screening.core.model import ListKind
from screening.core.numbers import try_parse_number

__all__ = [
    "TARGET_NAME", "BreadthLimits", "FeedError", "FeedSettings", "breadth_limits", "FeedOutcome", "FeedUpdate", "Refusal", "add_feed", "check_root",
    "feed_paths", "normalize_url", "remove_feed", "update_all", "update_feed", "update_one", "validate_name",
]  # fmt: skip

log = logging.getLogger(__name__)

TARGET_NAME = "numbers.csv"  # the one target a feed publishes
NAME_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
DEFAULT_TIMEOUT_S = 30.0
LOCK_POLL_S = 0.1
_CHUNK_BYTES = 64 * 1024


class FeedError(ValueError):
    """A feed cannot be added or named as given (bad name, URL or root metadata)."""


class FeedOutcome(StrEnum):
    APPLIED = "applied"  # a new list was verified and is now in force
    CURRENT = "current"  # verified: the list in force is still the issuer's latest (its expiry was renewed)
    REFUSED = "refused"  # the repository answered but failed verification, or the list could not be stored
    UNREACHABLE = "unreachable"  # no answer (network down, timeout, HTTP error)


class Refusal(StrEnum):
    """Why an update was not applied, as shown to the people looking after the unit."""

    UNREACHABLE = "unreachable"
    EXPIRED = "expired"
    ROLLBACK = "rollback"
    TAMPERED = "tampered"
    BAD_SIGNATURE = "bad_signature"
    BAD_METADATA = "bad_metadata"
    BAD_LIST = "bad_list"
    TOO_BROAD = "too_broad"
    BUSY = "busy"
    STORE = "store"
    LOCAL = "local"


_EXPLAIN = {
    Refusal.UNREACHABLE: "feed server not reachable",
    Refusal.EXPIRED: "signed metadata has expired (publisher stopped signing, or an old copy is being replayed)",
    Refusal.ROLLBACK: "server offers an older version than this unit already trusts (rollback)",
    Refusal.TAMPERED: "a file does not match its signed length/hash (tampered, or files mixed from different "
                      "publishes)",
    Refusal.BAD_SIGNATURE: "not signed by the keys this unit trusts for the feed (wrong root or wrong key)",
    Refusal.BAD_METADATA: "malformed or inconsistent metadata",
    Refusal.BAD_LIST: "the signed list is unusable",
    Refusal.TOO_BROAD: "the signed list would block far more than fraud numbers ([feeds] max_share_percent, "
                       "min_prefix_digits)",
    Refusal.BUSY: "another update of this feed is running",
    Refusal.STORE: "database unavailable",
    Refusal.LOCAL: "local feed files unusable",
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class FeedUpdate:
    """What one check of one feed did."""

    name: str
    outcome: FeedOutcome
    version: int | None = None  # targets metadata version verified (None when nothing verified)
    entries: int | None = None  # rows the feed now holds in the store (None when unchanged/unknown)
    reason: str = ""  # for REFUSED/UNREACHABLE: one line for a person
    refusal: Refusal | None = None

    @property
    def ok(self) -> bool:
        return self.outcome in (FeedOutcome.APPLIED, FeedOutcome.CURRENT)


@dataclass(frozen=True, slots=True)
class FeedPaths:
    base: Path

    @property
    def anchor(self) -> Path:
        return self.base / "root.json"

    @property
    def metadata(self) -> Path:
        return self.base / "metadata"

    @property
    def lock(self) -> Path:
        return self.base / ".lock"


def feed_paths(feeds_dir: Path, name: str) -> FeedPaths:
    validate_name(name)
    return FeedPaths(Path(feeds_dir) / name)


def validate_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise FeedError(f"feed name {name!r}: use 1-32 lower-case letters, digits and '-', starting with a "
                        "letter or digit (e.g. 'police-tokyo')")  # fmt: skip
    return name


def normalize_url(url: str) -> str:
    """The feed's base URL with one trailing slash; metadata/ and targets/ live under it."""
    parts = urlsplit(url.strip() if isinstance(url, str) else "")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FeedError(f"feed URL {url!r}: need http(s)://host/path/ (the directory holding metadata/ and "
                        "targets/)")  # fmt: skip
    if parts.query or parts.fragment or parts.username or parts.password:
        raise FeedError(f"feed URL {url!r}: no query, fragment or credentials")
    base = parts.geturl()
    return base if base.endswith("/") else base + "/"


def check_root(root_json: bytes, what: str = "root metadata") -> Metadata[Root]:
    """Parse and self-verify a root metadata file; FeedError naming the problem."""
    try:
        md = Metadata[Root].from_bytes(root_json)
    except Exception as exc:  # noqa: BLE001 -- DeserializationError, ValueError, KeyError ...: all mean "not root"
        raise FeedError(f"{what}: not TUF metadata ({exc})") from exc
    if not isinstance(md.signed, Root):
        raise FeedError(f"{what}: is TUF {md.signed.type} metadata, not root")
    try:
        md.signed.verify_delegate(Root.type, md.signed_bytes, md.signatures)
    except tuf_errors.UnsignedMetadataError as exc:
        raise FeedError(f"{what}: not signed by its own root keys ({exc})") from exc
    if not md.signed.consistent_snapshot:
        raise FeedError(f"{what}: the repository must use consistent snapshots (mamoru publish makes them)")
    return md


@dataclass(frozen=True, slots=True)
class FeedSettings:
    """``[feeds]`` and what it needs from ``[line]``/``[rules]``, as the feed code reads them.

    The composition root and the CLI build it from the app config, so feeds never see that config.
    """

    dir: Path
    update_minutes: int
    max_age_days: int
    max_share_percent: float
    min_prefix_digits: int
    home_region: str
    official_numbers: frozenset[str]


def breadth_limits(settings: FeedSettings) -> BreadthLimits:
    """The ``[feeds]`` limits on how much one feed may block, for the unit's home region.

    The numbers no feed may block are the rules' own ``official_numbers`` (110, 118, 119 …), in the
    E.164 form the daemon looks them up in; ``#9110`` and the like cannot be on a list anyway.
    """
    region = settings.home_region
    parsed = (try_parse_number(raw, region) for raw in settings.official_numbers if raw.isdigit())
    protected = tuple(sorted({n.e164 for n in parsed if n is not None}))
    return BreadthLimits(settings.max_share_percent, settings.min_prefix_digits, region, protected)


# --------------------------------------------------------------------------- add / remove


def add_feed(store: Store, feeds_dir: Path, name: str, url: str, root_json: bytes, *,
             first_update: bool = True, max_age_days: int = 30, limits: BreadthLimits | None = None) -> None:
    """Trust the feed at ``url`` whose root metadata is ``root_json``, then (optionally) fetch its list.

    Raises FeedError for a bad name, URL or root, or a name already used for a
    different URL or root; re-adding the same feed is harmless. StoreError if the
    database is unavailable. A failed first update is logged and recorded on the
    feed (``mamoru feed list`` shows it); the feed stays added and is retried.
    """
    validate_name(name)
    base_url = normalize_url(url)
    root = check_root(root_json, f"root metadata for feed {name!r}")
    if root.signed.is_expired():
        log.warning("feed %s: the root metadata given expired on %s; the first update must find a newer one",
                    name, root.signed.expires.isoformat())  # fmt: skip
    paths = feed_paths(feeds_dir, name)
    existing = store.feed(name)
    if existing is not None:
        same_root = paths.anchor.is_file() and paths.anchor.read_bytes() == root_json
        if existing["url"] != base_url or not same_root:
            raise FeedError(f"feed {name!r} already exists with another URL or root; `mamoru feed remove {name}` "
                            "first")  # fmt: skip
    else:
        _install_anchor(paths, root_json)
        store.save_feed(name, url=base_url, added_at=iso_utc(utc_now()))
        log.info("feed %s added: %s (root version %d)", name, base_url, root.signed.version)
    if first_update:
        update_feed(store, feeds_dir, name, max_age_days=max_age_days, limits=limits)


def _install_anchor(paths: FeedPaths, root_json: bytes) -> None:
    """Write the anchor and a fresh metadata cache; leftovers of an earlier feed of that name go."""
    if paths.base.exists():
        shutil.rmtree(paths.base)
    paths.metadata.mkdir(parents=True)
    atomic_write_bytes(paths.anchor, root_json, mode=DEFAULT_MODE)
    # ngclient's cache starts at the anchor; from the first update on it keeps root.json as a link
    # into its root_history/. The anchor itself stays in NAME/root.json and is passed as bootstrap.
    atomic_write_bytes(paths.metadata / "root.json", root_json, mode=DEFAULT_MODE)


def remove_feed(store: Store, feeds_dir: Path, name: str) -> bool:
    """Forget the feed, delete its entries and its files. True if it existed."""
    paths = feed_paths(feeds_dir, name)
    existed = store.remove_feed(name)
    if paths.base.exists():
        shutil.rmtree(paths.base)
        existed = True
    return existed


# --------------------------------------------------------------------------- update


class _Refused(Exception):
    def __init__(self, refusal: Refusal, detail: str) -> None:
        super().__init__(detail)
        self.refusal = refusal


class _DeadlineFetcher(FetcherInterface):
    """ngclient's HTTP fetcher (urllib3, as its default one), bounded by one deadline per update.

    Each wait (connect, response, gap between bytes) times out at ``timeout_s``
    or what is left of the deadline; one retry for a failed connect, none for a
    read that timed out. The deadline also bounds a server that trickles bytes
    just fast enough to dodge the socket timeout: a timer shuts the socket down.
    """

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._deadline = time.monotonic() + timeout_s
        self._pool = urllib3.PoolManager(headers={"User-Agent": f"mamoru python-tuf/{tuf.__version__}"})

    def _remaining(self) -> float:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise tuf_errors.SlowRetrievalError(f"no complete answer within {self.timeout_s:g} s")
        return remaining

    def _fetch(self, url: str) -> Iterator[bytes]:
        wait = min(self.timeout_s, self._remaining())
        try:
            response = self._pool.request(
                "GET", url, preload_content=False, timeout=urllib3.Timeout(connect=wait, read=wait),
                retries=urllib3.Retry(total=None, connect=1, read=0, status=0, other=0, redirect=3),
            )
        except urllib3.exceptions.MaxRetryError as exc:
            if isinstance(exc.reason, urllib3.exceptions.TimeoutError):
                raise tuf_errors.SlowRetrievalError(f"{url}: no answer within {wait:.3g} s") from exc
            raise
        except urllib3.exceptions.TimeoutError as exc:
            raise tuf_errors.SlowRetrievalError(f"{url}: no answer within {wait:.3g} s") from exc
        if response.status >= 400:
            response.close()
            raise tuf_errors.DownloadHTTPError(f"HTTP {response.status} for {url}", response.status)
        return self._chunks(response)

    def _chunks(self, response: urllib3.BaseHTTPResponse) -> Iterator[bytes]:
        fired = threading.Event()

        def cut() -> None:
            fired.set()
            try:
                response.shutdown()
            except (ValueError, RuntimeError, OSError):
                pass  # already finished or released

        timer = threading.Timer(self._remaining(), cut)
        timer.daemon = True
        timer.start()
        try:
            yield from response.stream(_CHUNK_BYTES)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            if fired.is_set() or isinstance(exc, urllib3.exceptions.TimeoutError):
                raise tuf_errors.SlowRetrievalError(f"no complete answer within {self.timeout_s:g} s") from exc
            raise tuf_errors.DownloadError(f"download broke off: {exc}") from exc
        finally:
            timer.cancel()
            response.release_conn()
        if fired.is_set():
            raise tuf_errors.SlowRetrievalError(f"no complete answer within {self.timeout_s:g} s")


def update_feed(store: Store, feeds_dir: Path, name: str, *, max_age_days: int,
                timeout_s: float = DEFAULT_TIMEOUT_S, before_write: Callable[[], None] | None = None,
                limits: BreadthLimits | None = None) -> FeedUpdate:
    """Check one feed and apply its list if the issuer published a new one.

    Never raises for a network, verification, list or store problem: those come
    back as a REFUSED/UNREACHABLE FeedUpdate, are logged as one warning line and
    recorded on the feed, and the entries in force stay until they expire.
    Raises FeedError for an invalid or unknown feed name. ``before_write()`` is
    called (and may wait) once everything is verified, just before the lists change.
    ``limits`` bound how much of the numbering plan the whole list may block.
    """
    paths = feed_paths(feeds_dir, name)
    try:
        row = store.feed(name)
    except StoreError as exc:
        return _failed(store, name, Refusal.STORE, str(exc), record=False)
    if row is None:
        raise FeedError(f"no feed named {name!r} (see `mamoru feed list`)")
    try:
        with _feed_lock(paths, timeout_s):
            return _update(store, paths, name, row, max_age_days=max_age_days, timeout_s=timeout_s,
                           before_write=before_write or _nothing, limits=limits or BreadthLimits())  # fmt: skip
    except Exception as exc:  # noqa: BLE001 -- classified into a refusal; the previous list stays in force
        if not isinstance(exc, _Refused):
            log.debug("feed %s: update failed", name, exc_info=True)
        refusal, detail = _classify(exc)
        return _failed(store, name, refusal, detail)


def _nothing() -> None:
    pass


def _update(store: Store, paths: FeedPaths, name: str, row: dict[str, Any], *, max_age_days: int,
            timeout_s: float, before_write: Callable[[], None], limits: BreadthLimits) -> FeedUpdate:
    try:
        anchor = paths.anchor.read_bytes()
    except OSError as exc:
        raise _Refused(Refusal.LOCAL, f"trusted root {paths.anchor} unreadable ({exc.strerror}): remove and "
                                      "re-add the feed") from exc  # fmt: skip
    paths.metadata.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=paths.base, prefix=".download-") as download_dir:
        base = row["url"] if row["url"].endswith("/") else row["url"] + "/"
        updater = Updater(str(paths.metadata), base + "metadata/", download_dir, base + "targets/",
                          fetcher=_DeadlineFetcher(timeout_s), bootstrap=anchor)  # fmt: skip
        updater.refresh()
        # ngclient has just verified and cached this file; its version is what we record.
        version = Metadata[Targets].from_file(str(paths.metadata / "targets.json")).signed.version
        info = updater.get_targetinfo(TARGET_NAME)
        if info is None:
            raise _Refused(Refusal.BAD_LIST, f"targets version {version} lists no {TARGET_NAME}")
        custom = info.custom if isinstance(info.custom, dict) else {}
        if custom.get("format") != FEED_FORMAT_ID:
            raise _Refused(Refusal.BAD_LIST, f"{TARGET_NAME} is in format {custom.get('format')!r}; this unit "
                                             f"reads {FEED_FORMAT_ID!r}")  # fmt: skip
        digest = info.hashes.get("sha256")
        if not digest:
            raise _Refused(Refusal.BAD_METADATA, f"{TARGET_NAME} has no sha256 hash")
        now = utc_now()
        expires_at = iso_utc(now + timedelta(days=max_age_days))
        if digest == row.get("target_hash"):
            before_write()
            store.renew_feed_entries(name, expires_at)
            store.save_feed(name, version=version, checked_at=iso_utc(now), error=None, error_at=None)
            log.info("feed %s: version %d is current (%s entries renewed until %s)", name, version,
                     row.get("entries"), expires_at)  # fmt: skip
            return FeedUpdate(name, FeedOutcome.CURRENT, version, row.get("entries"))
        data = Path(updater.download_target(info)).read_bytes()
    result = read_feed(data, source=FEED_SOURCE_PREFIX + name, expires_at=expires_at)
    del data
    if result.problems:
        first = result.problems[0]
        raise _Refused(Refusal.BAD_LIST, f"{len(result.problems)} bad row(s) in {TARGET_NAME} version {version}, "
                                         f"first at line {first.line}: {first.problem}")  # fmt: skip
    declared = custom.get("entries")
    if isinstance(declared, int) and declared != len(result.entries):
        raise _Refused(Refusal.BAD_LIST, f"{TARGET_NAME} holds {len(result.entries)} entries, its metadata says "
                                         f"{declared}")  # fmt: skip
    allowing = next((e for e in result.entries if e.list is not ListKind.BLOCK), None)
    if allowing is not None:
        # A feed may only block: an allow entry from outside would let a fraud number ring through.
        raise _Refused(Refusal.BAD_LIST, f"{TARGET_NAME} tries to allow {allowing.describe()}; feeds only block")
    too_broad = feed_breadth_problem(result.entries, limits)
    if too_broad is not None:
        raise _Refused(Refusal.TOO_BROAD, f"{TARGET_NAME} version {version}: {too_broad}")
    before_write()
    count = store.replace_feed_entries(name, result.entries)
    store.save_feed(name, version=version, target_hash=digest, entries=count, applied_at=iso_utc(now),
                    checked_at=iso_utc(now), error=None, error_at=None)  # fmt: skip
    log.info("feed %s: applied version %d, %d entries (in force until %s unless renewed)", name, version, count,
             expires_at)  # fmt: skip
    return FeedUpdate(name, FeedOutcome.APPLIED, version, count)


def _classify(exc: BaseException) -> tuple[Refusal, str]:
    """Map what went wrong to a Refusal and a short detail (the exception's own words)."""
    detail = str(exc) or type(exc).__name__
    if isinstance(exc, _Refused):
        return exc.refusal, detail
    if isinstance(exc, tuf_errors.ExpiredMetadataError):
        return Refusal.EXPIRED, detail
    if isinstance(exc, tuf_errors.BadVersionNumberError):
        return Refusal.ROLLBACK, detail
    if isinstance(exc, tuf_errors.UnsignedMetadataError):
        return Refusal.BAD_SIGNATURE, detail
    if isinstance(exc, (tuf_errors.LengthOrHashMismatchError, tuf_errors.DownloadLengthMismatchError)):
        return Refusal.TAMPERED, detail
    if isinstance(exc, tuf_errors.RepositoryError):
        cause = exc.__cause__
        return Refusal.BAD_METADATA, f"{detail}: {cause}" if cause else detail
    if isinstance(exc, tuf_errors.DownloadHTTPError):
        return Refusal.UNREACHABLE, f"HTTP {exc.status_code}: {detail}"
    if isinstance(exc, (tuf_errors.DownloadError, urllib3.exceptions.HTTPError)):
        cause = exc.__cause__
        reason = getattr(cause, "reason", None) or cause
        return Refusal.UNREACHABLE, f"{detail} ({reason})" if reason else detail
    if isinstance(exc, StoreError):
        return Refusal.STORE, detail
    if isinstance(exc, ValueError):  # the store refusing an entry
        return Refusal.BAD_LIST, detail
    if isinstance(exc, OSError):
        return Refusal.LOCAL, f"{exc.strerror or detail}: {exc.filename}" if exc.filename else detail
    return Refusal.BAD_METADATA, f"{type(exc).__name__}: {detail}"


def _failed(store: Store, name: str, refusal: Refusal, detail: str, *, record: bool = True) -> FeedUpdate:
    why = f"{_EXPLAIN[refusal]}: {detail}"
    log.warning("feed %s: refused update: %s", name, why)
    if record:
        try:
            store.save_feed(name, error=f"{refusal.value}: {why}", error_at=iso_utc(utc_now()))
        except (StoreError, ValueError) as exc:
            log.warning("feed %s: could not record the failure: %s", name, exc)
    outcome = FeedOutcome.UNREACHABLE if refusal is Refusal.UNREACHABLE else FeedOutcome.REFUSED
    return FeedUpdate(name, outcome, reason=why, refusal=refusal)


@contextmanager
def _feed_lock(paths: FeedPaths, timeout_s: float) -> Iterator[None]:
    """One updater per feed at a time: ngclient's cache is single-writer (CLI and daemon may overlap)."""
    paths.base.mkdir(parents=True, exist_ok=True)
    with open(paths.lock, "a+b") as handle:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise _Refused(Refusal.BUSY, f"still locked after {timeout_s:g} s ({paths.lock})") from None
                time.sleep(LOCK_POLL_S)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def update_all(store: Store, feeds_dir: Path, *, max_age_days: int, timeout_s: float = DEFAULT_TIMEOUT_S,
               limits: BreadthLimits | None = None) -> list[FeedUpdate]:
    """Check every feed in the store, one after another."""
    return [update_one(store, feeds_dir, row["name"], max_age_days=max_age_days, timeout_s=timeout_s,
                        limits=limits) for row in store.feeds()]  # fmt: skip


def update_one(store: Store, feeds_dir: Path, name: str, **kwargs: Any) -> FeedUpdate:
    try:
        return update_feed(store, feeds_dir, name, **kwargs)
    except FeedError as exc:  # a row this version cannot use (hand-edited DB): report, go on
        log.warning("feed %s: refused update: %s", name, exc)
        return FeedUpdate(name, FeedOutcome.REFUSED, reason=str(exc), refusal=Refusal.LOCAL)
