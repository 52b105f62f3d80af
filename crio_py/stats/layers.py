"""Writable layer usage of containers, walked in a background thread and served from a cache.

kubelet asks for every container's stats every 10 s; walking every upper directory on each RPC
would cost a directory walk per container per call, so RPCs only read what the last sweep found.
A container the sweep has not seen yet wakes it and has no writable-layer figures until then.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from crio_py.storage.usage import tree_usage

log = logging.getLogger(__name__)

# How often every writable layer is walked again (kubelet's housekeeping period).
SWEEP_INTERVAL = 10.0


@dataclass(frozen=True)
class LayerUsage:
    at_ns: int
    used_bytes: int
    inodes: int


class WritableLayers:
    """The cache of writable-layer usage, kept by a sweeper thread (``start``/``stop``)."""

    def __init__(
        self,
        layers: Callable[[], dict[str, Path]],
        interval: float = SWEEP_INTERVAL,
        after_sweep: Callable[[set[str]], None] | None = None,
    ):
        """``layers`` maps each container id to its upper directory; ``after_sweep`` gets the ids seen."""
        self._layers = layers
        self._interval = interval
        self._after_sweep = after_sweep
        self._cache: dict[str, LayerUsage] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def get(self, cid: str) -> LayerUsage | None:
        """The last sweep's figures for ``cid``; a miss wakes the sweeper."""
        usage = self._cache.get(cid)
        if usage is None:
            self._wake.set()
        return usage

    def sweep(self) -> None:
        """Walk every writable layer now and replace the cache."""
        layers = self._layers()
        fresh: dict[str, LayerUsage] = {}
        for cid, upper in layers.items():
            if self._stop.is_set():
                return
            used, inodes = tree_usage(upper)
            fresh[cid] = LayerUsage(time.time_ns(), used, inodes)
        self._cache = fresh
        if self._after_sweep is not None:
            self._after_sweep(set(layers))

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="stats-layers", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sweep()
            except Exception:  # a bad sweep must not end stats for the daemon's lifetime
                log.exception("writable layer sweep failed")
            self._wake.wait(self._interval)
            self._wake.clear()
