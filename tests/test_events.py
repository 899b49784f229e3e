"""The event bus: delivery by type, in subscription order, and no subscriber can break the publisher."""

from __future__ import annotations

import logging

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
