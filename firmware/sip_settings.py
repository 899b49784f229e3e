"""The SIP adapter's defaults, free of pjsua2 so the composition root can build them without it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from screening.core.line import SipUpstream


@dataclass(frozen=True, slots=True)
class SipDefaults:
    """What a ``sip://`` URI's query does not say: ``[sip]`` and ``[line] home_region``, mapped by
    the composition root so this adapter never sees the app's config."""

    upstream: SipUpstream = SipUpstream.FXO
    reject_code: int = 603
    trusted_upstreams: tuple[str, ...] = ()
    household: str | None = None
    user: str | None = None
    password_file: Path | None = None
    register_expires_s: int = 300
    ring_timeout_s: float = 60.0
    max_calls: int = 1
    outbound: str | None = None
    home_region: str = "JP"
