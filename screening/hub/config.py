"""``hub.toml``: the hub's own settings file (the hub is a separate service, not a unit).

Every problem is collected and reported at once, naming the key. Example in docs/hub.md.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .ingest import BrokerSettings, IngestSettings
from .web import HubWebSettings


class HubConfigError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class HubConfig:
    broker: BrokerSettings
    ingest: IngestSettings
    web: HubWebSettings
    listen_host: str
    listen_port: int
    command_key: Path


def load_hub_config(path: Path) -> HubConfig:
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise HubConfigError(f"{path}: {exc}") from None
    problems: list[str] = []

    def get(section: str, key: str, kind: type, default: Any = None) -> Any:
        value = document.get(section, {}).get(key, default)
        if value is None:
            problems.append(f"[{section}] {key}: missing")
        elif not isinstance(value, kind) or isinstance(value, bool) and kind is int:
            problems.append(f"[{section}] {key}: expected {kind.__name__}")
        return value

    host = get("broker", "host", str, "localhost")
    port = get("broker", "port", int, 8883)
    ca = get("broker", "ca_file", str)
    user = get("broker", "username", str, "hub_service")
    password_file = get("broker", "password_file", str)
    dsn = get("database", "dsn", str)
    spool = get("hub", "spool_dir", str, "/var/lib/mamoru-hub/spool")
    key = get("hub", "command_key", str, "/etc/mamoru-hub/command.key")
    feed = document.get("hub", {}).get("feed_repo")
    region = get("hub", "home_region", str, "JP")
    listen = get("web", "listen", str, "127.0.0.1:8090")
    hosts = get("web", "allowed_hosts", list, ["localhost"])
    secure = document.get("web", {}).get("secure_cookies", True)
    password = ""
    if isinstance(password_file, str):
        try:
            password = Path(password_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            problems.append(f"[broker] password_file: {exc.strerror}")
    listen_host, _, listen_port = str(listen).rpartition(":")
    if not listen_port.isdigit():
        problems.append("[web] listen: expected HOST:PORT")
    if problems:
        raise HubConfigError(f"{path}:\n  " + "\n  ".join(problems))
    return HubConfig(BrokerSettings(host, port, Path(ca), user, password),
                     IngestSettings(dsn, Path(spool)),
                     HubWebSettings(dsn, frozenset(str(h).lower() for h in hosts), Path(feed) if feed else None,
                                    region, bool(secure)),
                     listen_host or "127.0.0.1", int(listen_port), Path(key))  # fmt: skip
