"""The ``Host`` check: only names that really mean this unit reach the app (defeats DNS rebinding).

A page on ``attacker.example`` whose name is re-pointed at the unit's address is, to the
browser, same-origin with itself: its requests carry ``Host: attacker.example`` (and a
matching ``Origin``), so the Origin check alone lets it in. The Host header is the one
thing such a page cannot choose, so every request is checked against an allow-list:
loopback, the unit's own address the connection arrived on, ``mamoru.local``,
``<hostname>.local``, the host of ``[alerts] web_base_url`` and ``[web] allowed_hosts``.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Callable
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from screening.config import Config

log = logging.getLogger(__name__)

MDNS_NAME = "mamoru.local"
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


def allowed_names(cfg: Config) -> frozenset[str]:
    """The names (not addresses) that open the page under this config."""
    names = {MDNS_NAME, f"{socket.gethostname().lower()}.local", *cfg.web.allowed_hosts}
    base = cfg.alerts.web_base_url
    if base:
        base_host = urlsplit(base).hostname
        if base_host:
            names.add(base_host.lower())
    return frozenset(names)


def host_allowed(host: str, cfg: Config, *, local_address: str | None) -> bool:
    """``local_address``: the unit's own address this connection arrived on (what a browser given the
    unit's IP sends as Host). Not a DNS lookup of our own name: that could block the event loop."""
    if _is_loopback(host) or host in allowed_names(cfg):
        return True
    try:
        address = str(ipaddress.ip_address(host))
    except ValueError:
        return False
    return local_address is not None and address == str(ipaddress.ip_address(local_address.split("%")[0]))


class HostCheck:
    """ASGI middleware, outermost: refuses a request whose ``Host`` is not this unit, before anything else."""

    def __init__(self, app: ASGIApp, *, config: Callable[[], Config]) -> None:
        self.app = app
        self.config = config

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        values = [v for k, v in scope.get("headers", []) if k == b"host"]
        host = host_name_of(values[0].decode("latin-1")) if len(values) == 1 else None
        server = scope.get("server")
        local = str(server[0]) if server else None
        if host is not None and host_allowed(host, self.config(), local_address=local):
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
