"""The NCID TCP server: one thread, non-blocking sockets, a bounded send buffer per client.

Screening must never wait for a client. The call loop's only part is :meth:`NcidServer.publish`:
a line appended to a queue under a lock and one byte written to a wake-up socket (non-blocking).
Everything else happens on the server's own thread:

- a client that never reads fills its send buffer (``send_buffer_bytes``) and is dropped;
- a client that sends more than ``max_input_bytes`` (clients send a few ``HELLO:`` lines and
  keep-alive newlines) is dropped; anything else it sends is read and ignored, ``GOODBYE`` closes;
- beyond ``max_clients`` a new connection is told ``MSG: Too many clients connected`` and closed.
"""

from __future__ import annotations

import logging
import selectors
import socket
import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, tzinfo
from types import TracebackType

from screening.ncid.lines import API_LINE, STARTUP_END, NcidCall, call_line, greeting, log_lines

__all__ = ["NcidServer", "NcidSettings"]

log = logging.getLogger(__name__)

ENCODING = "utf-8"
TOO_MANY = b"MSG: Too many clients connected\n"
LISTEN_BACKLOG = 128
SELECT_TIMEOUT_S = 1.0
JOIN_TIMEOUT_S = 5.0
ACCEPTS_PER_WAKE = 64  # a connect flood cannot starve the broadcast of a call line
READ_CHUNK = 4096
MAX_INPUT_LINE = 256
KERNEL_SNDBUF = 64 * 1024  # Linux doubles it: a client that never reads holds at most ~384 KiB in all


@dataclass(frozen=True, slots=True)
class NcidSettings:
    """Where and how the NCID server listens (mapped from ``[ncid]`` by the composition root)."""

    host: str = "127.0.0.1"
    port: int = 3333
    line_id: str = "-"
    replay_calls: int = 200  # call-log lines sent on connect; 0 = "251 Call log not sent"
    max_clients: int = 32
    send_buffer_bytes: int = 256 * 1024  # > a full replay (≤ 1000 lines of ~120 bytes)
    max_input_bytes: int = 64 * 1024
    zone: tzinfo = UTC
    version: str = "0"


@dataclass(slots=True, eq=False)
class _Client:
    sock: socket.socket
    peer: str
    out: bytearray = field(default_factory=bytearray)
    line: bytearray = field(default_factory=bytearray)
    received: int = 0
    writing: bool = False


