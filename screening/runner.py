"""Composition root: build the line, store and daemon from config and run them.

This is the one place in ``screening`` that imports adapters from ``firmware``.
``sim:`` runs the whole appliance on a built-in virtual modem (a real pty
driven through pyserial, exactly like a USB modem) with a scripted set of calls.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlsplit

from blocklist.feeds import FeedTimer, breadth_limits
from blocklist.recovery import DAMAGED_STORE_MESSAGE, read_notices, set_aside_if_damaged
from blocklist.store import Store
from firmware.dialects import CADENCE_PERIOD_S, DIALECTS, RingCadence
from firmware.modem_line import ModemLine
from firmware.number_display import NdTiming
from firmware.nd_adapter import NdAdapter
from firmware.nd_line import NdAdapterLine
from firmware.scenarios import BLOCKED_NUMBER, FAMILY_NUMBER, CallScript, demo_scenario, load_scenario
from firmware.virtual_modem import VirtualModem, emulate_forever
from screening.config import BUILTIN_SOURCE, Config
from screening.cli import CliError, policy_from_config
from screening.daemon import CallSettings, ConfigReloader, Daemon
from screening.core.line import LineAdapter
from screening.core.model import CallerID, Decision, ListEntry, ListKind, MatchKind
from screening.core.numbers import parse_number
from screening.session import SessionSettings
from screening.demo_text import action_words, caller_words, end_words
from screening.core.safe_text import pad_columns, terminal_safe
from screening.status import StatusWriter
from voice.retention import RetentionPolicy
from screening.alert_wiring import RunningAlerts, start_alerts
from screening.line_jobs import LineJobs
from screening.watchdog import Watchdog
from screening.panel_wiring import start_panel
from voice.service import RecordingHousekeeping, build_prompts, build_voice

if TYPE_CHECKING:
    from screening.web.process import WebProcess

log = logging.getLogger(__name__)

SIM_SCHEME = "sim"
DEMO_TIME_SCALE = 0.25  # the demo's calls run 4x faster than a real line
SIM_END_TIMEOUT_S = 600.0
LINE_JOB_BUDGET_S = 900.0  # watchdog deadline while phoning a relative (retries, pauses)
HOUSEKEEPING_BUDGET_S = 300.0


@dataclass(frozen=True, slots=True)
class SimOptions:
    """``sim:?time_scale=0.25&scenario=calls.toml&dialect=usr&stay=1`` -- all optional.

    ``stay=1`` keeps the daemon (and its web page) running after the scripted calls, so the
    demo's calls can be looked at in a browser; Ctrl-C stops it.
    """

    time_scale: float = DEMO_TIME_SCALE
    scenario: Path | None = None
    dialect: str = "conexant"
    stay: bool = False

    @classmethod
    def from_uri(cls, uri: str) -> SimOptions:
        parts = urlsplit(uri)
        opts = dict(parse_qsl(parts.query))
        unknown = set(opts) - {"time_scale", "scenario", "dialect", "stay"}
        if unknown:
            raise ValueError(f"unknown option(s) {sorted(unknown)} in {uri!r} "
                             "(known: time_scale, scenario, dialect, stay)")  # fmt: skip
        if opts.get("stay", "0") not in ("0", "1"):
            raise ValueError(f"stay must be 0 or 1 in {uri!r}")
        dialect = opts.get("dialect", "conexant")
        if dialect not in DIALECTS:
            raise ValueError(f"sim dialect must be one of {sorted(DIALECTS)}, got {dialect!r}")
        try:
            scale = float(opts.get("time_scale", DEMO_TIME_SCALE))
        except ValueError as exc:
            raise ValueError(f"time_scale must be a number in {uri!r}") from exc
        if not 0 < scale <= 10:
            raise ValueError(f"time_scale must be in (0, 10] in {uri!r}")
        return cls(scale, Path(opts["scenario"]) if "scenario" in opts else None, dialect, opts.get("stay") == "1")


def is_sim(uri: str) -> bool:
    return urlsplit(uri).scheme == SIM_SCHEME


def modem_line_from_uri(uri: str, cfg: Config, **extra: object) -> ModemLine:
    kwargs: dict[str, object] = {"home_region": cfg.line.home_region, "cadence": cfg.line.cadence,
                                 "baudrate": cfg.line.baudrate,
                                 "handset_stale_s": cfg.line.handset_alert_minutes * 60.0 or None, **extra}
    query = dict(parse_qsl(urlsplit(uri).query))
    if "dialect" not in query:
        kwargs["dialect"] = cfg.line.modem.value
    if "baud" in query:
        kwargs.pop("baudrate")
    return ModemLine.from_uri(uri, **kwargs)


def with_nd_adapter(modem: ModemLine, cfg: Config) -> LineAdapter:
    """The modem line itself, or, with ``[line] nd_adapter``, paired with that adapter's caller ID."""
    if cfg.line.nd_adapter is None:
        return modem
    adapter = NdAdapter(cfg.line.nd_adapter, home_region=cfg.line.home_region)
    return NdAdapterLine(modem, adapter, no_cid_ring=cfg.line.no_caller_id_ring)


