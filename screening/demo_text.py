"""Words for the demo's terminal lines: what happened to each call, Japanese first, English alongside.

The stored ids (``request_number``, ``out_of_area``, ``announced_and_hung_up``)
are for programs and the database; a person trying mamoru for the first time
reads these instead.
"""

from __future__ import annotations

from screening.core.line import EndReason
from screening.core.model import Action, CallerID, Reason
from screening.core.numbers import national_format
from screening.session import Outcome

__all__ = ["action_words", "caller_words", "end_words"]

_ACTIONS = {
    Action.ALLOW: "そのまま鳴らす / rings",
    Action.WARN: "警告して録音 / warned, recorded",
    Action.REQUEST_NUMBER: "番号通知をお願い / number requested",
    Action.BLOCK: "お断り / refused",
}
_REASONS = {
    Reason.WITHHELD: "非通知 / withheld",
    Reason.OUT_OF_AREA: "表示圏外 / out of area",
    Reason.PAYPHONE: "公衆電話 / payphone",
    Reason.SERVICE_CONFLICT: "サービス競合 / service conflict",
}
_ENDS: dict[str, str] = {
    Outcome.RINGING: "電話を鳴らした / the phone rang",
    Outcome.LINE_IN_USE: "通話中のため何もせず / household on the phone: left alone",
    Outcome.ANNOUNCED: "案内して切った / announced, hung up",
    Outcome.REJECTED: "出ずにお断り / refused unanswered",
    Outcome.FAILED: "失敗 / failed",
    EndReason.COMPLETED: "最後まで / to the end",
    EndReason.CALLER_HUNG_UP: "相手が切った / the caller hung up",
    EndReason.SILENCE: "無音で終了 / silence",
    EndReason.HANDSET_ON_HOOK: "家の電話を切った / the household hung up",
    EndReason.LINE_FAULT: "回線の不具合 / line fault",
    EndReason.TIMEOUT: "時間切れ / time limit",
}


def action_words(action: Action | str | None) -> str:
    try:
        return _ACTIONS[Action(action)] if action else "?"
    except ValueError:
        return str(action)


def caller_words(caller: CallerID, home_region: str) -> str:
    """'03-1234-5678', or why there is no number ('非通知 / withheld')."""
    if caller.number_e164:
        return national_format(caller.number_e164, home_region)
    if caller.reason is not None:
        return _REASONS.get(caller.reason, caller.reason.value)
    return caller.raw_number or "番号なし / no caller ID"


def end_words(end_reason: str | None) -> str:
    if not end_reason:
        return ""
    return _ENDS.get(end_reason, end_reason.replace("_", " "))
