"""Stats of containers and pods: cgroup samples, CPU rates, writable layers, pod network.

A mechanism: callers name the cgroups, the pause pid and the writable layer directories; the
server turns the samples into CRI messages. Reads are cheap (a few cgroup files per container);
anything that walks a directory happens in a background thread and is served from its cache.
"""

from crio_py.stats.collector import (
    ContainerSample,
    CpuSample,
    MemorySample,
    NetworkSample,
    PodSample,
    StatsCollector,
)
from crio_py.stats.cpu import CpuRates
from crio_py.stats.layers import LayerUsage, WritableLayers
from crio_py.stats.network import InterfaceUsage, parse_net_dev

__all__ = [
    "ContainerSample",
    "CpuRates",
    "CpuSample",
    "InterfaceUsage",
    "LayerUsage",
    "MemorySample",
    "NetworkSample",
    "PodSample",
    "StatsCollector",
    "WritableLayers",
    "parse_net_dev",
]
