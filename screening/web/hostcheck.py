"""The ``Host`` check: only names that really mean this unit reach the app (defeats DNS rebinding).

A page on ``attacker.example`` whose name is re-pointed at the unit's address is, to the
browser, same-origin with itself: its requests carry ``Host: attacker.example`` (and a
matching ``Origin``), so the Origin check alone lets it in. The Host header is the one
thing such a page cannot choose, so every request is checked against an allow-list:
loopback, the address the connection arrived on, the unit's own addresses,
``mamoru.local``, ``<hostname>.local``, the host of ``[alerts] web_base_url`` and
``[web] allowed_hosts``.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Callable
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from screening.config import Config

log = logging.getLogger(__name__)

MDNS_NAME = "mamoru.local"
OWN_ADDRESSES_TTL_S = 60.0  # DHCP may hand the unit a new address: look again now and then
REFUSED_BODY = ("この名前では、見守り（まもる）の画面は開けません。\n"
                "This name does not open the mamoru page.\n").encode()  # fmt: skip


def host_name_of(header: str) -> str | None:
    """``Host`` header value -> lower-case host without port (IPv6 without brackets); None if malformed."""
    text = header.strip().lower()
    if not text or any(c in text for c in "/\\@?#% \t"):
        return None
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or (text[end + 1:] and not text[end + 1:].startswith(":")):
            return None
        host, port = text[1:end], text[end + 2:]
    else:
        host, _, port = text.partition(":")
    if port and not port.isdigit():
        return None
    return host.rstrip(".") or None


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class OwnAddresses:
    """The unit's own IP addresses (by its host name), re-read at most every OWN_ADDRESSES_TTL_S."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._addresses: frozenset[str] = frozenset()
        self._at: float | None = None

    def __call__(self) -> frozenset[str]:
        with self._lock:
            now = self._clock()
            if self._at is None or now - self._at > OWN_ADDRESSES_TTL_S:
                self._addresses, self._at = self._look_up(), now
            return self._addresses

    @staticmethod
    def _look_up() -> frozenset[str]:
        try:
            infos = socket.getaddrinfo(socket.gethostname(), None)
        except OSError:
            return frozenset()
        return frozenset(str(ipaddress.ip_address(info[4][0].split("%")[0])) for info in infos)


def allowed_names(cfg: Config) -> frozenset[str]:
    """The names (not addresses) that open the page under this config."""
    names = {MDNS_NAME, f"{socket.gethostname().lower()}.local", *cfg.web.allowed_hosts}
    base = cfg.alerts.web_base_url
    if base:
        base_host = urlsplit(base).hostname
        if base_host:
            names.add(base_host.lower())
    return frozenset(names)


def host_allowed(host: str, cfg: Config, *, local_address: str | None, own: Callable[[], frozenset[str]]) -> bool:
    if _is_loopback(host) or host in allowed_names(cfg):
        return True
    try:
        address = str(ipaddress.ip_address(host))
    except ValueError:
        return False
    return address == local_address or address in own()


class HostCheck:
    """ASGI middleware, outermost: refuses a request whose ``Host`` is not this unit, before anything else."""

    def __init__(self, app: ASGIApp, *, config: Callable[[], Config],
                 own: Callable[[], frozenset[str]] | None = None) -> None:  # fmt: skip
        self.app = app
        self.config = config
        self.own = own or OwnAddresses()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        values = [v for k, v in scope.get("headers", []) if k == b"host"]
        host = host_name_of(values[0].decode("latin-1")) if len(values) == 1 else None
        server = scope.get("server")
        local = str(server[0]) if server else None
        if host is not None and host_allowed(host, self.config(), local_address=local, own=self.own):
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        log.warning("web: request for Host %r from %s refused (not a name of this unit; add it to "
                    "[web] allowed_hosts if it is one)", values[:1], client[0] if client else "?")  # fmt: skip
        await send({"type": "http.response.start", "status": 421,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                                (b"content-length", str(len(REFUSED_BODY)).encode()),
                                (b"connection", b"close")]})  # fmt: skip
        await send({"type": "http.response.body", "body": REFUSED_BODY})
