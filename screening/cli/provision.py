"""``mamoru provision``: issuer keys, bundles one by one or from a CSV, applying one on a unit."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from deploy.provisioning.apply import Applier
from deploy.provisioning.bulk import BulkError, BulkJob
from deploy.provisioning.bundle import (
    BUNDLE_SUFFIX,
    DEFAULT_VALID_DAYS,
    DEVICE_SERIAL_PATH,
    BundleError,
    BundleRefused,
    FeedSpec,
    Household,
    HubCredentials,
    WebUser,
    generate_password,
    hash_password,
    make_bundle,
    new_content,
    validate_config_toml,
    write_private_file,
)
from deploy.provisioning.keys import (
    DEFAULT_ISSUER_KEYS_DIR,
    PUBLIC_KEY_NAME,
    generate_issuer_key,
    load_public_key,
    load_signer,
    load_trusted_keys,
)
from deploy.provisioning.sheet import DEFAULT_WEB_URL, SheetData, render_sheet
from screening.cli.common import CliError
from screening.config import ConfigError
from screening.core.clock import iso_utc
from screening.core.model import Role

log = logging.getLogger(__name__)

SYSTEM_CONFIG = Path("/etc/mamoru/mamoru.toml")


def register(subparsers: Any) -> None:
    """``mamoru provision keygen|make|bulk|apply|keys``."""
    p = subparsers.add_parser("provision", help="signed provisioning bundles: make them (issuer), apply one (unit)")
    psub = p.add_subparsers(dest="provision_command", required=True)

    q = psub.add_parser("keygen", help="create the issuing office's signing key pair")
    q.add_argument("dir", help=f"where to write issuer.key (keep it secret) and {PUBLIC_KEY_NAME} (bake into images)")
    q.add_argument("--issuer", required=True, help="the office's name, e.g. 'Setagaya Police Station'")
    q.set_defaults(func=cmd_keygen)

    q = psub.add_parser("make", help="sign one household's bundle")
    _issuer_args(q)
    q.add_argument("--config", required=True, metavar="F", help="the household's complete mamoru.toml")
    q.add_argument("--household-id", metavar="ID", help="default: the output file's name")
    q.add_argument("--label", help="how the household is named (default: its id)")
    q.add_argument("--unit", metavar="SERIAL", help="only this Pi may apply it (/proc/device-tree/serial-number)")
    q.add_argument("--family-user", default="family", metavar="NAME", help="web login name (default: family)")
    q.add_argument("--family-password", metavar="P", help="initial web password (default: generated and printed)")
    q.add_argument("--installer-password", metavar="P", help="also an 'installer' web user with this password")
    q.add_argument("--sheet", metavar="HTML", help="also write the household's printed sheet")
    q.add_argument("--web-url", default=DEFAULT_WEB_URL, help=f"family web login address (default {DEFAULT_WEB_URL})")
    q.add_argument("--hub-password-file", metavar="F",
                   help="this unit's hub broker password (one line), written to the config's [hub] credentials_file")
    q.add_argument("--hub-ca", metavar="PEM", help="the hub broker's CA certificate, written to [hub] ca_file")
    q.add_argument("-o", "--output", required=True, metavar="OUT", help=f"the bundle file (*{BUNDLE_SUFFIX})")
    q.set_defaults(func=cmd_make)

    q = psub.add_parser("bulk", help="one bundle and one printed sheet per row of a households CSV")
    _issuer_args(q)
    q.add_argument("--households", required=True, metavar="CSV", help="see docs/provisioning.md for the columns")
    q.add_argument("--template", required=True, metavar="TOML", help="the office's base mamoru.toml")
    q.add_argument("--web-url", default=DEFAULT_WEB_URL, help=f"family web login address (default {DEFAULT_WEB_URL})")
    q.add_argument("--encoding", default="utf-8-sig", help="CSV encoding (cp932 for Shift_JIS; default UTF-8)")
    q.add_argument("-o", "--output", required=True, metavar="OUTDIR")
    q.set_defaults(func=cmd_bulk)

    q = psub.add_parser("apply", help="verify a bundle against this unit's issuer keys and apply it")
    q.add_argument("bundles", nargs="+", metavar="BUNDLE",
                   help="bundle file(s); with several, exactly one must be valid for this unit")  # fmt: skip
    q.add_argument("--issuer-keys", default=str(DEFAULT_ISSUER_KEYS_DIR), metavar="DIR",
                   help=f"trusted issuer public keys (default {DEFAULT_ISSUER_KEYS_DIR})")  # fmt: skip
    q.add_argument("--config-out", default=str(SYSTEM_CONFIG), metavar="PATH",
                   help=f"where the config goes (default {SYSTEM_CONFIG}; the previous one stays as .bak)")  # fmt: skip
    q.add_argument("--db", metavar="F", help="SQLite database (default: the bundle config's [store] db)")
    q.add_argument("--serial-file", default=str(DEVICE_SERIAL_PATH), metavar="PATH", help="this unit's serial number")
    q.add_argument("--no-feed-update", action="store_true", help="add feeds without fetching them now (no network)")
    q.add_argument("--dry-run", action="store_true", help="verify and report, change nothing")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(func=cmd_apply)

    q = psub.add_parser("keys", help="list the issuer keys this unit trusts")
    q.add_argument("--issuer-keys", default=str(DEFAULT_ISSUER_KEYS_DIR), metavar="DIR")
    q.add_argument("--require", action="store_true",
                   help="exit 1 unless there is a key and every key file loads (image build check)")  # fmt: skip
    q.set_defaults(func=cmd_keys)


def _issuer_args(q: argparse.ArgumentParser) -> None:
    q.add_argument("--key", required=True, metavar="K", help="the issuer's private key (issuer.key)")
    q.add_argument("--issuer", help=f"the office's name (default: the one in {PUBLIC_KEY_NAME} beside the key)")
    q.add_argument("--feed", nargs=3, action="append", default=[], metavar=("NAME", "URL", "ROOT"),
                   help="a signed number feed to follow, with its root.json (repeatable)")  # fmt: skip
    q.add_argument("--valid-days", type=int, default=DEFAULT_VALID_DAYS,
                   help=f"the bundle expires after this many days (default {DEFAULT_VALID_DAYS})")  # fmt: skip


def _issuer_name(args: argparse.Namespace) -> str:
    if args.issuer:
        return str(args.issuer)
    public = Path(args.key).with_name(PUBLIC_KEY_NAME)
    try:
        return load_public_key(public).issuer
    except ValueError:
        raise CliError(f"give --issuer NAME (no readable {public} beside the key)") from None


def _feeds(args: argparse.Namespace) -> list[FeedSpec]:
    feeds = []
    for name, url, root in args.feed:
        try:
            document = json.loads(Path(root).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CliError(f"--feed {name}: {root}: not a readable JSON root ({exc})") from None
        if not isinstance(document, dict):
            raise CliError(f"--feed {name}: {root}: not TUF root metadata")
        feeds.append(FeedSpec(name, url, document))
    return feeds


def cmd_keygen(args: argparse.Namespace) -> int:
    try:
        private, public = generate_issuer_key(Path(args.dir), args.issuer)
    except BundleError as exc:
        raise CliError(str(exc)) from None
    keyid = load_public_key(public).keyid
    print(f"issuer key {keyid[:16]} for {args.issuer!r}")
    print(f"  private: {private} (keep it offline; anyone holding it can configure every unit)")
    print(f"  public:  {public} (build images with MAMORU_ISSUER_KEY={public})")
    return 0


def cmd_make(args: argparse.Namespace) -> int:
    output = Path(args.output)
    config_path = Path(args.config)
    try:
        config_text = config_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"{config_path}: cannot read: {exc}") from None
    generated = args.family_password is None
    password = generate_password() if generated else args.family_password
    try:
        users = [WebUser(args.family_user, Role.FAMILY, hash_password(password))]
        if args.installer_password:
            users.append(WebUser("installer", Role.INSTALLER, hash_password(args.installer_password)))
        household_id = args.household_id or output.name.removesuffix(BUNDLE_SUFFIX)
        content = new_content(issuer=_issuer_name(args), household=Household(household_id, args.label or household_id),
                              config_toml=config_text, feeds=_feeds(args), web_users=users, unit=args.unit,
                              valid_days=args.valid_days, hub=_hub_credentials(args))  # fmt: skip
        data = make_bundle(content, load_signer(Path(args.key)))
    except BundleError as exc:
        raise CliError(str(exc)) from None
    except ConfigError as exc:
        raise CliError(f"the config does not pass validation; nothing was signed:\n{exc}") from None
    write_private_file(output, data)
    until = iso_utc(content.not_after, timespec="seconds")
    print(f"wrote {output}: household {household_id}, valid until {until}"
          + (f", unit {content.unit}" if content.unit else ", any unit"))  # fmt: skip
    if args.sheet:
        config = validate_config_toml(config_text, str(config_path))
        write_private_file(Path(args.sheet), render_sheet(SheetData(content, config, args.web_url, args.family_user,
                                                                    password)).encode())  # fmt: skip
        print(f"wrote {args.sheet}")
    if generated:
        print(f"family web login: {args.family_user} / {password}  (shown once; it is not stored anywhere)")
    return 0


def _hub_credentials(args: argparse.Namespace) -> HubCredentials | None:
    if not args.hub_password_file:
        if args.hub_ca:
            raise CliError("--hub-ca needs --hub-password-file (the unit's own broker password)")
        return None
    try:
        password = Path(args.hub_password_file).read_text(encoding="utf-8").strip()
        ca = Path(args.hub_ca).read_text(encoding="ascii") if args.hub_ca else None
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"hub credentials: {exc}") from None
    return HubCredentials(password, ca)


def cmd_bulk(args: argparse.Namespace) -> int:
    try:
        job = BulkJob(Path(args.households), Path(args.template), Path(args.output), load_signer(Path(args.key)),
                      _issuer_name(args), web_url=args.web_url, feeds=_feeds(args), valid_days=args.valid_days,
                      encoding=args.encoding)  # fmt: skip
        result = job.run()
    except (BulkError, BundleError) as exc:
        raise CliError(str(exc)) from None
    for made in result.made:
        print(f"ok     {made.household_id}: {made.bundle.name}, {made.sheet.name}")
    for problem in result.problems:
        print(f"FAILED {problem}", file=sys.stderr)
    print(f"{len(result.made)} made, {len(result.problems)} problem(s); index: {result.index}")
    return 0 if result.ok else 1


def cmd_apply(args: argparse.Namespace) -> int:
    applier = Applier(issuer_keys_dir=Path(args.issuer_keys), config_path=Path(args.config_out),
                      serial_path=Path(args.serial_file), db_override=Path(args.db) if args.db else None,
                      first_feed_update=not args.no_feed_update)  # fmt: skip
    try:
        result = applier.apply([Path(b) for b in args.bundles], dry_run=args.dry_run)
    except BundleRefused as exc:
        raise CliError(str(exc)) from None
    if args.json:
        c = result.bundle.content
        print(json.dumps({
            "applied": not result.dry_run, "ok": result.ok, "source": result.bundle.source,
            "household": {"id": c.household.id, "label": c.household.label}, "issuer": c.issuer,
            "issued_at": iso_utc(c.issued_at, timespec="seconds"), "keyid": result.bundle.signer.keyid,
            "config": str(result.config_path), "config_changed": result.config_changed,
            "backup": str(result.backup_path) if result.backup_path else None,
            "web_users": str(result.web_users_path),
            "feeds": [{"name": n, "outcome": o.value, "detail": d} for n, o, d in result.feeds],
        }, ensure_ascii=False, indent=2))  # fmt: skip
    else:
        print("\n".join(result.summary()))
    return 0 if result.ok else 1


def cmd_keys(args: argparse.Namespace) -> int:
    directory = Path(args.issuer_keys)
    keys = load_trusted_keys(directory)  # a broken file is logged (stderr) and skipped
    for key in keys:
        print(f"{key.keyid[:16]}  {key.issuer}  ({key.path.name})")
    if not keys:
        print(f"no issuer keys in {directory}: this unit accepts no provisioning bundle")
    files = len(list(directory.glob("*.json"))) if directory.is_dir() else 0
    if args.require and (not keys or len(keys) != files):
        raise CliError(f"{directory}: {files - len(keys)} of {files} key file(s) unusable" if keys or files
                         else f"{directory}: no issuer key")  # fmt: skip
    return 0
