"""Samples of one container or one pod, read from their cgroups at the time of the call."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from crio_py import cgroups
from crio_py.stats.cpu import CpuRates
from crio_py.stats.layers import SWEEP_INTERVAL, LayerUsage, WritableLayers
from crio_py.stats.network import InterfaceUsage, namespace_interfaces

# kubelet's name for a pod's main interface (the one CNI plugins create).
DEFAULT_INTERFACE = "eth0"


@dataclass(frozen=True)
class CpuSample:
    at_ns: int
    usage_ns: int
    nano_cores: int | None  # None until a second sample is at least a second older than the first


@dataclass(frozen=True)
class MemorySample:
    at_ns: int
    usage_bytes: int
    working_set_bytes: int
    rss_bytes: int
    page_faults: int
    major_page_faults: int
    available_bytes: int | None  # None without a limit
    limit_bytes: int | None = None


@dataclass(frozen=True)
class NetworkSample:
    at_ns: int
    default: InterfaceUsage | None
    interfaces: list[InterfaceUsage]


@dataclass(frozen=True)
class ContainerSample:
    """What could be read; a field is None when its source is gone (the container just exited)."""

    cpu: CpuSample | None
    memory: MemorySample | None
    writable_layer: LayerUsage | None


@dataclass(frozen=True)
class PodSample:
    cpu: CpuSample | None
    memory: MemorySample | None
    network: NetworkSample | None
    process_count: int | None
    at_ns: int


class StatsCollector:
    """Reads cgroups on demand, keeps CPU rates and the writable-layer cache."""

    def __init__(
        self,
        writable_layers: Callable[[], dict[str, Path]],
        pod_ids: Callable[[], Iterable[str]],
        sweep_interval: float = SWEEP_INTERVAL,
    ):
        """``writable_layers`` maps each container id to its upper directory and ``pod_ids`` lists
        the pods; both are asked once per sweep, which also forgets the rates of what is gone."""
        self._container_rates = CpuRates()
        self._pod_rates = CpuRates()
        self._pod_ids = pod_ids
        self.layers = WritableLayers(writable_layers, sweep_interval, after_sweep=self._forget_gone)

    def start(self) -> None:
        self.layers.start()

    def stop(self) -> None:
        self.layers.stop()

    def _forget_gone(self, container_ids: set[str]) -> None:
        self._container_rates.retain(container_ids)
        self._pod_rates.retain(self._pod_ids())

    def container(self, cid: str, cgroups_path: str | None) -> ContainerSample:
        """A container's sample; ``cgroups_path`` None (not running) reads only the writable layer."""
        layer = self.layers.get(cid)
        if cgroups_path is None:
            return ContainerSample(None, None, layer)
        now = time.time_ns()
        return ContainerSample(
            cpu=self._cpu(self._container_rates, cid, [cgroups_path], now),
            memory=_memory([cgroups_path], now),
            writable_layer=layer,
        )

    def pod(self, pod_id: str, cgroup_paths: list[str], pause_pid: int | None) -> PodSample:
        """A pod's totals over ``cgroup_paths`` (its own cgroup, or each of its containers' when
        it shares a parent with other pods) and its network namespace seen through ``pause_pid``."""
        now = time.time_ns()
        network = None
        if pause_pid:
            interfaces = namespace_interfaces(pause_pid)
            if interfaces is not None:
                default = next((i for i in interfaces if i.name == DEFAULT_INTERFACE), None)
                network = NetworkSample(now, default or (interfaces[0] if interfaces else None), interfaces)
        counts = [c for c in (cgroups.process_count(p) for p in cgroup_paths) if c is not None]
        return PodSample(
            cpu=self._cpu(self._pod_rates, pod_id, cgroup_paths, now) if cgroup_paths else None,
            memory=_memory(cgroup_paths, now) if cgroup_paths else None,
            network=network,
            process_count=sum(counts) if counts else None,
            at_ns=now,
        )

    @staticmethod
    def _cpu(rates: CpuRates, key: str, paths: list[str], now: int) -> CpuSample | None:
        found = [s for s in (cgroups.cpu_stats(p) for p in paths) if s is not None]
        if not found:
            return None
        usage = sum(s.usage_ns for s in found)
        return CpuSample(now, usage, rates.rate(key, usage, now))


def _memory(paths: list[str], now: int) -> MemorySample | None:
    """One cgroup's memory, or the sum of several (whose limits then say nothing about the total)."""
    found = [s for s in (cgroups.memory_stats(p) for p in paths) if s is not None]
    if not found:
        return None
    working_set = sum(s.working_set_bytes for s in found)
    limit = found[0].limit_bytes if len(paths) == 1 else None
    return MemorySample(
        at_ns=now,
        usage_bytes=sum(s.usage_bytes for s in found),
        working_set_bytes=working_set,
        rss_bytes=sum(s.rss_bytes for s in found),
        page_faults=sum(s.page_faults for s in found),
        major_page_faults=sum(s.major_page_faults for s in found),
        available_bytes=max(limit - working_set, 0) if limit is not None else None,
        limit_bytes=limit,
    )
