"""Config loading: lookup order, validation, every problem reported at once."""

from __future__ import annotations

import dataclasses
import re
from datetime import time
from pathlib import Path

import pytest

from firmware.dialects import DIALECTS, RingCadence
from screening.config import (
    BUILTIN_SOURCE,
    Config,
    ConfigError,
    ConfigProblem,
    LineConfig,
    LogLevel,
    ModemChoice,
    RulesConfig,
    load_config,
    reference_markdown,
    schema,
)
from screening.core.model import Action, Language

EXAMPLE = Path(__file__).resolve().parent.parent / "deploy" / "mamoru.example.toml"


def write(tmp_path: Path, text: str, name: str = "mamoru.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(path: Path) -> list[ConfigProblem]:
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    return info.value.problems


def keys_of(problems: list[ConfigProblem]) -> list[str]:
    return [p.key for p in problems]


# ---- defaults and lookup order ------------------------------------------------


def test_defaults() -> None:
    config = Config.defaults()
    assert config.source == BUILTIN_SOURCE
    assert config.line.uri == "sim:"
    assert config.line.modem is ModemChoice.AUTO
    assert config.line.home_region == "JP"
    assert config.line.cadence is RingCadence.JAPAN
    assert config.line.no_caller_id_ring == 2
    assert config.line.call_timeout_s == 600
    assert config.line.baudrate == 115200
    rules = config.rules
    assert rules.withheld is Action.REQUEST_NUMBER
    assert rules.international is Action.BLOCK
    for name in ("out_of_area", "payphone", "service_conflict", "no_caller_id", "unknown", "invalid"):
        assert getattr(rules, name) is Action.WARN
    assert rules.international_allow_countries == frozenset()
    assert rules.official_numbers == frozenset({"110", "118", "119", "#9110"})
    assert rules.official_suffixes == ("0110",)
    assert rules.home_region == "JP"
    assert config.store.db == Path("/var/lib/mamoru/mamoru.db")
    assert config.log.level is LogLevel.INFO
    assert config.log.level.as_logging == 20


def test_no_file_anywhere_gives_defaults(tmp_path: Path) -> None:
    config = load_config(None, env={}, system_path=tmp_path / "absent.toml")
    assert config == Config.defaults()
    assert config.source == BUILTIN_SOURCE


def test_system_path_used_when_present(tmp_path: Path) -> None:
    system = write(tmp_path, '[log]\nlevel = "debug"\n')
    config = load_config(None, env={}, system_path=system)
    assert config.log.level is LogLevel.DEBUG
    assert config.source == str(system)


def test_env_var(tmp_path: Path) -> None:
    from_env = write(tmp_path, '[line]\nhome_region = "US"\ncadence = "na"\n', "env.toml")
    system = write(tmp_path, '[line]\nhome_region = "GB"\n', "system.toml")
    config = load_config(None, env={"MAMORU_CONFIG": str(from_env)}, system_path=system)
    assert config.line.home_region == "US"
    assert config.source == str(from_env)


def test_empty_env_var_ignored(tmp_path: Path) -> None:
    config = load_config(None, env={"MAMORU_CONFIG": "  "}, system_path=tmp_path / "absent.toml")
    assert config.source == BUILTIN_SOURCE


def test_explicit_path_beats_env(tmp_path: Path) -> None:
    explicit = write(tmp_path, '[line]\nhome_region = "GB"\n', "explicit.toml")
    from_env = write(tmp_path, '[line]\nhome_region = "US"\n', "env.toml")
    config = load_config(explicit, env={"MAMORU_CONFIG": str(from_env)})
    assert config.line.home_region == "GB"


@pytest.mark.parametrize("via_env", [False, True])
def test_named_but_missing_file_is_an_error(tmp_path: Path, via_env: bool) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        if via_env:
            load_config(None, env={"MAMORU_CONFIG": str(missing)}, system_path=tmp_path / "absent.toml")
        else:
            load_config(missing, env={})
    assert str(info.value) == f"{missing}: file not found"


# ---- good files ---------------------------------------------------------------------


def test_good_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[line]
uri = "modem:///dev/mamoru-modem?dialect=usr"
modem = "usr"
home_region = "us"
cadence = "na"
no_caller_id_ring = 3
call_timeout_s = 300
baudrate = 57600

[rules]
withheld = "block"
international = "warn"
out_of_area = "allow"
payphone = "Request_Number"
international_allow_countries = ["jp", "GB"]
official_numbers = ["911"]
official_suffixes = []

[store]
db = "/tmp/m.db"

[log]
level = "warning"
""",
    )
    config = load_config(path, env={})
    assert config.line.uri == "modem:///dev/mamoru-modem?dialect=usr"
    assert config.line.modem is ModemChoice.USR
    assert config.line.home_region == "US"
    assert config.line.cadence is RingCadence.NORTH_AMERICA
    assert config.line.no_caller_id_ring == 3
    assert config.rules.withheld is Action.BLOCK
    assert config.rules.payphone is Action.REQUEST_NUMBER
    assert config.rules.unknown is Action.WARN  # default kept
    assert config.rules.international_allow_countries == frozenset({"JP", "GB"})
    assert config.rules.official_numbers == frozenset({"911"})
    assert config.rules.official_suffixes == ()
    assert config.rules.home_region == "US", "policy carries line.home_region"
    assert config.store.db == Path("/tmp/m.db")
    assert config.log.level is LogLevel.WARNING
    assert config.source == str(path)


def test_empty_file_is_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, ""), env={})
    assert dataclasses.replace(config, source=BUILTIN_SOURCE) == Config.defaults()


def test_example_file_loads_and_matches_defaults() -> None:
    config = load_config(EXAMPLE, env={})
    assert dataclasses.replace(config, source=BUILTIN_SOURCE) == Config.defaults()


def test_example_file_mentions_every_key() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    for key, *_ in schema():
        section, name = key.split(".")
        if section.endswith("[]"):  # arrays of tables: shown commented out (the default is none)
            assert f"# [[{section[:-2]}]]" in text
            assert f"\n# {name} = " in text, key
            continue
        assert f"[{section}]" in text
        assert f"\n{name} = " in text, key


# ---- bad files ---------------------------------------------------------------------

BAD_VALUES = [
    ("line", "uri", '"http://x"', "scheme must be one of"),
    ("line", "uri", '""', "must not be empty"),
    ("line", "uri", '"modem:"', "needs a device path"),
    ("line", "uri", '"sip:0312345678@gw"', "SIP line needs sip://HOST"),
    ("line", "uri", '"sip://gw:port"', "bad port"),
    ("sip", "upstream", '"pstn"', "must be one of fxo, hgw, trunk"),
    ("sip", "reject_code", "200", "400"),
    ("sip", "trusted_upstreams", '["192.168.1.1", "gateway"]', "item 1: expected an IP address or network"),
    ("sip", "trusted_upstreams", '"192.168.1.1"', "array"),
    ("sip", "household", '"192.168.1.20"', "expected a SIP URI"),
    ("sip", "user", "5", "string"),
    ("sip", "password_file", "[]", "expected a string"),
    ("sip", "register_expires_s", "10", "30"),
    ("sip", "ring_timeout_s", "0", "5"),
    ("sip", "max_calls", "0", "1"),
    ("sip", "outbound", '"192.168.1.2"', "expected a SIP URI"),
    ("ncid", "listen", '"3333"', "expected HOST:PORT"),
    ("ncid", "allow_remote", '"yes"', "expected true or false"),
    ("ncid", "line_id", '"two words"', "expected 1-16 letters"),
    ("ncid", "replay_calls", "5000", "1000"),
    ("ncid", "max_clients", "0", "between 1 and 256"),
    ("screening", "challenge", '"press_3"', "must be one of none, any_key, random_digit"),
    ("screening", "name_prompt", "60", "expected true, false or seconds 3..30"),
    ("screening", "decide_timeout_s", "1", "5"),
    ("screening", "passcode", '"12a4"', "expected 3 to 8 digits"),
    ("screening", "message_cap_s", "1000", "300"),
    ("line", "uri", '"modem:///dev/ttyACM0?dialect=hayes"', "dialect must be one of"),
    ("line", "uri", "5", "expected a string (got integer 5)"),
    ("line", "modem", '"zyxel"', "must be one of auto, usr, conexant (got 'zyxel')"),
    ("line", "home_region", '"XX"', "not a supported ISO 3166 region code"),
    ("line", "home_region", '"Japan"', "not a supported ISO 3166 region code"),
    ("line", "cadence", '"de"', "must be one of"),
    ("line", "no_caller_id_ring", "5", "must be between 2 and 4 (got 5)"),
    ("line", "no_caller_id_ring", "1", "must be between 2 and 4 (got 1)"),
    ("line", "no_caller_id_ring", "true", "expected an integer (got boolean true)"),
    ("line", "call_timeout_s", "0", "must be at least 1 (got 0)"),
    ("line", "call_timeout_s", "1.5", "expected an integer (got float 1.5)"),
    ("line", "baudrate", '"115200"', 'expected an integer (got string "115200")'),
    ("line", "handset_alert_minutes", "-1", "must be at least 0 (got -1)"),
    ("line", "nd_adapter", '"ttyUSB0"', "must be an absolute device path"),
    ("rules", "withheld", '"deny"', "must be one of allow, warn, screen, request_number, block (got 'deny')"),
    ("rules", "international", "1", "expected a string (got integer 1)"),
    ("rules", "out_of_area", '"ignore"', "must be one of allow, warn, screen, request_number, block"),
    ("rules", "payphone", "false", "expected a string (got boolean false)"),
    ("rules", "service_conflict", '"warning"', "must be one of allow, warn, screen, request_number, block"),
    ("rules", "no_caller_id", '["warn"]', 'expected a string (got array ["warn"])'),
    ("rules", "unknown", '""', "must be one of allow, warn, screen, request_number, block (got '')"),
    ("rules", "invalid", '"drop"', "must be one of allow, warn, screen, request_number, block"),
    ("rules", "international_allow_countries", '"US"', "expected an array of strings"),
    ("rules", "international_allow_countries", '["US", "ZZZ"]', "item 1: not a supported ISO 3166 region code"),
    ("rules", "official_numbers", "[110]", "item 0: expected a string (got integer 110)"),
    ("rules", "official_numbers", '["11O"]', "item 0: must be digits or # *"),
    ("rules", "official_suffixes", '["#0110"]', "item 0: must be digits"),
    ("voice", "language", '"fr"', "must be one of ja, en, ko (got 'fr')"),
    ("voice", "engine", '"kaldi"', "must be one of auto, vosk, whisper (got 'kaldi')"),
    ("voice", "whisper_step_s", "0.5", "must be between 1.0 and 14.0 (got 0.5)"),
    ("voice", "model_dir", "1", "expected a string (got integer 1)"),
    ("voice", "models_dir", '""', "must not be empty"),
    ("voice", "transcribe", '"yes"', 'expected true or false (got string "yes")'),
    ("voice", "prompts_dir", "false", "expected a string (got boolean false)"),
    ("voice", "household_warning", "1", "expected true or false (got integer 1)"),
    ("voice", "speaker_device", "[1]", "expected a string (got array [1])"),
    ("voice", "line_tap_device", "2", "expected a string (got integer 2)"),
    ("recording", "enabled", '"no"', 'expected true or false (got string "no")'),
    ("recording", "dir", '""', "must not be empty"),
    ("recording", "keep_days", "0", "must be at least 1 (got 0)"),
    ("recording", "max_disk_mb", "5", "must be at least 10 (got 5)"),
    ("panel", "status_led", "40", "must be a BCM GPIO number between 2 and 27, or false (got 40)"),
    ("panel", "red_led", "true", "expected a GPIO number or false (got boolean true)"),
    ("panel", "button", '"17"', 'expected a GPIO number or false (got string "17")'),
    ("panel", "buzzer", "1", "must be a BCM GPIO number between 2 and 27, or false (got 1)"),
    ("store", "db", '""', "must not be empty"),
    ("store", "db", "[]", "expected a string (got array [])"),
    ("log", "level", '"verbose"', "must be one of debug, info, warning, error (got 'verbose')"),
    ("alerts", "fraud", '"yes"', 'expected true or false (got string "yes")'),
    ("alerts", "repeat_block_count", "-1", "must be at least 0 (got -1)"),
    ("alerts", "repeat_block_minutes", "0", "must be between 1 and 1440 (got 0)"),
    ("alerts", "health", "1", "expected true or false (got integer 1)"),
    ("alerts", "daily_digest", '"8am"', "expected a time as HH:MM"),
    ("alerts", "daily_digest", '"24:00"', "not a time of day"),
    ("alerts", "escalate_after_minutes", "1.5", "expected an integer (got float 1.5)"),
    ("alerts", "quiet_hours", '"22:00"', "expected HH:MM-HH:MM"),
    ("alerts", "quiet_hours", '"22:00-22:00"', "start and end are the same time"),
    ("alerts", "quiet_hours", '"22:00-7"', "expected a time as HH:MM"),
    ("alerts", "max_per_hour", "0", "must be at least 1 (got 0)"),
    ("alerts", "web_base_url", '"mamoru.local"', "expected an http:// or https:// URL"),
    ("alerts", "voice_call", '"no"', 'expected true or false (got string "no")'),
    ("alerts", "relative_can_join", '"yes"', 'expected true or false (got string "yes")'),
    ("alerts", "retry_max_hours", "0", "must be between 1 and 168 (got 0)"),
    ("feeds", "dir", "7", "expected a string"),
    ("feeds", "update_minutes", "-5", "must be between 0 and 10080 (got -5)"),
    ("feeds", "max_age_days", "0", "must be between 1 and 3650 (got 0)"),
    ("feeds", "max_share_percent", "0", "must be between 0.001 and 100.0 (got 0)"),
    ("feeds", "min_prefix_digits", "1", "must be between 2 and 14 (got 1)"),
    ("web", "enabled", '"yes"', 'expected true or false (got string "yes")'),
    ("web", "host", '""', "must not be empty"),
    ("web", "host", '"http://0.0.0.0"', "expected an IP address or a host name"),
    ("web", "host", '"-bad-.local"', "expected an IP address or a host name"),
    ("web", "port", "65536", "must be between 0 and 65535 (got 65536)"),
    ("web", "port", '"8080"', 'expected an integer (got string "8080")'),
    ("web", "session_hours", "0", "must be between 1 and 720 (got 0)"),
    ("web", "allowed_hosts", '["http://mamoru.home.arpa"]', "item 0: expected a host name or an IP address"),
    ("web", "allowed_hosts", '["mamoru.home.arpa:8080"]', "without scheme or port"),
    ("web", "allowed_hosts", '"mamoru.home.arpa"', "expected an array of strings"),
    ("hub", "url", '"http://hub.example.jp"', "expected mqtts://HOST[:PORT]"),
    ("hub", "url", '"mqtt://hub.example.jp:1883"', "needs TLS"),
    ("hub", "unit_id", '"Unit/1"', "lower-case letters"),
    ("hub", "credentials_file", "1", "expected a string"),
    ("hub", "ca_file", "[]", "expected a string"),
    ("hub", "command_key", '"deadbeef"', "ed25519:"),
    ("hub", "share", '["calls", "everything"]', "must be one of"),
    ("hub", "public_url", '"ftp://hub"', "http:// or https://"),
    ("hub", "home_assistant", '"yes"', "true or false"),
    ("hub", "health_minutes", "0", "between 1 and 1440"),
    ("hub", "queue_limit", "10", "between 100 and 1000000"),
]

# [[relatives]] entries: (TOML of one entry, key of the problem, message). A secret in a bad URL is never echoed.
BAD_RELATIVES = [
    ('notify = ["json://127.0.0.1/x"]', "relatives[0].name", "required"),
    ('name = ""\nnotify = ["json://127.0.0.1/x"]', "relatives[0].name", "must not be empty"),
    ('name = "A"\nnotify = ["nosuch://user:hunter2@host"]', "relatives[0].notify[0]",
     "not a notification URL apprise understands"),
    ('name = "A"\nnotify = "json://127.0.0.1/x"', "relatives[0].notify", "expected an array of strings"),
    ('name = "A"\nphone = "12"', "relatives[0].phone", "not a valid phone number in JP (got '12')"),
    ('name = "A"\nphone = "090-1234-5678"\nlanguage = "fr"', "relatives[0].language",
     "must be one of ja, en, ko (got 'fr')"),
]


@pytest.mark.parametrize(("entry", "key", "message"), BAD_RELATIVES)
def test_bad_relative(tmp_path: Path, entry: str, key: str, message: str) -> None:
    path = write(tmp_path, f"[[relatives]]\n{entry}\n")
    (problem,) = problems_of(path)
    assert problem.key == key
    assert message in problem.message
    assert "hunter2" not in str(problem)


_SCHEDULE_OK = 'name = "night"\nstart = "21:00"\nend = "07:00"\n'
BAD_SCHEDULES = [
    ('start = "21:00"\nend = "07:00"\nunknown = "screen"', "schedule[0].name", "required"),
    ('name = "n"\nstart = "9pm"\nend = "07:00"\nunknown = "screen"', "schedule[0].start", "HH:MM"),
    ('name = "n"\nstart = "21:00"\nend = "24:00"\nunknown = "screen"', "schedule[0].end", "not a time of day"),
    (_SCHEDULE_OK + 'days = ["someday"]\nunknown = "screen"', "schedule[0].days", "must be one of mon"),
    *((_SCHEDULE_OK + f'{key} = "voicemail"', f"schedule[0].{key}", "must be one of allow, warn, screen")
      for key in ("withheld", "international", "out_of_area", "payphone", "service_conflict", "no_caller_id",
                  "invalid", "unknown")),
]


@pytest.mark.parametrize(("entry", "key", "message"), BAD_SCHEDULES)
def test_bad_schedule(tmp_path: Path, entry: str, key: str, message: str) -> None:
    path = write(tmp_path, f"[[schedule]]\n{entry}\n")
    (problem,) = problems_of(path)
    assert (problem.key, problem.file) == (key, str(path))
    assert message in problem.message


def test_relatives_good_and_resolved(tmp_path: Path) -> None:
    path = write(tmp_path, """
[voice]
language = "ko"

[[relatives]]
name = "Taro"
notify = ["json://127.0.0.1:8080/hook", "ntfy://127.0.0.1:8081/mamoru"]
phone = "090-1234-5678"

[[relatives]]
name = "Hanako"
notify = ["mailto://u:p@127.0.0.1:2525?from=mamoru@example.com&to=hanako@example.com"]
language = "en"
""")
    config = load_config(path, env={})
    taro, hanako = config.relatives
    assert taro.name == "Taro" and len(taro.notify) == 2
    assert taro.phone == "+819012345678", "stored as E.164, read in line.home_region"
    assert taro.language is None and hanako.language is Language.EN
    assert hanako.phone is None


def test_relatives_several_problems_and_duplicates(tmp_path: Path) -> None:
    path = write(tmp_path, """
[[relatives]]
name = "Taro"
notify = ["json://127.0.0.1/x", "bogus://a:secretpw@x", "alsobogus"]

[[relatives]]
name = "taro"
phone = "03-1234-5678"
colour = "red"

[[relatives]]
name = "Jiro"
""")
    problems = problems_of(path)
    assert keys_of(problems) == ["relatives[0].notify[1]", "relatives[0].notify[2]", "relatives[1].colour",
                                 "relatives[1].name", "relatives[2]"]
    assert "duplicate name 'taro' (also relatives[0])" in problems[3].message
    assert "no way to reach" in problems[4].message
    assert "secretpw" not in str(ConfigError(problems))


def test_relatives_must_be_array_of_tables(tmp_path: Path) -> None:
    (problem,) = problems_of(write(tmp_path, '[relatives]\nname = "Taro"\n'))
    assert problem.key == "relatives" and "expected [[relatives]] tables" in problem.message


def test_alert_values_parsed(tmp_path: Path) -> None:
    path = write(tmp_path, '[alerts]\nquiet_hours = "22:00-07:00"\ndaily_digest = "08:05"\n'
                           'web_base_url = "http://mamoru.local:8080/"\n')
    alerts = load_config(path, env={}).alerts
    assert str(alerts.quiet_hours) == "22:00-07:00"
    assert alerts.quiet_hours.contains(time(23, 30)) and alerts.quiet_hours.contains(time(6, 59))
    assert not alerts.quiet_hours.contains(time(7, 0)) and not alerts.quiet_hours.contains(time(12, 0))
    assert alerts.daily_digest == time(8, 5)
    assert alerts.web_base_url == "http://mamoru.local:8080"


@pytest.mark.parametrize(("section", "key", "value", "message"), BAD_VALUES)
def test_bad_field(tmp_path: Path, section: str, key: str, value: str, message: str) -> None:
    path = write(tmp_path, f"[{section}]\n{key} = {value}\n")
    (problem,) = problems_of(path)
    assert problem.file == str(path)
    assert problem.key == f"{section}.{key}"
    assert message in problem.message
    assert str(problem).startswith(f"{path}: {section}.{key}: ")


def test_every_key_has_a_bad_value_case() -> None:
    tested = {f"{s}.{k}" for s, k, *_ in BAD_VALUES}
    tested |= {re.sub(r"\[\d+\]", "[]", key).removesuffix("[]") for _, key, _ in BAD_RELATIVES}
    tested |= {key.replace("[0]", "[]") for _, key, _ in BAD_SCHEDULES}
    assert tested == {key for key, *_ in schema()}


def test_several_problems_at_once(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[line]
home_region = "XX"
no_caller_id_ring = 5
colour = "red"

[rules]
withheld = "deny"
international = "block"
unkown = "warn"

[logging]
level = "info"
""",
    )
    problems = problems_of(path)
    assert keys_of(problems) == ["line.home_region", "line.no_caller_id_ring", "line.colour", "rules.withheld",
                                 "rules.unkown", "logging"]
    text = str(ConfigError(problems))
    assert text.count("\n") == len(problems) - 1
    assert f"{path}: rules.withheld: must be one of allow, warn, screen, request_number, block (got 'deny')" in text.splitlines()


