"""CNIManager: the pod network as the CRI sees it (status, setup, teardown, check, GC)."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from crio_py.config import CNIConfig
from crio_py.network.cni_config import ConfigWatcher
from crio_py.network.model import NOT_READY_REASON, NetworkStatus

log = logging.getLogger(__name__)


class CNIManager:
    """Runs the configured CNI network list for pods; safe to call from many threads."""

    def __init__(self, cfg: CNIConfig) -> None:
        self._lock = threading.Lock()
        self._cfg = cfg
        self._watcher = ConfigWatcher(Path(cfg.conf_dir), cfg.default_network)

    def reload(self, cfg: CNIConfig) -> None:
        """Use a new configuration from now on (the conf dir is re-read on the next call)."""
        with self._lock:
            self._cfg = cfg
            self._watcher = ConfigWatcher(Path(cfg.conf_dir), cfg.default_network)

    def status(self) -> NetworkStatus:
        """Ready while the conf dir holds a usable network config."""
        found = self._watcher.current()
        if found.network is None:
            return NetworkStatus(False, NOT_READY_REASON, f"Network plugin returns error: {found.problem}")
        return NetworkStatus(True, "", "")
