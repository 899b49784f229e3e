"""``mamoru hub ...``: the hub service (broker subscriber + hub page), its accounts and units, the
local servers for a town or a demo, and the scale simulation. See docs/hub.md."""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import secrets
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from screening.cli.common import CliError


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("hub", help="the hub: units' broker subscriber, hub page, fleet and shared list")
    sub = p.add_subparsers(dest="hub_action", required=True)
    q = sub.add_parser("run", help="subscribe to the broker, store into PostgreSQL, serve the hub page")
    q.add_argument("--config", type=Path, required=True, metavar="hub.toml")
    q.set_defaults(func=cmd_run)
    q = sub.add_parser("servers", help="start a local Mosquitto and PostgreSQL (a town or a demo) and write hub.toml")
    q.add_argument("--dir", type=Path, required=True)
    q.add_argument("--unit", action="append", default=[], help="a unit id to give broker credentials (repeat)")
    q.add_argument("--mqtt-port", type=int, default=8883)
    q.add_argument("--pg-port", type=int, default=5433)
    q.add_argument("--web-port", type=int, default=8090, help="the hub page's port written into hub.toml")
    q.set_defaults(func=cmd_servers)
    q = sub.add_parser("account", help="add a hub page account (password read from stdin or prompted)")
    q.add_argument("--config", type=Path, required=True, metavar="hub.toml")
    q.add_argument("name")
    q.add_argument("--role", choices=["family", "police", "reviewer"], required=True)
    q.add_argument("--household", help="family accounts: the household they belong to")
    q.add_argument("--area", help="police accounts: limit to one area (default: every area)")
    q.set_defaults(func=cmd_account)
    q = sub.add_parser("unit", help="register a unit's household and area on the hub")
    q.add_argument("--config", type=Path, required=True, metavar="hub.toml")
    q.add_argument("unit")
    q.add_argument("--household", required=True)
    q.add_argument("--area", default="")
    q.set_defaults(func=cmd_unit)
    q = sub.add_parser("simulate", help="drive N simulated units against a local broker, hub and PostgreSQL")
    q.add_argument("--units", type=int, required=True)
    q.add_argument("--steady-s", type=float, default=30.0)
    q.add_argument("--burst-s", type=float, default=10.0)
    q.add_argument("--json-out", type=Path)
    q.set_defaults(func=cmd_simulate)


def _config(path: Path) -> Any:
    from screening.hub.config import HubConfigError, load_hub_config

    try:
        return load_hub_config(path)
    except HubConfigError as exc:
        raise CliError(str(exc)) from None


def cmd_run(args: argparse.Namespace) -> int:
    import uvicorn

    from screening.hub.ingest import HubSubscriber
    from screening.hub.web import hub_app
    from screening.hubwire import CommandSigner

    logging.getLogger().setLevel(logging.INFO)
    cfg = _config(args.config)
    signer = CommandSigner.load_or_create(cfg.command_key)
    with HubSubscriber(cfg.broker, cfg.ingest, signer) as hub:
        server = uvicorn.Server(uvicorn.Config(hub_app(cfg.web, hub.send), host=cfg.listen_host, port=cfg.listen_port,
                                               log_level="warning"))  # fmt: skip
        server.run()
    return 0


def cmd_servers(args: argparse.Namespace) -> int:
    from screening.hub.servers import HUB_USER, MosquittoBroker, PostgresCluster

    directory: Path = args.dir.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    secrets_path = directory / "passwords.json"
    known: dict[str, str] = json.loads(secrets_path.read_text()) if secrets_path.exists() else {}
    for name in [HUB_USER, *args.unit]:
        known.setdefault(name, secrets.token_urlsafe(18))
    secrets_path.write_text(json.dumps(known, indent=2) + "\n")
    secrets_path.chmod(0o600)
    (directory / "hub-broker.password").write_text(known[HUB_USER] + "\n")
    (directory / "hub-broker.password").chmod(0o600)
    broker = MosquittoBroker(directory / "broker", args.mqtt_port, known)
    cluster = PostgresCluster(directory / "pg", args.pg_port)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with broker, cluster:
        try:
            dsn = cluster.create_database("mamoru_hub")
        except Exception:  # noqa: BLE001 -- exists from an earlier run
            dsn = cluster.dsn("mamoru_hub")
        assert broker.tls is not None
        config = directory / "hub.toml"
        config.write_text(
            f'[broker]\nhost = "localhost"\nport = {args.mqtt_port}\nca_file = "{broker.tls.ca}"\n'
            f'username = "{HUB_USER}"\npassword_file = "{directory / "hub-broker.password"}"\n\n'
            f'[database]\ndsn = "{dsn}"\n\n[hub]\nspool_dir = "{directory / "spool"}"\n'
            f'command_key = "{directory / "command.key"}"\nhome_region = "JP"\n\n'
            f'[web]\nlisten = "127.0.0.1:{args.web_port}"\nallowed_hosts = ["localhost", "127.0.0.1"]\nsecure_cookies = false\n')
        print(f"broker on localhost:{args.mqtt_port} (TLS, CA {broker.tls.ca}); PostgreSQL on 127.0.0.1:{args.pg_port}")
        print(f"unit passwords in {secrets_path}; hub settings in {config}. Ctrl-C stops both.")
        try:
            while not stop.wait(1.0):
                pass
        except KeyboardInterrupt:
            pass
    return 0


def cmd_account(args: argparse.Namespace) -> int:
    from screening.hub.store import HubRole, HubStore, add_account
    from screening.web.accounts import hash_password

    cfg = _config(args.config)
    password = sys.stdin.readline().rstrip("\n") if not sys.stdin.isatty() else getpass.getpass("password: ")
    if len(password) < 10:
        raise CliError("the password needs at least 10 characters")
    with HubStore(cfg.ingest.dsn) as store:
        store.migrate()
        try:
            add_account(store, args.name, hash_password(password), HubRole(args.role), args.household, args.area)
        except ValueError as exc:
            raise CliError(str(exc)) from None
    print(f"account {args.name} ({args.role}) added")
    return 0


def cmd_unit(args: argparse.Namespace) -> int:
    from screening.hub.store import HubStore
    from screening.hubwire import is_valid_unit_id

    if not is_valid_unit_id(args.unit):
        raise CliError(f"unit id {args.unit!r}: lower-case letters, digits and '-' (3-63 characters)")
    cfg = _config(args.config)
    with HubStore(cfg.ingest.dsn) as store:
        store.migrate()
        store.register_unit(args.unit, args.household, args.area)
    print(f"unit {args.unit}: household {args.household}, area {args.area or '-'}")
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from screening.hub.simulate import MAX_UNITS, simulate_main

    if not 1 <= args.units <= MAX_UNITS:
        raise CliError(f"--units must be between 1 and {MAX_UNITS}")
    if not (1 <= args.steady_s <= 600 and 1 <= args.burst_s <= 600):
        raise CliError("--steady-s and --burst-s must be between 1 and 600 seconds")
    logging.getLogger().setLevel(logging.INFO)
    try:
        results = simulate_main(args.units, args.json_out, args.steady_s, args.burst_s)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    print(json.dumps(results, indent=2, ensure_ascii=False))
    return 0