def sip_lines_from_config(uri: str, cfg: Config) -> list[LineAdapter]:
    """``sip://...`` → one SipLine per ``[sip] max_calls`` slot of one endpoint (pjsua2 is optional)."""
    try:
        from firmware.sip_line import sip_lines_from_uri
    except ImportError as exc:
        raise CliError(f"line {uri} needs pjsua2, which is not installed ({exc}): pip install "
                       "'mamoru[sip]' on x86_64; on a Raspberry Pi run scripts/build_pjproject.sh") from None
    try:
        return list(sip_lines_from_uri(uri, cfg))
    except ValueError as exc:
        raise CliError(f"line {uri}: {exc}") from None


def demo_db_path() -> Path:
    state = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    return state / "mamoru" / "demo.db"


def seed_demo_lists(store: Store, home_region: str) -> None:
    """The demo household: one family number allowed, one known fraud number blocked."""
    store.add_entry(ListEntry(ListKind.ALLOW, MatchKind.EXACT, parse_number(FAMILY_NUMBER, home_region).e164,
                              source="family", note="daughter (demo)"))
    store.add_entry(ListEntry(ListKind.BLOCK, MatchKind.EXACT, parse_number(BLOCKED_NUMBER, home_region).e164,
                              source="local", note="fake bank caller (demo)"))


