"""Single-use, expiring, unguessable tokens: what Exec/Attach/PortForward hand out in their URL."""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict

from crio_py.errors import CrioError
from crio_py.streaming.backend import Request

# As kubelet's streaming server: at most this many requests waiting for their client.
MAX_IN_FLIGHT = 1000
TOKEN_BYTES = 32


class TooManyRequests(CrioError):
    code = "RESOURCE_EXHAUSTED"


class TokenCache:
    """Requests by token; a token works once and only until it expires."""

    def __init__(self, ttl: float, max_in_flight: int = MAX_IN_FLIGHT, clock: object = time.monotonic):
        self.ttl = ttl
        self.max_in_flight = max_in_flight
        self._clock = clock
        self._items: OrderedDict[str, tuple[float, Request]] = OrderedDict()
        self._lock = threading.Lock()

    def _expire(self, now: float) -> None:
        while self._items:
            token, (deadline, _) = next(iter(self._items.items()))
            if deadline > now:
                break
            del self._items[token]

    def insert(self, request: Request) -> str:
        """A new token for ``request``; RESOURCE_EXHAUSTED when too many wait for their client."""
        now = self._clock()  # type: ignore[operator]
        with self._lock:
            self._expire(now)
            if len(self._items) >= self.max_in_flight:
                raise TooManyRequests(
                    f"{len(self._items)} streaming requests are waiting for their client: try again later"
                )
            token = secrets.token_urlsafe(TOKEN_BYTES)
            self._items[token] = (now + self.ttl, request)
            return token

    def consume(self, token: str) -> Request | None:
        """The request of ``token``, removing it; None if unknown, used or expired."""
        now = self._clock()  # type: ignore[operator]
        with self._lock:
            self._expire(now)
            item = self._items.pop(token, None)
        return item[1] if item else None
