"""The wire contract between units and the hub (topics, messages, signed commands). See docs/hub.md.

Imports only ``screening.core`` (plus ``cryptography``), so both the unit's MQTT client and
``mamoru hub`` build on it without importing each other.
"""

from .commands import (
    CLOCK_SKEW,
    MAX_LIFETIME,
    Command,
    CommandAction,
    CommandRefused,
    CommandSigner,
    CommandVerifier,
    RefusalReason,
    ReplayGuard,
    command_keyid,
    public_key_from_text,
    public_key_text,
)
from .fields import WireError
from .messages import (
    MAX_BYTES,
    WIRE_VERSION,
    AckResult,
    CallSummary,
    CommandAck,
    FraudReport,
    Health,
    LineHealth,
    Message,
    Recording,
    Status,
    decode_message,
    encode_message,
    new_message_id,
)
from .topics import PREFIX, Channel, hub_subscriptions, is_valid_unit_id, parse_topic, topic, unit_acl_lines

__all__ = [
    "CLOCK_SKEW",
    "MAX_BYTES",
    "MAX_LIFETIME",
    "PREFIX",
    "WIRE_VERSION",
    "AckResult",
    "CallSummary",
    "Channel",
    "Command",
    "CommandAck",
    "CommandAction",
    "CommandRefused",
    "CommandSigner",
    "CommandVerifier",
    "FraudReport",
    "Health",
    "LineHealth",
    "Message",
    "Recording",
    "RefusalReason",
    "ReplayGuard",
    "Status",
    "WireError",
    "command_keyid",
    "decode_message",
    "encode_message",
    "hub_subscriptions",
    "is_valid_unit_id",
    "new_message_id",
    "parse_topic",
    "public_key_from_text",
    "public_key_text",
    "topic",
    "unit_acl_lines",
]
