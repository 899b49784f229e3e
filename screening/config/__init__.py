"""Configuration: one TOML file, validated into frozen dataclasses.

The package: ``schema`` (value parsers and the ``_setting`` field), ``sections`` (one frozen
dataclass per ``[section]``), ``loader`` (``Config``, lookup, parsing), ``errors`` and
``reference`` (the README table). Import from ``screening.config``: this is its public API.

The appliance is set up once by a relative and then left alone for years, so a
bad config must fail loudly and *completely*: every problem is collected and
reported together (``ConfigError``), each naming the file and the dotted key,
instead of making someone fix and restart ten times.

Lookup order (:func:`load_config`): the explicit ``--config`` path, then
``$MAMORU_CONFIG``, then ``/etc/mamoru/mamoru.toml``; if none exists the
built-in defaults are used and ``Config.source`` says so. A path that was named
explicitly (flag or environment) but does not exist is an error, not a silent
fallback.

The schema lives in the dataclass fields themselves: each TOML key is a field
whose metadata holds its TOML default, a parser/validator and a one-line
meaning. :func:`reference_markdown` (``reference.py``) renders the README table from it, and the
dataclass defaults are produced by running the same parsers on the TOML
defaults, so the docs, the defaults and the validation cannot drift apart.

Policy: :class:`RulesConfig` carries everything the pure rules engine needs,
with the same field names as ``screening.core.rules.Policy`` -- including
``home_region``, copied from ``line.home_region`` (it is not a key of its own in
``[rules]``) -- so ``Policy(**dataclasses.asdict(config.rules))`` works.

``firmware.dialects`` is imported for its pure data (``RingCadence``, dialect
keys); it does no I/O and imports nothing back.
"""


from screening.config.errors import ConfigError, ConfigProblem
from screening.config.loader import (
    BUILTIN_SOURCE,
    COMMAND_LINE_SOURCE,
    ENV_VAR,
    SYSTEM_CONFIG_PATH,
    Config,
    decode_config_text,
    find_config_path,
    load_config,
    parse_config,
    parse_toml_text,
)
from screening.config.reference import reference_markdown, schema
from screening.config.schema import LINE_SCHEMES
from screening.config.sections import (
    AlertsConfig,
    FeedsConfig,
    HubConfig,
    LineConfig,
    LogConfig,
    LogLevel,
    ModemChoice,
    PanelConfig,
    QuietHours,
    RecordingConfig,
    RelativeConfig,
    RulesConfig,
    ScreeningConfig,
    SipConfig,
    StoreConfig,
    VoiceConfig,
    WebConfig,
)

__all__ = [
    "BUILTIN_SOURCE",
    "COMMAND_LINE_SOURCE",
    "ENV_VAR",
    "LINE_SCHEMES",
    "SYSTEM_CONFIG_PATH",
    "AlertsConfig",
    "Config",
    "ConfigError",
    "ConfigProblem",
    "FeedsConfig",
    "HubConfig",
    "LineConfig",
    "LogConfig",
    "LogLevel",
    "ModemChoice",
    "PanelConfig",
    "QuietHours",
    "RecordingConfig",
    "RelativeConfig",
    "RulesConfig",
    "ScreeningConfig",
    "SipConfig",
    "StoreConfig",
    "VoiceConfig",
    "WebConfig",
    "decode_config_text",
    "find_config_path",
    "load_config",
    "parse_config",
    "parse_toml_text",
    "reference_markdown",
    "schema",
]