class NcidServer:
    """Serves NCID clients; a context manager (listening between enter and exit)."""

    def __init__(self, settings: NcidSettings, history: Iterable[NcidCall] = ()) -> None:
        self.settings = settings
        self._history: deque[NcidCall] = deque(history, maxlen=max(settings.replay_calls, 1))
        self._pending: deque[str] = deque(maxlen=1000)
        self._lock = threading.Lock()
        self._clients: dict[socket.socket, _Client] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._listener: socket.socket | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._selector: selectors.BaseSelector | None = None
        self.dropped = 0  # clients dropped for not reading or for talking too much

    # ---- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        s = self.settings
        family = socket.AF_INET6 if ":" in s.host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((s.host, s.port))
            listener.listen(LISTEN_BACKLOG)
            listener.setblocking(False)
        except OSError:
            listener.close()
            raise
        self._listener = listener
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(listener, selectors.EVENT_READ, "accept")
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._thread = threading.Thread(target=self._serve, name="ncid-server", daemon=True)
        self._thread.start()
        log.info("NCID server listening on %s:%d", s.host, self.port)

    @property
    def port(self) -> int:
        """The bound port (the configured one, or the one chosen for port 0)."""
        return int(self._listener.getsockname()[1]) if self._listener is not None else self.settings.port

    def stop(self) -> None:
        self._stop.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout=JOIN_TIMEOUT_S)
        for sock in (self._listener, self._wake_r, self._wake_w):
            if sock is not None:
                sock.close()
        if self._selector is not None:
            self._selector.close()

    def __enter__(self) -> NcidServer:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    # ---- the call loop's side: never blocks -------------------------------------------------

    def publish(self, call: NcidCall) -> None:
        """Send ``call`` to every connected client and keep it for the next clients' call log."""
        text = call_line(call, self.settings.zone)
        with self._lock:
            self._history.append(call)
            self._pending.append(text)
        self._wake()

    def client_count(self) -> int:
        with self._lock:
            return len(self._clients)

    def _wake(self) -> None:
        if self._wake_w is None:
            return
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, OSError):
            pass  # already awake (buffer full) or closing

    # ---- the server thread -------------------------------------------------------------------

    def _serve(self) -> None:
        assert self._selector is not None
        while not self._stop.is_set():
            try:
                events = self._selector.select(timeout=SELECT_TIMEOUT_S)
                for key, mask in events:
                    if key.data == "accept":
                        self._accept()
                    elif key.data == "wake":
                        self._drain_wake()
                    else:
                        self._service(key.data, mask)
                self._broadcast()
            except Exception:  # noqa: BLE001 -- a bug here must not end the server; calls go on regardless
                log.exception("NCID server loop failed; continuing")
        for client in list(self._clients.values()):
            self._close(client, "server stopping")

    def _accept(self) -> None:
        assert self._listener is not None
        for _ in range(ACCEPTS_PER_WAKE):
            try:
                sock, addr = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. out of file descriptors: keep serving the clients there are
                log.warning("NCID accept failed: %s", exc)
                return
            sock.setblocking(False)
            # The kernel's own buffer per client is bounded too (loopback would otherwise grant megabytes).
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, min(self.settings.send_buffer_bytes, KERNEL_SNDBUF))
            peer = f"{addr[0]}:{addr[1]}"
            if len(self._clients) >= self.settings.max_clients:
                try:
                    sock.send(TOO_MANY)
                except OSError:
                    pass
                sock.close()
                log.info("NCID client %s refused: %d clients already", peer, len(self._clients))
                continue
            client = _Client(sock, peer)
            with self._lock:
                self._clients[sock] = client
                history = list(self._history)[-self.settings.replay_calls:] if self.settings.replay_calls else []
            assert self._selector is not None
            self._selector.register(sock, selectors.EVENT_READ, client)
            startup = [greeting(self.settings.version), API_LINE,
                       *log_lines(history, self.settings.zone, replay=self.settings.replay_calls > 0), STARTUP_END]
            self._queue(client, "".join(f"{line}\n" for line in startup).encode(ENCODING))
            log.debug("NCID client %s connected", peer)

    def _drain_wake(self) -> None:
        assert self._wake_r is not None
        try:
            while self._wake_r.recv(READ_CHUNK):
                pass
        except (BlockingIOError, OSError):
            pass

    def _broadcast(self) -> None:
        with self._lock:
            if not self._pending:
                return
            lines = list(self._pending)
            self._pending.clear()
        data = "".join(f"{line}\n" for line in lines).encode(ENCODING)
        for client in list(self._clients.values()):
            self._queue(client, data)

    def _queue(self, client: _Client, data: bytes) -> None:
        if len(client.out) + len(data) > self.settings.send_buffer_bytes:
            self.dropped += 1
            self._close(client, "not reading (send buffer full)")
            return
        client.out += data
        self._flush(client)

    def _service(self, client: _Client, mask: int) -> None:
        if client.sock not in self._clients:
            return
        if mask & selectors.EVENT_READ:
            self._read(client)
        if mask & selectors.EVENT_WRITE and client.sock in self._clients:
            self._flush(client)

    def _read(self, client: _Client) -> None:
        try:
            data = client.sock.recv(READ_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(client, "connection error")
            return
        if not data:
            self._close(client, "disconnected")
            return
        client.received += len(data)
        if client.received > self.settings.max_input_bytes:
            self.dropped += 1
            self._close(client, "sent too much")
            return
        for byte in data:  # only GOODBYE means anything from a client here; the rest is ignored
            if byte in (0x0A, 0x0D):
                if bytes(client.line).strip() == b"GOODBYE":
                    self._close(client, "said goodbye")
                    return
                client.line.clear()
            elif len(client.line) < MAX_INPUT_LINE:
                client.line.append(byte)

    def _flush(self, client: _Client) -> None:
        while client.out:
            try:
                sent = client.sock.send(client.out)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self._close(client, "connection error")
                return
            del client.out[:sent]
        want_write = bool(client.out)
        if want_write != client.writing and self._selector is not None:
            client.writing = want_write
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if want_write else 0)
            self._selector.modify(client.sock, events, client)

    def _close(self, client: _Client, why: str) -> None:
        with self._lock:
            known = self._clients.pop(client.sock, None) is not None
        if known and self._selector is not None:
            try:
                self._selector.unregister(client.sock)
            except (KeyError, ValueError):
                pass
        client.sock.close()
        log.info("NCID client %s closed: %s", client.peer, why)