def test_malformed_toml(tmp_path: Path) -> None:
    path = write(tmp_path, '[line]\nuri = "sim:"\nhome_region = JP\n')
    (problem,) = problems_of(path)
    assert problem.key == ""
    assert "invalid TOML" in problem.message
    assert "line 3" in problem.message and "column" in problem.message
    assert str(problem).startswith(f"{path}: invalid TOML")


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes('[line]\n# caf\xe9\n'.encode("latin-1"))
    (problem,) = problems_of(path)
    assert "UTF-8" in problem.message


def test_unknown_key_suggestion(tmp_path: Path) -> None:
    path = write(tmp_path, '[rules]\nwithhled = "block"\n')
    (problem,) = problems_of(path)
    assert problem.key == "rules.withhled"
    assert problem.message == "unknown key (did you mean rules.withheld?)"


def test_unknown_key_in_wrong_section(tmp_path: Path) -> None:
    path = write(tmp_path, '[rules]\nbaudrate = 9600\n')
    (problem,) = problems_of(path)
    assert problem.message == "unknown key (did you mean line.baudrate?)"


def test_home_region_belongs_in_line(tmp_path: Path) -> None:
    (problem,) = problems_of(write(tmp_path, '[rules]\nhome_region = "US"\n'))
    assert problem.key == "rules.home_region"
    assert "line.home_region" in problem.message


