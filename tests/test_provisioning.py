"""Provisioning bundles (deploy/provisioning): made, applied, and forged ones refused.

Real things throughout: ed25519 keys from securesystemslib, real DSSE envelopes,
the real config validation, a real SQLite store, a real TUF feed repository
(``blocklist.feed_publisher``) served by ``http.server`` on 127.0.0.1, and the
command line run as a subprocess from outside the checkout.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import segno
from argon2 import PasswordHasher
from securesystemslib.signer import CryptoSigner

from blocklist.store import Store
from deploy.provisioning.apply import Applier, FeedAction
from deploy.provisioning.bulk import BulkJob
from deploy.provisioning.bundle import (
    BundleContent,
    BundleError,
    BundleRefused,
    FeedSpec,
    Household,
    Refusal,
    WebUser,
    decode_payload,
    generate_password,
    hash_password,
    make_bundle,
    new_content,
    sign_payload,
)
from deploy.provisioning.keys import generate_issuer_key, load_signer
from deploy.provisioning.sheet import QR_ERROR, QR_SCALE, qr_svg
from screening.config import ConfigError, load_config
from screening.core.model import Language, Role

REPO = Path(__file__).resolve().parent.parent
NTFY_SECRET = "mamoru-yamada-k3x9q"
MAIL_SECRET = "app-pw-7731"
SERIAL = "10000000abcdef01"


@pytest.fixture(scope="module")
def family_hash() -> tuple[str, str]:
    password = generate_password()
    return password, hash_password(password)


@pytest.fixture
def issuer(tmp_path: Path) -> tuple[CryptoSigner, Path]:
    """The office's signer, and a unit's trusted-keys dir holding its public key."""
    private, public = generate_issuer_key(tmp_path / "issuer", "Setagaya Police Station")
    trusted = tmp_path / "unit-keys"
    trusted.mkdir()
    (trusted / "setagaya.pub.json").write_bytes(public.read_bytes())
    return load_signer(private), trusted


def household_toml(data: Path, *, language: str = "en", phone: str = "090-1234-5678") -> str:
    return f"""\
[store]
db = "{data / 'mamoru.db'}"

[voice]
language = "{language}"

[feeds]
dir = "{data / 'feeds'}"

[[relatives]]
name = "Taro"
notify = ["ntfys://ntfy.sh/{NTFY_SECRET}"]
phone = "{phone}"

