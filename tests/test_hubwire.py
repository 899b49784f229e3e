"""The unit <-> hub wire contract: round trips, strict decoding, signed commands (no broker needed)."""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from pathlib import Path

import pytest

from screening.core.clock import utc_now
from screening.core.model import Action, CallOutcome, Category, Verdict
from screening.hubwire import (
    MAX_BYTES,
    AckResult,
    CallSummary,
    Channel,
    Command,
    CommandAck,
    CommandAction,
    CommandRefused,
    CommandSigner,
    CommandVerifier,
    FraudReport,
    Health,
    LineHealth,
    Recording,
    RefusalReason,
    ReplayGuard,
    Status,
    WireError,
    decode_message,
    encode_message,
    hub_subscriptions,
    parse_topic,
    public_key_from_text,
    public_key_text,
    topic,
    unit_acl_lines,
)

UNIT = "setagaya-0042"


def _messages() -> list[object]:
    now = utc_now()
    return [
        CallSummary(UNIT, call_id=7, started=now, number="+81312345678", category=Category.DOMESTIC,
                    action=Action.SCREEN, outcome=CallOutcome.CALLER_HUNG_UP, verdict=Verdict.FRAUD,
                    flags=("fraud_phrase",), excerpt="還付金があります、ATMへ", alerted=True),
        CallSummary(UNIT, call_id=8, started=now, number="", category=Category.WITHHELD, action=Action.REQUEST_NUMBER),
        Health(UNIT, line=LineHealth.OK, version="0.1.0", disk_free_mb=12000, uptime_s=3600,
               speech_model="vosk-model-small-ja-0.22", feed_version=12),
        FraudReport(UNIT, number="+81312345678", call_id=7, heard=now, phrases=("還付金", "ATM")),
        Status(UNIT, online=False),
        CommandAck(UNIT, command="a" * 32, result=AckResult.REFUSED, reason="expired"),
        Recording(UNIT, call_id=7, command="b" * 32, wav=b"RIFF" + bytes(1000)),
    ]


@pytest.mark.parametrize("message", _messages(), ids=lambda m: type(m).__name__)
def test_every_message_round_trips(message: object) -> None:
    channel, payload = encode_message(message)  # type: ignore[arg-type]
    decoded = decode_message(channel, payload, unit=UNIT)
    # Times survive at millisecond precision, which is what the wire carries.
    assert encode_message(decoded) == (channel, payload)
    document = json.loads(payload)
    assert document["v"] == 1 and document["sent"].endswith("Z") and document["unit"] == UNIT


def _call_document() -> dict[str, object]:
    return json.loads(encode_message(_messages()[0])[1])  # type: ignore[arg-type]


@pytest.mark.parametrize(("key", "value", "problem"), [
    ("unit", "other-unit", "came from"),
    ("v", 2, "wire version"),
    ("kind", "health", "does not belong"),
    ("call_id", "7", "integer"),
    ("call_id", True, "integer"),
    ("number", "0312345678", "must match"),
    ("category", "bogus", "one of"),
    ("sent", "2026-12-06T00:00:00+09:00", "'Z'"),
    ("excerpt", "x" * 281, "longer"),
    ("excerpt", "a\x00b", "control"),
    ("flags", ["Not A Flag"], "must match"),
    ("id", "../../etc", "must match"),
    ("extra", 1, "unknown keys"),
])
def test_off_contract_call_summaries_are_refused(key: str, value: object, problem: str) -> None:
    document = _call_document()
    document[key] = value
    with pytest.raises(WireError, match=problem):
        decode_message(Channel.CALLS, json.dumps(document).encode(), unit=UNIT)


def test_missing_keys_garbage_and_oversize_are_refused() -> None:
    document = _call_document()
    del document["action"]
    with pytest.raises(WireError, match="missing 'action'"):
        decode_message(Channel.CALLS, json.dumps(document).encode(), unit=UNIT)
    for garbage in (b"\xff\xfe", b"[1,2]", b"null", b"{" * 5000):
        with pytest.raises(WireError):
            decode_message(Channel.CALLS, garbage, unit=UNIT)
    padded = json.dumps({**_call_document(), "pad": "x" * MAX_BYTES[Channel.CALLS]}).encode()
    with pytest.raises(WireError, match="more than"):
        decode_message(Channel.CALLS, padded, unit=UNIT)
    with pytest.raises(WireError, match="not unit messages"):
        decode_message(Channel.COMMANDS, b"{}", unit=UNIT)


def test_a_recording_must_match_its_digest() -> None:
    _, payload = encode_message(_messages()[-1])  # type: ignore[arg-type]
    document = json.loads(payload)
    document["wav"] = base64.b64encode(b"RIFF" + bytes(999)).decode()
    with pytest.raises(WireError, match="sha256"):
        decode_message(Channel.RECORDINGS, json.dumps(document).encode(), unit=UNIT)


def test_topics_and_acl_lines() -> None:
    assert topic(UNIT, Channel.COMMANDS) == "mamoru/v1/setagaya-0042/commands/in"
    assert parse_topic("mamoru/v1/setagaya-0042/commands/ack") == (UNIT, Channel.ACKS)
    for bad in ("mamoru/v1/+/calls", "mamoru/v1/a/b/calls", "mamoru/v2/unit-1/calls", "mamoru/v1/UNIT-1/calls",
                "mamoru/v1/unit-1/nothing"):
        assert parse_topic(bad) is None
    for bad_id in ("+", "#", "a/b", "ab", "Unit-1", "%u-x"):
        with pytest.raises(ValueError):
            topic(bad_id, Channel.CALLS)
    assert "mamoru/v1/+/commands/in" not in hub_subscriptions()
    assert "pattern read mamoru/v1/%u/commands/in" in unit_acl_lines()
    assert not any("#" in line or "+" in line for line in unit_acl_lines())