def run_daemon(cfg: Config, stop: threading.Event, *, demo_db_explicit: bool = False) -> int:
    """``mamoru run``: screen calls until SIGTERM (or, on ``sim:``, until the demo calls are done)."""
    uri = cfg.line.uri
    sim = SimOptions.from_uri(uri) if is_sim(uri) else None
    db_path = Path(cfg.store.db)
    recordings_dir: Path | None = cfg.recording.dir if cfg.recording.enabled else None
    if (sim is not None or urlsplit(uri).scheme == "sip") and cfg.source == BUILTIN_SOURCE:
        # The demo (and a SIP line tried without a settings file) never needs root or touches /var/lib.
        if not demo_db_explicit:
            db_path = demo_db_path()
        if recordings_dir is not None:
            recordings_dir = demo_db_path().parent / "recordings"
    db_path.parent.mkdir(parents=True, exist_ok=True)
    set_aside_if_damaged(db_path)  # a damaged database must never stop screening: kept aside, a fresh one used
    store = Store(db_path)
    store.open()
    housekeeping = None
    if recordings_dir is not None:
        housekeeping = RecordingHousekeeping(store, recordings_dir, RetentionPolicy.from_config(cfg.recording))
        housekeeping.at_start()
    modem: VirtualModem | None = None
    line: LineAdapter
    extra_lines: list[LineAdapter] = []  # a SIP line's further call slots: one daemon loop each
    extra_threads: list[threading.Thread] = []
    alerts = None
    panel = None
    watchdog: Watchdog | None = None
    feeds: FeedTimer | None = None
    web = None
    try:
        web = start_web(cfg, db_path, recordings_dir)
        if sim is not None:
            seed_demo_lists(store, cfg.line.home_region)
            modem = VirtualModem(DIALECTS[sim.dialect], cfg.line.cadence, sim.time_scale)
            modem.start()
            line = modem_line_from_uri(f"modem://{modem.device_path}", cfg, name="sim",
                                       ring_gap_s=1.5 * CADENCE_PERIOD_S[cfg.line.cadence] * sim.time_scale,
                                       number_display=NdTiming().scaled(sim.time_scale))
        elif urlsplit(uri).scheme == "sip":
            if cfg.line.nd_adapter is not None:
                log.warning("[line] nd_adapter is ignored on a SIP line: the INVITE carries the caller ID")
            line, *extra_lines = sip_lines_from_config(uri, cfg)
            for extra in extra_lines:
                extra.open()
        else:
            from firmware.usb_power import UsbPowerCycler

            modem_line = modem_line_from_uri(uri, cfg)
            modem_line.power_cycler = UsbPowerCycler(urlsplit(uri).path)
            line = with_nd_adapter(modem_line, cfg)
        if isinstance(line, (ModemLine, NdAdapterLine)) and modem is None:
            line.open_or_retry()  # a missing modem is a health problem to report, not a crash
        else:
            line.open()
        cycler = getattr(line, "power_cycler", None)
        if cycler is not None:
            cycler.locate()  # now, while the device is there: it may vanish when wedged
        watchdog = Watchdog()
        jobs = LineJobs(guard=lambda: watchdog.busy(LINE_JOB_BUDGET_S, "phoning a relative"))
        # Phoning a relative needs a line that dials (the modem).
        dials = hasattr(line, "dial") and getattr(line, "can_dial", lambda: True)()
        alerts = start_alerts(cfg, store, line if dials else None, jobs)
        voice = build_voice(cfg, store, recordings_dir)
        if alerts is not None:
            voice.on_fraud.append(alerts.fraud_handler())
            if read_notices(db_path):
                alerts.service.on_health("store_damaged", DAMAGED_STORE_MESSAGE)
            if voice.model is None and cfg.voice.transcribe:
                alerts.service.on_health("model_missing", f"no speech model for {cfg.voice.language.value}: "
                                         "calls are recorded but not checked for fraud")
        def hourly() -> None:
            if housekeeping is not None:
                with watchdog.busy(HOUSEKEEPING_BUDGET_S, "recording retention"):
                    housekeeping.run()
            if alerts is not None:
                alerts.check_disk(recordings_dir or db_path.parent)

        if alerts is not None:
            alerts.check_disk(recordings_dir or db_path.parent)
        daemon = Daemon(line, store, policy_from_config(cfg), build_prompts(cfg),
                        SessionSettings(call_timeout_s=float(cfg.line.call_timeout_s), voice=voice),
                        no_cid_ring=cfg.line.no_caller_id_ring, housekeeping=hourly, line_jobs=jobs,
                        on_tick=watchdog.beat,
                        # settings saved on the web page apply from the next call; status.json feeds /health
                        reloader=ConfigReloader.for_config(
                            cfg, call_settings_from_config,
                            on_change=[alerts.service.reconfigure] if alerts is not None else []),
                        status=StatusWriter.beside(db_path, speech_model=voice.model is not None))
        if alerts is not None:
            daemon.on_screened = _chain(daemon.on_screened, alerts.screened_handler())
            daemon.on_line_fault = alerts.line_fault_handler()
            daemon.on_handset_stale = alerts.handset_stale_handler()
        panel = start_panel(cfg, store, alerts)
        if panel is not None:
            daemon.on_screened = _chain(daemon.on_screened, panel.hooks.on_screened)
            daemon.on_line_fault = _chain(daemon.on_line_fault, panel.hooks.on_line_fault)
            daemon.on_line_restored = panel.hooks.on_line_restored
            voice.on_fraud.append(panel.hooks.on_fraud)
        if modem is not None:
            scenario = load_scenario(sim.scenario) if sim and sim.scenario else demo_scenario()
            daemon.on_screened = _chain(_demo_printer(cfg.line.home_region), daemon.on_screened)
            print(f"mamoru demo: virtual modem on {modem.device_path}, {len(scenario)} scripted calls, "
                  f"database {db_path}", flush=True)
            after = None
            if sim is not None and sim.stay:
                port = web.wait_ready() if web is not None else None
                page = f"http://127.0.0.1:{port}/" if port else None
                after = ("mamoru demo: the scripted calls are done. "
                         + (f"See them on the web page: {page} (first visit: set a password). " if page else "")
                         + "Press Ctrl-C to stop.")  # fmt: skip
            _stop_when_scenario_done(modem, scenario, stop, after=after)
        extra_daemons = [_slot_daemon(daemon, extra, cfg) for extra in extra_lines]
        feeds = start_feed_updates(cfg, db_path, daemon, extra_daemons, alerts)
        for n, extra_daemon in enumerate(extra_daemons, start=2):
            thread = threading.Thread(target=extra_daemon.run, args=(stop,), name=f"call-loop-{n}", daemon=True)
            thread.start()
            extra_threads.append(thread)
        watchdog.ready(f"screening on {line.name}" + (f" ({1 + len(extra_lines)} calls at once)" if extra_lines else ""))
        daemon.run(stop)
    finally:
        stop.set()
        for thread in extra_threads:
            thread.join(timeout=15.0)
        for extra in extra_lines:
            extra.close()
        if watchdog is not None:
            watchdog.stopping()
        if web is not None:
            web.stop()
        if feeds is not None:
            feeds.stop()
        if panel is not None:
            panel.close()
        if alerts is not None:
            alerts.stop()
        try:
            if "line" in locals():
                line.close()
        finally:
            if modem is not None:
                modem.stop()
            store.close()
    if modem is not None:
        _print_summary(store_path=db_path, cfg=cfg, count=len(modem.records()))
    return 0


def _slot_daemon(main: Daemon, line: LineAdapter, cfg: Config) -> Daemon:
    """A call loop for another slot of the same SIP line: the main loop's rules, voice and hooks.

    Housekeeping and line jobs stay with the main loop; each loop reloads changed settings itself.
    """
    return Daemon(line, main.store, main.policy, main.announcements, main.settings, no_cid_ring=main.no_cid_ring,
                  on_screened=main.on_screened, on_line_fault=main.on_line_fault,
                  on_line_restored=main.on_line_restored, on_tick=main.on_tick,
                  reloader=ConfigReloader.for_config(cfg, call_settings_from_config), status=main.status,
                  _lists=main.list_cache())


