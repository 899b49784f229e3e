"""Composition root: build the line, store and daemon from config and run them.

This is the one place in ``screening`` that imports adapters from ``firmware``. Each feature
(store, web page, virtual modem, lines, alerts, panel, feed timer, further call loops) starts as a
context manager under one ``ExitStack`` in :func:`run_daemon`, so they stop in reverse order; they
hear each other through the event bus (``screening.events``), and the root maps the config into
each part's own settings (``VoiceSettings``, ``CallSettings``).
``sim:`` runs the whole appliance on a built-in virtual modem (a real pty
driven through pyserial, exactly like a USB modem) with a scripted set of calls.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlsplit

from blocklist.feed_timer import FeedTimer
from blocklist.recovery import DAMAGED_STORE_MESSAGE, read_notices, set_aside_if_damaged
from blocklist.store import Store
from firmware.dialects import CADENCE_PERIOD_S, DIALECTS, RingCadence
from firmware.modem_line import ModemLine
from firmware.nd_adapter import NdAdapter
from firmware.nd_line import NdAdapterLine
from firmware.number_display import NdTiming
from firmware.scenarios import BLOCKED_NUMBER, FAMILY_NUMBER, CallScript, demo_scenario, load_scenario
from firmware.usb_power import UsbPowerCycler
from firmware.virtual_modem import VirtualModem, emulate_forever
from screening.alert_wiring import RunningAlerts, start_alerts
from screening.config import BUILTIN_SOURCE, Config
from screening.core.line import Dialer, LineAdapter
from screening.core.model import CallerID, Decision, ListEntry, ListKind, MatchKind
from screening.core.numbers import parse_number
from screening.core.safe_text import pad_columns, terminal_safe
from screening.daemon import ConfigReloader, Daemon
from screening.demo_text import action_words, caller_words, end_words
from screening.events import CallScreened, EventBus, FeedRefused, FraudHeard, ModelMissing, StoreDamaged
from screening.feed_wiring import feed_limits
from screening.hub_wiring import run_hub
from screening.line_factory import sip_defaults
from screening.line_jobs import LineJobs
from screening.ncid.wiring import run_ncid
from screening.panel_wiring import start_panel
from screening.policy import policy_from_config
from screening.screen_flow import ScreenSettings
from screening.session import CallSettings, SessionSettings
from screening.status import StatusWriter
from screening.watchdog import Watchdog
from voice.local_audio import HouseholdSpeaker
from voice.retention import RetentionPolicy
from voice.service import RecordingHousekeeping, VoiceSettings, build_prompts, build_voice, household_warner

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


class LineSetupError(Exception):
    """The configured line cannot be built; the message is one line for whoever runs ``mamoru run``."""


def sip_lines_from_config(uri: str, cfg: Config) -> list[LineAdapter]:
    """``sip://...`` → one SipLine per ``[sip] max_calls`` slot of one endpoint (pjsua2 is optional)."""
    try:
        from firmware.sip_line import sip_lines_from_uri
    except ImportError as exc:
        raise LineSetupError(f"line {uri} needs pjsua2, which is not installed ({exc}): pip install "
                       "'mamoru[sip]' on x86_64; on a Raspberry Pi run scripts/build_pjproject.sh") from None
    try:
        return list(sip_lines_from_uri(uri, sip_defaults(cfg)))
    except ValueError as exc:
        raise LineSetupError(f"line {uri}: {exc}") from None


def demo_db_path() -> Path:
    state = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    return state / "mamoru" / "demo.db"


def seed_demo_lists(store: Store, home_region: str) -> None:
    """The demo household: one family number allowed, one known fraud number blocked."""
    store.add_entry(ListEntry(ListKind.ALLOW, MatchKind.EXACT, parse_number(FAMILY_NUMBER, home_region).e164,
                              source="family", note="daughter (demo)"))
    store.add_entry(ListEntry(ListKind.BLOCK, MatchKind.EXACT, parse_number(BLOCKED_NUMBER, home_region).e164,
                              source="local", note="fake bank caller (demo)"))


@dataclass(frozen=True, slots=True)
class DataPlaces:
    """Where this run keeps its database and recordings (the demo's differ from the config's)."""

    db_path: Path
    recordings_dir: Path | None


def data_places(cfg: Config, sim: SimOptions | None, demo_db_explicit: bool) -> DataPlaces:
    db_path = Path(cfg.store.db)
    recordings_dir: Path | None = cfg.recording.dir if cfg.recording.enabled else None
    if (sim is not None or urlsplit(cfg.line.uri).scheme == "sip") and cfg.source == BUILTIN_SOURCE:
        # The demo (and a SIP line tried without a settings file) never needs root or touches /var/lib.
        if not demo_db_explicit:
            db_path = demo_db_path()
        if recordings_dir is not None:
            recordings_dir = demo_db_path().parent / "recordings"
    return DataPlaces(db_path, recordings_dir)