def test_unknown_section_suggestion(tmp_path: Path) -> None:
    (problem,) = problems_of(write(tmp_path, '[rule]\nwithheld = "block"\n'))
    assert problem.key == "rule"
    assert problem.message == "unknown section (did you mean [rules]?)"


def test_top_level_key(tmp_path: Path) -> None:
    (problem,) = problems_of(write(tmp_path, 'home_region = "JP"\n'))
    assert problem.key == "home_region"
    assert "did you mean line.home_region?" in problem.message


def test_section_not_a_table(tmp_path: Path) -> None:
    (problem,) = problems_of(write(tmp_path, 'line = "sim:"\n'))
    assert problem.key == "line"
    assert "expected a table" in problem.message


def test_unknown_key_without_suggestion(tmp_path: Path) -> None:
    (problem,) = problems_of(write(tmp_path, '[store]\nzzzzzz = 1\n'))
    assert problem.message == "unknown key"


# ---- overrides and policy ----------------------------------------------------------


def test_overrides() -> None:
    base = Config.defaults()
    changed = base.with_overrides(line_uri="modem:///dev/ttyACM0", db=Path("/tmp/x.db"))
    assert changed.line.uri == "modem:///dev/ttyACM0"
    assert changed.store.db == Path("/tmp/x.db")
    assert changed.rules == base.rules and changed.source == base.source
    assert base.line.uri == "sim:", "original untouched"
    assert base.with_overrides() == base
    assert base.with_overrides(db="/tmp/y.db").store.db == Path("/tmp/y.db")


