"""What the hub client is told by the config (``[hub]``), as its own frozen settings."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from urllib.parse import urlsplit

MQTTS_PORT = 8883


class Share(StrEnum):
    """What the household lets leave the home (``[hub] share``)."""

    CALLS = "calls"  # call summaries: number, decision, verdict, flags
    HEALTH = "health"  # line state, model, disk, version, last seen
    REPORTS = "reports"  # calls the family marked as fraud (feeds the shared list)
    TRANSCRIPTS = "transcripts"  # a short transcript excerpt in the call summary
    RECORDINGS = "recordings"  # a recording, uploaded only when a family member asks for it


DEFAULT_SHARE = (Share.CALLS, Share.HEALTH, Share.REPORTS)


@dataclass(frozen=True, slots=True)
class HubSettings:
    url: str  # mqtts://host[:8883]  (mqtt:// only for a broker on loopback)
    unit_id: str
    credentials_file: Path  # one line: this unit's broker password (user name = unit id); mode 0600
    ca_file: Path | None
    command_key: str  # hex Ed25519 public key of the hub's command signer
    share: frozenset[Share] = frozenset(DEFAULT_SHARE)
    public_url: str | None = None
    home_assistant: bool = False
    health_interval_s: float = 900.0
    report_poll_s: float = 30.0
    queue_limit: int = 5000
    ack_timeout_s: float = 10.0
    session_expiry_s: int = 7 * 24 * 3600  # the broker keeps our commands this long while we are away
    keepalive_s: int = 60

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        parts = urlsplit(self.url)
        return parts.port or (MQTTS_PORT if parts.scheme == "mqtts" else 1883)

    @property
    def tls(self) -> bool:
        return urlsplit(self.url).scheme == "mqtts"

    def shares(self, what: Share) -> bool:
        return what in self.share


def hub_call_url(public_url: str, unit_id: str, call_uid: str | None) -> str:
    """The hub page of one of this unit's calls: what an alert links to, so a relative away from home can
    open it. The hub knows a call by its summary's message id, which is the call's ``call_uid``
    (see ``HubClient``); a call not readable yet links to the family's hub page."""
    base = public_url.rstrip("/")
    return f"{base}/family/call/{unit_id}/{call_uid}" if call_uid else f"{base}/family"
