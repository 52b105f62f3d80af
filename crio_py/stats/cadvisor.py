"""The cAdvisor metric set, for ListMetricDescriptors and ListPodSandboxMetrics.

kubelet with the PodAndContainerStatsFromCRI gate serves /metrics/cadvisor from these instead of
running cAdvisor: the names, help and label keys are cAdvisor's, so dashboards keep working.
Values are unsigned integers in the CRI, so CPU time is whole seconds (as CRI-O sends it).
"""

from __future__ import annotations

from dataclasses import dataclass

from crio_py.cri import api_pb2 as pb
from crio_py.stats.collector import ContainerSample, NetworkSample, PodSample

# Labels every series carries, in this order (kubelet's CRI collector matches values by position).
BASE_LABELS = ("pod", "namespace", "container", "id", "image")


@dataclass(frozen=True)
class _Family:
    name: str
    help: str
    kind: int  # pb.COUNTER or pb.GAUGE
    extra_labels: tuple[str, ...] = ()


CPU_USAGE = _Family(
    "container_cpu_usage_seconds_total", "Cumulative cpu time consumed in seconds.", pb.COUNTER, ("cpu",)
)
MEMORY_USAGE = _Family(
    "container_memory_usage_bytes",
    "Current memory usage in bytes, including all memory regardless of when it was accessed",
    pb.GAUGE,
)
MEMORY_WORKING_SET = _Family("container_memory_working_set_bytes", "Current working set in bytes.", pb.GAUGE)
MEMORY_RSS = _Family("container_memory_rss", "Size of RSS in bytes.", pb.GAUGE)
MEMORY_FAILURES = _Family(
    "container_memory_failures_total",
    "Cumulative count of memory allocation failures.",
    pb.COUNTER,
    ("failure_type", "scope"),
)
MEMORY_LIMIT = _Family("container_spec_memory_limit_bytes", "Memory limit for the container.", pb.GAUGE)
FS_USAGE = _Family(
    "container_fs_usage_bytes", "Number of bytes that are consumed by the container on this filesystem.", pb.GAUGE,
    ("device",),
)
FS_INODES = _Family("container_fs_inodes_used", "Number of inodes used by the container on this filesystem.",
                    pb.GAUGE, ("device",))
PROCESSES = _Family("container_processes", "Number of processes running inside the container.", pb.GAUGE)
_NET = ("interface",)
NET_RX_BYTES = _Family("container_network_receive_bytes_total", "Cumulative count of bytes received", pb.COUNTER, _NET)
NET_RX_PACKETS = _Family(
    "container_network_receive_packets_total", "Cumulative count of packets received", pb.COUNTER, _NET
)
NET_RX_DROPPED = _Family(
    "container_network_receive_packets_dropped_total",
    "Cumulative count of packets dropped while receiving",
    pb.COUNTER,
    _NET,
)
NET_RX_ERRORS = _Family(
    "container_network_receive_errors_total", "Cumulative count of errors encountered while receiving", pb.COUNTER, _NET
)
NET_TX_BYTES = _Family(
    "container_network_transmit_bytes_total", "Cumulative count of bytes transmitted", pb.COUNTER, _NET
)
NET_TX_PACKETS = _Family(
    "container_network_transmit_packets_total", "Cumulative count of packets transmitted", pb.COUNTER, _NET
)
NET_TX_DROPPED = _Family(
    "container_network_transmit_packets_dropped_total",
    "Cumulative count of packets dropped while transmitting",
    pb.COUNTER,
    _NET,
)
NET_TX_ERRORS = _Family(
    "container_network_transmit_errors_total",
    "Cumulative count of errors encountered while transmitting",
    pb.COUNTER,
    _NET,
)
FAMILIES = (
    CPU_USAGE, MEMORY_USAGE, MEMORY_WORKING_SET, MEMORY_RSS, MEMORY_FAILURES, MEMORY_LIMIT, FS_USAGE, FS_INODES,
    PROCESSES, NET_RX_BYTES, NET_RX_PACKETS, NET_RX_DROPPED, NET_RX_ERRORS, NET_TX_BYTES, NET_TX_PACKETS,
    NET_TX_DROPPED, NET_TX_ERRORS,
)  # fmt: skip


def descriptors() -> list[pb.MetricDescriptor]:
    """Every family crio-py reports, as ListMetricDescriptors answers."""
    return [pb.MetricDescriptor(name=f.name, help=f.help, label_keys=[*BASE_LABELS, *f.extra_labels]) for f in FAMILIES]


class _Series:
    def __init__(self, base: list[str], at_ns: int):
        self.base, self.at_ms = base, at_ns // 1_000_000
        self.out: list[pb.Metric] = []

    def add(self, family: _Family, value: int, *extra: str) -> None:
        self.out.append(
            pb.Metric(
                name=family.name,
                timestamp=self.at_ms,
                metric_type=family.kind,  # type: ignore[arg-type]
                label_values=[*self.base, *extra],
                value=pb.UInt64Value(value=max(value, 0)),
            )
        )


def container_metrics(base: list[str], sample: ContainerSample, at_ns: int, fs_device: str) -> list[pb.Metric]:
    """The series of one container; ``base`` are the BASE_LABELS values."""
    s = _Series(base, at_ns)
    if sample.cpu is not None:
        s.add(CPU_USAGE, sample.cpu.usage_ns // 1_000_000_000, "total")
    mem = sample.memory
    if mem is not None:
        s.add(MEMORY_USAGE, mem.usage_bytes)
        s.add(MEMORY_WORKING_SET, mem.working_set_bytes)
        s.add(MEMORY_RSS, mem.rss_bytes)
        s.add(MEMORY_FAILURES, mem.page_faults, "pgfault", "container")
        s.add(MEMORY_FAILURES, mem.major_page_faults, "pgmajfault", "container")
        if mem.limit_bytes is not None:
            s.add(MEMORY_LIMIT, mem.limit_bytes)
    if sample.writable_layer is not None:
        s.add(FS_USAGE, sample.writable_layer.used_bytes, fs_device)
        s.add(FS_INODES, sample.writable_layer.inodes, fs_device)
    return s.out


def pod_metrics(base: list[str], sample: PodSample) -> list[pb.Metric]:
    """The pod-level series: its cgroup totals and its network namespace's interfaces."""
    s = _Series(base, sample.at_ns)
    if sample.cpu is not None:
        s.add(CPU_USAGE, sample.cpu.usage_ns // 1_000_000_000, "total")
    if sample.memory is not None:
        s.add(MEMORY_USAGE, sample.memory.usage_bytes)
        s.add(MEMORY_WORKING_SET, sample.memory.working_set_bytes)
        s.add(MEMORY_RSS, sample.memory.rss_bytes)
    if sample.process_count is not None:
        s.add(PROCESSES, sample.process_count)
    _network(s, sample.network)
    return s.out


def _network(s: _Series, net: NetworkSample | None) -> None:
    for i in net.interfaces if net is not None else []:
        s.add(NET_RX_BYTES, i.rx_bytes, i.name)
        s.add(NET_RX_PACKETS, i.rx_packets, i.name)
        s.add(NET_RX_DROPPED, i.rx_dropped, i.name)
        s.add(NET_RX_ERRORS, i.rx_errors, i.name)
        s.add(NET_TX_BYTES, i.tx_bytes, i.name)
        s.add(NET_TX_PACKETS, i.tx_packets, i.name)
        s.add(NET_TX_DROPPED, i.tx_dropped, i.name)
        s.add(NET_TX_ERRORS, i.tx_errors, i.name)