def test_bad_overrides_reported_together() -> None:
    with pytest.raises(ConfigError) as info:
        Config.defaults().with_overrides(line_uri="ftp://x", db="")
    assert keys_of(info.value.problems) == ["line.uri", "store.db"]
    assert all(p.file == "command line" for p in info.value.problems)


def test_rules_carry_line_home_region() -> None:
    config = Config(line=LineConfig(home_region="GB"))
    assert config.rules.home_region == "GB"
    assert isinstance(config.rules, RulesConfig)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.rules.withheld = Action.ALLOW  # type: ignore[misc]


def test_rules_config_converts_to_rules_policy() -> None:
    """RulesConfig and the rules engine's Policy must not drift apart."""
    rules = pytest.importorskip("screening.core.rules")
    config = Config(line=LineConfig(home_region="US"))
    policy = rules.Policy(**dataclasses.asdict(config.rules))
    assert policy.home_region == "US"
    assert {f.name for f in dataclasses.fields(rules.Policy)} == {f.name for f in dataclasses.fields(RulesConfig)}


def test_modem_choices_match_dialects() -> None:
    assert {m.value for m in ModemChoice} == {"auto", *DIALECTS}


# ---- reference ------------------------------------------------------------------------


def test_reference_markdown() -> None:
    table = reference_markdown()
    lines = table.strip().splitlines()
    assert lines[0] == "| Key | Type | Default | Meaning |"
    assert len(lines) == 2 + len(schema())
    assert "| `rules.withheld` | allow \\| warn \\| screen \\| request_number \\| block | `\"request_number\"` |" in table
    assert '`["110", "118", "119", "#9110"]`' in table
    for line in lines[2:]:
        assert len(re.findall(r"(?<!\\)\|", line)) == 5, line


