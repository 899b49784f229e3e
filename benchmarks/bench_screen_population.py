"""Who reaches the household when unknown callers are screened? A mixed population, both lines.

Plays callers through the real daemon with ``[rules] unknown = "screen"`` and ``challenge =
"any_key"``: over SIP (pjsua2 callers from tests/sip_peer.py; the household phone is
tests/sip_phone.py, which picks up and presses 1) and over the virtual modem on a pty (the
household lifts the handset). Populations:

- ``robocall_silent``: answers nothing, presses nothing (an auto-dialler waiting for a human);
- ``robocall_pitch``: a recorded pitch that talks all the time and presses nothing;
- ``human``: says a name, presses 3 when asked;
- ``fraud``: a live scam caller -- a human, so says a name and presses 3 as well;
- ``family``: an allowlisted number (rings through, never screened).

Reports, per line and population, the share that reached the household (SIP: the household leg
was rung; modem: the household was called to the phone) and the times a person waits: the caller
from the answer until the household is called, the household from being called to its decision.
The household's own reaction time is scripted (SIP phone presses 1 2.5 s after picking up), so
only mamoru's part of those times is a measurement.

    .venv/bin/python benchmarks/bench_screen_population.py [--per-kind 3] [--json-out results_screen_population.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from firmware.scenarios import FAMILY_NUMBER, UNKNOWN_NUMBER, CallScript, default_caller_audio
from screening.core.clock import iso_utc, parse_iso_utc, utc_now
from screening.core.model import Action, EventKind
from screening.core.rules import Policy
from screening.screen_flow import ChallengeMode, ScreenSettings
from screening.session import SessionSettings
from tests.support.daemon import SCALE, ModemDaemonRig
from tests.support.ports import free_udp_port

ROOT = Path(__file__).resolve().parent.parent
KINDS = ("robocall_silent", "robocall_pitch", "human", "fraud", "family")
SCREEN = dict(challenge=ChallengeMode.ANY_KEY, decide_timeout_s=10.0, challenge_timeout_s=6.0, message_cap_s=3.0,
              name_cap_s=3.0)
log = logging.getLogger("bench_screen_population")


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in KINDS:
        mine = [r for r in rows if r["kind"] == kind]
        if not mine:
            continue
        waits = [r["caller_wait_s"] for r in mine if r["caller_wait_s"] is not None]
        decides = [r["decide_s"] for r in mine if r["decide_s"] is not None]
        out[kind] = {
            "calls": len(mine),
            "reached_household": sum(r["reached"] for r in mine) / len(mine),
            "outcomes": sorted({str(r["outcome"]) for r in mine}),
            "caller_wait_s_median": round(statistics.median(waits), 2) if waits else None,
            "household_decide_s_median": round(statistics.median(decides), 2) if decides else None,
        }
    return out


def _times(events: list[Any]) -> tuple[float | None, float | None, bool]:
    """(answer -> household called, household called -> decision, household called)."""
    at = {}
    for e in events:
        at.setdefault(str(e.kind), parse_iso_utc(e.at))
    answered, called, decided = at.get(EventKind.ANSWERED), at.get(EventKind.HOUSEHOLD), \
        at.get(EventKind.HOUSEHOLD_DECISION)
    wait = (called - answered).total_seconds() if answered and called else None
    decide = (decided - called).total_seconds() if called and decided else None
    return wait, decide, called is not None


# ---- SIP ------------------------------------------------------------------------------------

def _sip_caller_args(kind: str) -> list[str]:
    press = ["--dtmf", "3333333333", "--dtmf-from", "3.0", "--dtmf-every", "1.0"]
    return {
        "robocall_silent": ["--tone-s", "0"],
        "robocall_pitch": ["--tone-s", "60"],
        "human": ["--tone-s", "60", *press],
        "fraud": ["--tone-s", "60", *press],
        "family": ["--tone-s", "5", "--hang-up-after", "4"],
    }[kind]


def run_sip(per_kind: int, tmp: Path) -> list[dict[str, Any]]:
    from tests.support.sip import FAMILY, UNKNOWN, SipDaemonRig, result_of

    rows = []
    for kind in KINDS:
        for i in range(per_kind):
            port = free_udp_port()
            phone = subprocess.Popen([sys.executable, str(ROOT / "tests" / "sip_phone.py"), "--port", str(port),
                                      "--answer-after", "1.0", "--dtmf", "1", "--dtmf-after", "2.5",
                                      "--hang-up-after", "5", "--max-s", "45"],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
            assert phone.stdout is not None
            while (line := phone.stdout.readline()) and not line.startswith("{"):
                pass
            session = SessionSettings(screen=ScreenSettings(**SCREEN))  # type: ignore[arg-type]
            (tmp / f"sip-{kind}-{i}").mkdir()
            with SipDaemonRig(tmp / f"sip-{kind}-{i}", ring_timeout_s=30.0, policy=Policy(unknown=Action.SCREEN),
                              session=session, household=f"sip:phone@127.0.0.1:{port}") as rig:  # type: ignore[arg-type]
                user = FAMILY if kind == "family" else UNKNOWN
                rig.call(user, *_sip_caller_args(kind), "--max-s", "40", timeout=60)
                row = rig.wait_calls(1, 30)[0]
                wait, decide, called = _times(rig.store.events_for(row.id))
            if not called:  # the household leg was never placed: the phone has nothing to report
                phone.kill()
                phone.communicate(timeout=10)
                heard = {"answered": False}
            else:
                try:
                    heard = result_of(phone, 60)
                except AssertionError:
                    heard = {"answered": False}
            reached = bool(heard.get("answered")) if kind != "family" else True
            rows.append({"line": "sip", "kind": kind, "reached": reached and (called or kind == "family"),
                         "outcome": row.end_reason, "caller_wait_s": wait, "decide_s": decide})
            log.info("sip %s #%d: %s", kind, i, rows[-1])
    return rows


# ---- modem ----------------------------------------------------------------------------------

def _line_s(wall: float) -> float:
    return wall / SCALE


def _modem_script(kind: str) -> CallScript:
    talk = default_caller_audio() * 300
    silent = bytes([0x80]) * 8000 * 900
    press = tuple((_line_s(0.5 + 0.5 * i), "3") for i in range(28))
    pickup = _line_s(8.0)
    return {
        "robocall_silent": CallScript(nmbr=UNKNOWN_NUMBER, caller_audio=silent, hang_up_after_s=_line_s(30)),
        "robocall_pitch": CallScript(nmbr=UNKNOWN_NUMBER, caller_audio=talk, hang_up_after_s=_line_s(30)),
        "human": CallScript(nmbr=UNKNOWN_NUMBER, caller_audio=talk, dtmf=press, handset_off_hook_at_s=pickup,
                            hang_up_after_s=_line_s(14)),
        "fraud": CallScript(nmbr=UNKNOWN_NUMBER, caller_audio=talk, dtmf=press, handset_off_hook_at_s=pickup,
                            hang_up_after_s=_line_s(14)),
        "family": CallScript(nmbr=FAMILY_NUMBER, max_rings=3),
    }[kind]


def run_modem(per_kind: int, tmp: Path) -> list[dict[str, Any]]:
    rows = []
    for kind in KINDS:
        for i in range(per_kind):
            settings = SessionSettings(screen=ScreenSettings(**SCREEN))  # type: ignore[arg-type]
            (tmp / f"modem-{kind}-{i}").mkdir()
            with ModemDaemonRig(tmp / f"modem-{kind}-{i}", settings=settings,
                                policy=Policy(unknown=Action.SCREEN)) as rig:
                record = rig.call(_modem_script(kind), timeout=90)
                row = rig.wait_calls(1, 30)[0]
                evs = rig.store.events_for(row.id)
                wait, decide, called = _times(evs)
            reached = kind == "family" or any(e.kind == EventKind.HOUSEHOLD_DECISION
                                              and e.detail.get("decision") == "connected" for e in evs)
            rows.append({"line": "modem", "kind": kind, "reached": reached, "outcome": row.end_reason,
                         "caller_wait_s": wait, "decide_s": decide, "line_outcome": str(record.outcome)})
            log.info("modem %s #%d: %s", kind, i, rows[-1])
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-kind", type=int, default=3)
    parser.add_argument("--lines", default="sip,modem")
    parser.add_argument("--json-out", default=str(Path(__file__).parent / "results_screen_population.json"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    for name in ("screening", "firmware", "blocklist", "tests"):
        logging.getLogger(name).setLevel(logging.WARNING)
    started = time.monotonic()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for line in args.lines.split(","):
            base = Path(tmp) / line
            base.mkdir()
            rows += run_sip(args.per_kind, base) if line == "sip" else run_modem(args.per_kind, base)
    result = {
        "benchmark": "screen_population",
        "when": iso_utc(utc_now(), timespec="seconds"),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "per_kind": args.per_kind,
        "screening": {k: (v.value if hasattr(v, "value") else v) for k, v in SCREEN.items()},
        "by_line": {line: _summary([r for r in rows if r["line"] == line]) for line in ("sip", "modem")},
        "calls": rows,
        "elapsed_s": round(time.monotonic() - started, 1),
    }
    Path(args.json_out).write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
    print(json.dumps(result["by_line"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
