"""Prometheus metrics: one counter, error counter and latency histogram per CRI operation."""

from __future__ import annotations

import logging

from prometheus_client import Counter, Histogram, start_http_server

log = logging.getLogger(__name__)

OPERATIONS = Counter("crio_py_operations_total", "CRI operations served", ["operation"])
OPERATION_ERRORS = Counter(
    "crio_py_operations_errors_total", "CRI operations that returned an error", ["operation", "code"]
)
OPERATION_LATENCY = Histogram(
    "crio_py_operations_latency_seconds",
    "Latency of CRI operations",
    ["operation"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)


def observe(operation: str, seconds: float, code: str) -> None:
    """Record one served operation; ``code`` is the gRPC status code name."""
    OPERATIONS.labels(operation).inc()
    OPERATION_LATENCY.labels(operation).observe(seconds)
    if code != "OK":
        OPERATION_ERRORS.labels(operation, code).inc()


def serve(address: str, port: int) -> int:
    """Expose /metrics (with the default process metrics) on address:port; return the port."""
    server, _thread = start_http_server(port, addr=address)
    bound = server.server_address[1]
    log.info("metrics endpoint listening", extra={"address": f"http://{address}:{bound}/metrics"})
    return bound
