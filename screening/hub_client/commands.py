"""Hub → unit commands: checked (signature, unit, lifetime, nonce), then done through the unit's own actions.

Whatever fails a check is logged and ignored: no answer goes back, so a forger learns nothing.
An accepted command's result (done or refused, and why) is queued on ``…/results`` for the hub.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from screening.core.clock import utc_now
from screening.core.numbers import NumberError, parse_number
from screening.hub_client.queue import HubQueue
from screening.hub_client.settings import HubSettings, Share
from screening.hub_client.wire import Channel, Command, CommandKind, CommandRefused, Role, verify_command

log = logging.getLogger(__name__)

MAX_RECORDING_BYTES = 16 * 2**20  # about 17 min of 8 kHz 16-bit mono: a whole call, within broker limits


@dataclass(frozen=True, slots=True)
class UnitActions:
    """What a command may do on this unit, supplied by the composition root (no feature reaches into another)."""

    block: Callable[[str, Role], None]  # (E.164 number, who asked on the hub)
    allow: Callable[[str, Role], None]
    acknowledge: Callable[[int, str], bool] | None  # (alert id, by whom) -> acknowledged?
    recording: Callable[[int], Path | None]  # call id -> its WAV, if kept
    check_feeds: Callable[[], None] | None
    home_region: str = "JP"


class CommandDesk:
    def __init__(self, settings: HubSettings, actions: UnitActions, queue: HubQueue,
                 reply: Callable[[Channel, dict[str, Any]], None], *,
                 clock: Callable[[], datetime] = utc_now) -> None:  # fmt: skip
        self.settings = settings
        self.actions = actions
        self.queue = queue
        self.reply = reply
        self.key: Ed25519PublicKey | None = None  # set at start (the key is parsed with the other settings)
        self._clock = clock
        self.accepted = 0
        self.ignored = 0

    def handle(self, data: bytes) -> Command | None:
        """Check and carry out one command; None when it was ignored."""
        now = self._clock()
        if self.key is None:
            return None
        try:
            command = verify_command(data, self.key, self.settings.unit_id, now)
            if not self.queue.claim_nonce(command.nonce, command.expires_at, now):
                raise CommandRefused("replayed nonce")
        except CommandRefused as exc:
            self.ignored += 1
            log.warning("hub: command ignored: %s", exc)
            return None
        self.accepted += 1
        try:
            ok, detail, extra = self._do(command)
        except Exception as exc:  # noqa: BLE001 -- a failing action is reported, never fatal
            log.exception("hub: %s failed", command.kind.value)
            ok, detail, extra = False, f"failed: {type(exc).__name__}", {}
        log.info("hub: %s %s: %s", command.kind.value, "done" if ok else "refused", detail)
        self.reply(Channel.RESULTS, {"result": {"nonce": command.nonce, "kind": command.kind.value, "ok": ok,
                                                "detail": detail}})  # fmt: skip
        if extra:
            self.reply(Channel.RECORDINGS, extra)
        return command

    def _do(self, command: Command) -> tuple[bool, str, dict[str, Any]]:
        a = self.actions
        match command.kind:
            case CommandKind.BLOCK | CommandKind.ALLOW:
                try:
                    number = parse_number(str(command.args.get("number", "")), a.home_region)
                except NumberError:
                    return False, "not a phone number", {}
                (a.block if command.kind is CommandKind.BLOCK else a.allow)(number.e164, command.role)
                return True, number.e164, {}
            case CommandKind.ACK_ALERT:
                if a.acknowledge is None:
                    return False, "alerts are off", {}
                alert_id = command.args.get("alert_id")
                if not isinstance(alert_id, int):
                    return False, "alert_id must be a number", {}
                by = str(command.args.get("by", "hub"))[:60]
                return a.acknowledge(alert_id, by), str(alert_id), {}
            case CommandKind.REQUEST_RECORDING:
                return self._recording(command)
            case CommandKind.CHECK_FEEDS:
                if a.check_feeds is None:
                    return False, "feed updates are off", {}
                a.check_feeds()
                return True, "feeds check started", {}

    def _recording(self, command: Command) -> tuple[bool, str, dict[str, Any]]:
        s = self.settings
        if not s.shares(Share.RECORDINGS):
            return False, "the household does not share recordings", {}
        if command.role is not Role.FAMILY or s.household is None or command.household != s.household:
            return False, "only this household's family may ask for its recordings", {}
        call_id = command.args.get("call_id")
        if not isinstance(call_id, int):
            return False, "call_id must be a number", {}
        path = self.actions.recording(call_id)
        if path is None or not path.is_file():
            return False, "no recording kept for this call", {}
        data = path.read_bytes()
        if len(data) > MAX_RECORDING_BYTES:
            return False, "recording too large to upload", {}
        upload = {"recording": {"call_id": call_id, "nonce": command.nonce, "format": "wav",
                                "data": base64.b64encode(data).decode()}}  # fmt: skip
        return True, f"call {call_id}: {len(data)} bytes", upload
