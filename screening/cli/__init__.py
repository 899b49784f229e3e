"""The ``mamoru`` command line: the root, a table of command groups.

Every group module exposes ``register(subparsers)``; the plumbing they share (errors,
config loading, opening the database) is :mod:`screening.cli.common`, at the bottom.
Every command takes ``--config`` and ``--db``; commands that print data take
``--json``. Errors are one clear line on stderr and a non-zero exit code.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from screening.cli import (
    alerts,
    asr,
    config,
    detect,
    doctor,
    feeds,
    hub,
    lists,
    modem,
    provision,
    review_export,
    run,
    stats,
    store,
    web,
)
from screening.cli.common import EXIT_ERROR, EXIT_USAGE, CliError
from screening.config import ConfigError
from screening.log_setup import setup_logging

# In the order `mamoru --help` lists them.
GROUPS: tuple[Callable[[Any], object], ...] = (
    run.register,  # run, check, calls
    lists.register,  # allow, block
    config.register,
    modem.register,
    detect.register,
    asr.register,  # transcribe, model
    alerts.register,  # alert, alerts
    doctor.register,
    store.register,
    feeds.register,  # feed, publish
    provision.register,
    review_export.register,
    stats.register,  # stats
    web.register,
    hub.register,  # hub run|servers|account|unit|simulate
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mamoru", description="Call screening for a household landline.")
    sub = parser.add_subparsers(dest="command", required=True)
    for register in GROUPS:
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # `run` and `modem emulate` set up logging from their own options.
    if not logging.getLogger().handlers and not getattr(args, "own_logging", False):
        setup_logging("warning")
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"mamoru: configuration error:\n{exc}", file=sys.stderr)
        return EXIT_USAGE
    except CliError as exc:
        print(f"mamoru: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
