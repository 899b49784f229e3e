"""Signed number feeds, unit side: a real TUF repository (made by our publisher) served over real HTTP.

Every attack is a change to what the local HTTP server serves; the unit must
refuse it with the right reason and keep the list it had.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import shutil
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import Metadata, MetaFile, Snapshot, TargetFile, Targets, Timestamp
from tuf.api.serialization.json import JSONSerializer

from blocklist.feed_publisher import Expiry, FeedRepository, KeyRole, feed_file
from blocklist.feed_timer import FeedTimer
from blocklist.feeds import (
    BreadthLimits,
    FeedError,
    FeedOutcome,
    Refusal,
    add_feed,
    remove_feed,
    update_all,
    update_feed,
)
from blocklist.formats import FEED_FORMAT_ID, ListFormat, read_entries, write_entries
from blocklist.store import Store
from screening.cli import feeds as feeds_cli
from screening.core.model import ListEntry, ListKind, MatchKind

NUMBER_A = "+81312340001"  # 03-1234-0001
NUMBER_B = "+81312340002"
NUMBER_C = "+81312340003"


def national(e164: str) -> str:
    return "0" + e164[3:]


# --------------------------------------------------------------------------- helpers


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 -- the stdlib's name
        logging.getLogger("test.http").debug(format, *args)


class Server:
    """A static web server on 127.0.0.1 serving ``root`` (the feed's base URL)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root)))
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/feed/"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


class Feed:
    """An issuer's repository, the directory the web server serves, and a unit's store."""

    def __init__(self, tmp: Path) -> None:
        self.repo = FeedRepository(tmp / "issuer")
        self.www = tmp / "www" / "feed"
        self.www.mkdir(parents=True)
        self.server = Server(tmp / "www")
        self.feeds_dir = tmp / "unit" / "feeds"
        self.feeds_dir.parent.mkdir(parents=True)
        self.store = Store(tmp / "unit" / "calls.db", recover_calls=False)
        self.store.open()
        self.repo.init(write_entries([], ListFormat.FEED, home_region="JP"), 0)
        self.sync()

    @property
    def url(self) -> str:
        return self.server.url

    def publish(self, *numbers: str, expiry: Expiry | None = None, sync: bool = True) -> None:
        csv = "number,reason\n" + "".join(f"{national(n)},fraud ring {i}\n" for i, n in enumerate(numbers))
        imported = read_entries(csv.encode(), ListFormat.CSV, kind=ListKind.BLOCK, home_region="JP",
                                source="publish")  # fmt: skip
        assert not imported.problems, imported.problems
        self.repo.publish_numbers(feed_file(imported.entries, "JP"), len(imported.entries), expiry=expiry or Expiry())
        if sync:
            self.sync()

    def sync(self) -> None:
        """Copy the repository's served dirs to the web root (keys are never served)."""
        for sub in ("metadata", "targets"):
            shutil.copytree(self.repo.path / sub, self.www / sub, dirs_exist_ok=True)

    def snapshot_www(self, dest: Path) -> Path:
        shutil.copytree(self.www, dest)
        return dest

    def serve_copy(self, src: Path) -> None:
        shutil.rmtree(self.www)
        shutil.copytree(src, self.www)

    def add(self, name: str = "police", root: bytes | None = None, **kw: object) -> None:
        root_json = root if root is not None else (self.repo.metadata_dir / "root.json").read_bytes()
        add_feed(self.store, self.feeds_dir, name, self.url, root_json, **kw)  # type: ignore[arg-type]

    def update(self, name: str = "police", **kw: object):
        return update_feed(self.store, self.feeds_dir, name, max_age_days=30, **kw)  # type: ignore[arg-type]

    def blocked(self, number: str, at: datetime | None = None) -> bool:
        entry = self.store.load_lists(at or datetime.now(UTC)).match_block(number)
        return entry is not None

    def close(self) -> None:
        self.server.stop()
        self.store.close()


@pytest.fixture
def feed(tmp_path: Path) -> Iterator[Feed]:
    f = Feed(tmp_path)
    yield f
    f.close()


@pytest.fixture
def applied(feed: Feed) -> Feed:
    """A unit that follows the feed and has applied a list blocking A and B."""
    feed.publish(NUMBER_A, NUMBER_B)
    feed.add()
    assert feed.blocked(NUMBER_A) and feed.blocked(NUMBER_B)
    return feed


def assert_refused(feed: Feed, result, refusal: Refusal, *still_blocked: str) -> None:
    assert result.outcome in (FeedOutcome.REFUSED, FeedOutcome.UNREACHABLE), result
    assert result.refusal is refusal, result
    row = feed.store.feed("police")
    assert row is not None and row["error"] and row["error"].startswith(refusal.value) and row["error_at"]
    for number in still_blocked:
        assert feed.blocked(number), f"{number} should still be blocked after a refused update"


# --------------------------------------------------------------------------- the normal path


def test_first_update_applies_the_list_with_reason_and_expiry(feed: Feed) -> None:
    feed.publish(NUMBER_A, NUMBER_B)
    feed.add()
    entry = feed.store.load_lists(datetime.now(UTC)).match_block(NUMBER_A)
    assert entry is not None and entry.source == "feed:police" and entry.note == "fraud ring 0"
    assert entry.expires_at is not None
    expires = datetime.fromisoformat(entry.expires_at)
    assert timedelta(days=29) < expires - datetime.now(UTC) <= timedelta(days=30)
    assert not feed.blocked(NUMBER_C)
    row = feed.store.feed("police")
    assert row["url"] == feed.url and row["version"] == 2 and row["entries"] == 2
    assert row["applied_at"] and row["checked_at"] and row["error"] is None
    # ngclient's cache lives beside the unchanged trust anchor
    assert (feed.feeds_dir / "police" / "root.json").read_bytes() == (feed.repo.metadata_dir / "1.root.json").read_bytes()
    assert (feed.feeds_dir / "police" / "metadata" / "timestamp.json").is_file()


def test_a_feed_added_before_any_numbers_holds_the_empty_version_1(feed: Feed) -> None:
    feed.add()
    row = feed.store.feed("police")
    assert (row["version"], row["entries"], row["error"]) == (1, 0, None)


def test_new_list_is_applied_and_removed_numbers_stop_blocking(applied: Feed) -> None:
    applied.publish(NUMBER_B, NUMBER_C)
    result = applied.update()
    assert (result.outcome, result.version, result.entries) == (FeedOutcome.APPLIED, 3, 2)
    assert not applied.blocked(NUMBER_A) and applied.blocked(NUMBER_B) and applied.blocked(NUMBER_C)


def test_unchanged_list_is_current_and_its_expiry_renewed(applied: Feed) -> None:
    before = applied.store.list_entries(ListKind.BLOCK)[0].expires_at
    time.sleep(0.01)
    applied.repo.refresh()  # the issuer's cron job: new timestamp, same list
    applied.sync()
    result = applied.update()
    assert result.outcome is FeedOutcome.CURRENT and result.version == 2 and result.entries == 2
    after = applied.store.list_entries(ListKind.BLOCK)[0].expires_at
    assert after > before


def test_entries_lapse_when_no_verified_check_renews_them(applied: Feed) -> None:
    later = datetime.now(UTC) + timedelta(days=31)
    assert applied.blocked(NUMBER_A) and not applied.blocked(NUMBER_A, at=later)


def test_a_persons_own_entry_outlives_the_feed(applied: Feed) -> None:
    from screening.core.model import ListEntry, MatchKind

    applied.store.add_entry(ListEntry(ListKind.BLOCK, MatchKind.EXACT, NUMBER_A, source="family", note="ours"))
    applied.publish(NUMBER_C)
    assert applied.update().outcome is FeedOutcome.APPLIED
    entry = applied.store.load_lists(datetime.now(UTC)).match_block(NUMBER_A)
    assert entry is not None and entry.source == "family"
    assert remove_feed(applied.store, applied.feeds_dir, "police")
    assert applied.blocked(NUMBER_A) and not applied.blocked(NUMBER_C)
    assert not (applied.feeds_dir / "police").exists()


def test_update_all_checks_every_feed(feed: Feed, tmp_path: Path) -> None:
    other = Feed(tmp_path / "second")
    try:
        other.publish(NUMBER_C)
        feed.publish(NUMBER_A)
        feed.add("police")
        add_feed(feed.store, feed.feeds_dir, "county", other.url,
                 (other.repo.metadata_dir / "root.json").read_bytes())  # fmt: skip
        assert feed.blocked(NUMBER_A) and feed.blocked(NUMBER_C)
        results = update_all(feed.store, feed.feeds_dir, max_age_days=30)
        assert sorted((r.name, r.outcome) for r in results) == [("county", FeedOutcome.CURRENT),
                                                                ("police", FeedOutcome.CURRENT)]
    finally:
        other.close()


# --------------------------------------------------------------------------- attacks and failures


def test_tampered_target_is_refused_and_the_old_list_stays(applied: Feed, caplog: pytest.LogCaptureFixture) -> None:
    applied.publish(NUMBER_C)
    target = next(p for p in (applied.www / "targets").glob("*.numbers.csv")
                  if p.name.split(".")[0] in json.loads((applied.www / "metadata" / "targets.json").read_text())
                  ["signed"]["targets"]["numbers.csv"]["hashes"]["sha256"])  # fmt: skip
    target.write_bytes(target.read_bytes().replace(NUMBER_C.encode(), b"+81120000000"))
    with caplog.at_level(logging.WARNING, logger="blocklist.feeds"):
        result = applied.update()
    assert_refused(applied, result, Refusal.TAMPERED, NUMBER_A, NUMBER_B)
    assert not applied.blocked(NUMBER_C) and not applied.blocked("+81120000000")
    refused = next(r.getMessage() for r in caplog.records if "refused update" in r.getMessage())
    assert refused.startswith("feed police: refused update: a file does not match")


def test_rollback_to_older_metadata_is_refused(applied: Feed, tmp_path: Path) -> None:
    old = applied.snapshot_www(tmp_path / "old-www")  # version 2, as served before
    applied.publish(NUMBER_C)
    assert applied.update().outcome is FeedOutcome.APPLIED  # unit now trusts version 3
    applied.serve_copy(old)
    result = applied.update()
    assert_refused(applied, result, Refusal.ROLLBACK, NUMBER_C)
    assert not applied.blocked(NUMBER_A)  # version 2's list did not come back


def test_expired_timestamp_freeze_is_refused(applied: Feed) -> None:
    applied.publish(NUMBER_C, expiry=Expiry(timestamp=datetime.now(UTC) - timedelta(hours=1)))
    result = applied.update()
    assert_refused(applied, result, Refusal.EXPIRED, NUMBER_A, NUMBER_B)
    assert "timestamp.json is expired" in result.reason and not applied.blocked(NUMBER_C)


def test_expired_targets_is_refused(applied: Feed) -> None:
    applied.publish(NUMBER_C, expiry=Expiry(targets=datetime.now(UTC) - timedelta(minutes=5)))
    assert_refused(applied, applied.update(), Refusal.EXPIRED, NUMBER_A)


def test_mix_and_match_of_two_publishes_is_refused(applied: Feed, tmp_path: Path) -> None:
    first = applied.snapshot_www(tmp_path / "v2")  # targets v2 / snapshot v2
    applied.publish(NUMBER_C)  # targets v3 / snapshot v3
    # timestamp of the new publish with the old snapshot
    (applied.www / "metadata" / "3.snapshot.json").write_bytes((first / "metadata" / "2.snapshot.json").read_bytes())
    assert_refused(applied, applied.update(), Refusal.TAMPERED, NUMBER_A, NUMBER_B)
    # snapshot of the new publish, but the old publish's targets under the new name
    applied.sync()
    (applied.www / "metadata" / "3.targets.json").write_bytes((first / "metadata" / "2.targets.json").read_bytes())
    assert_refused(applied, applied.update(), Refusal.TAMPERED, NUMBER_A, NUMBER_B)
    applied.sync()
    assert applied.update().outcome is FeedOutcome.APPLIED and applied.blocked(NUMBER_C)


def test_a_unit_trusting_another_repositorys_root_refuses(feed: Feed, tmp_path: Path) -> None:
    impostor = Feed(tmp_path / "impostor")
    try:
        impostor.publish(NUMBER_C)
        # the unit trusts the real issuer's root, but the URL serves the impostor's repository
        add_feed(feed.store, feed.feeds_dir, "police", impostor.url, (feed.repo.metadata_dir / "root.json").read_bytes())
        row = feed.store.feed("police")
        assert row["error"].startswith(Refusal.BAD_SIGNATURE.value) and row["version"] is None
        assert not feed.blocked(NUMBER_C)
    finally:
        impostor.close()


def test_targets_signed_by_a_key_root_does_not_name_is_refused(applied: Feed) -> None:
    """An attacker with the online snapshot/timestamp keys but not the targets key."""
    repo, meta = applied.repo, applied.www / "metadata"
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    key = {r: CryptoSigner(load_pem_private_key((repo.keys_dir / f"{r}.pem").read_bytes(), None))
           for r in ("snapshot", "timestamp")}  # fmt: skip
    serializer = JSONSerializer(compact=False)
    targets = Metadata[Targets].from_file(str(meta / "targets.json"))
    targets.signed.version += 1
    evil = f"number,reason,expires\n{NUMBER_C},planted,\n".encode()
    info = TargetFile.from_data("numbers.csv", evil, ["sha256"])
    info.unrecognized_fields["custom"] = {"format": FEED_FORMAT_ID, "entries": 1}
    targets.signed.targets["numbers.csv"] = info
    (applied.www / "targets" / f"{info.hashes['sha256']}.numbers.csv").write_bytes(evil)
    targets.sign(CryptoSigner.generate_ed25519())  # a rogue key
    targets_bytes = targets.to_bytes(serializer)
    (meta / f"{targets.signed.version}.targets.json").write_bytes(targets_bytes)
    snapshot = Metadata[Snapshot].from_file(str(meta / "snapshot.json"))
    snapshot.signed.version += 1
    snapshot.signed.meta["targets.json"] = MetaFile.from_data(targets.signed.version, targets_bytes, ["sha256"])
    snapshot.sign(key["snapshot"])
    snapshot_bytes = snapshot.to_bytes(serializer)
    (meta / f"{snapshot.signed.version}.snapshot.json").write_bytes(snapshot_bytes)
    timestamp = Metadata[Timestamp].from_file(str(meta / "timestamp.json"))
    timestamp.signed.version += 1
    timestamp.signed.snapshot_meta = MetaFile.from_data(snapshot.signed.version, snapshot_bytes, ["sha256"])
    timestamp.sign(key["timestamp"])
    (meta / "timestamp.json").write_bytes(timestamp.to_bytes(serializer))
    result = applied.update()
    assert_refused(applied, result, Refusal.BAD_SIGNATURE, NUMBER_A, NUMBER_B)
    assert not applied.blocked(NUMBER_C)


def test_timestamp_signed_by_a_rogue_key_is_refused(applied: Feed) -> None:
    path = applied.www / "metadata" / "timestamp.json"
    timestamp = Metadata[Timestamp].from_file(str(path))
    timestamp.signed.version += 1
    timestamp.sign(CryptoSigner.generate_ed25519())
    path.write_bytes(timestamp.to_bytes(JSONSerializer(compact=False)))
    assert_refused(applied, applied.update(), Refusal.BAD_SIGNATURE, NUMBER_A)


def test_network_down_keeps_the_old_list_and_records_the_error(applied: Feed,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    applied.publish(NUMBER_C)
    applied.server.stop()
    with caplog.at_level(logging.WARNING, logger="blocklist.feeds"):
        result = applied.update()
    assert result.outcome is FeedOutcome.UNREACHABLE
    assert_refused(applied, result, Refusal.UNREACHABLE, NUMBER_A, NUMBER_B)
    lines = [r.getMessage() for r in caplog.records if r.name == "blocklist.feeds"]
    assert len(lines) == 1 and lines[0].startswith("feed police: refused update: feed server not reachable")
    row = applied.store.feed("police")
    assert row["version"] == 2 and row["entries"] == 2  # what is in force is unchanged


def test_a_server_that_never_answers_times_out(applied: Feed) -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts connections (kernel backlog) but never sends a byte
    try:
        applied.store.save_feed("police", url=f"http://127.0.0.1:{silent.getsockname()[1]}/feed/")
        started = time.monotonic()
        result = applied.update(timeout_s=1.5)
        elapsed = time.monotonic() - started
    finally:
        silent.close()
    assert_refused(applied, result, Refusal.UNREACHABLE, NUMBER_A)
    assert elapsed < 10, f"update waited {elapsed:.1f} s on a silent server"


def test_a_server_that_trickles_bytes_is_cut_off_at_the_deadline(applied: Feed) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    stop = threading.Event()

    def trickle() -> None:  # a valid HTTP answer, one byte every 0.2 s: never a socket timeout
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            with conn:
                conn.recv(4096)
                conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 10000\r\n\r\n")
                while not stop.is_set():
                    try:
                        conn.sendall(b" ")
                    except OSError:
                        break
                    time.sleep(0.2)

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    try:
        applied.store.save_feed("police", url=f"http://127.0.0.1:{listener.getsockname()[1]}/feed/")
        started = time.monotonic()
        result = applied.update(timeout_s=1.5)
        elapsed = time.monotonic() - started
    finally:
        stop.set()
        thread.join(5)
        listener.close()
    assert_refused(applied, result, Refusal.UNREACHABLE, NUMBER_A)
    assert "within 1.5 s" in result.reason and elapsed < 5, (elapsed, result.reason)


def test_a_signed_list_with_a_bad_row_is_refused_whole(applied: Feed) -> None:
    bad = f"number,reason,expires\n{NUMBER_C},ok,\nnot-a-number,oops,\n".encode()
    applied.repo.publish_numbers(bad, 2)  # signed by the real keys: only the content is wrong
    applied.sync()
    result = applied.update()
    assert_refused(applied, result, Refusal.BAD_LIST, NUMBER_A, NUMBER_B)
    assert "line 3" in result.reason and not applied.blocked(NUMBER_C)


def test_a_list_whose_count_disagrees_with_its_metadata_is_refused(applied: Feed) -> None:
    data = write_entries(read_entries(f"number,reason\n{national(NUMBER_C)},x\n".encode(), ListFormat.CSV,
                                      kind=ListKind.BLOCK, home_region="JP", source="p").entries,
                         ListFormat.FEED, home_region="JP")  # fmt: skip
    applied.repo.publish_numbers(data, 5)
    applied.sync()
    assert_refused(applied, applied.update(), Refusal.BAD_LIST, NUMBER_A)


def _publish_country_wide(feed: Feed) -> None:
    """The filer's feed: 90 signed, well-formed prefixes +8110* … +8199* (every Japanese number)."""
    entries = [ListEntry(ListKind.BLOCK, MatchKind.PREFIX, f"+81{d}", source="p") for d in range(10, 100)]
    feed.repo.publish_numbers(write_entries(entries, ListFormat.FEED, home_region="JP"), len(entries))
    feed.sync()


def test_a_feed_blocking_a_whole_country_is_refused_and_the_old_list_stays(applied: Feed) -> None:
    _publish_country_wide(applied)
    result = applied.update()
    assert_refused(applied, result, Refusal.TOO_BROAD, NUMBER_A, NUMBER_B)
    assert "+8110*" in result.reason, result.reason
    for number in ("+81110", "+81119", "+819012345678", "+81612345678"):
        assert not applied.blocked(number), number


def test_the_breadth_limits_are_the_units_settings(applied: Feed) -> None:
    entries = [ListEntry(ListKind.BLOCK, MatchKind.PREFIX, f"+81{d}", source="p") for d in range(500, 520)]  # 2 %
    applied.repo.publish_numbers(write_entries(entries, ListFormat.FEED, home_region="JP"), len(entries))
    applied.sync()
    assert_refused(applied, applied.update(), Refusal.TOO_BROAD, NUMBER_A)
    result = applied.update(limits=BreadthLimits(max_share_percent=5.0))
    assert result.outcome is FeedOutcome.APPLIED and applied.blocked("+81501234567") and not applied.blocked(NUMBER_A)


def test_the_feed_timer_reports_a_too_broad_feed_for_an_alert(applied: Feed) -> None:
    _publish_country_wide(applied)
    refused: list[str] = []
    timer = FeedTimer(applied.store.path, applied.feeds_dir, interval_s=3600, max_age_days=30,
                      on_refused=lambda update: refused.append(update.name))  # fmt: skip
    results = timer.run_once(applied.store)
    assert [r.refusal for r in results] == [Refusal.TOO_BROAD] and refused == ["police"]
    assert applied.blocked(NUMBER_A)


def test_a_locked_database_is_a_refusal_and_the_next_check_applies(applied: Feed) -> None:
    applied.publish(NUMBER_C)
    blocker = sqlite3.connect(applied.store.path, timeout=0, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another writer holds the database (e.g. a long import)
    impatient = Store(applied.store.path, recover_calls=False, busy_timeout=0.1)
    try:
        result = update_feed(impatient, applied.feeds_dir, "police", max_age_days=30)
    finally:
        blocker.rollback()
        blocker.close()
    assert result.outcome is FeedOutcome.REFUSED and result.refusal is Refusal.STORE
    assert applied.blocked(NUMBER_A) and not applied.blocked(NUMBER_C)
    assert update_feed(impatient, applied.feeds_dir, "police", max_age_days=30).outcome is FeedOutcome.APPLIED
    impatient.close()
    assert applied.blocked(NUMBER_C)


# --------------------------------------------------------------------------- key rotation


@pytest.mark.parametrize("roles", [[KeyRole.TIMESTAMP], [KeyRole.TARGETS], [KeyRole.ROOT], list(KeyRole)])
def test_units_follow_a_key_rotation(applied: Feed, roles: list[KeyRole]) -> None:
    applied.repo.rotate_keys(roles)
    applied.publish(NUMBER_C)
    result = applied.update()
    assert result.outcome is FeedOutcome.APPLIED and applied.blocked(NUMBER_C) and not applied.blocked(NUMBER_A)
    # a unit that slept through two root rotations walks the chain too
    applied.repo.rotate_keys([KeyRole.ROOT])
    applied.repo.rotate_keys([KeyRole.ROOT, KeyRole.SNAPSHOT])
    applied.publish(NUMBER_A)
    assert applied.update().outcome is FeedOutcome.APPLIED and applied.blocked(NUMBER_A)
    history = sorted(p.name for p in (applied.feeds_dir / "police" / "metadata" / "root_history").iterdir())
    assert history == ["1.root.json", "2.root.json", "3.root.json", "4.root.json"]


def test_old_keys_cannot_sign_after_rotation(applied: Feed, tmp_path: Path) -> None:
    old_keys = tmp_path / "old-keys"
    shutil.copytree(applied.repo.keys_dir, old_keys)
    applied.repo.rotate_keys([KeyRole.TIMESTAMP])
    applied.sync()
    assert applied.update().ok  # unit now trusts root v2, which no longer names the old timestamp key
    # someone still holding the retired timestamp key signs a newer timestamp
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    path = applied.www / "metadata" / "timestamp.json"
    timestamp = Metadata[Timestamp].from_file(str(path))
    timestamp.signed.version += 1
    timestamp.sign(CryptoSigner(load_pem_private_key((old_keys / "timestamp.pem").read_bytes(), None)))
    path.write_bytes(timestamp.to_bytes(JSONSerializer(compact=False)))
    assert_refused(applied, applied.update(), Refusal.BAD_SIGNATURE, NUMBER_A)


# --------------------------------------------------------------------------- adding feeds


def test_add_feed_validates_name_url_and_root(feed: Feed) -> None:
    root = (feed.repo.metadata_dir / "root.json").read_bytes()
    for name in ("", "Police", "-x", "a" * 33, "../etc", "a b", "a_b"):
        with pytest.raises(FeedError, match="feed name"):
            add_feed(feed.store, feed.feeds_dir, name, feed.url, root)
    for url in ("ftp://x/", "feeds.example.org/", "http:///x", "https://u:p@x/", "https://x/?a=1"):
        with pytest.raises(FeedError, match="feed URL"):
            add_feed(feed.store, feed.feeds_dir, "police", url, root)
    with pytest.raises(FeedError, match="not TUF metadata"):
        add_feed(feed.store, feed.feeds_dir, "police", feed.url, b"{not json")
    with pytest.raises(FeedError, match="timestamp metadata, not root"):
        add_feed(feed.store, feed.feeds_dir, "police", feed.url,
                 (feed.repo.metadata_dir / "timestamp.json").read_bytes())  # fmt: skip
    forged = json.loads(root)
    forged["signed"]["expires"] = "2099-01-01T00:00:00Z"  # signature no longer matches
    with pytest.raises(FeedError, match="not signed by its own root keys"):
        add_feed(feed.store, feed.feeds_dir, "police", feed.url, json.dumps(forged).encode())
    assert feed.store.feeds() == [] and not feed.feeds_dir.exists()


def test_adding_the_same_feed_again_is_harmless_but_a_different_one_is_refused(applied: Feed, tmp_path: Path) -> None:
    applied.add()  # same name, URL and root
    assert applied.blocked(NUMBER_A)
    other = FeedRepository(tmp_path / "other")
    other.init(write_entries([], ListFormat.FEED, home_region="JP"))
    with pytest.raises(FeedError, match="already exists"):
        applied.add(root=(other.metadata_dir / "root.json").read_bytes())


def test_feed_added_while_the_server_is_down_stays_added(feed: Feed) -> None:
    feed.server.stop()
    feed.add()
    row = feed.store.feed("police")
    assert row["url"] == feed.url and row["version"] is None and row["error"].startswith("unreachable")
    feed.server = Server(feed.www.parent)
    feed.store.save_feed("police", url=feed.url)
    assert feed.update().outcome is FeedOutcome.APPLIED


def test_unknown_feed_name_is_a_feed_error(feed: Feed) -> None:
    with pytest.raises(FeedError, match="no feed named"):
        feed.update("nobody")


# --------------------------------------------------------------------------- CLI


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="mamoru")
    feeds_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


def test_feed_cli_add_update_list_remove(feed: Feed, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from screening.cli.common import CliError

    config = tmp_path / "mamoru.toml"
    config.write_text(f'[store]\ndb = "{feed.store.path}"\n[feeds]\ndir = "{feed.feeds_dir}"\n')
    root = tmp_path / "root.json"
    shutil.copy(feed.repo.metadata_dir / "root.json", root)
    feed.publish(NUMBER_A)
    common = ["--config", str(config)]
    assert _cli(["feed", "add", "police", feed.url, "--root", str(root), *common]) == 0
    out = capsys.readouterr().out
    assert "feed police: trusted" in out and "applied version 2, 1 entries" in out
    assert _cli(["feed", "update", *common]) == 0
    assert "version 2 is current" in capsys.readouterr().out
    assert _cli(["feed", "list", "--json", *common]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["name"], r["version"], r["entries"]) for r in rows] == [("police", 2, 1)]
    feed.server.stop()
    assert _cli(["feed", "update", "police", "--json", *common]) == 1
    [result] = json.loads(capsys.readouterr().out)
    assert (result["outcome"], result["refusal"]) == ("unreachable", "unreachable")
    assert _cli(["feed", "list", *common]) == 0
    assert "last error" in capsys.readouterr().out
    assert _cli(["feed", "remove", "police", *common]) == 0
    with pytest.raises(CliError, match="no feed named"):
        _cli(["feed", "remove", "police", *common])
    with pytest.raises(CliError, match="feed name"):
        _cli(["feed", "add", "Bad Name", feed.url, "--root", str(root), *common])
    with pytest.raises(CliError, match="nope.json"):
        _cli(["feed", "add", "x", feed.url, "--root", str(tmp_path / "nope.json"), *common])


# --------------------------------------------------------------------------- the daemon's timer


def test_daemon_picks_up_a_new_number_on_its_timer_and_blocks_its_call(feed: Feed) -> None:
    from firmware.dialects import CADENCE_PERIOD_S, CONEXANT_CX93001, RingCadence
    from firmware.modem_line import ModemLine
    from firmware.scenarios import CallScript
    from firmware.virtual_modem import VirtualModem
    from firmware.vmodem.records import CallOutcome
    from screening.core.model import Action
    from screening.core.rules import Policy
    from screening.daemon import Daemon
    from screening.session import CallSettings
    from voice.announcements import ToneAnnouncements

    scale = 0.05
    feed.publish(NUMBER_A)
    feed.add()
    modem = VirtualModem(CONEXANT_CX93001, RingCadence.JAPAN, scale)
    modem.start()
    line = ModemLine(str(modem.device_path), "auto", "JP", RingCadence.JAPAN,
                     ring_gap_s=1.5 * CADENCE_PERIOD_S[RingCadence.JAPAN] * scale)  # fmt: skip
    line.open()
    daemon_store = Store(feed.store.path, retry_interval=0.05, busy_timeout=0.2)
    daemon_store.open()
    daemon = Daemon(line, daemon_store, CallSettings(Policy(), ToneAnnouncements(), 30.0))
    timer = FeedTimer(feed.store.path, feed.feeds_dir, interval_s=0.3, first_after_s=0.3, max_age_days=30,
                      line_idle=daemon.line_idle, on_lists=daemon.offer_lists,
                      hold_lists=daemon.hold_lists)  # fmt: skip
    stop = threading.Event()
    thread = threading.Thread(target=daemon.run, args=(stop,), daemon=True)
    thread.start()
    timer.start()
    try:
        feed.publish(NUMBER_B)
        deadline = time.monotonic() + 15
        while (feed.store.feed("police")["version"] or 0) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert feed.store.feed("police")["version"] == 3, "the timer did not apply the new list"
        record = modem.wait_for_call_end(modem.place_call(CallScript(nmbr=national(NUMBER_B), hang_up_after_s=200)),
                                         timeout=30)  # fmt: skip
        assert record.outcome is CallOutcome.ANSWERED and record.rings <= 1
        deadline = time.monotonic() + 10
        while not daemon_store.recent_calls(limit=1) and time.monotonic() < deadline:
            time.sleep(0.02)
        row = daemon_store.recent_calls(limit=1)[0]
        assert (row.action, row.rule) == (Action.BLOCK, "blocklist:feed:police")
        assert timer.checks >= 1
    finally:
        timer.stop()
        stop.set()
        thread.join(10)
        line.close()
        modem.stop()
        daemon_store.close()


def test_feed_timer_waits_for_an_idle_line(feed: Feed) -> None:
    feed.publish(NUMBER_A)
    feed.add()
    feed.publish(NUMBER_B)
    idle = threading.Event()
    offered = []
    timer = FeedTimer(feed.store.path, feed.feeds_dir, interval_s=0.2, first_after_s=0.1, max_age_days=30,
                      line_idle=idle.is_set, on_lists=offered.append)  # fmt: skip
    timer.start()
    try:
        time.sleep(1.0)
        assert not feed.blocked(NUMBER_B), "updated while a call was on the line"
        idle.set()
        deadline = time.monotonic() + 10
        while not offered and time.monotonic() < deadline:
            time.sleep(0.05)
        assert offered and offered[0].match_block(NUMBER_B) is not None  # the snapshot is built off the call loop
    finally:
        timer.stop()


# --------------------------------------------------------------------------- scale


@pytest.mark.slow
@pytest.mark.timeout(600)  # ~40 s on x86 (parsing and inserting a million rows); figures: benchmarks/bench_feed.py
def test_a_million_entry_feed_is_applied_and_looked_up(feed: Feed) -> None:
    n = 1_000_000
    numbers = [f"+8190{i * 97 % 10**8:08d}" for i in range(n)]  # distinct: 97 is coprime with 10**8
    data = ("number,reason,expires\n" + "".join(f"{v},fraud ring,\n" for v in numbers)).encode()
    feed.repo.publish_numbers(data, n)
    feed.sync()
    feed.add(first_update=False)
    started = time.monotonic()
    result = feed.update(timeout_s=300)
    elapsed = time.monotonic() - started
    assert (result.outcome, result.entries) == (FeedOutcome.APPLIED, n), result
    lists = feed.store.load_lists(datetime.now(UTC))
    assert len(lists) == n
    for number in numbers[:: n // 1000]:
        assert lists.match_block(number) is not None
    assert lists.match_block("+818012345678") is None  # an 080 number: not in the feed
    assert elapsed < 300, f"applying {n} entries took {elapsed:.0f} s"
    assert feed.update(timeout_s=300).outcome is FeedOutcome.CURRENT


def test_stopping_while_waiting_for_the_line_abandons_the_write_quietly(feed: Feed) -> None:
    feed.publish(NUMBER_A)
    feed.add()
    feed.publish(NUMBER_B)
    timer = FeedTimer(feed.store.path, feed.feeds_dir, interval_s=60, first_after_s=0.05, max_age_days=30,
                      line_idle=lambda: False)  # a call that never ends  # fmt: skip
    timer.start()
    time.sleep(0.8)  # verified and downloaded by now, waiting for the line
    started = time.monotonic()
    timer.stop(timeout=5)
    assert time.monotonic() - started < 2 and timer._thread is not None and not timer._thread.is_alive()
    row = feed.store.feed("police")
    assert row["version"] == 2 and row["error"] is None and not feed.blocked(NUMBER_B)


def test_the_call_loop_keeps_its_snapshot_while_a_feed_is_written_then_takes_the_offered_one(feed: Feed) -> None:
    from screening.core.model import ListEntry, MatchKind
    from screening.daemon import ListCache

    feed.store.add_entry(ListEntry(ListKind.BLOCK, MatchKind.EXACT, NUMBER_A))
    cache = ListCache(feed.store)
    assert cache.current().match_block(NUMBER_A) is not None
    cache.hold(60)
    feed.store.add_entry(ListEntry(ListKind.BLOCK, MatchKind.EXACT, NUMBER_B))
    assert cache.current().match_block(NUMBER_B) is None  # no rebuild on the call loop while held
    cache.offer(feed.store.load_lists(datetime.now(UTC)))
    assert cache.current().match_block(NUMBER_B) is not None  # offered: and the hold is over
    cache.hold(0.05)
    feed.store.add_entry(ListEntry(ListKind.BLOCK, MatchKind.EXACT, NUMBER_C))
    time.sleep(0.1)
    assert cache.refresh()  # a hold never outlives its bound: the rebuild starts (in the background)
    assert cache.wait_built(10.0) and cache.current().match_block(NUMBER_C) is not None
    stale = ListCache(feed.store)
    stale.hold(60)
    assert stale.current().match_block(NUMBER_A) is not None  # the first load is never held back


def test_the_runner_starts_feed_updates_only_when_configured(feed: Feed) -> None:
    from dataclasses import replace

    from firmware.dialects import RingCadence
    from firmware.modem_line import ModemLine
    from screening.config import Config
    from screening.core.rules import Policy
    from screening.daemon import Daemon
    from screening.runner import start_feed_updates
    from screening.session import CallSettings
    from voice.announcements import ToneAnnouncements

    daemon = Daemon(ModemLine("/dev/null", "auto", "JP", RingCadence.JAPAN), feed.store,
                    CallSettings(Policy(), ToneAnnouncements()))  # never run: only its hooks are handed over
    cfg = Config()
    off = replace(cfg, feeds=replace(cfg.feeds, dir=feed.feeds_dir, update_minutes=0))
    assert start_feed_updates(off, feed.store.path, daemon) is None
    on = replace(cfg, feeds=replace(cfg.feeds, dir=feed.feeds_dir, update_minutes=5, max_age_days=7))
    timer = start_feed_updates(on, feed.store.path, daemon)
    try:
        assert timer is not None and (timer.interval_s, timer.max_age_days) == (300.0, 7)
        assert timer.feeds_dir == feed.feeds_dir and timer.line_idle() is True
        assert timer.on_lists == daemon.offer_lists and timer.hold_lists == daemon.hold_lists
    finally:
        assert timer is not None
        timer.stop()
