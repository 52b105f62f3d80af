"""CPU rates (``usage_nano_cores``) from cumulative usage, against each key's previous sample."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass

# kubelet, crictl and monitoring agents poll at once; a rate over the few milliseconds between
# two of them would be noise, so a sample younger than this keeps the previous rate.
MIN_WINDOW_NS = 1_000_000_000


@dataclass(frozen=True)
class _Last:
    at_ns: int
    usage_ns: int
    nano_cores: int | None


class CpuRates:
    """The rate of each key's cumulative CPU counter since its previous sample (thread-safe)."""

    def __init__(self, min_window_ns: int = MIN_WINDOW_NS):
        self._min_window_ns = min_window_ns
        self._last: dict[str, _Last] = {}
        self._lock = threading.Lock()

    def rate(self, key: str, usage_ns: int, at_ns: int) -> int | None:
        """Nanocores used since the previous sample of ``key``; None for a first sample."""
        with self._lock:
            last = self._last.get(key)
            if last is None or usage_ns < last.usage_ns:  # first sight, or a counter that restarted
                self._last[key] = _Last(at_ns, usage_ns, None)
                return None
            elapsed = at_ns - last.at_ns
            if elapsed < self._min_window_ns:
                return last.nano_cores
            nano_cores = (usage_ns - last.usage_ns) * 1_000_000_000 // elapsed
            self._last[key] = _Last(at_ns, usage_ns, nano_cores)
            return nano_cores

    def retain(self, keys: Iterable[str]) -> None:
        """Forget every key not in ``keys`` (containers and pods that are gone)."""
        keep = set(keys)
        with self._lock:
            for key in [k for k in self._last if k not in keep]:
                del self._last[key]