[[relatives]]
name = "Hanako"
notify = ["mailtos://hanako:{MAIL_SECRET}@smtp.example.com?to=hanako@example.com"]
language = "ja"
"""


def content_for(tmp_path: Path, family_hash: tuple[str, str], **overrides: object) -> BundleContent:
    fields: dict[str, object] = {
        "issuer": "Setagaya Police Station",
        "household": Household("H001", "山田 花子 様"),
        "config_toml": household_toml(tmp_path / "data"),
        "web_users": [WebUser("family", Role.FAMILY, family_hash[1])],
    }
    fields.update(overrides)
    return new_content(**fields)  # type: ignore[arg-type]


def applier(tmp_path: Path, trusted: Path, serial: str | None = SERIAL) -> Applier:
    serial_file = tmp_path / "serial-number"
    if serial is not None:
        serial_file.write_bytes(serial.encode() + b"\x00")  # as /proc/device-tree has it
    return Applier(issuer_keys_dir=trusted, config_path=tmp_path / "etc" / "mamoru.toml", serial_path=serial_file)


def write(tmp_path: Path, data: bytes, name: str = "H001.mamoru-bundle") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def reencode(data: bytes, **changes: object) -> bytes:
    document = json.loads(data)
    document.update(changes)
    return json.dumps(document).encode()


# ---- keys ----------------------------------------------------------------------------------------


def test_keygen_private_key_is_private_and_never_overwritten(tmp_path: Path) -> None:
    private, public = generate_issuer_key(tmp_path / "k", "Office")
    assert private.stat().st_mode & 0o777 == 0o600
    assert b"PRIVATE KEY" in private.read_bytes()
    document = json.loads(public.read_text())
    assert document["issuer"] == "Office" and document["keytype"] == "ed25519"
    assert load_signer(private).public_key.keyid == document["keyid"]
    with pytest.raises(BundleError, match="already exists"):
        generate_issuer_key(tmp_path / "k", "Office")
    assert public.read_text() == json.dumps(document, indent=2) + "\n"


def test_generated_passwords_are_readable_and_random() -> None:
    passwords = {generate_password() for _ in range(200)}
    assert len(passwords) == 200
    for password in passwords:
        assert len(password) == 12 and not set(password) & set("0O1lI")


# ---- make and apply -----------------------------------------------------------------------------


def test_bundle_applies_config_web_users_and_state(tmp_path, issuer, family_hash) -> None:
    signer, trusted = issuer
    path = write(tmp_path, make_bundle(content_for(tmp_path, family_hash), signer))
    unit = applier(tmp_path, trusted)

    result = unit.apply([path])

    assert result.ok and result.config_changed and result.backup_path is None
    config = load_config(unit.config_path, env={})
    assert config.voice.language is Language.EN
    assert [r.name for r in config.relatives] == ["Taro", "Hanako"]
    assert config.relatives[0].phone == "+819012345678"
    assert unit.config_path.stat().st_mode & 0o777 == 0o640
    users = json.loads((tmp_path / "data" / "web-users.json").read_text())
    assert (tmp_path / "data" / "web-users.json").stat().st_mode & 0o777 == 0o600
    assert users["format"] == "mamoru-web-users/1" and users["household"]["id"] == "H001"
    assert [(u["name"], u["role"]) for u in users["users"]] == [("family", "family")]
    assert PasswordHasher().verify(users["users"][0]["password_hash"], family_hash[0])
    state = json.loads((tmp_path / "etc" / "bundle-state.json").read_text())
    assert state["household"] == "H001" and len(state["sha256"]) == 64


def test_same_bundle_twice_is_fine_and_a_newer_one_keeps_a_backup(tmp_path, issuer, family_hash) -> None:
    signer, trusted = issuer
    unit = applier(tmp_path, trusted)
    unit.config_path.parent.mkdir()
    unit.config_path.write_text("# the image's config\n")
    unit.config_path.chmod(0o640)
    first = write(tmp_path, make_bundle(content_for(tmp_path, family_hash), signer))

    assert unit.apply([first]).backup_path == unit.config_path.with_name("mamoru.toml.bak")
    again = unit.apply([first])
    assert again.ok and not again.config_changed
    assert unit.config_path.with_name("mamoru.toml.bak").read_text() == "# the image's config\n"

    later = datetime.now(UTC) + timedelta(minutes=5)
    newer = content_for(tmp_path, family_hash, config_toml=household_toml(tmp_path / "data", language="ko"), now=later)
    result = unit.apply([write(tmp_path, make_bundle(newer, signer), "newer.mamoru-bundle")])
    assert result.config_changed
    assert load_config(unit.config_path, env={}).voice.language is Language.KO
    assert "language = \"en\"" in unit.config_path.with_name("mamoru.toml.bak").read_text()


def test_dry_run_changes_nothing(tmp_path, issuer, family_hash) -> None:
    signer, trusted = issuer
    unit = applier(tmp_path, trusted)
    result = unit.apply([write(tmp_path, make_bundle(content_for(tmp_path, family_hash), signer))], dry_run=True)
    assert result.dry_run and result.config_changed
    assert not unit.config_path.exists() and not (tmp_path / "data").exists()


def test_issuer_side_refuses_a_config_that_fails_validation(tmp_path, issuer, family_hash) -> None:
    signer, _ = issuer
    bad = content_for(tmp_path, family_hash, config_toml=household_toml(tmp_path, phone="12"))
    with pytest.raises(ConfigError, match=r"relatives\[0\]\.phone"):
        make_bundle(bad, signer)


# ---- forged and unacceptable bundles ----------------------------------------------------------------


def _flip_payload_byte(data: bytes) -> bytes:
    payload = bytearray(base64.b64decode(json.loads(data)["payload"]))
    index = payload.index(b"Taro")
    payload[index] ^= 0x01  # "Taro" -> "Uaro": still valid JSON, still a valid config
    return reencode(data, payload=base64.b64encode(bytes(payload)).decode())


def _other_key(data: bytes, signer: CryptoSigner) -> bytes:
    return sign_payload(decode_payload(data), CryptoSigner.generate_ed25519())


def _claims_trusted_keyid(data: bytes, signer: CryptoSigner) -> bytes:
    """Signed by another key, but the signature names the trusted key's id."""
    forged = json.loads(_other_key(data, signer))
    forged["signatures"][0]["keyid"] = signer.public_key.keyid
    return json.dumps(forged).encode()


