"""``mamoru modem emulate``: a virtual voice modem on a pty, for demos and tests; ``modem probe`` (cli/probe.py)."""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path
from typing import Any

from screening.cli.common import CliError
from screening.cli.probe import add_probe_parser
from screening.log_setup import setup_logging


def register(sub: Any) -> None:
    p = sub.add_parser("modem", help="modem tools")
    msub = p.add_subparsers(dest="modem_action", required=True)
    q = msub.add_parser("emulate", help="start a virtual voice modem on a pty and print its device path")
    q.add_argument("--dialect", choices=["usr", "conexant"], default="conexant")
    q.add_argument("--cadence", choices=["jp", "jp_nd", "na", "uk"], default="jp")
    q.add_argument("--scenario", metavar="F", help="TOML call scenario (default: the demo calls)")
    q.add_argument("--no-calls", action="store_true", help="place no calls, just be a modem")
    q.add_argument("--time-scale", type=float, default=1.0, help="<1 runs the scenario faster")
    q.add_argument("--link", metavar="PATH", help="also make this stable symlink to the pty")
    q.add_argument("--replay", metavar="TRANSCRIPT",
                   help="answer as the modem of this `modem probe`/`line record-calls` transcript did")
    q.add_argument("-v", "--verbose", action="store_true")
    q.set_defaults(func=cmd_modem_emulate, own_logging=True)
    add_probe_parser(msub)


def cmd_modem_emulate(args: argparse.Namespace) -> int:
    # The composition root imports every adapter: only when this command runs.
    from screening.runner import emulate_modem

    setup_logging("info", args.verbose)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    if args.replay:
        return replay_transcript(Path(args.replay), args.time_scale, stop)
    return emulate_modem(args, stop)


def replay_transcript(path: Path, time_scale: float, stop: threading.Event) -> int:
    """A pty answering as the recorded modem did; its path is printed, as for the virtual modem."""
    from firmware.line_transcript import LineTranscript, TranscriptError
    from firmware.vmodem.replay import ReplayModem

    try:
        transcript = LineTranscript.from_json(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, TranscriptError) as exc:
        raise CliError(f"{path}: {exc}") from None
    with ReplayModem(transcript, time_scale=time_scale) as modem:
        print(modem.device_path, flush=True)
        stop.wait()
    return 0
