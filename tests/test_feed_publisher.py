"""Signed number feeds, issuer side: the repository `mamoru publish` makes, checked with python-tuf itself."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from securesystemslib.signer import CryptoSigner
from tuf.api.exceptions import UnsignedMetadataError
from tuf.api.metadata import Metadata, Root

from blocklist.feed_publisher import Expiry, FeedRepository, KeyRole, PublishError, feed_file
from blocklist.formats import FEED_FORMAT_ID, FEED_HEADER, ListFormat, read_entries, read_feed, write_entries
from screening.cli import feeds as feeds_cli
from screening.core.model import ListEntry, ListKind, MatchKind

EMPTY = write_entries([], ListFormat.FEED, home_region="JP")


def md(repo: FeedRepository, name: str) -> Metadata:
    return Metadata.from_file(str(repo.metadata_dir / name))


def verify(repo: FeedRepository, role: str, data: Metadata, root: Root | None = None) -> None:
    (root or md(repo, "root.json").signed).verify_delegate(role, data.signed_bytes, data.signatures)


def entries(*specs: str) -> list[ListEntry]:
    csv = "number,reason\n" + "".join(f"{s},reason {i}\n" for i, s in enumerate(specs))
    result = read_entries(csv.encode(), ListFormat.CSV, kind=ListKind.BLOCK, home_region="JP", source="publish")
    assert not result.problems
    return result.entries


@pytest.fixture
def repo(tmp_path: Path) -> FeedRepository:
    r = FeedRepository(tmp_path / "feed")
    r.init(EMPTY)
    return r


def test_init_lays_out_keys_and_consistent_snapshot_metadata(repo: FeedRepository) -> None:
    assert stat.S_IMODE(repo.keys_dir.stat().st_mode) == 0o700
    for role in KeyRole:
        key = repo.keys_dir / f"{role.value}.pem"
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        assert b"PRIVATE KEY" in key.read_bytes()
    names = sorted(p.name for p in repo.metadata_dir.iterdir())
    assert names == ["1.root.json", "1.snapshot.json", "1.targets.json", "root.json", "snapshot.json",
                     "targets.json", "timestamp.json"]
    root = md(repo, "1.root.json")
    assert isinstance(root.signed, Root) and root.signed.consistent_snapshot and root.signed.version == 1
    verify(repo, "root", root)
    # four distinct ed25519 keys, one per role
    keyids = [root.signed.roles[r.value].keyids for r in KeyRole]
    assert all(len(k) == 1 for k in keyids) and len({k[0] for k in keyids}) == 4
    assert {root.signed.keys[k[0]].keytype for k in keyids} == {"ed25519"}
    for name, role in (("1.targets.json", "targets"), ("1.snapshot.json", "snapshot"), ("timestamp.json", "timestamp")):
        verify(repo, role, md(repo, name))
    info = md(repo, "targets.json").signed.targets["numbers.csv"]
    assert info.custom == {"format": FEED_FORMAT_ID, "entries": 0}
    served = repo.targets_dir / f"{info.hashes['sha256']}.numbers.csv"
    assert served.read_bytes().decode().strip() == FEED_HEADER
    assert hashlib.sha256(served.read_bytes()).hexdigest() == info.hashes["sha256"]
    now = datetime.now(UTC)
    expiries = {n: md(repo, f"{n}.json").signed.expires - now for n in ("root", "targets", "snapshot", "timestamp")}
    assert expiries["timestamp"] < timedelta(days=8) < expiries["snapshot"] < expiries["targets"] < expiries["root"]
    assert timedelta(days=364) < expiries["root"] <= timedelta(days=365)


def test_init_refuses_an_existing_repository(repo: FeedRepository) -> None:
    before = (repo.keys_dir / "root.pem").read_bytes()
    with pytest.raises(PublishError, match="already a feed repository"):
        repo.init(EMPTY)
    assert (repo.keys_dir / "root.pem").read_bytes() == before


def test_publish_bumps_versions_pins_hashes_and_keeps_the_previous_target(repo: FeedRepository) -> None:
    first = repo.publish_numbers(feed_file(entries("03-1234-0001"), "JP"), 1)
    second = repo.publish_numbers(feed_file(entries("03-1234-0002", "0120*"), "JP"), 2)
    assert (first.targets_version, first.snapshot_version, first.timestamp_version) == (2, 2, 2)
    assert (second.targets_version, second.snapshot_version, second.timestamp_version, second.entries) == (3, 3, 3, 2)
    targets = md(repo, "3.targets.json")
    assert targets.signed.targets["numbers.csv"].custom == {"format": FEED_FORMAT_ID, "entries": 2}
    snapshot, timestamp = md(repo, "3.snapshot.json"), md(repo, "timestamp.json")
    targets_bytes = (repo.metadata_dir / "3.targets.json").read_bytes()
    snapshot.signed.meta["targets.json"].verify_length_and_hashes(targets_bytes)
    timestamp.signed.snapshot_meta.verify_length_and_hashes((repo.metadata_dir / "3.snapshot.json").read_bytes())
    assert sorted(p.name.split(".")[0] for p in repo.targets_dir.iterdir()) == sorted(
        [first.target_hash, second.target_hash])  # v1's empty list pruned, v2's kept for units mid-update
    served = read_feed((repo.targets_dir / f"{second.target_hash}.numbers.csv").read_bytes(), source="x",
                       expires_at=None)  # fmt: skip
    assert [e.describe() for e in served.entries] == ["+81312340002", "+81120*"]


def test_refresh_resigns_timestamp_and_snapshot_with_the_same_list(repo: FeedRepository) -> None:
    published = repo.publish_numbers(feed_file(entries("03-1234-0001"), "JP"), 1)
    refreshed = repo.refresh()
    assert refreshed.targets_version == published.targets_version and refreshed.target_hash == published.target_hash
    assert (refreshed.snapshot_version, refreshed.timestamp_version) == (3, 3)
    verify(repo, "timestamp", md(repo, "timestamp.json"))
    # targets close to expiry is re-signed too, so the chain never dies under a working cron job
    soon = Expiry(targets=datetime.now(UTC) + timedelta(days=2))
    repo.publish_numbers(feed_file(entries("03-1234-0001"), "JP"), 1, expiry=soon)
    renewed = repo.refresh()
    assert renewed.targets_version == 4 and md(repo, "targets.json").signed.expires > datetime.now(UTC) + timedelta(
        days=80)


def test_rotating_root_signs_the_new_root_with_old_and_new_keys(repo: FeedRepository) -> None:
    v1 = md(repo, "1.root.json").signed
    old_key = (repo.keys_dir / "root.pem").read_bytes()
    result = repo.rotate_keys([KeyRole.ROOT])
    assert result.root_version == 2
    v2 = md(repo, "2.root.json")
    v1.verify_delegate("root", v2.signed_bytes, v2.signatures)  # the chain: old keys vouch for the new root
    v2.signed.verify_delegate("root", v2.signed_bytes, v2.signatures)
    assert (repo.keys_dir / "root.pem").read_bytes() != old_key and not list(repo.keys_dir.glob("*.next.pem"))
    assert v2.signed.roles["root"].keyids != v1.roles["root"].keyids
    assert v2.signed.roles["targets"].keyids == v1.roles["targets"].keyids


def test_rotating_an_online_key_needs_a_new_root_and_resigns_its_role(repo: FeedRepository) -> None:
    v1 = md(repo, "1.root.json").signed
    result = repo.rotate_keys([KeyRole.TARGETS])
    assert (result.root_version, result.targets_version) == (2, 2)
    v2 = md(repo, "2.root.json")
    v1.verify_delegate("root", v2.signed_bytes, v2.signatures)
    assert v2.signed.roles["root"].keyids == v1.roles["root"].keyids
    targets = md(repo, "2.targets.json")
    verify(repo, "targets", targets, v2.signed)
    with pytest.raises(UnsignedMetadataError):
        verify(repo, "targets", targets, v1)  # the old targets key no longer signs
    new_key = CryptoSigner(load_pem_private_key((repo.keys_dir / "targets.pem").read_bytes(), None))
    assert v2.signed.roles["targets"].keyids == [new_key.public_key.keyid]


def test_the_offline_root_key_is_needed_only_for_rotation(repo: FeedRepository, tmp_path: Path) -> None:
    offline = tmp_path / "usb-stick-root.pem"
    os.replace(repo.keys_dir / "root.pem", offline)
    repo.publish_numbers(feed_file(entries("03-1234-0001"), "JP"), 1)
    repo.refresh()
    with pytest.raises(PublishError, match="root.*offline"):
        repo.rotate_keys([KeyRole.TIMESTAMP])
    assert not (repo.metadata_dir / "2.root.json").exists()
    os.replace(offline, repo.keys_dir / "root.pem")
    assert repo.rotate_keys([KeyRole.TIMESTAMP]).root_version == 2


def test_a_stale_key_file_is_named_not_silently_used(repo: FeedRepository) -> None:
    (repo.keys_dir / "snapshot.pem").write_bytes(CryptoSigner.generate_ed25519().private_bytes)
    with pytest.raises(PublishError, match="no key for snapshot that root version 1 trusts"):
        repo.refresh()


def test_feed_file_refuses_allow_entries() -> None:
    with pytest.raises(PublishError, match="only blocks"):
        feed_file([ListEntry(ListKind.ALLOW, MatchKind.EXACT, "+81312345678")], "JP")


# --------------------------------------------------------------------------- CLI


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="mamoru")
    feeds_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


def test_publish_cli_init_numbers_refresh_rotate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo_dir = tmp_path / "police"
    assert _cli(["publish", "init", str(repo_dir), "--expires-days", "200", "--timestamp-days", "2"]) == 0
    captured = capsys.readouterr()
    assert "empty list published" in captured.out and "move it offline" in captured.err
    repo = FeedRepository(repo_dir)
    assert timedelta(days=199) < md(repo, "root.json").signed.expires - datetime.now(UTC) <= timedelta(days=200)
    assert md(repo, "timestamp.json").signed.expires - datetime.now(UTC) <= timedelta(days=2)
    csv = tmp_path / "numbers.csv"
    csv.write_text("number,reason\n03-1234-5678,impersonates the bank\n0120-11-2222,refund scam\n090-1111-*,ring\n")
    assert _cli(["publish", "numbers", str(repo_dir), str(csv)]) == 0
    assert "published 3 numbers as targets v2" in capsys.readouterr().out
    served = json.loads((repo.metadata_dir / "targets.json").read_text())["signed"]["targets"]["numbers.csv"]
    assert served["custom"] == {"format": FEED_FORMAT_ID, "entries": 3}
    assert _cli(["publish", "refresh", str(repo_dir)]) == 0
    assert "timestamp v3" in capsys.readouterr().out
    assert _cli(["publish", "rotate-keys", str(repo_dir), "--role", "snapshot"]) == 0
    assert "root v2" in capsys.readouterr().out


def test_publish_cli_refuses_a_csv_with_problems_and_names_each_line(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from screening.cli.common import CliError

    repo_dir = tmp_path / "police"
    _cli(["publish", "init", str(repo_dir)])
    capsys.readouterr()
    before = (repo_dir / "metadata" / "timestamp.json").read_bytes()
    csv = tmp_path / "numbers.csv"
    csv.write_text("number,reason\n03-1234-5678,ok\nnot a number,bad\n03-1234-5679,ok\n12,short\n")
    with pytest.raises(CliError, match="2 problem"):
        _cli(["publish", "numbers", str(repo_dir), str(csv)])
    err = capsys.readouterr().err.splitlines()
    assert [line.split(": ")[0] for line in err] == [f"{csv}:3", f"{csv}:5"]
    assert (repo_dir / "metadata" / "timestamp.json").read_bytes() == before  # nothing published
    csv.write_text("number,reason\n")
    with pytest.raises(CliError, match="--empty"):
        _cli(["publish", "numbers", str(repo_dir), str(csv)])
    assert _cli(["publish", "numbers", str(repo_dir), str(csv), "--empty"]) == 0
    with pytest.raises(CliError, match="not found"):
        _cli(["publish", "refresh", str(tmp_path / "nowhere")])
    assert not (tmp_path / "nowhere").exists()
