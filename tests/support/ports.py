"""Free local ports. A port is free when asked; whoever binds it a moment later may still lose a race,
which on a test box's loopback does not happen in practice."""

from __future__ import annotations

import socket

__all__ = ["free_tcp_port", "free_udp_port"]


def free_tcp_port() -> int:
    """A TCP port nothing listens on now on 127.0.0.1 (a server binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_udp_port(span: int = 1) -> int:
    """A free UDP port on 127.0.0.1 with the ``span - 1`` ports above it free too (RTP, RTCP …)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if span == 1:
            return port
        if port + span > 65535:
            continue
        held: list[socket.socket] = []
        try:
            for p in range(port, port + span):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                held.append(s)
                s.bind(("127.0.0.1", p))
            return port
        except OSError:
            continue
        finally:
            for s in held:
                s.close()
    raise RuntimeError("no free UDP port range")
