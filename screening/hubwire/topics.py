"""The MQTT topic layout between units and the hub: ``mamoru/v1/<unit>/<channel>``.

One place for it, because three parties must agree byte for byte: the unit's client, the hub's
subscriber and the broker's ACL (Mosquitto's ``pattern`` lines, an EMQX/VerneMQ rule set at
prefecture scale). A unit id is also its broker user name, so the ACL can say "only under your
own id" with ``%u``; that is why ids are restricted to characters that are inert in topics.
"""

from __future__ import annotations

import re
from enum import StrEnum

__all__ = [
    "Channel",
    "PREFIX",
    "UNIT_ID_PATTERN",
    "hub_subscriptions",
    "is_valid_unit_id",
    "parse_topic",
    "topic",
    "unit_acl_lines",
    "home_assistant_acl_lines",
]

PREFIX = "mamoru/v1"
# Lower-case letters, digits and '-' only: no '+', '#', '/' or '%' that would mean something in a topic or an ACL.
UNIT_ID_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]{2,62}")


class Channel(StrEnum):
    """The last topic level(s). Direction and retention are fixed per channel."""

    CALLS = "calls"  # unit -> hub: call summaries (QoS 1)
    HEALTH = "health"  # unit -> hub: line, model, disk, version (QoS 1)
    REPORTS = "reports"  # unit -> hub: family-confirmed fraud reports (QoS 1)
    STATUS = "status"  # unit -> hub: online/offline, retained; the last will says offline
    ACKS = "commands/ack"  # unit -> hub: what the unit did with a command (QoS 1)
    RECORDINGS = "recordings"  # unit -> hub: one recording, uploaded only on request (QoS 1)
    COMMANDS = "commands/in"  # hub -> unit: signed commands (QoS 1)

    @property
    def from_unit(self) -> bool:
        return self is not Channel.COMMANDS


def is_valid_unit_id(unit: str) -> bool:
    return bool(UNIT_ID_PATTERN.fullmatch(unit))


def topic(unit: str, channel: Channel) -> str:
    """``mamoru/v1/<unit>/<channel>``; ValueError for an id that could escape its subtree."""
    if not is_valid_unit_id(unit):
        raise ValueError(f"unit id {unit!r} must match {UNIT_ID_PATTERN.pattern}")
    return f"{PREFIX}/{unit}/{channel.value}"


def parse_topic(text: str) -> tuple[str, Channel] | None:
    """The unit and channel of a topic of ours, None for anything else (never raises)."""
    head = PREFIX + "/"
    if not text.startswith(head):
        return None
    unit, _, rest = text[len(head):].partition("/")
    if not is_valid_unit_id(unit):
        return None
    try:
        return unit, Channel(rest)
    except ValueError:
        return None


def hub_subscriptions() -> list[str]:
    """What the hub subscribes to: every unit's outbound channels (never commands/in)."""
    return [f"{PREFIX}/+/{channel.value}" for channel in Channel if channel.from_unit]


def unit_acl_lines() -> list[str]:
    """Mosquitto ACL ``pattern`` lines: a unit (user name = unit id) writes its own outbound channels
    and reads its own commands, nothing else. ``%u`` is the authenticated user name."""
    lines = [f"pattern write {PREFIX}/%u/{channel.value}" for channel in Channel if channel.from_unit]
    lines.append(f"pattern read {PREFIX}/%u/{Channel.COMMANDS.value}")
    return lines


def home_assistant_acl_lines() -> list[str]:
    """The two ``pattern`` lines a unit needs for Home Assistant MQTT discovery on the hub's broker
    (docs/hub-unit.md): its retained state document and its discovery configs, only under its own id.
    Kept apart from ``unit_acl_lines()`` because these use wildcards (Home Assistant's layout)."""
    return [f"pattern write {PREFIX}/%u/ha", "pattern write homeassistant/+/mamoru_%u/#"]
