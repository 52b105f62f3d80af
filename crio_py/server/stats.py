"""RuntimeService handlers for stats: ContainerStats, PodSandboxStats, their List and Stream forms.

Thin: pick the containers and pods the request names, ask ``crio_py.stats`` for their samples and
turn them into CRI messages. A source that is gone (a container that just exited, a pod whose
netns went away) leaves its fields out of that entry; it never fails the list.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from crio_py import cgroups
from crio_py.config import Config
from crio_py.container import Container, ContainerManager
from crio_py.container.model import RUNNING
from crio_py.cri import api_pb2 as pb
from crio_py.errors import InvalidArgument
from crio_py.sandbox import Sandbox, SandboxManager
from crio_py.server.listing import STREAM_CHUNK, labels_match
from crio_py.stats import (
    ContainerSample,
    CpuSample,
    InterfaceUsage,
    MemorySample,
    NetworkSample,
    PodSample,
    StatsCollector,
    cadvisor,
)


def writable_layers(containers: ContainerManager) -> dict[str, Path]:
    """Each container's writable (overlay upper) directory, for the stats sweeper."""
    return {c.id: Path(c.bundle) / "upper" for c in containers.list() if c.bundle}


def containers_by_state(containers: ContainerManager) -> Counter[str]:
    """Container count per phase (created, running, exited...), for crio_py_containers."""
    return Counter(c.phase for c in containers.list())


def pods_by_state(sandboxes: SandboxManager) -> Counter[str]:
    """Pod count per state (ready, notready), for crio_py_pods."""
    return Counter(
        "ready" if sandboxes.state(p) == pb.SANDBOX_READY else "notready" for p in sandboxes.list()
    )