def call_settings_from_config(cfg: Config) -> CallSettings:
    """What a call is screened with; rebuilt by the daemon when the config file changes."""
    return CallSettings(policy_from_config(cfg), build_prompts(cfg), float(cfg.line.call_timeout_s))


def start_web(cfg: Config, db_path: Path, recordings_dir: Path | None) -> WebProcess | None:
    """The web page in its own process (``[web] enabled``); None when off or when it failed (logged).

    ``db_path`` and ``recordings_dir`` are the ones screening really uses (the demo's differ from cfg's).
    No web load reaches the call loop: see screening/web/process.py.
    """
    if not cfg.web.enabled:
        return None
    try:
        from screening.web.process import start_web_process
    except ImportError as exc:  # a unit installed without the web packages still screens
        log.error("web page not started: %s", exc)
        return None
    return start_web_process(cfg, db_path, recordings_dir)


def start_feed_updates(cfg: Config, db_path: Path, daemon: Daemon, others: Sequence[Daemon] = (),
                       alerts: RunningAlerts | None = None) -> FeedTimer | None:  # fmt: skip
    """Signed feeds are checked on their own thread every ``[feeds] update_minutes`` (0 = never)."""
    if cfg.feeds.update_minutes <= 0:
        return None
    # The other call loops of a SIP line share the main loop's lists snapshot: offering it there is enough.
    loops = [daemon, *others]
    timer = FeedTimer(db_path, cfg.feeds.dir, interval_s=cfg.feeds.update_minutes * 60.0,
                      max_age_days=cfg.feeds.max_age_days,
                      line_idle=daemon.line_idle if not others else lambda: all(d.line_idle() for d in loops),
                      on_lists=daemon.offer_lists, hold_lists=daemon.hold_lists, limits=breadth_limits(cfg),
                      on_refused=alerts.feed_refused_handler() if alerts is not None else None)  # fmt: skip
    timer.start()
    return timer


def _chain(first, second):
    """Run two callbacks with the same arguments (either may be None)."""
    if first is None or second is None:
        return first or second

    def both(*args: object) -> None:
        first(*args)
        second(*args)

    return both


def _stop_when_scenario_done(modem: VirtualModem, scenario: list[CallScript], stop: threading.Event, *,
                             after: str | None = None) -> None:  # fmt: skip
    """Stop the daemon once every scripted call ended; with ``after``, print it and keep running instead."""
    records = [modem.place_call(script) for script in scenario]

    def watch() -> None:
        for record in records:
            try:
                modem.wait_for_call_end(record, timeout=SIM_END_TIMEOUT_S)
            except TimeoutError:
                log.error("demo call %r did not end in time", record.script.label)
            if stop.is_set():
                return
        if after is not None:
            print(after, flush=True)
            return
        stop.set()

    threading.Thread(target=watch, name="sim-scenario", daemon=True).start()


def _demo_printer(region: str):
    def show(call_id: int, caller: CallerID, decision: Decision) -> None:
        # Words, not ids (REQUEST_NUMBER, <out_of_area>): the demo is a first-time user's first look.
        print(terminal_safe(f"  {call_id:>4}  {pad_columns(caller_words(caller, region), 24)} "
                            f"{pad_columns(action_words(decision.action), 40)} {decision.reason}"), flush=True)

    return show


def _print_summary(store_path: Path, cfg: Config, count: int) -> None:
    with Store(store_path, recover_calls=False) as store:
        rows = store.recent_calls(limit=count)
    print(f"\n{len(rows)} calls screened and recorded in {store_path} (see: mamoru calls --db {store_path})")
    for row in reversed(rows):
        print(f"  #{row.id:<4} {pad_columns(action_words(row.action), 40)} {end_words(row.end_reason)}")


def emulate_modem(args: argparse.Namespace, stop: threading.Event) -> int:
    """``mamoru modem emulate``: a virtual modem on a pty for another process to open."""
    modem = VirtualModem(DIALECTS[args.dialect], RingCadence(args.cadence), args.time_scale,
                         link_dir=Path(args.link).parent if args.link else None)
    scenario = [] if args.no_calls else (load_scenario(args.scenario) if args.scenario else demo_scenario())

    def ready(path: Path) -> None:
        if args.link and Path(args.link) != path:
            link = Path(args.link)
            link.unlink(missing_ok=True)
            link.symlink_to(path)
        print(path, flush=True)

    emulate_forever(modem, scenario, stop, on_ready=ready)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use the mamoru command")
