"""Container events for GetContainerEvents: a bounded fan-out that never blocks the runtime.

The domain's transition points publish one :class:`ContainerEvent` per lifecycle step of a
container or pod sandbox (its pause container), in the order the steps happen. Every
subscriber (a GetContainerEvents stream) gets its own bounded queue: a subscriber that falls
``queue_size`` events behind is dropped with a log line, never waited for. ``close()`` (daemon
shutdown) ends every stream cleanly.
"""

from __future__ import annotations

import enum
import logging
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_QUEUE_SIZE = 1024


class EventKind(enum.Enum):
    """The CRI's ContainerEventType, by name."""

    CREATED = "CONTAINER_CREATED_EVENT"
    STARTED = "CONTAINER_STARTED_EVENT"
    STOPPED = "CONTAINER_STOPPED_EVENT"
    DELETED = "CONTAINER_DELETED_EVENT"


@dataclass(frozen=True)
class ContainerEvent:
    """One step of a container's (or a pod's pause container's: object_id == pod_id) lifecycle."""

    kind: EventKind
    object_id: str
    pod_id: str
    # The pod sandbox object (the server builds its status from it, after its removal too).
    pod: Any = field(default=None, compare=False, repr=False)
    at_ns: int = field(default_factory=time.time_ns)


class _End:
    """Put in a queue to end its stream: ``dropped`` says whether the subscriber fell behind."""

    def __init__(self, dropped: bool) -> None:
        self.dropped = dropped


class Subscription:
    """One subscriber's queue; iterate it for events until the stream ends."""

    def __init__(self, bus: EventBus, size: int) -> None:
        self._bus = bus
        self._queue: queue.Queue[ContainerEvent | _End] = queue.Queue(size + 1)  # +1: room for the end
        self._size = size
        self.dropped = False
        self.closed = False

    def _offer(self, event: ContainerEvent) -> bool:
        """Queue ``event``; False (and the stream ended) if the subscriber is ``size`` behind."""
        if self._queue.qsize() >= self._size:
            self._end(dropped=True)
            return False
        self._queue.put_nowait(event)
        return True

    def _end(self, dropped: bool) -> None:
        if self.closed:
            return
        self.closed = True
        self.dropped = dropped
        # The queue keeps one place beyond its size for this.
        self._queue.put_nowait(_End(dropped))

    def close(self) -> None:
        """End this subscription (the client went away)."""
        self._bus._unsubscribe(self)
        self._end(dropped=False)

    def __iter__(self) -> Iterator[ContainerEvent]:
        while True:
            item = self._queue.get()
            if isinstance(item, _End):
                return
            yield item


class EventBus:
    """Publishes container events to every current subscriber."""

    def __init__(self, queue_size: int = DEFAULT_QUEUE_SIZE) -> None:
        self.queue_size = queue_size
        self._subscribers: list[Subscription] = []
        self._lock = threading.Lock()
        self._closed = False

    def subscribe(self) -> Subscription:
        """A new subscription; events published from now on are delivered to it."""
        sub = Subscription(self, self.queue_size)
        with self._lock:
            if self._closed:
                sub._end(dropped=False)
            else:
                self._subscribers.append(sub)
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            if sub in self._subscribers:
                self._subscribers.remove(sub)

    def publish(self, event: ContainerEvent) -> None:
        """Deliver ``event`` to every subscriber without waiting; drop those that fell behind."""
        with self._lock:  # one publisher at a time: every subscriber sees the same order
            dropped = [sub for sub in self._subscribers if not sub._offer(event)]
            for sub in dropped:
                self._subscribers.remove(sub)
        if dropped:
            log.warning(
                "container events subscriber dropped: it fell behind",
                extra={"queue_size": self.queue_size, "dropped": len(dropped), "container_id": event.object_id},
            )

    def subscribers(self) -> int:
        with self._lock:
            return len(self._subscribers)

    def close(self) -> None:
        """End every subscription cleanly (daemon shutdown); later subscriptions end at once."""
        with self._lock:
            self._closed = True
            subscribers, self._subscribers = self._subscribers, []
        for sub in subscribers:
            sub._end(dropped=False)
