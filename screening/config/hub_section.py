"""``[hub]``: the unit's link to a family/town/police hub over MQTT (docs/hub-unit.md)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from screening.config.schema import (
    _boolean,
    _choice,
    _expect,
    _int_range,
    _Invalid,
    _optional_path,
    _Parser,
    _setting,
    _string_list,
    _web_url,
)
from screening.hub_client.settings import DEFAULT_SHARE, Share
from screening.hubwire import is_valid_unit_id, public_key_from_text

__all__ = ["HubConfig"]


def _hub_url() -> _Parser[str | None]:
    """mqtts://HOST[:PORT], or "" for no hub; plain mqtt:// only to a broker on this machine (tests, a bridge)."""

    def convert(value: object) -> str | None:
        text = _expect(value, str, "a string").strip()
        if not text:
            return None
        parts = urlsplit(text)
        try:
            parts.port
        except ValueError:
            raise _Invalid(f"bad port in {value!r}") from None
        if parts.scheme not in ("mqtts", "mqtt") or not parts.hostname or parts.path not in ("", "/"):
            raise _Invalid(f"expected mqtts://HOST[:PORT] (got {value!r})")
        if parts.scheme == "mqtt" and parts.hostname not in ("127.0.0.1", "::1", "localhost"):
            raise _Invalid(f"a hub off this machine needs TLS: mqtts:// (got {value!r})")
        return text.rstrip("/")

    return _Parser('mqtts:// URL or ""', convert)


def _share_list() -> _Parser[frozenset[Share]]:
    return _string_list("share kinds", lambda text: _choice(Share)(text).value,
                        lambda items: frozenset(Share(i) for i in items))  # fmt: skip


def _unit_id() -> _Parser[str | None]:
    def convert(value: object) -> str | None:
        text = _expect(value, str, "a string").strip()
        if text and not is_valid_unit_id(text):
            raise _Invalid(f"a unit id is 3 to 63 lower-case letters, digits and '-' (got {value!r})")
        return text or None

    return _Parser('unit id or ""', convert)


def _command_key() -> _Parser[str | None]:
    def convert(value: object) -> str | None:
        text = _expect(value, str, "a string").strip()
        if not text:
            return None
        try:
            public_key_from_text(text)
        except ValueError as exc:
            raise _Invalid(str(exc)) from None
        return text

    return _Parser('"ed25519:<base64>" or ""', convert)


@dataclass(frozen=True, slots=True)
class HubConfig:
    """``[hub]``: the unit's link to a family/town/police hub over MQTT (off while `url` is "")."""

    url: str | None = _setting(
        "", _hub_url(), "Hub broker, `mqtts://HOST:8883`; \"\" = no hub (nothing leaves the home)."
    )
    unit_id: str | None = _setting(
        "", _unit_id(), "This unit's id on the hub and its broker user name (lower-case letters, digits, `-`)."
    )
    credentials_file: Path | None = _setting(
        "", _optional_path(), "File holding this unit's broker password (one line, mode 0600; from the provisioning bundle)."
    )
    ca_file: Path | None = _setting(
        "", _optional_path(), "CA certificate the broker's TLS certificate must chain to; \"\" = the system's CAs."
    )
    command_key: str | None = _setting(
        "", _command_key(),
        "The hub's command-signing public key (`ed25519:<base64>`, from the provisioning bundle); other commands are ignored.",
    )
    share: frozenset[Share] = _setting(
        [s.value for s in DEFAULT_SHARE], _share_list(),
        "What leaves the home: `calls` (number, decision, verdict, flags), `health`, `reports` (calls the family "
        "marked fraud), `transcripts` (a short excerpt), `recordings` (only on a family member's request).",
    )
    public_url: str | None = _setting(
        "", _web_url(), "The hub's web page; alerts then link to the call there (`<url>/family/call/<unit>/<call uid>`)."
    )
    home_assistant: bool = _setting(
        False, _boolean(), "Publish Home Assistant MQTT discovery (last caller, fraud flag, line problem) on this broker."
    )
    health_minutes: int = _setting(15, _int_range(1, 1440), "Send the unit's health this often.")
    queue_limit: int = _setting(
        5000, _int_range(100, 1000000),
        "Messages kept while the hub is unreachable; beyond it the oldest call summaries are dropped first.",
    )
