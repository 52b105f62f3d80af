"""runtime.v1.RuntimeService: the handler groups put together (one module per area)."""

from __future__ import annotations

from collections.abc import Callable

from crio_py.config import Config
from crio_py.events import EventBus
from crio_py.lifecycle import PodLifecycle
from crio_py.network import NetworkStatus
from crio_py.server.container import ContainerHandlers
from crio_py.server.container_events import ContainerEventHandlers
from crio_py.server.pod_sandbox import PodSandboxHandlers
from crio_py.server.runtime_info import RuntimeInfoHandlers
from crio_py.server.stats import StatsHandlers
from crio_py.server.streaming import StreamingHandlers
from crio_py.stats import StatsCollector
from crio_py.streaming import StreamingServer


class RuntimeService(
    RuntimeInfoHandlers, PodSandboxHandlers, ContainerHandlers, StatsHandlers, StreamingHandlers, ContainerEventHandlers
):
    """Handlers of every RuntimeService RPC crio-py implements; the rest answer UNIMPLEMENTED."""

    def __init__(
        self,
        config: Callable[[], Config],
        network_status: Callable[[], NetworkStatus],
        lifecycle: PodLifecycle,
        stats: StatsCollector,
        events: EventBus,
        streaming: StreamingServer | None = None,
    ):
        RuntimeInfoHandlers.__init__(
            self, config, network_status, lambda name: lifecycle.runtimes.get(name).supports_recursive_read_only()
        )
        self.lifecycle = lifecycle
        self.sandboxes = lifecycle.sandboxes
        self.containers = lifecycle.containers
        self.stats = stats
        self.streaming = streaming
        self.events = events
