"""``[ncid]``: the NCID server for existing caller-ID clients (off unless ``listen`` is set)."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from screening.config.schema import _boolean, _expect, _int_range, _Invalid, _Parser, _setting

__all__ = ["NcidConfig", "NcidListen", "is_loopback_host"]

_LISTEN = re.compile(r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9.\-]+)):(?P<port>\d{1,5})")


def is_loopback_host(host: str) -> bool:
    """127.0.0.0/8, ::1 and ``localhost``; every other name or address reaches beyond the unit."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class NcidListen:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def _listen() -> _Parser[NcidListen | None]:
    def convert(value: object) -> NcidListen | None:
        text = _expect(value, str, "a string").strip()
        if not text:
            return None
        match = _LISTEN.fullmatch(text)
        if match is None:
            raise _Invalid(f"expected HOST:PORT such as \"127.0.0.1:3333\" (got {value!r})")
        host = match["v6"] or match["host"]
        if host != "localhost":
            try:
                host = str(ipaddress.ip_address(host))
            except ValueError:
                raise _Invalid(f"the host must be an IP address or localhost (got {host!r})") from None
        port = int(match["port"])
        if not 1 <= port <= 65535:
            raise _Invalid(f"the port must be 1-65535 (got {port})")
        return NcidListen(host, port)

    return _Parser("HOST:PORT", convert)


def _line_label() -> _Parser[str]:
    def convert(value: object) -> str:
        text = _expect(value, str, "a string").strip()
        if not re.fullmatch(r"[A-Za-z0-9_.\-]{1,16}", text):
            raise _Invalid(f"expected 1-16 letters, digits, '-', '_' or '.' (got {value!r})")
        return text

    return _Parser("string", convert)


@dataclass(frozen=True, slots=True)
class NcidConfig:
    """``[ncid]``: serve calls to NCID clients (desktop pop-ups, Android, TV, home automation)."""

    listen: NcidListen | None = _setting(
        "", _listen(),
        "Address:port of the NCID server, e.g. `127.0.0.1:3333` (NCID's port). \"\" = off. An address other "
        "than loopback is refused unless `allow_remote` is true.",
    )
    allow_remote: bool = _setting(
        False, _boolean(), "Allow `listen` on a home-network address: every device there then sees who calls."
    )
    line_id: str = _setting("-", _line_label(), "The LINE label clients show (e.g. `POTS`, `HOME`); `-` = none.")
    replay_calls: int = _setting(
        200, _int_range(0, 1000), "Recent calls sent to a client when it connects (its call log); 0 = none."
    )
    max_clients: int = _setting(32, _int_range(1, 256), "Clients served at once; more are told so and closed.")
