"""Per-unit hub credentials and the broker's CA travel in the signed provisioning bundle.

The bundle format grows compatibly: an optional ``hub`` object. Apply writes the password 0600 and
the CA where the bundle's own config says (``[hub] credentials_file`` / ``ca_file``); a bundle that
carries credentials without a place for them is refused by the issuer and by the unit.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from securesystemslib.signer import CryptoSigner

from deploy.provisioning.apply import Applier
from deploy.provisioning.bundle import (
    BundleContent,
    BundleError,
    BundleRefused,
    Household,
    HubCredentials,
    Refusal,
    WebUser,
    decode_payload,
    hash_password,
    make_bundle,
    new_content,
    sign_payload,
)
from deploy.provisioning.keys import generate_issuer_key, load_signer
from screening.config import load_config
from screening.core.model import Role
from screening.hub.servers import make_tls
from screening.hubwire import CommandSigner, public_key_text

UNIT_PASSWORD = "unit-pw-7Hq2mXw9"


@pytest.fixture
def issuer(tmp_path: Path) -> tuple[CryptoSigner, Path]:
    private, public = generate_issuer_key(tmp_path / "issuer", "Akita Police")
    trusted = tmp_path / "unit-keys"
    trusted.mkdir()
    (trusted / "akita.pub.json").write_bytes(public.read_bytes())
    return load_signer(private), trusted


def config_toml(data: Path, *, credentials: bool = True) -> str:
    key = public_key_text(CommandSigner.generate().public)
    places = (f'credentials_file = "{data / "hub" / "password"}"\nca_file = "{data / "hub" / "ca.pem"}"\n'
              if credentials else "")  # fmt: skip
    return (f'[store]\ndb = "{data / "mamoru.db"}"\n\n[feeds]\ndir = "{data / "feeds"}"\n\n'
            f'[hub]\nurl = "mqtts://hub.akita.example.jp:8883"\nunit_id = "akita-0001"\ncommand_key = "{key}"\n{places}')  # fmt: skip


def content(tmp_path: Path, *, credentials: bool = True, hub: HubCredentials | None = None) -> BundleContent:
    ca_pem = make_tls(tmp_path).ca.read_text()
    return new_content(issuer="Akita Police", household=Household("H001", "佐藤 様"),
                       config_toml=config_toml(tmp_path / "data", credentials=credentials),
                       web_users=[WebUser("family", Role.FAMILY, hash_password("family-pw-123"))],
                       hub=hub or HubCredentials(UNIT_PASSWORD, ca_pem))  # fmt: skip


def test_apply_writes_the_units_hub_password_and_ca(tmp_path: Path, issuer: tuple[CryptoSigner, Path]) -> None:
    signer, trusted = issuer
    bundle = tmp_path / "H001.mamoru-bundle"
    bundle.write_bytes(make_bundle(content(tmp_path), signer))
    unit = Applier(issuer_keys_dir=trusted, config_path=tmp_path / "etc" / "mamoru.toml",
                   serial_path=tmp_path / "no-serial")  # fmt: skip
    assert unit.apply([bundle]).ok
    config = load_config(unit.config_path, env={})
    assert config.hub.credentials_file is not None and config.hub.ca_file is not None
    assert config.hub.credentials_file.read_text() == UNIT_PASSWORD + "\n"
    assert config.hub.credentials_file.stat().st_mode & 0o777 == 0o600
    assert config.hub.ca_file.read_text().startswith("-----BEGIN CERTIFICATE-----")
    assert config.hub.ca_file.stat().st_mode & 0o777 == 0o644


def test_a_bundle_without_hub_reads_as_before(tmp_path: Path, issuer: tuple[CryptoSigner, Path]) -> None:
    signer, _ = issuer
    plain = new_content(issuer="Akita Police", household=Household("H002", "x"),
                        config_toml=f'[store]\ndb = "{tmp_path / "mamoru.db"}"\n')  # fmt: skip
    payload = decode_payload(make_bundle(plain, signer))
    assert "hub" not in payload and BundleContent.from_payload(payload).hub is None


def test_credentials_without_a_place_in_the_config_are_refused(tmp_path: Path,
                                                               issuer: tuple[CryptoSigner, Path]) -> None:  # fmt: skip
    signer, trusted = issuer
    homeless = content(tmp_path, credentials=False)
    with pytest.raises(BundleError, match="credentials_file is empty"):
        make_bundle(homeless, signer)
    bundle = tmp_path / "H001.mamoru-bundle"  # an issuer tool that skipped the check: the unit refuses too
    bundle.write_bytes(sign_payload(homeless.to_payload(), signer))
    unit = Applier(issuer_keys_dir=trusted, config_path=tmp_path / "etc" / "mamoru.toml",
                   serial_path=tmp_path / "no-serial")  # fmt: skip
    with pytest.raises(BundleRefused) as refused:
        unit.apply([bundle])
    assert refused.value.reason in (Refusal.INVALID_CONFIG, Refusal.NONE_VALID)
    assert not unit.config_path.exists()


@pytest.mark.parametrize("bad", [HubCredentials("short"), HubCredentials(UNIT_PASSWORD, "not a certificate")])
def test_bad_hub_credentials_are_not_signed(tmp_path: Path, issuer: tuple[CryptoSigner, Path],
                                            bad: HubCredentials) -> None:  # fmt: skip
    with pytest.raises(BundleError, match="hub\\."):
        make_bundle(content(tmp_path, hub=bad), issuer[0])
