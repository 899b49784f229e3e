"""The call loop: line events in, one CallSession per offered call.

Runs in the main thread. The line adapter owns its device thread; this loop
only waits on ``next_event`` with a timeout, so a stop request (SIGTERM) is
honoured within a second even when the line is silent.

Settings changed while running (the web settings page rewrites the config file
or drops a recording into ``voice.prompts_dir``) are picked up between calls by
a :class:`ConfigReloader`: the rules, the announcements and anything hooked to
``on_change`` (the relatives' alerts) apply from the next call on, and a file
that fails validation is logged and ignored. The loop also keeps
``status.json`` (``screening.status``) current for the web page's health view.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

from blocklist.lists import NumberLists
from blocklist.store import Store
from screening.config import BUILTIN_SOURCE, COMMAND_LINE_SOURCE, Config, ConfigError, load_config
from screening.core.line import (
    CallOffered,
    HandsetOffHook,
    HandsetOnHook,
    HandsetStale,
    LineAdapter,
    LineEvent,
    LineFault,
    LineRestored,
    Ring,
    RingingStopped,
)
from screening.core.model import Action, CallerID, Decision, EventKind, Prompt
from screening.events import CallScreened, Event, EventBus
from screening.line_jobs import LineJobs
from screening.list_cache import ListCache
from screening.session import CallSession, CallSettings, Outcome, SessionSettings
from screening.status import LineProblem, StatusWriter

log = logging.getLogger(__name__)

EVENT_WAIT_S = 0.5  # how often the loop wakes to check for a stop request


class SettingsSource(Protocol):
    def poll(self) -> CallSettings | None:
        """New settings when their sources changed since the last poll, else None. Never raises."""
        ...


# What was built once at start (the line, the store, the speech model, threads): a change needs a restart.
RESTART_SECTIONS = ("line", "store", "log", "recording", "panel", "feeds", "web", "sip", "screening")
RESTART_VOICE_KEYS = ("language", "model_dir", "models_dir", "transcribe", "household_warning", "speaker_device",
                      "line_tap_device")
_Fingerprint = tuple[tuple[int, int, int] | None, ...]


class ConfigReloader:
    """Re-reads the config file, and the prompt recordings it names, when either changed on disk.

    ``build`` turns a valid config into CallSettings (the runner's policy and
    PromptLibrary builders); ``on_change`` gets every newly applied config (e.g.
    the alert service's relatives). ``[line]`` and ``[store]`` stay as the daemon
    started with them (command-line overrides included); changes that need a
    restart are logged. The first poll only takes note of the files as they are.
    """

    def __init__(self, path: Path, current: Config, build: Callable[[Config], CallSettings],
                 on_change: Sequence[Callable[[Config], None]] = ()) -> None:  # fmt: skip
        self.path = Path(path)
        self.current = current
        self._build = build
        self._on_change = list(on_change)
        self._seen: _Fingerprint | None = None
        self._on_disk: Config | None = None  # the file as last read, without command-line overrides

    def add_listener(self, hook: Callable[[Config], None]) -> None:
        """One more feature to hear every newly applied config (a feature started after the daemon)."""
        self._on_change.append(hook)

    @classmethod
    def for_config(cls, cfg: Config, build: Callable[[Config], CallSettings],
                   on_change: Sequence[Callable[[Config], None]] = ()) -> ConfigReloader | None:  # fmt: skip
        """None when the config did not come from a file (built-in defaults): nothing to watch."""
        if cfg.source in (BUILTIN_SOURCE, COMMAND_LINE_SOURCE):
            return None
        return cls(Path(cfg.source), cfg, build, on_change)

    def poll(self) -> CallSettings | None:
        seen = self._fingerprint(self.current)
        if self._seen is None:
            self._seen = seen
            self._on_disk = self._load_quietly()
            return None
        if seen == self._seen:
            return None
        self._seen = seen
        try:
            loaded = load_config(self.path, env={})
        except ConfigError as exc:
            log.error("settings file changed but is invalid; still screening with the previous settings:\n%s", exc)
            return None
        new = replace(loaded, line=self.current.line, store=self.current.store)
        # Taken before building: a recording that lands while the prompts load is seen next time.
        seen_new = self._fingerprint(new)  # prompts_dir may have moved
        try:
            settings = self._build(new)
        except Exception:  # noqa: BLE001 -- a bad new setting must not stop screening with the old ones
            log.exception("settings file changed but could not be applied; keeping the previous settings")
            return None
        restart = self._needs_restart(loaded)
        self.current, self._on_disk, self._seen = new, loaded, seen_new
        for hook in self._on_change:
            try:
                hook(new)
            except Exception:  # noqa: BLE001 -- one hook's bug must not undo the others
                log.exception("settings changed: a component could not take the new settings")
        log.info("settings reloaded from %s: rules and announcements apply from the next call", self.path)
        if restart:
            log.warning("settings changed that apply only after mamoru restarts: %s", ", ".join(restart))
        return settings

    def _load_quietly(self) -> Config | None:
        try:
            return load_config(self.path, env={})
        except ConfigError:
            return None  # the daemon started from it, so it was valid a moment ago; compare nothing

    def _needs_restart(self, loaded: Config) -> list[str]:
        before = self._on_disk
        if before is None:
            return []
        changed = [name for name in RESTART_SECTIONS if getattr(loaded, name, None) != getattr(before, name, None)]
        # (a new voice.language already changed the announcements; the model and phrases wait)
        changed += [f"voice.{key}" for key in RESTART_VOICE_KEYS
                    if getattr(loaded.voice, key) != getattr(before.voice, key)]
        return changed

    def _fingerprint(self, cfg: Config) -> _Fingerprint:
        """(inode, mtime, size) of the config and of every prompt override (the names PromptLibrary reads)."""
        paths = [self.path]
        if cfg.voice.prompts_dir is not None:
            paths += [Path(cfg.voice.prompts_dir) / f"{prompt.value}.wav" for prompt in Prompt]
        return tuple(_stat(p) for p in paths)


def _stat(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


@dataclass(slots=True)
class Daemon:
    line: LineAdapter
    store: Store
    call: CallSettings  # rules, announcements, call timeout: replaced between calls when the config changes
    settings: SessionSettings = field(default_factory=SessionSettings)
    bus: EventBus | None = None  # CallDecided, CallScreened and the line's faults go out here
    no_cid_ring: int = 2  # a call still without caller ID on this ring is screened as "no caller ID"
    on_tick: Callable[[], object] | None = None  # every loop wake-up (≤ 0.5 s apart): the systemd watchdog
    line_jobs: LineJobs | None = None  # e.g. phoning a relative: runs here, between calls
    housekeeping: Callable[[], None] | None = None  # e.g. recording retention; run between calls
    housekeeping_interval_s: float = 3600.0
    reloader: SettingsSource | None = None  # settings changed on disk apply from the next call
    status: StatusWriter | None = None  # None: status.json beside the store's database
    _lists: ListCache | None = None
    _in_call: bool = False  # read by other threads (feed updates wait for an idle line)
    _screened_this_ringing: bool = False
    _last_offered: CallerID | None = None  # to ignore a modem repeating the same caller-ID block
    _session_ended_at: float = 0.0  # monotonic; rings older than this were the screened call's
    _guarded: tuple[int, Decision] | None = None  # this ringing's call, held back by the call-waiting guard
    calls_screened: int = 0

    def run(self, stop: threading.Event, max_calls: int | None = None) -> None:
        """Screen calls until ``stop`` is set (or ``max_calls`` were screened)."""
        self._cache().current()
        settings = self.settings if self.on_tick is None else replace(self.settings, tick=self.on_tick)
        session = CallSession(self.line, self.store, self.call, settings, self.bus)
        if self.status is None:
            self.status = StatusWriter.beside(self.store.path)
        self.status.started()
        self._reload(session)  # the first poll notes the files as they are now
        log.info("screening on line %s (home region %s)", self.line.name, self.call.policy.home_region)
        next_housekeeping = time.monotonic() + self.housekeeping_interval_s
        try:
            while not stop.is_set():
                if self.on_tick is not None:
                    self.on_tick()  # a wedged loop stops these, and systemd restarts the daemon
                self.status.tick()
                if self.housekeeping is not None and time.monotonic() >= next_housekeeping:
                    next_housekeeping = time.monotonic() + self.housekeeping_interval_s
                    self.housekeeping()
                if max_calls is not None and self.calls_screened >= max_calls:
                    break
                try:
                    event = self.line.next_event(EVENT_WAIT_S)
                except Exception:  # noqa: BLE001 -- never let one bad event end screening
                    log.exception("line %s: reading events failed", self.line.name)
                    time.sleep(EVENT_WAIT_S)
                    continue
                if event is not None:
                    self._handle(event, session)
                elif not self._screened_this_ringing:
                    # The line is idle (nothing rang since the last wait): reload settings now,
                    # so a call rarely waits for it, then run queued jobs. A list edit is
                    # rebuilt on a background thread from here, before the next call rings.
                    self._reload(session)
                    self._cache().refresh()
                    if self.line_jobs is not None:
                        self.line_jobs.run_pending()
        finally:
            self.status.stopped()

    def _reload(self, session: CallSession) -> None:
        """Apply settings changed on disk to the session (between calls only). Never raises."""
        if self.reloader is None:
            return
        try:
            new = self.reloader.poll()
        except Exception:  # noqa: BLE001 -- the reloader promises not to raise; screening matters more
            log.exception("checking for changed settings failed")
            return
        if new is None:
            return
        self.call = session.call = new

    def line_idle(self) -> bool:
        """No call being screened or handled, and none ringing (safe to call from any thread)."""
        return not self._in_call and not self._screened_this_ringing

    def hold_lists(self, seconds: float) -> None:
        """The feed updater is about to write: screen with the current snapshot until it offers the next."""
        self._cache().hold(seconds)

    def offer_lists(self, lists: NumberLists) -> None:
        """Swap in a lists snapshot built elsewhere (the feed updater's thread); any thread."""
        self._cache().offer(lists)

    def list_cache(self) -> ListCache:
        """The lists snapshot this loop screens with (another loop of the same line may share it)."""
        return self._cache()

    def _cache(self) -> ListCache:
        if self._lists is None:
            self._lists = ListCache(self.store)
        return self._lists

    def _handle(self, event: LineEvent, session: CallSession) -> None:
        match event:
            case CallOffered(caller=caller, at=at):
                # A caller-ID block is sent once per call, so a new block is a new call, even
                # if the previous (allowed) call's ringing has not timed out yet. The same block
                # queued while we were on its call is the line repeating it, not a new call.
                if caller == self._last_offered and (self._screened_this_ringing or at <= self._session_ended_at):
                    log.debug("duplicate caller ID for a call already screened: %s", caller)
                    return
                if not caller.has_number and caller.reason is None:
                    # A block with neither number nor reason (line noise, a partial block) is not
                    # evidence of a call; a real one without caller ID is screened by ring count.
                    log.warning("caller-ID block without number or reason ignored: %r", caller.raw_lines)
                    return
                self._last_offered = caller
                self._screen(session, caller)
            case Ring(count=count, at=at):
                if self._guarded is not None:
                    # Only an on-hook line rings: if the line now agrees, act on the held-back call
                    # (even on a ring queued while it was being held back: the line was not touched).
                    if not self.line.handset_off_hook():
                        self._act_on_guarded(session)
                    return
                if at <= self._session_ended_at:
                    return  # queued while we were on the call it belonged to
                if count >= self.no_cid_ring and not self._screened_this_ringing:
                    log.info("ring %d and still no caller ID: screening as no caller ID", count)
                    self._screen(session, CallerID())
            case RingingStopped():
                self._screened_this_ringing = False
                self._last_offered = None
                self._guarded = None
            case HandsetOffHook():
                self.store.add_event(None, EventKind.HANDSET, state="off_hook")
            case HandsetOnHook():
                self.store.add_event(None, EventKind.HANDSET, state="on_hook")
                if self.status is not None:
                    self.status.line_problem(None)
            case HandsetStale(message=message):
                log.info("line %s: handset state doubted: %s", self.line.name, message)  # the line warned
                self.store.add_event(None, EventKind.HANDSET, state="stale", message=message)
                if self.status is not None:
                    self.status.line_problem(LineProblem.HANDSET_STUCK)
                self._publish(event)
            case LineFault(message=message):
                log.error("line %s fault: %s", self.line.name, message)
                if self.status is not None:
                    self.status.line_fault(message)
                self.store.add_event(None, EventKind.LINE_FAULT, message=message)
                self._publish(event)
            case LineRestored(message=message):
                log.info("line %s restored: %s", self.line.name, message)
                if self.status is not None:
                    self.status.line_restored(message)
                self.store.add_event(None, EventKind.LINE_RESTORED, message=message)
                self._publish(event)
            case _:
                log.debug("line event ignored: %r", event)

    def _screen(self, session: CallSession, caller: CallerID) -> None:
        assert self._lists is not None
        self._screened_this_ringing = True
        self._in_call = True
        try:
            # A few stat() calls; settings saved less than one loop wake-up ago still count.
            self._reload(session)
            call_id, decision, end_reason = session.screen(caller, self._lists.current())
        finally:
            self._in_call = False
        self._session_ended_at = self._line_released(session)
        self.calls_screened += 1
        if self.status is not None:
            self.status.call_screened()
        self._after_acting(call_id, decision, end_reason)
        self._publish(CallScreened(call_id, caller, decision))

    def _publish(self, event: Event) -> None:
        if self.bus is not None:
            self.bus.publish(event)

    def _after_acting(self, call_id: int, decision: Decision, end_reason: str) -> None:
        if end_reason == Outcome.LINE_IN_USE:
            # Not answered: the rest of this ringing is still this call (one ringing, one row).
            self._guarded = (call_id, decision)
        elif decision.action is not Action.ALLOW:
            # We answered and hung up: the next RING belongs to a new call.
            self._screened_this_ringing = False
            self._guarded = None

    def _act_on_guarded(self, session: CallSession) -> None:
        assert self._guarded is not None
        call_id, decision = self._guarded
        self._guarded = None
        log.warning("call %s: the line rang, so the handset is down after all: acting now", call_id)
        self.store.add_event(call_id, EventKind.HANDSET, guard="line rang: handset is on-hook, acting")
        self._in_call = True
        try:
            end_reason = session.act(call_id, decision)
        finally:
            self._in_call = False
        self._session_ended_at = self._line_released(session)
        self._after_acting(call_id, decision, end_reason)

    @staticmethod
    def _line_released(session: CallSession) -> float:
        """Where this call's events end: when the line went back on-hook, not when the recording
        and the row were finished (a quick redial's caller ID may already be queued by then)."""
        return session.released_at if session.released_at is not None else time.monotonic()
