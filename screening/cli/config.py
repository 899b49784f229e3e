"""``mamoru config check``: validate the config file and report every problem."""

from __future__ import annotations

import argparse
from typing import Any

from screening.cli.common import EXIT_OK, CliError, add_common_args, load


def register(sub: Any) -> None:
    p = sub.add_parser("config", help="configuration tools")
    csub = p.add_subparsers(dest="config_action", required=True)
    q = csub.add_parser("check", help="validate the config file and report every problem")
    add_common_args(q)
    q.add_argument("file", nargs="?", metavar="FILE", help="the config file to check (same as --config FILE)")
    q.set_defaults(func=cmd_config_check)


def cmd_config_check(args: argparse.Namespace) -> int:
    if args.file:  # `mamoru config check FILE` is what people type first
        if args.config and args.config != args.file:
            raise CliError(f"two files to check: {args.file} and --config {args.config}; give one")
        args.config = args.file
    cfg = load(args)
    print(f"{cfg.source}: OK")
    return EXIT_OK
