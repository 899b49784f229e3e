"""The config's ``[rules]`` as the pure rules' :class:`Policy`: used by the composition root, the
CLI and the web page, so it lives beside the config rather than in any of them."""

from __future__ import annotations

import dataclasses

from screening.config import Config
from screening.core.rules import Policy


def policy_from_config(cfg: Config) -> Policy:
    # RulesConfig mirrors Policy field for field (a config test keeps them equal).
    return Policy(**{f.name: getattr(cfg.rules, f.name) for f in dataclasses.fields(cfg.rules)})
