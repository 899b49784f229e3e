"""SIP header parsing: the INVITE's headers as caller ID reads them, free of pjsua2."""

from __future__ import annotations

import logging
from typing import Protocol

from screening.core.model import CallerID

log = logging.getLogger(__name__)

# RFC 3261 compact header forms we may see from gateways.
_COMPACT = {"f": "From", "t": "To", "i": "Call-ID", "m": "Contact", "v": "Via", "l": "Content-Length",
            "c": "Content-Type", "k": "Supported"}
_CANONICAL = {"p-asserted-identity": "P-Asserted-Identity", "remote-party-id": "Remote-Party-ID",
              "privacy": "Privacy", "from": "From"}
_MAX_MESSAGE_CHARS = 65536  # an INVITE bigger than this is read only this far for caller ID


SipHeaders = list[tuple[str, str]]


class CallerIdFn(Protocol):
    def __call__(self, headers: SipHeaders, *, source_ip: str,
                 trusted_upstreams: frozenset[str], home_region: str) -> CallerID: ...


def parse_sip_headers(message: str) -> SipHeaders:
    """Header (name, value) pairs of a SIP message, unfolded, compact names expanded, in order."""
    head = message[:_MAX_MESSAGE_CHARS].replace("\r\n", "\n").split("\n\n", 1)[0]
    lines = head.split("\n")[1:]  # skip the request line
    out: SipHeaders = []
    for line in lines:
        if line[:1] in (" ", "\t") and out:  # folded continuation
            name, value = out[-1]
            out[-1] = (name, f"{value} {line.strip()}")
            continue
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            log.debug("sip: malformed header line ignored: %r", line[:200])
            continue
        name = name.strip()
        name = _COMPACT.get(name.lower(), name) if len(name) == 1 else _CANONICAL.get(name.lower(), name)
        out.append((name, value.strip()))
    return out


def sip_user(number: str) -> str:
    """``number`` as the user part of a SIP URI: no characters that would need escaping."""
    return "".join(ch for ch in number if ch.isalnum() or ch in "+*#")[:32] or "unknown"