# ---- files saved by Windows Notepad (what a new user hit) ----

NOTEPAD_TEXT = '# 設定\n[line]\nhome_region = "JP"\n[rules]\nwithheld = "block"\n'


def test_a_config_saved_with_a_utf8_bom_is_read(tmp_path: Path) -> None:
    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbf" + NOTEPAD_TEXT.encode("utf-8"))
    assert load_config(path, env={}).rules.withheld is Action.BLOCK


def test_a_config_saved_as_shift_jis_says_so_and_how_to_fix_it(tmp_path: Path) -> None:
    path = tmp_path / "sjis.toml"
    path.write_bytes(NOTEPAD_TEXT.encode("cp932"))
    (problem,) = problems_of(path)
    assert "Shift-JIS" in problem.message and "UTF-8" in problem.message
    assert "名前を付けて保存" in problem.message and "Save As" in problem.message  # Japanese and English


def test_a_config_saved_as_utf16_says_so(tmp_path: Path) -> None:
    path = tmp_path / "utf16.toml"
    path.write_bytes(NOTEPAD_TEXT.encode("utf-16"))
    (problem,) = problems_of(path)
    assert "UTF-16" in problem.message and "Save As" in problem.message


def test_deeply_nested_toml_is_a_config_error_not_a_crash(tmp_path: Path) -> None:
    path = write(tmp_path, "a = " + "[" * 100_000 + "]" * 100_000 + "\n")
    (problem,) = problems_of(path)
    assert "nested too deeply" in problem.message
