"""The event bus: delivery by type, in subscription order, and no subscriber can break the publisher."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest

from screening.events import EventBus, LineFault, LineRestored


def test_events_reach_the_subscribers_of_their_type_in_order() -> None:
    bus = EventBus()
    heard: list[str] = []
    bus.subscribe(LineFault, lambda event: heard.append(f"first {event.message}"))
    bus.subscribe(LineRestored, lambda event: heard.append(f"restored {event.message}"))
    bus.subscribe(LineFault, lambda event: heard.append(f"second {event.message}"))
    bus.publish(LineFault("gone"))
    assert heard == ["first gone", "second gone"]


def test_a_failing_subscriber_is_logged_and_the_others_still_hear(caplog: pytest.LogCaptureFixture) -> None:
    bus = EventBus()
    heard: list[str] = []

    def broken(event: LineFault) -> None:
        raise RuntimeError("boom")

    bus.subscribe(LineFault, broken)
    bus.subscribe(LineFault, lambda event: heard.append(event.message))
    with caplog.at_level(logging.ERROR, logger="screening.events"):
        bus.publish(LineFault("gone"))  # must not raise into the call loop
    assert heard == ["gone"]
    assert "LineFault: a subscriber failed" in caplog.text


def test_unsubscribed_handlers_hear_nothing_more() -> None:
    bus = EventBus()
    heard: list[str] = []
    unsubscribe = bus.subscribe(LineFault, lambda event: heard.append(event.message))
    bus.publish(LineFault("one"))
    unsubscribe()
    bus.publish(LineFault("two"))
    assert heard == ["one"]


def test_run_daemon_stops_what_it_started_in_reverse_order_when_a_later_part_fails(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    from screening import runner
    from screening.config import parse_config

    cfg = parse_config({"line": {"uri": "sim:"}, "store": {"db": str(tmp_path / "calls.db")},
                        "recording": {"enabled": False}, "web": {"enabled": False}}, "test")  # fmt: skip
    stopped: list[str] = []
    real_modem_stop, real_line_close = runner.VirtualModem.stop, runner.ModemLine.close
    monkeypatch.setattr(runner.VirtualModem, "stop", lambda self, *a: (stopped.append("modem"), real_modem_stop(self)))
    monkeypatch.setattr(runner.ModemLine, "close", lambda self: (stopped.append("line"), real_line_close(self)))

    def broken_voice(*args: object, **kwargs: object) -> None:
        raise RuntimeError("voice failed to start")

    monkeypatch.setattr(runner, "build_voice", broken_voice)
    stop = threading.Event()
    with pytest.raises(RuntimeError, match="voice failed"):
        runner.run_daemon(cfg, stop)
    assert stopped == ["line", "modem"] and stop.is_set()
