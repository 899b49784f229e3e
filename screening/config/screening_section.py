"""``[screening]``: how a caller whose action is `screen` is asked who they are (docs/screening.md)."""

from __future__ import annotations

from dataclasses import dataclass

from screening.config.schema import _choice, _expect, _int_range, _Invalid, _Parser, _setting
from screening.screen_flow import ChallengeMode

__all__ = ["DEFAULT_NAME_CAP_S", "ScreeningConfig"]


def _name_prompt() -> _Parser[float]:
    """``true`` (ask, default cap), ``false`` (do not ask) or the cap in seconds (3..30)."""

    def convert(value: object) -> float:
        if value is True:
            return DEFAULT_NAME_CAP_S
        if value is False:
            return 0.0
        if isinstance(value, bool) or not isinstance(value, int | float) or not 3 <= value <= 30:
            raise _Invalid(f"expected true, false or seconds 3..30 (got {value!r})")
        return float(value)

    return _Parser("true, false or seconds 3..30", convert)


def _passcode() -> _Parser[str]:
    def convert(value: object) -> str:
        text = _expect(value, str, "a string of digits").strip()
        if text and not (text.isdigit() and 3 <= len(text) <= 8):
            raise _Invalid(f"expected 3 to 8 digits, or \"\" for none (got {value!r})")
        return text

    return _Parser('3-8 digits or ""', convert)


DEFAULT_NAME_CAP_S = 8.0


@dataclass(frozen=True, slots=True)
class ScreeningConfig:
    """``[screening]``: how a caller whose action is `screen` is asked who they are."""

    challenge: ChallengeMode = _setting(
        "none", _choice(ChallengeMode),
        "Robocall test after the name: `none`, `any_key` (\"press 3\") or `random_digit` (press the number of "
        "beeps). No key, a wrong key or silence ends the call politely (`screened_out`).",
    )
    name_prompt: float = _setting(
        True, _name_prompt(),
        "Ask the caller for their name and reason after the warning: `true`, `false`, or the longest reply "
        "kept in seconds (3-30). With no challenge, a caller who says nothing is screened out.",
    )
    decide_timeout_s: int = _setting(
        30, _int_range(5, 300),
        "How long the household has to pick up (and, on SIP, press 1/2/3) before the caller is offered "
        "to leave a message.",
    )
    passcode: str = _setting(
        "", _passcode(), "Digits a friend can key to be put straight through (3-8 digits); \"\" = none."
    )
    message_cap_s: int = _setting(60, _int_range(10, 300), "Longest message a caller can leave (seconds).")