def run_daemon(cfg: Config, stop: threading.Event, *, demo_db_explicit: bool = False) -> int:
    """``mamoru run``: screen calls until SIGTERM (or, on ``sim:``, until the demo calls are done).

    Every feature starts as a context manager under one ExitStack: they stop in reverse order,
    on a normal end and on an error alike. Features talk through the event bus, not to each other.
    """
    sim = SimOptions.from_uri(cfg.line.uri) if is_sim(cfg.line.uri) else None
    places = data_places(cfg, sim, demo_db_explicit)
    bus = EventBus()
    watchdog = Watchdog()  # no I/O until told: line jobs and housekeeping report their budgets to it
    with ExitStack() as stack:
        stack.callback(stop.set)  # last out: whatever still waits on ``stop`` ends too
        store = stack.enter_context(open_store(places))
        voice_settings = voice_settings_from_config(cfg)
        warn_household = household_warner(voice_settings, store)
        if warn_household is not None:  # subscribed first: the house hears of a fraud before anyone else
            bus.subscribe(FraudHeard, lambda event: warn_household(event.fraud))
        housekeeping = start_housekeeping(cfg, store, places)
        web = stack.enter_context(run_web(cfg, places))
        modem = stack.enter_context(run_virtual_modem(cfg, sim)) if sim is not None else None
        if modem is not None:
            seed_demo_lists(store, cfg.line.home_region)
        line, *extra_lines = stack.enter_context(open_lines(cfg, sim, modem))
        jobs = LineJobs(guard=lambda: watchdog.busy(LINE_JOB_BUDGET_S, "phoning a relative"))
        # Phoning a relative needs a line that dials (the modem; SIP with an upstream).
        dialer = line if isinstance(line, Dialer) and line.can_dial() else None
        alerts = stack.enter_context(run_alerts(cfg, store, dialer, jobs, bus))
        stack.enter_context(run_ncid(cfg, store, bus))  # NCID clients hear each decision; off unless [ncid] listen
        voice = build_voice(voice_settings, store, places.recordings_dir)
        voice.on_fraud.append(lambda event: bus.publish(FraudHeard(event)))
        if read_notices(places.db_path):
            bus.publish(StoreDamaged(DAMAGED_STORE_MESSAGE))
        if voice.model is None and cfg.voice.transcribe:
            bus.publish(ModelMissing(f"no speech model for {cfg.voice.language}: "
                                     "calls are recorded but not checked for fraud"))
        def hourly() -> None:
            if housekeeping is not None:
                with watchdog.busy(HOUSEKEEPING_BUDGET_S, "recording retention"):
                    housekeeping.run()
            if alerts is not None:
                alerts.check_disk(places.recordings_dir or places.db_path.parent)

        if alerts is not None:
            alerts.check_disk(places.recordings_dir or places.db_path.parent)
        # Start-up and every reload map the config the same way: one source for policy, prompts, call timeout.
        initial = call_settings_from_config(cfg)
        daemon = Daemon(line, store, initial,
                        SessionSettings(voice=voice, screen=screen_settings_from_config(cfg, places.recordings_dir),
                                        speaker=HouseholdSpeaker(cfg.voice.speaker_device)
                                        if cfg.voice.speaker_device else None),
                        bus=bus,
                        no_cid_ring=cfg.line.no_caller_id_ring, housekeeping=hourly, line_jobs=jobs,
                        on_tick=watchdog.beat,
                        # settings saved on the web page apply from the next call; status.json feeds /health
                        reloader=ConfigReloader.for_config(
                            cfg, call_settings_from_config,
                            on_change=[alerts.service.reconfigure] if alerts is not None else []),
                        status=StatusWriter.beside(places.db_path, speech_model=voice.model is not None))
        stack.enter_context(run_panel(cfg, store, alerts, bus))
        if modem is not None:
            assert sim is not None
            run_demo_scenario(cfg, sim, modem, web, places, stop, bus)
        extra_daemons = [_slot_daemon(daemon, extra, cfg) for extra in extra_lines]
        feeds = stack.enter_context(run_feed_updates(cfg, places.db_path, daemon, extra_daemons, bus))
        # The hub hears the bus like any feature; its commands act through the unit's own store, alerts, feeds.
        hub = stack.enter_context(run_hub(cfg, store, places.db_path, places.recordings_dir, bus,
                                    alerts=alerts.service if alerts is not None else None,
                                    check_feeds=feeds.check_now if feeds is not None else None,
                                    speech_model=f"vosk-{cfg.voice.language.value}" if voice.model is not None else None,
                                    model_missing=voice.model is None and cfg.voice.transcribe))
        if hub is not None and isinstance(daemon.reloader, ConfigReloader):
            daemon.reloader.add_listener(hub.reconfigure)  # the household narrows `share`: from the next event on
        stack.callback(watchdog.stopping)
        stack.enter_context(run_slot_loops(extra_daemons, stop))
        watchdog.ready(f"screening on {line.name}" + (f" ({1 + len(extra_lines)} calls at once)" if extra_lines else ""))
        daemon.run(stop)
    if modem is not None:
        _print_summary(store_path=places.db_path, cfg=cfg, count=len(modem.records()))
    return 0


