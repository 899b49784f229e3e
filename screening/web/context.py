"""What every page handler needs: the store, the config (re-read when its file changes), paths."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

from blocklist.store import Store
from screening.config import Config, ConfigError, load_config

log = logging.getLogger(__name__)

USERS_FILE_NAME = "web-users.json"  # written by `mamoru provision apply` too (docs/provisioning.md)
STATUS_FILE_NAME = "status.json"  # written by the daemon, read by the health page


@dataclass
class WebContext:
    """Shared by all requests. Built by the server; the store is already open.

    ``config_path`` None means built-in defaults (the demo): settings pages then
    show the values but cannot save them.
    """

    store: Store
    config_path: Path | None
    base_config: Config
    users_path: Path
    status_path: Path
    # Baked into the image (deploy/image), never taken from the config a bundle replaces.
    issuer_keys_dir: Path = Path("/etc/mamoru/issuer-keys")
    _config: Config | None = field(default=None, init=False, repr=False)
    _config_mtime: float | None = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    @classmethod
    def for_config(cls, cfg: Config, store: Store, config_path: Path | None) -> WebContext:
        data_dir = Path(store.path).parent
        return cls(store=store, config_path=config_path, base_config=cfg,
                   users_path=data_dir / USERS_FILE_NAME, status_path=data_dir / STATUS_FILE_NAME)  # fmt: skip

    def config(self) -> Config:
        """The config file as it is now; a file broken by hand keeps the last good one (logged)."""
        if self.config_path is None:
            return self.base_config
        with self._lock:
            try:
                mtime = self.config_path.stat().st_mtime
            except OSError:
                return self._config or self.base_config
            if self._config is None or mtime != self._config_mtime:
                try:
                    loaded = load_config(self.config_path)
                    # keep command-line overrides (--db) the server was started with
                    self._config = loaded.with_overrides(db=self.base_config.store.db)
                except ConfigError as exc:
                    log.error("web: config %s is invalid, showing the last good one: %s", self.config_path, exc)
                    self._config = self._config or self.base_config
                self._config_mtime = mtime
            return self._config
