"""The composition root's side of the line adapters: app config → each adapter's own settings.

Adapters in ``firmware/`` define frozen settings and never see :class:`Config`; the mapping
from TOML sections to those settings lives here, beside whoever builds the lines.
"""

from __future__ import annotations

from firmware.sip_settings import SipDefaults
from screening.config import Config


def sip_defaults(cfg: Config) -> SipDefaults:
    """``[sip]`` and ``[line] home_region`` as the SIP adapter's defaults for a ``sip://`` URI."""
    sip = cfg.sip
    return SipDefaults(
        upstream=sip.upstream,
        reject_code=sip.reject_code,
        trusted_upstreams=tuple(sip.trusted_upstreams),
        household=sip.household,
        user=sip.user,
        password_file=sip.password_file,
        register_expires_s=sip.register_expires_s,
        ring_timeout_s=float(sip.ring_timeout_s),
        max_calls=sip.max_calls,
        outbound=sip.outbound,
        home_region=cfg.line.home_region,
    )
