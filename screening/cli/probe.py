"""``mamoru modem probe`` and ``mamoru line record-calls``: the first hour with a real modem.

Both write a ``mamoru-line-transcript/1`` JSON file (numbers redacted unless ``--keep-numbers``)
that can be attached to a bug report and replayed by the virtual modem as a dialect test
(``firmware/vmodem/replay.py``; ``tests/test_modem_probe.py`` shows how).
"""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from screening.cli.common import EXIT_ERROR, EXIT_OK, CliError, add_common_args, load
from screening.core.clock import iso_utc, utc_now
from screening.core.files import atomic_write_text


def add_probe_parser(msub: Any) -> None:
    """``mamoru modem probe DEVICE`` (under the ``modem`` group)."""
    q = msub.add_parser("probe", help="identify a modem, tell whether a dialect matches, write a redacted transcript")
    q.add_argument("device", help="the modem's tty, e.g. /dev/ttyACM0")
    q.add_argument("-o", "--output", metavar="FILE", help="transcript file (default: mamoru-probe-<time>.json)")
    q.add_argument("--baud", type=int, default=115200)
    q.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for each reply")
    q.add_argument("--keep-numbers", action="store_true", help="do not mask digit runs and serial numbers")
    q.set_defaults(func=cmd_modem_probe)


def register_line(sub: Any) -> None:
    """``mamoru line record-calls --minutes N``."""
    p = sub.add_parser("line", help="line tools for an installer")
    lsub = p.add_subparsers(dest="line_action", required=True)
    q = lsub.add_parser("record-calls", help="record the raw line traffic of the next calls (never answers)")
    add_common_args(q)
    q.add_argument("--minutes", type=float, required=True, help="how long to listen")
    q.add_argument("--line", metavar="URI", help="modem line (default: [line] uri), e.g. modem:///dev/ttyACM0")
    q.add_argument("-o", "--output", metavar="FILE", help="transcript file (default: mamoru-calls-<time>.json)")
    q.add_argument("--keep-numbers", action="store_true", help="keep callers' numbers (they are masked by default)")
    q.set_defaults(func=cmd_record_calls)


def _stamp() -> tuple[str, str]:
    now = utc_now()
    return iso_utc(now, timespec="seconds"), now.strftime("%Y%m%dT%H%M%SZ")


def cmd_modem_probe(args: argparse.Namespace) -> int:
    import serial  # type: ignore[import-untyped]

    from firmware.dialects import DIALECTS
    from firmware.modem_probe import probe_modem

    recorded_at, stamp = _stamp()
    try:
        transcript = probe_modem(args.device, recorded_at=recorded_at, baudrate=args.baud, timeout_s=args.timeout,
                                 keep_numbers=args.keep_numbers)  # fmt: skip
    except (OSError, serial.SerialException) as exc:
        raise CliError(f"cannot open {args.device}: {exc}") from None
    out = Path(args.output or f"mamoru-probe-{stamp}.json")
    atomic_write_text(out, transcript.to_json())
    answered = [e for e in transcript.exchanges if e.final != "TIMEOUT"]
    print(f"modem on {args.device}: {transcript.identification() or '(no ATI3 reply)'}")
    print(f"replied to {len(answered)} of {len(transcript.exchanges)} commands")
    dialect = transcript.dialect()
    if dialect is None:
        print(f"no dialect matches (known: {', '.join(sorted(DIALECTS))}); please attach {out} to an issue")
    else:
        missing = transcript.missing_for(dialect)
        verdict = "all of mamoru's start-up commands answered OK" if not missing else f"failed: {', '.join(missing)}"
        print(f"dialect {dialect.key} ({dialect.description}): {verdict}")
    print(f"transcript written to {out}" + ("" if args.keep_numbers else " (numbers masked)"))
    return EXIT_OK if answered else EXIT_ERROR


def cmd_record_calls(args: argparse.Namespace) -> int:
    from firmware.modem_line import ModemLine
    from firmware.modem_probe import record_calls

    if args.minutes <= 0 or args.minutes > 24 * 60:
        raise CliError("--minutes must be more than 0 and at most 1440")
    cfg = load(args)
    uri = cfg.line.uri
    if urlsplit(uri).scheme != "modem":
        raise CliError(f"record-calls needs a modem line (modem:///dev/...), not {uri}")
    extra: dict[str, Any] = {} if "dialect=" in urlsplit(uri).query else {"dialect": cfg.line.modem.value}
    line = ModemLine.from_uri(uri, home_region=cfg.line.home_region, cadence=cfg.line.cadence,
                              baudrate=cfg.line.baudrate, transcript_size=20000, **extra)  # fmt: skip
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    recorded_at, stamp = _stamp()
    print(f"listening on {line.port} for {args.minutes:g} minute(s); call the line now (Ctrl-C ends early)")
    transcript = record_calls(line, seconds=args.minutes * 60, stop=stop, recorded_at=recorded_at,
                              keep_numbers=args.keep_numbers)  # fmt: skip
    out = Path(args.output or f"mamoru-calls-{stamp}.json")
    atomic_write_text(out, transcript.to_json())
    rings = sum(1 for u in transcript.unsolicited if u.text == "RING")
    print(f"{len(transcript.unsolicited)} line(s) heard, {rings} ring(s); transcript written to {out}"
          + ("" if args.keep_numbers else " (numbers masked)"))  # fmt: skip
    return EXIT_OK


def register_sip(sub: Any) -> None:
    """``mamoru sip probe``."""
    p = sub.add_parser("sip", help="SIP tools for an installer")
    ssub = p.add_subparsers(dest="sip_action", required=True)
    q = ssub.add_parser("probe", help="register like the SIP line, show the next INVITE's headers (redacted)")
    add_common_args(q)
    q.add_argument("--line", metavar="URI", help="SIP line (default: [line] uri), e.g. sip://0312345678@192.168.1.1")
    q.add_argument("--seconds", type=float, default=300.0, help="how long to wait for a call")
    q.add_argument("--keep-numbers", action="store_true", help="do not mask numbers and names")
    q.set_defaults(func=cmd_sip_probe)


def cmd_sip_probe(args: argparse.Namespace) -> int:
    cfg = load(args)
    if urlsplit(cfg.line.uri).scheme != "sip":
        raise CliError(f"sip probe needs a SIP line (sip://...), not {cfg.line.uri}")
    try:
        from firmware.sip_line import sip_lines_from_uri
        from firmware.sip_probe import InviteCapture, invite_report, probe_sip
    except ImportError as exc:
        raise CliError(f"sip probe needs pjsua2 ({exc}): pip install 'mamoru[sip]'") from None
    from screening.line_factory import sip_defaults

    capture = InviteCapture()
    try:
        line = sip_lines_from_uri(cfg.line.uri, sip_defaults(cfg), caller_id=capture)[0]
    except ValueError as exc:
        raise CliError(f"line {cfg.line.uri}: {exc}") from None
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(f"waiting up to {args.seconds:g} s for the next INVITE on {cfg.line.uri}; call the line now", flush=True)
    seen = probe_sip(line, capture, seconds=args.seconds, stop=stop)
    if seen is None:
        print("no INVITE arrived (check the gateway's incoming-call setting and [sip] trusted_upstreams)")
        return EXIT_ERROR
    for text in invite_report(seen, trusted_upstreams=cfg.sip.trusted_upstreams, home_region=cfg.line.home_region,
                              keep_numbers=args.keep_numbers):  # fmt: skip
        print(text)
    return EXIT_OK
