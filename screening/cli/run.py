"""``mamoru run``, ``mamoru check`` and ``mamoru calls``: screen calls, ask what would happen to a
caller, read the call log."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from screening.cli.common import (
    EXIT_OK,
    CliError,
    add_common_args,
    existing_store,
    load,
    local_time,
    open_store,
    print_json,
)
from screening.config import Config
from screening.core.callerid import caller_id_for_check
from screening.core.clock import region_zone
from screening.core.model import Action, CallOutcome, Reason
from screening.core.numbers import national_format
from screening.core.rules import NoLists, decide
from screening.core.safe_text import terminal_safe
from screening.log_setup import setup_logging
from screening.policy import policy_from_config

log = logging.getLogger("mamoru")


def register(sub: Any) -> None:
    p = sub.add_parser("run", help="screen calls on a line (default line: the config's, e.g. sim:)")
    add_common_args(p)
    p.add_argument("--line", metavar="URI", help="modem:///dev/ttyACM0[?dialect=usr], sip://HOST:PORT, "
                   "sip://USER@REGISTRAR or sim:")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.set_defaults(func=cmd_run, own_logging=True)

    p = sub.add_parser("check", help="show what mamoru would do with a caller, as JSON")
    add_common_args(p, json_flag=True)
    p.add_argument("number", help="the number as shown (empty with --reason for no number)")
    p.add_argument("--reason", choices=[r.value for r in Reason], help="caller ID reason code")
    p.add_argument("--name", help="caller name as delivered")
    p.add_argument("--at", metavar="TIME", help="as if the call came at this local time: HH:MM today, or "
                   "YYYY-MM-DDTHH:MM (picks the [[schedule]]; default: now)")  # fmt: skip
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("calls", help="the call log, newest first")
    add_common_args(p, json_flag=True)
    p.add_argument("--limit", type=int, default=50)
    p.set_defaults(func=cmd_calls)


def cmd_check(args: argparse.Namespace) -> int:
    cfg = load(args)
    policy = policy_from_config(cfg)
    reason = Reason(args.reason) if args.reason else None
    caller = caller_id_for_check(args.number, reason, args.name, policy.home_region)
    if args.number and caller.number_e164 is None and reason is None:
        raise CliError(f"{args.number!r} is not a phone number")
    lists = _lists_if_db(cfg)
    decision = decide(caller, lists, policy, at=_check_time(args.at, policy.home_region))
    out: dict[str, Any] = {**decision.as_dict(), "number_e164": caller.number_e164, "number_raw": caller.raw_number or None}
    if decision.matched is not None:
        out["matched"] = {"list": decision.matched.list.value, "entry": decision.matched.describe(),
                          "source": decision.matched.source, "note": decision.matched.note}
    print_json(out)
    return EXIT_OK


def _check_time(text: str | None, region: str) -> datetime:
    """``--at``: a local time today or a local date and time, as aware UTC."""
    if not text:
        return datetime.now(UTC)
    zone = region_zone(region)
    try:
        if len(text.strip()) <= 5:
            hours, minutes = (int(part) for part in text.strip().split(":"))
            moment = datetime.now(zone).replace(hour=hours, minute=minutes, second=0, microsecond=0)
        else:
            moment = datetime.fromisoformat(text.strip())
            moment = moment if moment.tzinfo else moment.replace(tzinfo=zone)
    except ValueError:
        raise CliError(f"check: --at {text!r} is not HH:MM or YYYY-MM-DDTHH:MM") from None
    return moment.astimezone(UTC)


def _lists_if_db(cfg: Config):
    if not Path(cfg.store.db).exists():
        return NoLists()
    store = open_store(cfg)
    try:
        return store.load_lists(datetime.now(UTC))
    finally:
        store.close()


def cmd_calls(args: argparse.Namespace) -> int:
    cfg = load(args)
    store = existing_store(cfg)
    if store is None:
        rows = []
    else:
        try:
            rows = store.recent_calls(limit=args.limit)
        finally:
            store.close()
    if args.json:
        print_json([{**row.as_dict(), "outcome": screened_outcome(row.action, row.end_reason)} for row in rows])
        return EXIT_OK
    if not rows:
        print("no calls yet")
        return EXIT_OK
    region = cfg.line.home_region
    zone = region_zone(region)  # people read local time with its zone; --json keeps UTC
    for row in rows:
        who = national_format(row.number_e164, region) if row.number_e164 else (row.raw_number or row.reason_code
                                                                                  or "-")
        # Caller ID is written by the caller: never let its bytes drive the terminal.
        print(terminal_safe(f"{row.id:>5}  {local_time(row.started_at, zone)}  {who:<18} {row.action or '?':<15} "
                            f"{row.rule or '':<22} {row.state}  {row.reason or ''}"))
    return EXIT_OK


def screened_outcome(action: Action | None, end_reason: str | None) -> str | None:
    """How a screened call ended (a CallOutcome value, stored as its end reason); None for other calls."""
    if action is not Action.SCREEN or end_reason not in {o.value for o in CallOutcome}:
        return None
    return end_reason


def cmd_run(args: argparse.Namespace) -> int:
    # The composition root imports every adapter: only when this command runs.
    from screening.runner import LineSetupError, run_daemon

    cfg = load(args)
    setup_logging(cfg.log.level, args.verbose)
    if cfg.line.uri.startswith("sim:") and not args.verbose:
        # The demo prints each decision on stdout; the emulator's chatter is noise there.
        logging.getLogger("firmware.virtual_modem").setLevel(logging.WARNING)
        logging.getLogger("screening.session").setLevel(logging.WARNING)
        logging.getLogger("blocklist.store").setLevel(logging.WARNING)  # schema migrations of a fresh demo db
    stop = threading.Event()

    def _on_signal(signum: int, _frame: object) -> None:
        log.info("signal %d: stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    try:
        return run_daemon(cfg, stop, demo_db_explicit=bool(args.db))
    except LineSetupError as exc:
        raise CliError(str(exc)) from None