# ---- features: each starts, yields what the others need, and stops on leaving -------------------


@contextmanager
def open_store(places: DataPlaces) -> Iterator[Store]:
    places.db_path.parent.mkdir(parents=True, exist_ok=True)
    set_aside_if_damaged(places.db_path)  # a damaged database must never stop screening: kept aside, a fresh one used
    store = Store(places.db_path)
    store.open()
    try:
        yield store
    finally:
        store.close()


def start_housekeeping(cfg: Config, store: Store, places: DataPlaces) -> RecordingHousekeeping | None:
    """Recordings repaired and retention applied now; the daemon runs it again hourly. Nothing to stop."""
    if places.recordings_dir is None:
        return None
    housekeeping = RecordingHousekeeping(store, places.recordings_dir, RetentionPolicy.from_config(cfg.recording))
    housekeeping.at_start()
    return housekeeping


@contextmanager
def run_web(cfg: Config, places: DataPlaces) -> Iterator[WebProcess | None]:
    web = start_web(cfg, places.db_path, places.recordings_dir)
    try:
        yield web
    finally:
        if web is not None:
            web.stop()


@contextmanager
def run_virtual_modem(cfg: Config, sim: SimOptions) -> Iterator[VirtualModem]:
    modem = VirtualModem(DIALECTS[sim.dialect], cfg.line.cadence, sim.time_scale)
    modem.start()
    try:
        yield modem
    finally:
        modem.stop()


@contextmanager
def open_lines(cfg: Config, sim: SimOptions | None, modem: VirtualModem | None) -> Iterator[list[LineAdapter]]:
    """The line (first), and a SIP line's further call slots: one call loop each. Closed on leaving."""
    uri = cfg.line.uri
    lines: list[LineAdapter] = []
    with ExitStack() as opened:
        if modem is not None and sim is not None:
            lines = [modem_line_from_uri(f"modem://{modem.device_path}", cfg, name="sim",
                                         ring_gap_s=1.5 * CADENCE_PERIOD_S[cfg.line.cadence] * sim.time_scale,
                                         number_display=NdTiming().scaled(sim.time_scale))]
        elif urlsplit(uri).scheme == "sip":
            if cfg.line.nd_adapter is not None:
                log.warning("[line] nd_adapter is ignored on a SIP line: the INVITE carries the caller ID")
            lines = sip_lines_from_config(uri, cfg)
        else:
            modem_line = modem_line_from_uri(uri, cfg)
            modem_line.power_cycler = UsbPowerCycler(urlsplit(uri).path)
            lines = [with_nd_adapter(modem_line, cfg)]
        line, *extra_lines = lines
        # Closed in reverse: the main line last, as before the slots existed.
        opened.callback(line.close)
        for extra in extra_lines:
            extra.open()
            opened.callback(extra.close)
        if isinstance(line, (ModemLine, NdAdapterLine)) and modem is None:
            line.open_or_retry()  # a missing modem is a health problem to report, not a crash
        else:
            line.open()
        cycler = getattr(line, "power_cycler", None)
        if cycler is not None:
            cycler.locate()  # now, while the device is there: it may vanish when wedged
        yield lines


@contextmanager
def run_alerts(cfg: Config, store: Store, dialer: LineAdapter | None, jobs: LineJobs,
               bus: EventBus) -> Iterator[RunningAlerts | None]:  # fmt: skip
    alerts = start_alerts(cfg, store, dialer, jobs)
    if alerts is None:
        yield None
        return
    unsubscribe = alerts.subscribe(bus)
    try:
        yield alerts
    finally:
        unsubscribe()
        alerts.stop()


@contextmanager
def run_panel(cfg: Config, store: Store, alerts: RunningAlerts | None, bus: EventBus) -> Iterator[None]:
    panel = start_panel(cfg, store, alerts)
    if panel is None:
        yield
        return
    unsubscribe = panel.subscribe(bus)
    try:
        yield
    finally:
        unsubscribe()
        panel.close()