class StatsHandlers:
    containers: ContainerManager
    sandboxes: SandboxManager
    stats: StatsCollector
    _config: Callable[[], Config]

    # ---- containers ----------------------------------------------------------------------

    def ContainerStats(self, request: pb.ContainerStatsRequest, context: Any) -> pb.ContainerStatsResponse:
        if not request.container_id:
            raise InvalidArgument("container_id must not be empty")
        ctr = self.containers.get(request.container_id)
        return pb.ContainerStatsResponse(stats=self._container_stats(ctr, self._containers_dir()))

    def ListContainerStats(
        self, request: pb.ListContainerStatsRequest, context: Any
    ) -> pb.ListContainerStatsResponse:
        return pb.ListContainerStatsResponse(stats=self._list_container_stats(request.filter))

    def StreamContainerStats(self, request: pb.StreamContainerStatsRequest, context: Any) -> Iterator[Any]:
        items = self._list_container_stats(request.filter)
        for start in range(0, len(items), STREAM_CHUNK):
            yield pb.StreamContainerStatsResponse(container_stats=items[start : start + STREAM_CHUNK])

    def _list_container_stats(self, f: pb.ContainerStatsFilter) -> list[pb.ContainerStats]:
        layers_dir = self._containers_dir()
        return [
            self._container_stats(ctr, layers_dir)
            for ctr in self.containers.list()
            if ctr.id.startswith(f.id)
            and ctr.pod_id.startswith(f.pod_sandbox_id)
            and labels_match(f.label_selector, ctr.config.labels)
        ]

    def _container_stats(self, ctr: Container, layers_dir: str) -> pb.ContainerStats:
        # Lists do not pick up exits (ListContainers does, kubelet calls it alongside): a container
        # that just exited reads as gone or idle cgroups, at half the cost of every list.
        sample = self.stats.container(ctr.id, ctr.cgroups_path if ctr.phase == RUNNING else None)
        return _container_pb(ctr, sample, layers_dir)

    def _containers_dir(self) -> str:
        """Where writable layers live: the mountpoint ImageFsInfo reports for container filesystems."""
        return str(Path(self._config().root) / "containers")

    # ---- pods ------------------------------------------------------------------------------

    def PodSandboxStats(self, request: pb.PodSandboxStatsRequest, context: Any) -> pb.PodSandboxStatsResponse:
        if not request.pod_sandbox_id:
            raise InvalidArgument("pod_sandbox_id must not be empty")
        pod = self.sandboxes.get(request.pod_sandbox_id)
        return pb.PodSandboxStatsResponse(stats=self._pod_stats(pod, self._parent_users(), self._containers_dir()))

    def ListPodSandboxStats(
        self, request: pb.ListPodSandboxStatsRequest, context: Any
    ) -> pb.ListPodSandboxStatsResponse:
        return pb.ListPodSandboxStatsResponse(stats=self._list_pod_stats(request.filter))

    def StreamPodSandboxStats(self, request: pb.StreamPodSandboxStatsRequest, context: Any) -> Iterator[Any]:
        items = self._list_pod_stats(request.filter)
        for start in range(0, len(items), STREAM_CHUNK):
            yield pb.StreamPodSandboxStatsResponse(pod_sandbox_stats=items[start : start + STREAM_CHUNK])

    def _list_pod_stats(self, f: pb.PodSandboxStatsFilter) -> list[pb.PodSandboxStats]:
        users, layers_dir = self._parent_users(), self._containers_dir()
        return [
            self._pod_stats(pod, users, layers_dir)
            for pod in self.sandboxes.list()
            if pod.id.startswith(f.id) and labels_match(f.label_selector, pod.config.labels)
        ]

    def _parent_users(self) -> Counter[str]:
        return Counter(p.cgroup_parent for p in self.sandboxes.list())

    def _pod_stats(self, pod: Sandbox, parent_users: Counter[str], layers_dir: str) -> pb.PodSandboxStats:
        sample, containers = self._pod_samples(pod, parent_users)
        return _pod_pb(pod, sample, [_container_pb(c, cs, layers_dir) for c, cs in containers])

    def _pod_samples(
        self, pod: Sandbox, parent_users: Counter[str]
    ) -> tuple[PodSample, list[tuple[Container, ContainerSample]]]:
        """The pod's totals and network, and a sample of each of its running containers."""
        ready = self.sandboxes.state(pod) == pb.SANDBOX_READY
        running = [c for c in self.containers.in_pod(pod.id) if c.phase == RUNNING]
        if not pod.cgroup_parent:
            paths = []
        elif pod.config.linux.cgroup_parent and parent_users[pod.cgroup_parent] == 1:
            paths = [pod.cgroup_parent]
        else:
            # Pods without a cgroup of their own (no cgroup_parent from kubelet) share ours, even
            # when they are its only pod now: it also holds what removed containers used. Their
            # totals are the pause container's and their containers' cgroups added up.
            pause = cgroups.container_cgroups_path(
                self._config().cgroup_manager, pod.cgroup_parent, cgroups.CONTAINER_PREFIX, pod.id
            )
            paths = ([pause] if ready else []) + [c.cgroups_path for c in running]
        sample = self.stats.pod(pod.id, paths, pod.pid if ready and not pod.host_network else None)
        return sample, [(c, self.stats.container(c.id, c.cgroups_path)) for c in running]

    # ---- cAdvisor metrics (kubelet's PodAndContainerStatsFromCRI) ---------------------------

    def ListMetricDescriptors(
        self, request: pb.ListMetricDescriptorsRequest, context: Any
    ) -> pb.ListMetricDescriptorsResponse:
        return pb.ListMetricDescriptorsResponse(descriptors=cadvisor.descriptors())

    def ListPodSandboxMetrics(
        self, request: pb.ListPodSandboxMetricsRequest, context: Any
    ) -> pb.ListPodSandboxMetricsResponse:
        return pb.ListPodSandboxMetricsResponse(pod_metrics=self._pod_metrics())

    def StreamPodSandboxMetrics(self, request: pb.StreamPodSandboxMetricsRequest, context: Any) -> Iterator[Any]:
        items = self._pod_metrics()
        for start in range(0, len(items), STREAM_CHUNK):
            yield pb.StreamPodSandboxMetricsResponse(pod_sandbox_metrics=items[start : start + STREAM_CHUNK])

    def _pod_metrics(self) -> list[pb.PodSandboxMetrics]:
        users, device = self._parent_users(), self._containers_dir()
        out = []
        for pod in self.sandboxes.list():
            sample, containers = self._pod_samples(pod, users)
            meta = pod.config.metadata
            out.append(
                pb.PodSandboxMetrics(
                    pod_sandbox_id=pod.id,
                    metrics=cadvisor.pod_metrics([meta.name, meta.namespace, "", pod.id, ""], sample),
                    container_metrics=[
                        pb.ContainerMetrics(
                            container_id=c.id,
                            metrics=cadvisor.container_metrics(
                                [meta.name, meta.namespace, c.config.metadata.name, c.id, c.image_name],
                                cs,
                                sample.at_ns,
                                device,
                            ),
                        )
                        for c, cs in containers
                    ],
                )
            )
        return out


