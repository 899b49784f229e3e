"""Run the web app with uvicorn on a thread of its own, with a clean, bounded stop.

Used by the page's own process that `mamoru run` starts (screening/web/process.py),
by `mamoru web` and by the tests (port 0 = a free port, see ``WebServer.port``).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import uvicorn

from screening.config import BUILTIN_SOURCE, COMMAND_LINE_SOURCE, Config
from screening.web.accounts import UserFile
from screening.web.connections import ConnectionLimits, guarded_protocol
from screening.web.context import WebContext

log = logging.getLogger(__name__)

START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0
GRACEFUL_SHUTDOWN_S = 5  # open downloads (a recording) get this long to finish
LOOPBACK = "127.0.0.1"


def is_loopback(host: str) -> bool:
    if host.casefold() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def safe_host(host: str, users_path: Path) -> str:
    """The host to serve on: a non-loopback address only once a web password exists."""
    if is_loopback(host) or UserFile(users_path).accounts():
        return host
    log.warning("web: no web password is set yet, so the page is served on %s only, not on %s. "
                "Set one with `mamoru web passwd NAME --role installer` (or open http://%s:PORT/setup "
                "on the unit itself), then restart.", LOOPBACK, host, LOOPBACK)  # fmt: skip
    return LOOPBACK


def _bind(host: str, port: int) -> socket.socket:
    """Bind here, not in uvicorn: a port in use is an OSError for the caller, not sys.exit in a thread."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                         flags=socket.AI_PASSIVE)[0]  # fmt: skip
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


@dataclass
class WebServer:
    """A running server; ``stop`` it (it also runs ``on_stop`` callbacks, e.g. closing a store)."""

    host: str
    port: int
    app: Any
    scheme: str
    _server: uvicorn.Server = field(repr=False)
    _thread: threading.Thread = field(repr=False)
    _sock: socket.socket = field(repr=False)
    on_stop: list[Callable[[], None]] = field(default_factory=list, repr=False)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> bool:
        """Stop and wait at most ``timeout`` seconds; False if the thread would not end."""
        self._server.should_exit = True
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._server.force_exit = True
            self._thread.join(1.0)
        stopped = not self._thread.is_alive()
        if not stopped:
            log.error("web: server on %s did not stop within %.0f s", self.url, timeout)
        self._sock.close()
        for callback in self.on_stop:
            try:
                callback()
            except Exception:
                log.exception("web: cleanup after stop failed")
        self.on_stop.clear()
        return stopped


def serve_in_thread(ctx: WebContext, host: str, port: int, *, app: Any = None, tls: tuple[Path, Path] | None = None,
                    timeout: float = START_TIMEOUT_S, limits: ConnectionLimits | None = None) -> WebServer:  # fmt: skip
    """Serve ``create_app(ctx)`` (or ``app``) on host:port; returns once it accepts connections.

    ``tls`` = (certificate, key) PEM files serves https (a reverse proxy usually does that instead).

    Raises OSError when the address cannot be bound, RuntimeError when it does not start in time.
    """
    if app is None:
        from screening.web.app import create_app

        app = create_app(ctx)
    sock = _bind(host, port)
    bound_port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, host=host, port=bound_port, log_config=None, log_level="warning", access_log=False,
        http=guarded_protocol(limits or ConnectionLimits()),  # connection caps, request-head deadline
        lifespan="off", proxy_headers=False, server_header=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S, timeout_keep_alive=5,
        ssl_certfile=str(tls[0]) if tls else None, ssl_keyfile=str(tls[1]) if tls else None,
    )  # fmt: skip
    server = uvicorn.Server(config)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(server.serve(sockets=[sock]))
        except BaseException as exc:  # noqa: BLE001 -- SystemExit from uvicorn included: report, never kill
            failure.append(exc)
            log.error("web: server on %s:%d stopped with an error: %r", host, bound_port, exc)

    thread = threading.Thread(target=run, name=f"web-{bound_port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    web = WebServer(host, bound_port, app, "https" if tls else "http", server, thread, sock)
    if not server.started:
        web.stop(timeout=2.0)
        why = repr(failure[0]) if failure else f"not listening after {timeout:.0f} s"
        raise RuntimeError(f"web server on {host}:{bound_port} did not start: {why}")
    log.info("web page on %s/", web.url)
    return web


def config_for_paths(cfg: Config, db_path: Path, recordings_dir: Path | None) -> Config:
    """``cfg`` naming the database and recordings screening really uses (the demo keeps its own)."""
    store = replace(cfg.store, db=db_path)
    recording = replace(cfg.recording, dir=recordings_dir) if recordings_dir is not None else cfg.recording
    return replace(cfg, store=store, recording=recording)


def config_file(cfg: Config) -> Path | None:
    """The file the config came from; None for built-in defaults (the pages then cannot save settings)."""
    return None if cfg.source in (BUILTIN_SOURCE, COMMAND_LINE_SOURCE) else Path(cfg.source)


def start_for_daemon(cfg: Config, db_path: Path, recordings_dir: Path | None = None) -> WebServer | None:
    """The page's process under `mamoru run`: serve ``[web]``; any failure is logged, None returned."""
    if not cfg.web.enabled:
        return None
    try:
        from blocklist.store import Store

        store = Store(db_path, recover_calls=False)  # its own connection: pages never hold the daemon's lock
        store.open()
        try:
            ctx = WebContext.for_config(config_for_paths(cfg, db_path, recordings_dir), store, config_file(cfg))
            web = serve_in_thread(ctx, safe_host(cfg.web.host, ctx.users_path), cfg.web.port)
        except BaseException:
            store.close()
            raise
        web.on_stop.append(store.close)
        return web
    except Exception as exc:  # noqa: BLE001 -- port in use, missing package ...: screening matters more
        log.error("web page not started (screening goes on without it): %s", exc)
        return None
