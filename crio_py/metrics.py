"""Prometheus metrics under ``crio_py_``: CRI operations, image pulls, containers and pods by
state, OOM kills, monitor restarts, CNI plugin latency, and the start-up steps of pods and
containers. Counters are incremented where things happen; the by-state gauges are counted at
scrape time from the sources the daemon registers (``set_state_sources``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping

from prometheus_client import REGISTRY, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

OPERATIONS = Counter("crio_py_operations_total", "CRI operations served", ["operation"])
OPERATION_ERRORS = Counter(
    "crio_py_operations_errors_total", "CRI operations that returned an error", ["operation", "code"]
)
OPERATION_LATENCY = Histogram(
    "crio_py_operations_latency_seconds", "Latency of CRI operations", ["operation"], buckets=_LATENCY_BUCKETS
)

IMAGE_PULL_SUCCESSES = Counter("crio_py_image_pulls_success_total", "Image pulls that succeeded")
IMAGE_PULL_FAILURES = Counter(
    "crio_py_image_pulls_failure_total", "Image pulls that failed, by gRPC code of the error", ["reason"]
)
IMAGE_PULL_BYTES = Counter("crio_py_image_pulls_bytes_total", "Compressed layer bytes downloaded by pulls")
IMAGE_LAYERS_REUSED = Counter(
    "crio_py_image_layer_reuse_total", "Layers a pull needed that were already in the store (not downloaded)"
)
CONTAINERS_OOM = Counter("crio_py_containers_oom_total", "Containers whose exit was an OOM kill")
MONITOR_RESTARTS = Counter(
    "crio_py_monitor_restarts_total", "Pod monitors started again after the previous one of the pod died"
)
CNI_PLUGIN_LATENCY = Histogram(
    "crio_py_cni_plugin_latency_seconds",
    "Time of each CNI plugin invocation (a+b when our plugin service runs a list as one request)",
    ["plugin", "command"],
    buckets=_LATENCY_BUCKETS,
)
STARTUP_STEP_LATENCY = Histogram(
    "crio_py_startup_step_seconds",
    "Time spent in each step of RunPodSandbox, CreateContainer and StartContainer",
    ["operation", "step"],
    buckets=_LATENCY_BUCKETS,
)


def observe(operation: str, seconds: float, code: str) -> None:
    """Record one served operation; ``code`` is the gRPC status code name."""
    OPERATIONS.labels(operation).inc()
    OPERATION_LATENCY.labels(operation).observe(seconds)
    if code != "OK":
        OPERATION_ERRORS.labels(operation, code).inc()


class _StateCounts(Collector):
    """crio_py_containers{state} and crio_py_pods{state}, counted when scraped."""

    def __init__(self) -> None:
        self.containers: Callable[[], Mapping[str, int]] = dict
        self.pods: Callable[[], Mapping[str, int]] = dict

    def collect(self) -> Iterator[GaugeMetricFamily]:
        for name, help_text, source in (
            ("crio_py_containers", "Containers by state", self.containers),
            ("crio_py_pods", "Pod sandboxes by state", self.pods),
        ):
            family = GaugeMetricFamily(name, help_text, labels=["state"])
            try:
                counts = source()
            except Exception:  # a scrape must not fail because one source did
                log.exception("counting for metrics failed", extra={"metric": name})
                counts = {}
            for state, count in sorted(counts.items()):
                family.add_metric([state], count)
            yield family


_STATE_COUNTS = _StateCounts()
REGISTRY.register(_STATE_COUNTS)


def set_state_sources(containers: Callable[[], Mapping[str, int]], pods: Callable[[], Mapping[str, int]]) -> None:
    """Where crio_py_containers and crio_py_pods come from: state name -> count."""
    _STATE_COUNTS.containers, _STATE_COUNTS.pods = containers, pods


def serve(address: str, port: int) -> int:
    """Expose /metrics (with the default process metrics) on address:port; return the port."""
    server, _thread = start_http_server(port, addr=address)
    bound = server.server_address[1]
    log.info("metrics endpoint listening", extra={"address": f"http://{address}:{bound}/metrics"})
    return bound