@pytest.fixture()
def signer() -> CommandSigner:
    return CommandSigner.generate()


def _verifier(signer: CommandSigner, unit: str = UNIT) -> CommandVerifier:
    return CommandVerifier(unit, [public_key_from_text(public_key_text(signer.public))], ReplayGuard())


def test_a_signed_command_is_accepted_once(signer: CommandSigner) -> None:
    verifier = _verifier(signer)
    data = signer.sign(Command(UNIT, CommandAction.BLOCK, "family:hanako", number="+81312345678"))
    command = verifier.verify(data)
    assert command.action is CommandAction.BLOCK and command.number == "+81312345678"
    with pytest.raises(CommandRefused) as refused:
        verifier.verify(data)
    assert refused.value.reason is RefusalReason.REPLAYED and refused.value.reason.authentic


def test_forged_commands_are_refused(signer: CommandSigner) -> None:
    verifier = _verifier(signer)
    genuine = json.loads(signer.sign(Command(UNIT, CommandAction.CHECK_FEEDS, "reviewer:sato")))
    # A stranger's key, even with the hub's key id written in.
    forged = json.loads(CommandSigner.generate().sign(Command(UNIT, CommandAction.CHECK_FEEDS, "x")))
    cases: list[tuple[bytes, RefusalReason]] = [
        (json.dumps(forged).encode(), RefusalReason.UNKNOWN_KEY),
        (json.dumps({**forged, "keyid": genuine["keyid"]}).encode(), RefusalReason.BAD_SIGNATURE),
        # The genuine signature over a payload edited to block a different number.
        (json.dumps({**genuine, "payload": base64.b64encode(
            base64.b64decode(genuine["payload"]).replace(b"check_feeds", b"check_feedz")).decode()}).encode(),
         RefusalReason.BAD_SIGNATURE),
        (b"not json", RefusalReason.MALFORMED),
        (json.dumps({**genuine, "extra": 1}).encode(), RefusalReason.MALFORMED),
        (b" " * 5000, RefusalReason.OVERSIZED),
    ]
    for data, reason in cases:
        with pytest.raises(CommandRefused) as refused:
            verifier.verify(data)
        assert refused.value.reason is reason, data[:80]
        assert not refused.value.reason.authentic
    # Nothing forged reached the replay guard; the genuine one still goes through.
    assert verifier.verify(json.dumps(genuine).encode()).action is CommandAction.CHECK_FEEDS


def test_time_window_and_addressing(signer: CommandSigner) -> None:
    now = utc_now()
    verifier = _verifier(signer)
    cases = [
        (Command(UNIT, CommandAction.CHECK_FEEDS, "x", issued=now - timedelta(hours=2),
                 expires=now - timedelta(hours=1, minutes=30)), RefusalReason.EXPIRED),
        (Command(UNIT, CommandAction.CHECK_FEEDS, "x", issued=now + timedelta(minutes=30)), RefusalReason.NOT_YET_VALID),
        (Command(UNIT, CommandAction.CHECK_FEEDS, "x", issued=now, expires=now + timedelta(days=30)),
         RefusalReason.LIFETIME_TOO_LONG),
        (Command("setagaya-0043", CommandAction.CHECK_FEEDS, "x"), RefusalReason.WRONG_UNIT),
    ]
    for command, reason in cases:
        with pytest.raises(CommandRefused) as refused:
            verifier.verify(signer.sign(command), now)
        assert refused.value.reason is reason and refused.value.command_id == command.id


def test_command_shape_is_checked_on_both_sides(signer: CommandSigner) -> None:
    with pytest.raises(CommandRefused, match="needs number"):
        _verifier(signer).verify(signer.sign(Command(UNIT, CommandAction.BLOCK, "x")))
    with pytest.raises(CommandRefused, match="needs call_id"):
        _verifier(signer).verify(signer.sign(Command(UNIT, CommandAction.ACKNOWLEDGE, "x")))


def test_the_replay_guard_survives_a_restart(signer: CommandSigner, tmp_path: Path) -> None:
    data = signer.sign(Command(UNIT, CommandAction.ACKNOWLEDGE, "family:hanako", call_id=7))
    verifier = _verifier(signer)
    verifier.verify(data)
    verifier.guard.save(tmp_path / "seen.json")
    restarted = CommandVerifier(UNIT, [signer.public], ReplayGuard.load(tmp_path / "seen.json"))
    with pytest.raises(CommandRefused, match="replayed"):
        restarted.verify(data)
    # Expired ids are forgotten, so the guard stays bounded.
    later = utc_now() + timedelta(hours=2)
    assert restarted.guard.admit("c" * 32, later + timedelta(minutes=5), later)
    assert len(restarted.guard._seen) == 1


def test_the_signing_key_file(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "hub-command.key"
    first = CommandSigner.load_or_create(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert CommandSigner.load_or_create(path).keyid == first.keyid
    with pytest.raises(ValueError):
        public_key_from_text("ed25519:" + base64.b64encode(b"short").decode())
