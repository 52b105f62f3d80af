"""The runtime handlers a daemon knows, each an :class:`OCIRuntime` made once and kept."""

from __future__ import annotations

import threading
from collections.abc import Callable

from crio_py.config import Config
from crio_py.oci.runtime import OCIRuntime


class RuntimeRegistry:
    """Handler name -> OCIRuntime, for the running configuration's cgroup driver.

    Kept so that what a runtime's features probe found is asked once per handler.
    """

    def __init__(self, config: Callable[[], Config]) -> None:
        self._config = config
        self._runtimes: dict[tuple[str, str], OCIRuntime] = {}
        self._lock = threading.Lock()

    def get(self, handler_name: str) -> OCIRuntime:
        """The runtime of ``handler_name`` (the configuration's, by name)."""
        cfg = self._config()
        key = (handler_name, cfg.cgroup_manager)
        with self._lock:
            runtime = self._runtimes.get(key)
            if runtime is None:
                runtime = OCIRuntime(cfg.runtime_handler(handler_name), cfg.cgroup_manager)
                self._runtimes[key] = runtime
        return runtime