# ---- messages ---------------------------------------------------------------------------------


def _u64(value: int) -> pb.UInt64Value:
    return pb.UInt64Value(value=max(value, 0))


def _cpu_pb(cpu: CpuSample | None) -> pb.CpuUsage | None:
    if cpu is None:
        return None
    return pb.CpuUsage(
        timestamp=cpu.at_ns,
        usage_core_nano_seconds=_u64(cpu.usage_ns),
        usage_nano_cores=_u64(cpu.nano_cores) if cpu.nano_cores is not None else None,
    )


def _memory_pb(mem: MemorySample | None) -> pb.MemoryUsage | None:
    if mem is None:
        return None
    return pb.MemoryUsage(
        timestamp=mem.at_ns,
        working_set_bytes=_u64(mem.working_set_bytes),
        available_bytes=_u64(mem.available_bytes) if mem.available_bytes is not None else None,
        usage_bytes=_u64(mem.usage_bytes),
        rss_bytes=_u64(mem.rss_bytes),
        page_faults=_u64(mem.page_faults),
        major_page_faults=_u64(mem.major_page_faults),
    )


def _container_pb(ctr: Container, sample: ContainerSample, layers_dir: str) -> pb.ContainerStats:
    layer = sample.writable_layer
    return pb.ContainerStats(
        attributes=pb.ContainerAttributes(
            id=ctr.id, metadata=ctr.config.metadata, labels=ctr.config.labels, annotations=ctr.config.annotations
        ),
        cpu=_cpu_pb(sample.cpu),
        memory=_memory_pb(sample.memory),
        writable_layer=pb.FilesystemUsage(
            timestamp=layer.at_ns,
            fs_id=pb.FilesystemIdentifier(mountpoint=layers_dir),
            used_bytes=_u64(layer.used_bytes),
            inodes_used=_u64(layer.inodes),
        )
        if layer is not None
        else None,
    )


def _interface_pb(i: InterfaceUsage) -> pb.NetworkInterfaceUsage:
    return pb.NetworkInterfaceUsage(
        name=i.name,
        rx_bytes=_u64(i.rx_bytes),
        rx_errors=_u64(i.rx_errors),
        tx_bytes=_u64(i.tx_bytes),
        tx_errors=_u64(i.tx_errors),
    )


def _network_pb(net: NetworkSample | None) -> pb.NetworkUsage | None:
    if net is None:
        return None
    return pb.NetworkUsage(
        timestamp=net.at_ns,
        default_interface=_interface_pb(net.default) if net.default is not None else None,
        interfaces=[_interface_pb(i) for i in net.interfaces],
    )


def _pod_pb(pod: Sandbox, sample: PodSample, containers: list[pb.ContainerStats]) -> pb.PodSandboxStats:
    return pb.PodSandboxStats(
        attributes=pb.PodSandboxAttributes(
            id=pod.id, metadata=pod.config.metadata, labels=pod.config.labels, annotations=pod.config.annotations
        ),
        linux=pb.LinuxPodSandboxStats(
            cpu=_cpu_pb(sample.cpu),
            memory=_memory_pb(sample.memory),
            network=_network_pb(sample.network),
            process=pb.ProcessUsage(timestamp=sample.at_ns, process_count=_u64(sample.process_count))
            if sample.process_count is not None
            else None,
            containers=containers,
        ),
    )
