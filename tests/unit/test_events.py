"""The container events fan-out: order, many subscribers, a slow one dropped, clean shutdown."""

from __future__ import annotations

import logging

import pytest

from crio_py.events import ContainerEvent, EventBus, EventKind


def event(kind: EventKind, cid: str = "c1") -> ContainerEvent:
    return ContainerEvent(kind, cid, "pod")


def test_every_subscriber_gets_every_event_in_order() -> None:
    bus = EventBus()
    subs = [bus.subscribe(), bus.subscribe()]
    kinds = [EventKind.CREATED, EventKind.STARTED, EventKind.STOPPED, EventKind.DELETED]
    for kind in kinds:
        bus.publish(event(kind))
    bus.close()
    for sub in subs:
        assert [e.kind for e in sub] == kinds
        assert not sub.dropped


def test_a_slow_subscriber_is_dropped_and_never_blocks(caplog: pytest.LogCaptureFixture) -> None:
    bus = EventBus(queue_size=3)
    slow, fast = bus.subscribe(), bus.subscribe()
    fast_events = iter(fast)
    got = []
    with caplog.at_level(logging.WARNING):
        for i in range(100):  # never waits for the slow one
            bus.publish(event(EventKind.CREATED, f"c{i}"))
            got.append(next(fast_events).object_id)  # the fast one keeps up
    assert "subscriber dropped" in caplog.text
    assert bus.subscribers() == 1
    assert len(list(slow)) == 3 and slow.dropped
    assert got == [f"c{i}" for i in range(100)]
    bus.close()
    assert list(fast_events) == [] and not fast.dropped


def test_close_ends_streams_and_later_subscriptions_at_once() -> None:
    bus = EventBus()
    sub = bus.subscribe()
    bus.close()
    assert list(sub) == [] and not sub.dropped
    assert list(bus.subscribe()) == []


def test_a_closed_subscription_gets_nothing_more() -> None:
    bus = EventBus()
    sub = bus.subscribe()
    bus.publish(event(EventKind.CREATED))
    sub.close()
    bus.publish(event(EventKind.STARTED))
    assert [e.kind for e in sub] == [EventKind.CREATED]
    assert bus.subscribers() == 0