FORGERIES = {
    "signed by another key": (lambda data, signer: _other_key(data, signer), Refusal.UNKNOWN_SIGNER),
    "another key naming the trusted key id": (_claims_trusted_keyid, Refusal.BAD_SIGNATURE),
    "payload byte flipped": (lambda data, signer: _flip_payload_byte(data), Refusal.BAD_SIGNATURE),
    "signature removed": (lambda data, signer: reencode(data, signatures=[]), Refusal.UNSIGNED),
    "payload type changed": (lambda data, signer: reencode(data, payloadType="application/json"),
                             Refusal.WRONG_PAYLOAD_TYPE),
    "signed as another payload type": (
        lambda data, signer: sign_payload(decode_payload(data), signer, payload_type="application/vnd.in-toto+json"),
        Refusal.WRONG_PAYLOAD_TYPE),
    "truncated": (lambda data, signer: data[: len(data) // 2], Refusal.NOT_JSON),
    "not an envelope": (lambda data, signer: b'{"hello": "world"}', Refusal.NOT_AN_ENVELOPE),
    "signature not base64": (
        lambda data, signer: reencode(data, signatures=[{"keyid": signer.public_key.keyid, "sig": "%%%"}]),
        Refusal.NOT_AN_ENVELOPE),
    "another format version": (
        lambda data, signer: sign_payload({**decode_payload(data), "format": "mamoru-bundle/9"}, signer),
        Refusal.UNSUPPORTED_FORMAT),
    "web user without an argon2 hash": (
        lambda data, signer: sign_payload({**decode_payload(data), "web": {"users": [
            {"name": "family", "role": "family", "password_hash": "hunter2"}]}}, signer),
        Refusal.BAD_PAYLOAD),
}  # fmt: skip


@pytest.mark.parametrize("forgery", FORGERIES, ids=list(FORGERIES))
def test_forged_bundle_is_refused_and_nothing_written(tmp_path, issuer, family_hash, forgery) -> None:
    signer, trusted = issuer
    genuine = make_bundle(content_for(tmp_path, family_hash), signer)
    forge, reason = FORGERIES[forgery]
    path = write(tmp_path, forge(genuine, signer))
    unit = applier(tmp_path, trusted)

    with pytest.raises(BundleRefused) as refused:
        unit.apply([path])

    assert refused.value.reason is reason
    assert str(path) in str(refused.value) and reason.value in str(refused.value)
    assert not unit.config_path.exists() and not (tmp_path / "data").exists()
    # The genuine bundle still goes through: the refusal was about the forgery.
    assert unit.apply([write(tmp_path, genuine, "genuine.mamoru-bundle")]).ok


def test_expired_bundle_is_refused(tmp_path, issuer, family_hash) -> None:
    signer, trusted = issuer
    old = content_for(tmp_path, family_hash, now=datetime.now(UTC) - timedelta(days=40), valid_days=30)
    with pytest.raises(BundleRefused, match="valid until") as refused:
        applier(tmp_path, trusted).apply([write(tmp_path, make_bundle(old, signer))])
    assert refused.value.reason is Refusal.EXPIRED


def test_bundle_for_another_unit_is_refused(tmp_path, issuer, family_hash) -> None:
    signer, trusted = issuer
    path = write(tmp_path, make_bundle(content_for(tmp_path, family_hash, unit="10000000FFFF0000"), signer))
    with pytest.raises(BundleRefused, match="made for unit 10000000ffff0000, this is unit 10000000abcdef01") as refused:
        applier(tmp_path, trusted).apply([path])
    assert refused.value.reason is Refusal.WRONG_UNIT
    with pytest.raises(BundleRefused, match="cannot be read"):
        applier(tmp_path / "no-serial", trusted, serial=None).apply([path])
    # The same serial written in upper case by a person is the same unit.
    mine = make_bundle(content_for(tmp_path, family_hash, unit=SERIAL.upper()), signer)
    mine = write(tmp_path, mine, "mine.mamoru-bundle")
    assert applier(tmp_path, trusted).apply([mine]).ok


def test_older_bundle_is_refused_after_a_newer_one(tmp_path, issuer, family_hash) -> None:
    signer, trusted = issuer
    now = datetime.now(UTC)
    older = write(tmp_path, make_bundle(content_for(tmp_path, family_hash, now=now - timedelta(days=1)), signer), "a")
    newer = write(tmp_path, make_bundle(content_for(tmp_path, family_hash, now=now), signer), "b")
    unit = applier(tmp_path, trusted)
    assert unit.apply([newer]).ok
    with pytest.raises(BundleRefused, match="older than the bundle applied before") as refused:
        unit.apply([older])
    assert refused.value.reason is Refusal.ROLLBACK
    # Same issue time, different content: also refused (a replay of a sibling bundle).
    sibling = write(tmp_path, make_bundle(content_for(tmp_path, family_hash, now=now, unit=SERIAL), signer), "c")
    with pytest.raises(BundleRefused, match="same time"):
        unit.apply([sibling])
    # A damaged record of the last bundle fails closed, naming the file to remove.
    (tmp_path / "etc" / "bundle-state.json").write_text("{")
    with pytest.raises(BundleRefused, match="remove .*bundle-state.json"):
        unit.apply([newer])


def test_unit_revalidates_the_config_even_when_the_signature_is_good(tmp_path, issuer, family_hash) -> None:
    signer, trusted = issuer
    payload = content_for(tmp_path, family_hash).to_payload()
    payload["config_toml"] += "\n[rules]\nwithheld = \"shout\"\n"
    path = write(tmp_path, sign_payload(payload, signer))  # below make_bundle: no issuer-side check
    with pytest.raises(BundleRefused, match=r"rules\.withheld") as refused:
        applier(tmp_path, trusted).apply([path])
    assert refused.value.reason is Refusal.INVALID_CONFIG


def test_unit_without_issuer_keys_accepts_nothing(tmp_path, issuer, family_hash) -> None:
    signer, _ = issuer
    empty = tmp_path / "empty-keys"
    empty.mkdir()
    (empty / "broken.json").write_text("not json")  # logged and skipped, never trusted
    path = write(tmp_path, make_bundle(content_for(tmp_path, family_hash), signer))
    with pytest.raises(BundleRefused) as refused:
        applier(tmp_path, empty).apply([path])
    assert refused.value.reason is Refusal.NO_TRUSTED_KEYS


def test_one_stick_with_every_units_bundle_applies_only_this_units(tmp_path, issuer, family_hash) -> None:
    signer, trusted = issuer
    ours = write(tmp_path, make_bundle(content_for(tmp_path, family_hash, unit=SERIAL), signer), "ours.mamoru-bundle")
    theirs = write(tmp_path, make_bundle(content_for(tmp_path, family_hash, unit="10000000deadbeef",
                                                     household=Household("H002", "B")), signer), "theirs.mamoru-bundle")
    junk = write(tmp_path, b"\x00garbage", "junk.mamoru-bundle")
    result = applier(tmp_path, trusted).apply([theirs, junk, ours])
    assert result.bundle.content.household.id == "H001" and result.bundle.source == str(ours)

    for_any_unit = []
    for hours in (1, 2):
        later = content_for(tmp_path, family_hash, now=datetime.now(UTC) + timedelta(hours=hours))
        for_any_unit.append(write(tmp_path, make_bundle(later, signer), f"any{hours}.mamoru-bundle"))
    with pytest.raises(BundleRefused) as refused:
        applier(tmp_path, trusted).apply(for_any_unit)
    assert refused.value.reason is Refusal.AMBIGUOUS
    with pytest.raises(BundleRefused) as refused:
        applier(tmp_path, trusted).apply([theirs, junk])
    assert refused.value.reason is Refusal.NONE_VALID
    assert "theirs.mamoru-bundle" in str(refused.value) and "junk.mamoru-bundle" in str(refused.value)


DEEP = 100_000  # far past Python's recursion limit: json and tomllib both raise RecursionError on it


def _signed_raw_payload(body: bytes, signer: CryptoSigner) -> bytes:
    """A correctly signed envelope around any payload bytes (the issuer's key, hostile content)."""
    from securesystemslib.dsse import Envelope

    envelope = Envelope(body, "application/vnd.mamoru.bundle+json", {})
    envelope.sign(signer)
    return json.dumps(envelope.to_dict()).encode()


@pytest.mark.parametrize("hostile", ["envelope", "signed_payload", "signed_config"])
def test_a_deeply_nested_bundle_never_stops_a_good_one(tmp_path, issuer, family_hash, hostile) -> None:
    signer, trusted = issuer
    ours = write(tmp_path, make_bundle(content_for(tmp_path, family_hash, unit=SERIAL), signer), "ours.mamoru-bundle")
    if hostile == "envelope":
        data = ("[" * DEEP + "]" * DEEP).encode()
    elif hostile == "signed_payload":
        data = _signed_raw_payload(("[" * DEEP + "]" * DEEP).encode(), signer)
    else:
        nested = content_for(tmp_path, family_hash, household=Household("H002", "B"),
                             config_toml="a = " + "[" * DEEP + "]" * DEEP + "\n")  # fmt: skip
        data = sign_payload(nested.to_payload(), signer)
    deep = write(tmp_path, data, "deep.mamoru-bundle")
    result = applier(tmp_path, trusted).apply([deep, ours])
    assert result.bundle.source == str(ours) and (tmp_path / "etc" / "mamoru.toml").is_file()
    with pytest.raises(BundleRefused) as refused:  # alone, it is refused like any other bad bundle
        applier(tmp_path, trusted).apply([deep])
    assert "nested" in str(refused.value), refused.value


# ---- bulk and the printed sheet -----------------------------------------------------------------------


HOUSEHOLDS_CSV = f"""\
household_id,label,language,unit_serial,relative_name,relative_notify,relative_phone,relative2_name,relative2_notify
A-001,山田 花子 様,ja,10000000aaaa0001,Taro,ntfys://ntfy.sh/{NTFY_SECRET},090-1111-2222,Jiro,mailtos://jiro:{MAIL_SECRET}@smtp.example.com?to=jiro@example.com
A-002,Suzuki Ichiro,en,,Ken,,03-1234-5678,,
A-003,佐藤 様,,,Mika,ntfys://ntfy.sh/another-topic,,,
A-004,Broken,en,,Bob,,12,,
"""


@pytest.fixture
def bulk_made(tmp_path: Path, issuer: tuple[CryptoSigner, Path]):
    signer, _ = issuer
    (tmp_path / "households.csv").write_text(HOUSEHOLDS_CSV, encoding="utf-8")
    template = (REPO / "deploy" / "mamoru.example.toml").read_text(encoding="utf-8")
    (tmp_path / "base.toml").write_text(template.replace("/var/lib/mamoru", str(tmp_path / "data")), encoding="utf-8")
    job = BulkJob(tmp_path / "households.csv", tmp_path / "base.toml", tmp_path / "out", signer,
                  "Setagaya Police Station", web_url="http://mamoru.local:8080/")  # fmt: skip
    return job.run()


def test_bulk_makes_one_bundle_and_sheet_per_good_row(tmp_path, bulk_made) -> None:
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == [
        "A-001.html", "A-001.mamoru-bundle", "A-002.html", "A-002.mamoru-bundle", "A-003.html",
        "A-003.mamoru-bundle", "index.html",
    ]  # fmt: skip
    assert [m.household_id for m in bulk_made.made] == ["A-001", "A-002", "A-003"]
    assert [(p.line, p.message.split(":")[0]) for p in bulk_made.problems] == [(5, "relative_phone")]
    assert "households.csv:5: relative_phone: not a valid phone number in JP" in str(bulk_made.problems[0])
    assert (out / "A-001.mamoru-bundle").stat().st_mode & 0o777 == 0o600
    index = (out / "index.html").read_text()
    for made in ("A-001", "A-002", "A-003"):
        assert f'href="{made}.html"' in index and f'href="{made}.mamoru-bundle"' in index
    assert "households.csv:5" in index


def test_bulk_bundle_applies_with_the_sheets_password(tmp_path, issuer, bulk_made) -> None:
    _, trusted = issuer
    out = tmp_path / "out"
    unit = applier(tmp_path, trusted, serial="10000000aaaa0001")
    result = unit.apply([out / "A-001.mamoru-bundle"])
    config = load_config(unit.config_path, env={})
    assert config.voice.language is Language.JA
    assert [(r.name, r.phone) for r in config.relatives] == [("Taro", "+819011112222"), ("Jiro", None)]
    assert "# The people to alert" in unit.config_path.read_text()  # the template's comments are kept
    sheet = (out / "A-001.html").read_text()
    username, password = re.findall(r'<span class="secret">([^<]+)</span>', sheet)
    users = json.loads(result.web_users_path.read_text())["users"]
    assert users[0]["name"] == username == "family"
    assert PasswordHasher().verify(users[0]["password_hash"], password)


def test_sheet_has_the_login_qr_and_no_secret(tmp_path, bulk_made) -> None:
    sheet = (tmp_path / "out" / "A-001.html").read_text()
    expected = segno.make_qr("http://mamoru.local:8080/", error=QR_ERROR).svg_inline(scale=QR_SCALE)
    assert expected in sheet and qr_svg("http://mamoru.local:8080/") == expected
    assert segno.make_qr("http://mamoru.local/", error=QR_ERROR).svg_inline(scale=QR_SCALE) not in sheet
    for secret in (NTFY_SECRET, MAIL_SECRET, "ntfys://", "mailtos://", "hanako@", "jiro:"):
        assert secret not in sheet
    assert "<script" not in sheet.lower() and "@page" in sheet and "size: A4" in sheet
    assert "山田 花子 様" in sheet and "ntfy" in sheet and "E-Mail" in sheet
    assert "090-1111-2222" in sheet  # the relative's phone is not a secret; it is phoned
    assert sheet.index("家族用ウェブページ") < sheet.index("Family web page")


def test_bulk_header_mistake_stops_the_batch(tmp_path, issuer) -> None:
    from deploy.provisioning.bulk import BulkError

    signer, _ = issuer
    (tmp_path / "h.csv").write_text("household_id,label,relative_nmae\nA,B,C\n")
    (tmp_path / "base.toml").write_text("")
    expected = r"h\.csv: header \(line 1\): unknown column 'relative_nmae' \(did you mean 'relative_name'\?\)"
    with pytest.raises(BulkError, match=expected):
        BulkJob(tmp_path / "h.csv", tmp_path / "base.toml", tmp_path / "out", signer, "X").run()
    assert not (tmp_path / "out").exists()


# ---- feeds in a bundle: a real TUF repository over HTTP ----------------------------------------------


@pytest.fixture
def feed_server(tmp_path: Path) -> Iterator[tuple[str, bytes]]:
    from blocklist.feed_publisher import FeedRepository, feed_file
    from screening.core.model import ListEntry, ListKind, MatchKind

    entries = [ListEntry(ListKind.BLOCK, MatchKind.EXACT, "+815012345678", source="feed:police-tokyo"),
               ListEntry(ListKind.BLOCK, MatchKind.PREFIX, "+81120999", source="feed:police-tokyo")]  # fmt: skip
    repo = FeedRepository(tmp_path / "publisher")
    repo.init(feed_file(entries, "JP"), len(entries))
    handler = functools.partial(_QuietHandler, directory=str(repo.path))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", (repo.metadata_dir / "root.json").read_bytes()
    finally:
        server.shutdown()
        thread.join(timeout=5)
        server.server_close()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def test_bundle_feed_is_added_and_its_list_applied(tmp_path, issuer, family_hash, feed_server) -> None:
    signer, trusted = issuer
    url, root = feed_server
    feed = FeedSpec("police-tokyo", url, json.loads(root))
    path = write(tmp_path, make_bundle(content_for(tmp_path, family_hash, feeds=[feed]), signer))
    unit = applier(tmp_path, trusted)
    (tmp_path / "data").mkdir()
    if os.geteuid() == 0:  # first boot runs as root: what it creates must be the service user's
        os.chown(tmp_path / "data", 65534, 65534)

    result = unit.apply([path])

    if os.geteuid() == 0:
        for made in ("mamoru.db", "feeds", "feeds/police-tokyo/root.json", "web-users.json"):
            assert (tmp_path / "data" / made).stat().st_uid == 65534, made

    assert result.ok and result.feeds[0][:2] == ("police-tokyo", FeedAction.ADDED)
    with Store(tmp_path / "data" / "mamoru.db", recover_calls=False) as store:
        row = store.feed("police-tokyo")
        assert row is not None and row["url"] == url and row["entries"] == 2 and not row["error"]
        lists = store.load_lists(datetime.now(UTC))
    assert lists.match_block("+815012345678") is not None
    anchor = json.loads((tmp_path / "data" / "feeds" / "police-tokyo" / "root.json").read_text())
    assert anchor == json.loads(root)
    assert unit.apply([path]).feeds[0][:2] == ("police-tokyo", FeedAction.ALREADY)


def test_a_feed_root_that_is_not_self_signed_is_not_signed(tmp_path, issuer, family_hash, feed_server) -> None:
    signer, _ = issuer
    url, root = feed_server
    tampered = json.loads(root)
    tampered["signed"]["version"] = 2
    with pytest.raises(BundleError, match="not signed by its own root keys"):
        make_bundle(content_for(tmp_path, family_hash, feeds=[FeedSpec("police-tokyo", url, tampered)]), signer)


# ---- the command line, as a subprocess from outside the checkout --------------------------------------


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MAMORU_CONFIG")}
    return subprocess.run([sys.executable, "-m", "screening.cli", "provision", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip


def test_cli_keygen_make_apply_and_refuse(tmp_path: Path) -> None:
    work = tmp_path / "elsewhere"
    work.mkdir()
    assert run_cli("keygen", "office", "--issuer", "Setagaya PS", cwd=work).returncode == 0
    (work / "household.toml").write_text(household_toml(tmp_path / "data", language="ko"))
    made = run_cli("make", "--key", "office/issuer.key", "--config", "household.toml", "--label", "Kim",
                   "--unit", SERIAL, "--sheet", "K-1.html", "-o", "K-1.mamoru-bundle", cwd=work)  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert "household K-1" in made.stdout and "family web login: family / " in made.stdout
    keys = work / "unit-keys"
    keys.mkdir()
    (keys / "office.pub.json").write_bytes((work / "office" / "issuer.pub.json").read_bytes())
    (work / "serial").write_text(SERIAL + "\n")
    common = ["--issuer-keys", "unit-keys", "--config-out", "etc/mamoru.toml", "--serial-file", "serial"]

    applied = run_cli("apply", "K-1.mamoru-bundle", *common, "--json", cwd=work)
    assert applied.returncode == 0, applied.stderr
    report = json.loads(applied.stdout)
    assert report["household"]["id"] == "K-1" and report["issuer"] == "Setagaya PS" and report["config_changed"]
    assert load_config(work / "etc" / "mamoru.toml", env={}).voice.language is Language.KO

    document = json.loads((work / "K-1.mamoru-bundle").read_text())
    document["signatures"] = []
    (work / "forged.mamoru-bundle").write_text(json.dumps(document))
    refused = run_cli("apply", "forged.mamoru-bundle", *common, cwd=work)
    assert refused.returncode == 1
    assert "forged.mamoru-bundle: refused (unsigned)" in refused.stderr


def test_cli_bulk_exit_code_and_report(tmp_path: Path, issuer) -> None:
    _, _ = issuer  # the fixture wrote tmp_path/issuer/issuer.key and .pub.json
    (tmp_path / "households.csv").write_text(HOUSEHOLDS_CSV, encoding="utf-8")
    (tmp_path / "base.toml").write_text(f'[store]\ndb = "{tmp_path / "data" / "mamoru.db"}"\n')
    proc = run_cli("bulk", "--key", str(tmp_path / "issuer" / "issuer.key"), "--households", "households.csv",
                   "--template", "base.toml", "-o", "out", cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 1
    assert proc.stdout.count("ok     A-00") == 3 and "3 made, 1 problem(s)" in proc.stdout
    assert "FAILED" in proc.stderr and "households.csv:5: relative_phone" in proc.stderr
    sheet = (tmp_path / "out" / "A-002.html").read_text()
    assert segno.make_qr("http://mamoru.local/", error=QR_ERROR).svg_inline(scale=QR_SCALE) in sheet


def test_cli_keys_require_every_key_file_to_load(tmp_path: Path, issuer) -> None:
    _, trusted = issuer
    listed = run_cli("keys", "--issuer-keys", str(trusted), "--require", cwd=tmp_path)
    assert listed.returncode == 0 and "Setagaya Police Station" in listed.stdout
    (trusted / "typo.json").write_text('{"keytype": "ed25519"}')
    broken = run_cli("keys", "--issuer-keys", str(trusted), "--require", cwd=tmp_path)
    assert broken.returncode == 1 and "1 of 2 key file(s) unusable" in broken.stderr
    assert "typo.json" in broken.stderr


def test_bulk_reads_a_shift_jis_csv_only_when_told(tmp_path: Path, issuer) -> None:
    from deploy.provisioning.bulk import BulkError

    signer, _ = issuer
    csv_text = "household_id,label,relative_name,relative_phone\nS-1,鈴木 様,一郎,090-1234-5678\n"
    (tmp_path / "sjis.csv").write_bytes(csv_text.encode("cp932"))
    (tmp_path / "base.toml").write_text(f'[store]\ndb = "{tmp_path / "data" / "mamoru.db"}"\n')
    job = BulkJob(tmp_path / "sjis.csv", tmp_path / "base.toml", tmp_path / "out", signer, "X")
    with pytest.raises(BulkError, match="--encoding cp932"):
        job.run()
    job.encoding = "cp932"
    result = job.run()
    assert result.ok and [m.household_id for m in result.made] == ["S-1"]
    assert "鈴木 様" in (tmp_path / "out" / "S-1.html").read_text(encoding="utf-8")
