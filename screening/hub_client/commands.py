"""Hub → unit commands: checked by the contract's ``CommandVerifier`` (size, shape, trusted key,
signature, this unit, time window, replay), then done through the unit's own actions.

A forged or garbled command is logged and dropped: no answer goes back, so a forger learns
nothing. An authentic command is acknowledged on ``…/commands/ack``: done, refused (with the
reason: expired, replayed, not shared…) or failed. The replay guard is saved after every
accepted command, so a restart inside a command's lifetime does not reopen the replay window.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from screening.core.clock import utc_now
from screening.hub_client.settings import HubSettings, Share
from screening.hubwire import (
    MAX_BYTES,
    AckResult,
    Channel,
    Command,
    CommandAck,
    CommandAction,
    CommandRefused,
    CommandVerifier,
    Message,
    Recording,
)

log = logging.getLogger(__name__)

FAMILY_PREFIX = "family:"  # ``by`` of a command a household's relative gave on the hub page
MAX_RECORDING_BYTES = (MAX_BYTES[Channel.RECORDINGS] - 1024) * 3 // 4  # base64 inside the channel's limit


@dataclass(frozen=True, slots=True)
class UnitActions:
    """What a command may do on this unit, supplied by the composition root as plain callables."""

    block: Callable[[str, str], None]  # (E.164 number, who asked)
    allow: Callable[[str, str], None]
    acknowledge: Callable[[int, str], int] | None  # (call id, who) -> how many of its alerts were acknowledged
    recording: Callable[[int], Path | None]  # call id -> its WAV, if still kept
    check_feeds: Callable[[], None] | None


@dataclass(frozen=True, slots=True)
class Outcome:
    result: AckResult
    reason: str
    upload: bytes | None = None  # a requested recording's WAV


class CommandDesk:
    def __init__(self, settings: HubSettings, actions: UnitActions, verifier: CommandVerifier, guard_path: Path,
                 send: Callable[[Message], None], *, clock: Callable[[], datetime] = utc_now) -> None:  # fmt: skip
        self.settings = settings
        self.actions = actions
        self.verifier = verifier
        self.guard_path = guard_path
        self.send = send
        self._clock = clock
        self.done: list[Command] = []  # accepted and carried out (for status and tests)
        self.dropped = 0  # forged or garbled
        self.refused = 0  # authentic but refused

    def handle(self, data: bytes) -> Command | None:
        """Check and carry out one command; None when it was not carried out."""
        unit = self.settings.unit_id
        try:
            command = self.verifier.verify(data, self._clock())
        except CommandRefused as exc:
            if not exc.reason.authentic or exc.command_id is None:
                self.dropped += 1
                log.warning("hub: command dropped (%s)", exc)
                return None
            self.refused += 1
            log.warning("hub: command %s refused (%s)", exc.command_id[:8], exc)
            self.send(CommandAck(unit, command=exc.command_id, result=AckResult.REFUSED, reason=exc.reason.value))
            return None
        self.verifier.guard.save(self.guard_path)
        try:
            outcome = self._do(command)
        except Exception as exc:  # noqa: BLE001 -- a failing action is reported, never fatal
            log.exception("hub: %s failed", command.action.value)
            outcome = Outcome(AckResult.FAILED, type(exc).__name__)
        log.info("hub: %s by %s: %s %s", command.action.value, command.by, outcome.result.value, outcome.reason)
        if outcome.upload is not None and command.call_id is not None:
            self.send(Recording(unit, call_id=command.call_id, command=command.id, wav=outcome.upload))
        self.send(CommandAck(unit, command=command.id, result=outcome.result, reason=outcome.reason))
        if outcome.result is AckResult.DONE:
            self.done.append(command)
        return command

    def _do(self, command: Command) -> Outcome:
        a = self.actions
        match command.action:
            case CommandAction.BLOCK | CommandAction.ALLOW:
                assert command.number is not None  # the contract requires it for these
                (a.block if command.action is CommandAction.BLOCK else a.allow)(command.number, command.by)
                return Outcome(AckResult.DONE, "")
            case CommandAction.ACKNOWLEDGE:
                assert command.call_id is not None
                if a.acknowledge is None:
                    return Outcome(AckResult.REFUSED, "alerts are off")
                count = a.acknowledge(command.call_id, command.by)
                return Outcome(AckResult.DONE if count else AckResult.REFUSED,
                               f"{count} alert(s)" if count else "no open alert for this call")  # fmt: skip
            case CommandAction.REQUEST_RECORDING:
                return self._recording(command)
            case CommandAction.CHECK_FEEDS:
                if a.check_feeds is None:
                    return Outcome(AckResult.REFUSED, "feed updates are off")
                a.check_feeds()
                return Outcome(AckResult.DONE, "")

    def _recording(self, command: Command) -> Outcome:
        """Only the household's family, only if the household shares recordings, only a kept one."""
        assert command.call_id is not None
        if not self.settings.shares(Share.RECORDINGS):
            return Outcome(AckResult.REFUSED, "recordings are not shared by this household")
        if not command.by.startswith(FAMILY_PREFIX):
            return Outcome(AckResult.REFUSED, "only the household's family may hear its recordings")
        path = self.actions.recording(command.call_id)
        if path is None or not path.is_file():
            return Outcome(AckResult.FAILED, "no recording kept for this call")
        if path.stat().st_size > MAX_RECORDING_BYTES:
            return Outcome(AckResult.FAILED, "recording too large to upload")
        return Outcome(AckResult.DONE, "", upload=path.read_bytes())
