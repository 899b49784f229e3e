"""The SIP adapter's settings and defaults, free of pjsua2 so the composition root can build them without it."""

from __future__ import annotations

from dataclasses import dataclass, field
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


@dataclass(frozen=True, slots=True)
class SipSettings:
    host: str = "0.0.0.0"  # address we listen on
    port: int = 5060
    trusted_upstreams: frozenset[str] = frozenset()  # source IPs/networks whose PAI / RPID we believe
    home_region: str = "JP"
    upstream: SipUpstream = SipUpstream.FXO
    reject_code: int = 603  # reject(): 603 Decline, or 486 Busy Here for upstreams that retry on 603
    ring_timeout_s: float = 60.0  # an allowed call nobody picks up is declined (480) after this
    ring_period_s: float = 3.0  # Ring events while undecided, as a modem would see them
    start_timeout_s: float = 5.0
    max_calls: int = 1  # call slots; a slot takes calls only while a SipLine is attached to it
    household: str | None = None  # SIP URI of the household phone's leg (an FXS port), or None
    registrar: str | None = None  # "host[:port]": register as an extension there
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    register_expires_s: int = 300
    register_retry_s: int = 30
    outbound: str | None = None  # "sip:{number}@host" for calls we place (a relative's alert call)

    def outbound_uri(self, digits: str) -> str | None:
        """Where a call to ``digits`` goes: the template, else the registrar; None if nowhere."""
        if self.outbound is not None:
            return self.outbound.replace("{number}", digits)
        if self.registrar is not None:
            return f"sip:{digits}@{self.registrar}"
        return None

    @property
    def rejects_without_ringing(self) -> bool:
        """With an FXO adapter the analog line keeps ringing whatever we answer the adapter."""
        return self.upstream is not SipUpstream.FXO
