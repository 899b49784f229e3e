"""The hub client as the composition root starts it: ``[hub]`` mapped into ``HubSettings``, and the
unit's own actions (lists, alerts, recordings, feeds) handed to it as plain callables."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from blocklist.store import Store
from screening.alerts import AlertService
from screening.config import Config
from screening.core.model import ListEntry, ListKind, MatchKind
from screening.events import EventBus
from screening.hub_client.client import HubClient, HubSetupError
from screening.hub_client.commands import FAMILY_PREFIX, UnitActions
from screening.hub_client.queue import queue_path_for
from screening.hub_client.settings import HubSettings

log = logging.getLogger(__name__)

WEB_SOURCE = "family"  # what the family adds from the hub's page counts as the family's own entry
HUB_SOURCE = "hub"
RECENT_ALERTS = 200  # an acknowledgement from the hub concerns a recent call's alerts


def hub_settings_from_config(cfg: Config) -> HubSettings | None:
    """None when ``[hub] url`` is empty; HubSetupError naming what is missing otherwise."""
    h = cfg.hub
    if h.url is None:
        return None
    missing = [name for name, value in (("unit_id", h.unit_id), ("credentials_file", h.credentials_file),
                                        ("command_key", h.command_key)) if not value]  # fmt: skip
    if missing:
        raise HubSetupError(f"[hub] url is set but {', '.join(missing)} is not: the hub link stays off")
    assert h.unit_id is not None and h.credentials_file is not None and h.command_key is not None
    return HubSettings(url=h.url, unit_id=h.unit_id, credentials_file=h.credentials_file, ca_file=h.ca_file,
                       command_key=h.command_key, share=h.share, public_url=h.public_url,
                       home_assistant=h.home_assistant, health_interval_s=h.health_minutes * 60.0,
                       queue_limit=h.queue_limit)  # fmt: skip


def unit_actions(store: Store, recordings_dir: Path | None, alerts: AlertService | None,
                 check_feeds: Callable[[], None] | None) -> UnitActions:  # fmt: skip
    def add(kind: ListKind) -> Callable[[str, str], None]:
        def add_number(e164: str, by: str) -> None:
            source = WEB_SOURCE if by.startswith(FAMILY_PREFIX) else HUB_SOURCE
            store.add_entry(ListEntry(kind, MatchKind.EXACT, e164, source=source, note=f"hub: {by}"[:200]))

        return add_number

    def acknowledge(call_id: int, by: str) -> int:
        assert alerts is not None
        open_alerts = [a for a, _ in alerts.outbox.recent(RECENT_ALERTS) if a.call_id == call_id and a.acked_at is None]
        return sum(alerts.acknowledge(a.id, by) for a in open_alerts)

    def recording(call_id: int) -> Path | None:
        if recordings_dir is None:
            return None
        try:
            row = store.get_call(call_id)
        except KeyError:
            return None
        if not row.recording:
            return None
        base = recordings_dir.resolve()
        path = (base / row.recording).resolve()
        return path if path.is_relative_to(base) else None  # a row never points outside the recordings

    return UnitActions(block=add(ListKind.BLOCK), allow=add(ListKind.ALLOW),
                       acknowledge=acknowledge if alerts is not None else None, recording=recording,
                       check_feeds=check_feeds)  # fmt: skip


@contextmanager
def run_hub(cfg: Config, store: Store, db_path: Path, recordings_dir: Path | None, bus: EventBus, *,
            alerts: AlertService | None = None, check_feeds: Callable[[], None] | None = None,
            speech_model: str | None = None, model_missing: bool = False) -> Iterator[HubClient | None]:  # fmt: skip
    """The hub link, when configured; a broken ``[hub]`` is logged and screening goes on without it."""
    try:
        settings = hub_settings_from_config(cfg)
        if settings is None:
            yield None
            return
        client = HubClient(settings, queue_path_for(db_path), db_path,
                           unit_actions(store, recordings_dir, alerts, check_feeds), speech_model=speech_model,
                           model_missing=model_missing)  # fmt: skip
        client.start()
    except HubSetupError as exc:
        log.error("%s", exc)
        yield None
        return
    unsubscribe = client.subscribe(bus)
    try:
        yield client
    finally:
        unsubscribe()
        client.stop()
