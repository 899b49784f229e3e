"""Local stand-ins for what alerts reach: an HTTP receiver playing ntfy and a generic JSON webhook (what
apprise's ``json://`` posts to), and an SMTP sink for aiosmtpd. Every wait is bounded."""

from __future__ import annotations

import email
import email.policy
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.support.ports import free_tcp_port

__all__ = ["JSON_PASSWORD", "SMTP_PASSWORD", "HttpReceiver", "SmtpSink", "json_url", "mail_url"]

SMTP_PASSWORD = "Smtp-S3cret-pw"
JSON_PASSWORD = "Json-S3cret-pw"


@dataclass
class HttpReceiver:
    """ntfy / JSON webhook stand-in; keeps (path, body, CLOCK_MONOTONIC arrival) of every POST.

    ``mode``: ok | error (500) | slow (sleeps ``delay`` then 200). The port is chosen before
    ``start`` so a test can name a receiver that is not listening yet."""

    port: int = field(default_factory=free_tcp_port)
    mode: str = "ok"
    delay: float = 1.5
    received: list[tuple[str, dict[str, Any], float]] = field(default_factory=list)
    arrived: threading.Condition = field(default_factory=threading.Condition)
    _server: ThreadingHTTPServer | None = None

    def start(self) -> HttpReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                data = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if receiver.mode == "slow":
                    time.sleep(receiver.delay)
                if receiver.mode == "error":
                    self.send_response(500)
                    self.end_headers()
                    return
                at = time.monotonic()
                with receiver.arrived:
                    receiver.received.append((self.path, json.loads(data or b"{}"), at))
                    receiver.arrived.notify_all()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def paths(self, prefix: str) -> list[dict[str, Any]]:
        return [body for path, body, _ in self.received if path.startswith(prefix)]

    def wait_for(self, prefix: str, count: int = 1, timeout: float = 5.0) -> bool:
        with self.arrived:
            return self.arrived.wait_for(lambda: len(self.paths(prefix)) >= count, timeout)

    def matching(self, path: str, needle: str) -> list[tuple[dict[str, Any], float]]:
        """(body, arrival) of the posts to exactly ``path`` whose JSON mentions ``needle``."""
        with self.arrived:
            return [(body, at) for p, body, at in self.received
                    if p == path and needle in json.dumps(body, ensure_ascii=False)]  # fmt: skip

    def wait_matching(self, path: str, needle: str, timeout: float) -> list[tuple[dict[str, Any], float]]:
        with self.arrived:
            self.arrived.wait_for(lambda: bool(self.matching(path, needle)), timeout)
        return self.matching(path, needle)


class SmtpSink:
    """aiosmtpd handler: keeps every message, accepts one user/password over plain SMTP."""

    def __init__(self) -> None:
        self.messages: list[tuple[email.message.EmailMessage, float]] = []
        self.arrived = threading.Condition()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        with self.arrived:
            self.messages.append((message, time.monotonic()))  # type: ignore[arg-type]
            self.arrived.notify_all()
        return "250 OK"

    def wait_for(self, count: int = 1, timeout: float = 5.0) -> bool:
        with self.arrived:
            return self.arrived.wait_for(lambda: len(self.messages) >= count, timeout)

    def text(self, index: int = 0) -> str:
        message = self.messages[index][0]
        part = message.get_body(preferencelist=("plain", "html"))
        return f"{message['Subject']}\n{part.get_content() if part else ''}"


def json_url(port: int, path: str = "hook", secret: bool = False) -> str:
    auth = f"mamoru:{JSON_PASSWORD}@" if secret else ""
    return f"json://{auth}127.0.0.1:{port}/{path}"


def mail_url(port: int, to: str = "taro@example.com") -> str:
    return f"mailto://mamoru:{SMTP_PASSWORD}@127.0.0.1:{port}?from=mamoru@example.com&to={to}"
