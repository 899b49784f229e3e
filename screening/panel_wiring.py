"""The optional front panel (firmware/panel.py), built from ``[panel]`` and attached to the daemon."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from blocklist.store import Store
from screening.config import Config

log = logging.getLogger(__name__)


@dataclass(slots=True)
class RunningPanel:
    panel: object  # firmware.panel.FrontPanel
    hooks: Any  # firmware.panel.PanelHooks (not imported: the driver imports this module's callers)

    def close(self) -> None:
        self.panel.close()  # type: ignore[attr-defined]


def start_panel(cfg: Config, store: Store, alerts: object | None) -> RunningPanel | None:
    """None when no pin is configured (no panel fitted) or gpiozero is not installed."""
    pins = cfg.panel
    if not any((pins.status_led, pins.red_led, pins.button, pins.buzzer)):
        return None
    try:
        from firmware.panel import FrontPanel, PanelHooks, PanelPins, PanelState
    except ImportError as exc:  # gpiozero missing: screening goes on without the panel
        log.error("front panel configured but not available: %s (pip install 'mamoru[panel]')", exc)
        return None
    panel = FrontPanel(PanelPins(pins.status_led, pins.red_led, pins.button, pins.buzzer))
    hooks = PanelHooks(panel, store, alerts)  # type: ignore[arg-type]
    if panel.open():
        panel.show(PanelState.READY)
    return RunningPanel(panel, hooks)