def run_demo_scenario(cfg: Config, sim: SimOptions, modem: VirtualModem, web: WebProcess | None,
                      places: DataPlaces, stop: threading.Event, bus: EventBus) -> None:  # fmt: skip
    """Print each demo call as it is screened; place the scripted calls; stop when they are done."""
    scenario = load_scenario(sim.scenario) if sim.scenario else demo_scenario()
    show = _demo_printer(cfg.line.home_region)
    bus.subscribe(CallScreened, lambda event: show(event.call_id, event.caller, event.decision))
    print(f"mamoru demo: virtual modem on {modem.device_path}, {len(scenario)} scripted calls, "
          f"database {places.db_path}", flush=True)
    after = None
    if sim.stay:
        port = web.wait_ready() if web is not None else None
        page = f"http://127.0.0.1:{port}/" if port else None
        after = ("mamoru demo: the scripted calls are done. "
                 + (f"See them on the web page: {page} (first visit: set a password). " if page else "")
                 + "Press Ctrl-C to stop.")  # fmt: skip
    _stop_when_scenario_done(modem, scenario, stop, after=after)


@contextmanager
def run_feed_updates(cfg: Config, db_path: Path, daemon: Daemon, others: Sequence[Daemon],
                     bus: EventBus) -> Iterator[FeedTimer | None]:  # fmt: skip
    feeds = start_feed_updates(cfg, db_path, daemon, others, bus)
    try:
        yield feeds
    finally:
        if feeds is not None:
            feeds.stop()


@contextmanager
def run_slot_loops(daemons: Sequence[Daemon], stop: threading.Event) -> Iterator[None]:
    """A call loop thread per further SIP call slot; on leaving, ``stop`` is set and they are joined."""
    threads: list[threading.Thread] = []
    try:
        for n, daemon in enumerate(daemons, start=2):
            thread = threading.Thread(target=daemon.run, args=(stop,), name=f"call-loop-{n}", daemon=True)
            thread.start()
            threads.append(thread)
        yield
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=15.0)


def _slot_daemon(main: Daemon, line: LineAdapter, cfg: Config) -> Daemon:
    """A call loop for another slot of the same SIP line: the main loop's rules, voice and hooks.

    Housekeeping and line jobs stay with the main loop; each loop reloads changed settings itself.
    """
    return Daemon(line, main.store, main.call, main.settings, main.bus, no_cid_ring=main.no_cid_ring,
                  on_tick=main.on_tick,
                  reloader=ConfigReloader.for_config(cfg, call_settings_from_config), status=main.status,
                  _lists=main.list_cache())


def voice_settings_from_config(cfg: Config) -> VoiceSettings:
    """``[voice]`` (and the line's region, for local times) as the voice side's own settings."""
    v = cfg.voice
    return VoiceSettings(language=v.language, prompts_dir=v.prompts_dir, transcribe=v.transcribe,
                         model_dir=v.model_dir, models_dir=v.models_dir, household_warning=v.household_warning,
                         speaker_device=v.speaker_device, home_region=cfg.line.home_region,
                         engine=v.engine, whisper_step_s=v.whisper_step_s)


def screen_settings_from_config(cfg: Config, recordings_dir: Path | None) -> ScreenSettings:
    """``[screening]`` as the screen flow's settings; messages are kept beside the recordings."""
    s = cfg.screening
    return ScreenSettings(challenge=s.challenge, name_cap_s=s.name_prompt, decide_timeout_s=float(s.decide_timeout_s),
                          passcode=s.passcode, message_cap_s=float(s.message_cap_s),
                          messages_dir=recordings_dir / "messages" if recordings_dir is not None else None)


def call_settings_from_config(cfg: Config) -> CallSettings:
    """What a call is screened with; rebuilt by the daemon when the config file changes."""
    return CallSettings(policy_from_config(cfg), build_prompts(voice_settings_from_config(cfg)),
                        float(cfg.line.call_timeout_s))


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
                       bus: EventBus | None = None) -> FeedTimer | None:  # fmt: skip
    """Signed feeds are checked on their own thread every ``[feeds] update_minutes`` (0 = never)."""
    if cfg.feeds.update_minutes <= 0:
        return None
    # The other call loops of a SIP line share the main loop's lists snapshot: offering it there is enough.
    loops = [daemon, *others]
    timer = FeedTimer(db_path, cfg.feeds.dir, interval_s=cfg.feeds.update_minutes * 60.0,
                      max_age_days=cfg.feeds.max_age_days,
                      line_idle=daemon.line_idle if not others else lambda: all(d.line_idle() for d in loops),
                      on_lists=daemon.offer_lists, hold_lists=daemon.hold_lists, limits=feed_limits(cfg),
                      on_refused=(lambda update: bus.publish(FeedRefused(update))) if bus is not None else None)  # fmt: skip
    timer.start()
    return timer


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
