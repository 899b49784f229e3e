"""Day/night schedules: ``[[schedule]]`` in the config, applied by the pure rules at the call's local time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from datetime import time as clock_time
from pathlib import Path

import pytest

from blocklist.lists import NumberLists
from screening.config import ConfigError, load_config, parse_config
from screening.core.callerid import caller_id_for_check
from screening.core.model import Action, Language, ListEntry, ListKind, MatchKind, Prompt, Reason
from screening.core.rules import Policy, Schedule, active_schedule, decide
from screening.policy import policy_from_config

JST = timezone(timedelta(hours=9))
FAMILY = "+81312345678"
STRANGER = "03-9876-5432"
LISTS = NumberLists.build([ListEntry(ListKind.ALLOW, MatchKind.EXACT, FAMILY, source="family", note="daughter")],
                          now_iso="2026-01-01T00:00:00Z")  # fmt: skip

NIGHT_TOML = """\
[line]
uri = "sim:"
home_region = "JP"

[rules]
unknown = "warn"
withheld = "request_number"

[[schedule]]
name = "night"
start = "21:00"
end = "07:00"
unknown = "screen"
withheld = "block"

[[schedule]]
name = "sunday"
start = "09:00"
end = "12:00"
days = ["sun"]
unknown = "block"
"""


def night_policy(tmp_path: Path) -> Policy:
    path = tmp_path / "mamoru.toml"
    path.write_text(NIGHT_TOML, encoding="utf-8")
    return policy_from_config(load_config(path))


def call(number: str, policy: Policy, at: datetime | None, reason: Reason | None = None):
    return decide(caller_id_for_check(number, reason, None, "JP"), LISTS, policy, at=at)


def jst(day: int, hour: int, minute: int = 0) -> datetime:
    """A moment of December 2026 in Japan (6th = Sunday), handed to decide as aware UTC like the daemon does."""
    return datetime(2026, 12, day, hour, minute, tzinfo=JST).astimezone(UTC)


def test_config_file_becomes_policy_schedules(tmp_path: Path) -> None:
    policy = night_policy(tmp_path)
    night, sunday = policy.schedules
    assert (night.name, night.start, night.end) == ("night", clock_time(21), clock_time(7))
    assert dict(night.overrides) == {"unknown": Action.SCREEN, "withheld": Action.BLOCK}
    assert sunday.days == frozenset({6})


@pytest.mark.parametrize(("moment", "action", "rule"), [
    (jst(3, 20, 59), Action.WARN, "unknown"),                         # Thursday evening, before the window
    (jst(3, 21, 0), Action.SCREEN, "unknown@schedule:night"),         # opens at 21:00 exactly
    (jst(3, 23, 59), Action.SCREEN, "unknown@schedule:night"),
    (jst(4, 0, 0), Action.SCREEN, "unknown@schedule:night"),          # past midnight: still the night
    (jst(4, 6, 59), Action.SCREEN, "unknown@schedule:night"),
    (jst(4, 7, 0), Action.WARN, "unknown"),                           # closes at 07:00 exactly
    (jst(6, 10, 0), Action.BLOCK, "unknown@schedule:sunday"),         # Sunday morning
    (jst(5, 10, 0), Action.WARN, "unknown"),                          # Saturday morning: not Sunday
    (None, Action.WARN, "unknown"),                                   # no time given: no schedule
])  # fmt: skip
def test_unknown_caller_by_time_of_day(tmp_path: Path, moment: datetime | None, action: Action, rule: str) -> None:
    decision = call(STRANGER, night_policy(tmp_path), moment)
    assert (decision.action, decision.rule) == (action, rule)


def test_the_decision_names_the_schedule_in_its_sentence(tmp_path: Path) -> None:
    decision = call(STRANGER, night_policy(tmp_path), jst(3, 23))
    assert "schedule 'night'" in decision.reason and "21:00-07:00" in decision.reason
    assert decision.prompt is Prompt.WARNING  # screening starts with the warning


def test_allowlisted_numbers_still_ring_at_night(tmp_path: Path) -> None:
    decision = call("03-1234-5678", night_policy(tmp_path), jst(4, 2))
    assert (decision.action, decision.rule) == (Action.ALLOW, "allowlist")


def test_withheld_numbers_follow_the_night_override(tmp_path: Path) -> None:
    policy = night_policy(tmp_path)
    assert call("", policy, jst(4, 2), Reason.WITHHELD).rule == "withheld@schedule:night"
    assert call("", policy, jst(4, 2), Reason.WITHHELD).action is Action.BLOCK
    assert call("", policy, jst(4, 12), Reason.WITHHELD).action is Action.REQUEST_NUMBER


def test_situations_a_schedule_leaves_alone_carry_no_schedule_name(tmp_path: Path) -> None:
    decision = call("", night_policy(tmp_path), jst(4, 2), Reason.PAYPHONE)
    assert (decision.action, decision.rule) == (Action.WARN, "payphone")


def test_days_name_the_day_the_window_starts() -> None:
    friday_night = Schedule("weekend", clock_time(22), clock_time(6), (("unknown", Action.BLOCK),), frozenset({4}))
    policy = Policy(schedules=(friday_night,))
    assert active_schedule(policy, jst(4, 23)) is friday_night   # Friday 23:00
    assert active_schedule(policy, jst(5, 3)) is friday_night    # Saturday 03:00 belongs to Friday's night
    assert active_schedule(policy, jst(4, 3)) is None            # Friday 03:00 belongs to Thursday's
    assert active_schedule(policy, jst(5, 23)) is None           # Saturday night: not listed


def test_japan_has_no_daylight_saving_so_every_day_has_the_same_window() -> None:
    night = Schedule("night", clock_time(21), clock_time(7), (("unknown", Action.SCREEN),))
    policy = Policy(schedules=(night,))
    # Days on which other zones switch clocks (US/EU spring and autumn): JST is UTC+9 all year.
    for day in (datetime(2026, 3, 8), datetime(2026, 3, 29), datetime(2026, 10, 25), datetime(2026, 11, 1)):
        opens = day.replace(hour=12, tzinfo=UTC)  # 21:00 JST
        assert active_schedule(policy, opens) is night
        assert active_schedule(policy, opens - timedelta(minutes=1)) is None
        assert active_schedule(policy, opens + timedelta(hours=10)) is None  # 07:00 JST next day
        assert active_schedule(policy, opens + timedelta(hours=10) - timedelta(minutes=1)) is night


def test_a_naive_time_is_taken_as_utc() -> None:
    night = Schedule("night", clock_time(21), clock_time(7), (("unknown", Action.SCREEN),))
    assert active_schedule(Policy(schedules=(night,)), datetime(2026, 12, 3, 12, 30)) is night  # 21:30 JST


def test_first_listed_schedule_wins_where_windows_overlap() -> None:
    late = Schedule("late", clock_time(22), clock_time(23), (("unknown", Action.BLOCK),))
    night = Schedule("night", clock_time(21), clock_time(7), (("unknown", Action.SCREEN),))
    assert active_schedule(Policy(schedules=(late, night)), jst(3, 22, 30)) is late
    assert active_schedule(Policy(schedules=(night, late)), jst(3, 22, 30)) is night


def _problems(entries: list[dict[str, object]]) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        parse_config({"schedule": entries}, "mamoru.toml")
    return {p.key: p.message for p in info.value.problems}


def test_bad_schedules_are_named_by_key() -> None:
    problems = _problems([
        {"name": "night", "start": "25:00", "end": "7", "days": ["mo", "sun"], "unknwn": "block", "withheld": "hang"},
        {"name": "Night", "start": "01:00", "end": "01:00", "unknown": "screen"},
        {"name": "empty", "start": "08:00", "end": "09:00"},
        {"start": "08:00", "unknown": "block"},
        {"name": "nodays", "start": "08:00", "end": "09:00", "days": [], "unknown": "block"},
    ])  # fmt: skip
    assert "not a time of day" in problems["schedule[0].start"]
    assert "HH:MM" in problems["schedule[0].end"]
    assert "item 0" in problems["schedule[0].days"] and "'mo'" in problems["schedule[0].days"]
    assert "did you mean schedule[0].unknown?" in problems["schedule[0].unknwn"]
    assert "must be one of" in problems["schedule[0].withheld"] and "screen" in problems["schedule[0].withheld"]
    assert "duplicate name" in problems["schedule[1].name"]
    assert "same as start" in problems["schedule[1].end"]
    assert "changes nothing" in problems["schedule[2]"]
    assert problems["schedule[3].name"] == "required" and problems["schedule[3].end"] == "required"
    assert "at least one day" in problems["schedule[4].days"]


def test_schedule_must_be_an_array_of_tables() -> None:
    assert "expected [[schedule]] tables" in _problems({"name": "x"})["schedule"]  # type: ignore[arg-type]


def test_full_day_names_are_accepted() -> None:
    cfg = parse_config({"schedule": [{"name": "w", "start": "08:00", "end": "09:00", "days": ["Monday", "sat"],
                                      "unknown": "block"}]}, "mamoru.toml")  # fmt: skip
    assert cfg.rules.schedules[0].days == frozenset({0, 5})


# ---- the daemon applies it: a real call over the virtual modem on a pty -------------------------


def test_the_daemon_decides_with_the_time_of_the_call(tmp_path: Path) -> None:
    from firmware.scenarios import CallScript
    from tests.support.daemon import ModemDaemonRig

    now = datetime.now(JST)
    # A window around now (wrapping midnight when now is late), so the call falls inside it.
    opens, closes = (now - timedelta(hours=1)).time(), (now + timedelta(hours=2)).time()
    window = Schedule("now", clock_time(opens.hour, opens.minute), clock_time(closes.hour, closes.minute),
                      (("unknown", Action.BLOCK),))  # fmt: skip
    with ModemDaemonRig(tmp_path, policy=Policy(schedules=(window,))) as rig:
        rig.call(CallScript(nmbr="0355550123", hang_up_after_s=200))
        rig.call(CallScript(nmbr="0312345678", hang_up_after_s=1))  # the rig's allowlisted number
        stranger, family = rig.wait_calls(2)
    assert (stranger.action, stranger.rule) == (Action.BLOCK, "unknown@schedule:now")
    assert "schedule 'now'" in (stranger.reason or "")
    assert (family.action, family.rule) == (Action.ALLOW, "allowlist")


def test_mamoru_check_at_a_time_shows_the_schedule(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from screening.cli import main

    path = tmp_path / "mamoru.toml"
    path.write_text(NIGHT_TOML + f'\n[store]\ndb = "{tmp_path / "none.db"}"\n', encoding="utf-8")
    assert main(["check", "--config", str(path), STRANGER, "--at", "23:00"]) == 0
    night = json.loads(capsys.readouterr().out)
    assert (night["action"], night["rule"]) == ("screen", "unknown@schedule:night")
    assert main(["check", "--config", str(path), STRANGER, "--at", "2026-12-06T10:00"]) == 0  # a Sunday
    assert json.loads(capsys.readouterr().out)["rule"] == "unknown@schedule:sunday"
    assert main(["check", "--config", str(path), STRANGER, "--at", "2026-12-07T10:00"]) == 0  # Monday
    assert json.loads(capsys.readouterr().out)["rule"] == "unknown"
    assert main(["check", "--config", str(path), STRANGER, "--at", "25:00"]) == 1
    assert "--at '25:00'" in capsys.readouterr().err


def test_the_call_log_says_which_schedule_in_japanese(tmp_path: Path) -> None:
    from blocklist.store import Store
    from screening.web.call_views import rule_text
    from screening.web.i18n import translate
    
    decision = call(STRANGER, night_policy(tmp_path), jst(3, 23))
    with Store(tmp_path / "calls.db", recover_calls=False) as store:
        row = store.get_call(store.begin_call("sim", caller_id_for_check(STRANGER, None, None, "JP"),
                                              decision=decision))  # fmt: skip
    text = rule_text(row, Language.JA)
    assert text == translate(Language.JA, "calls.rule.unknown") + "（時間帯の設定「night」による対応）"
    assert rule_text(row, Language.EN).endswith('(schedule "night")')


def test_the_settings_page_shows_the_schedules(tmp_path: Path) -> None:
    from tests.support.web import CONFIG, ja, running_web, write_config

    text = CONFIG + "\n" + NIGHT_TOML.split("[rules]")[1].split("\n\n", 1)[1]  # the two [[schedule]] tables
    for web in running_web(tmp_path, write_config(tmp_path, text)):
        page = web.get("/settings").text
        assert ja("schedule.title") in page
        assert "<strong>night</strong>: 21:00〜07:00" in page and "月・火・水・木・金・土・日" in page
        assert f'{ja("settings.rule.unknown")}: {ja("schedule.action.screen")}' in page
        assert f'{ja("settings.rule.withheld")}: {ja("schedule.action.block")}' in page
        assert '<li data-schedule="sunday"><strong>sunday</strong>: 09:00〜12:00' in page
