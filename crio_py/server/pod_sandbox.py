"""RuntimeService handlers for pod sandboxes: Run, Stop, Remove, Status, List."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

from crio_py.container import ContainerManager
from crio_py.cri import api_pb2 as pb
from crio_py.errors import InvalidArgument
from crio_py.lifecycle import PodLifecycle
from crio_py.sandbox import Sandbox, SandboxManager
from crio_py.server.container import container_status
from crio_py.server.listing import STREAM_CHUNK, labels_match


class PodSandboxHandlers:
    sandboxes: SandboxManager
    containers: ContainerManager
    lifecycle: PodLifecycle

    def RunPodSandbox(self, request: pb.RunPodSandboxRequest, context: Any) -> pb.RunPodSandboxResponse:
        # A retry waits for the first request's pod at most until its own deadline.
        pod = self.lifecycle.run_pod(request.config, request.runtime_handler, context.time_remaining())
        return pb.RunPodSandboxResponse(pod_sandbox_id=pod.id)

    def StopPodSandbox(self, request: pb.StopPodSandboxRequest, context: Any) -> pb.StopPodSandboxResponse:
        pod = self.sandboxes.find(_required_id(request.pod_sandbox_id))
        if pod is not None:  # stopping an unknown pod succeeds (CRI semantics)
            self.lifecycle.stop_pod(pod)
        return pb.StopPodSandboxResponse()

    def RemovePodSandbox(self, request: pb.RemovePodSandboxRequest, context: Any) -> pb.RemovePodSandboxResponse:
        pod = self.sandboxes.find(_required_id(request.pod_sandbox_id))
        if pod is not None:
            self.lifecycle.remove_pod(pod)
        return pb.RemovePodSandboxResponse()

    def PodSandboxStatus(self, request: pb.PodSandboxStatusRequest, context: Any) -> pb.PodSandboxStatusResponse:
        pod = self.sandboxes.get(_required_id(request.pod_sandbox_id))
        info = {}
        if request.verbose:
            info["info"] = json.dumps(self.sandboxes.verbose_info(pod))
        # Evented PLEG takes the pod's containers from here, not from ListContainers: a pod
        # answered without them looks empty to kubelet, which then starts them again.
        timestamp = time.time_ns()
        containers = self.containers.in_pod(pod.id)
        return pb.PodSandboxStatusResponse(
            status=self._pod_status(pod),
            info=info,
            containers_statuses=[container_status(ctr) for ctr in containers],
            timestamp=timestamp,
        )

    def ListPodSandbox(self, request: pb.ListPodSandboxRequest, context: Any) -> pb.ListPodSandboxResponse:
        return pb.ListPodSandboxResponse(items=self._list_pods(request.filter))

    def StreamPodSandboxes(self, request: pb.StreamPodSandboxesRequest, context: Any) -> Iterator[Any]:
        items = self._list_pods(request.filter)
        for start in range(0, len(items), STREAM_CHUNK):
            yield pb.StreamPodSandboxesResponse(pod_sandboxes=items[start : start + STREAM_CHUNK])

    def UpdatePodSandboxResources(
        self, request: pb.UpdatePodSandboxResourcesRequest, context: Any
    ) -> pb.UpdatePodSandboxResourcesResponse:
        # With the cgroupfs and systemd drivers kubelet sizes the pod cgroup itself; the runtime
        # only has to know the pod. Containers get their own limits through UpdateContainerResources.
        self.sandboxes.get(_required_id(request.pod_sandbox_id))
        return pb.UpdatePodSandboxResourcesResponse()

    def _list_pods(self, f: pb.PodSandboxFilter) -> list[pb.PodSandbox]:
        items = []
        for pod in self.sandboxes.list():
            if f.id and not pod.id.startswith(f.id):
                continue
            state = self.sandboxes.state(pod)
            if f.HasField("state") and f.state.state != state:
                continue
            if not labels_match(f.label_selector, pod.config.labels):
                continue
            items.append(
                pb.PodSandbox(
                    id=pod.id,
                    metadata=pod.config.metadata,
                    state=state,
                    created_at=pod.created_at_ns,
                    labels=pod.config.labels,
                    annotations=pod.config.annotations,
                    runtime_handler=pod.runtime_handler,
                )
            )
        return items

    def _pod_status(self, pod: Sandbox) -> pb.PodSandboxStatus:
        ips = pod.ips
        return pb.PodSandboxStatus(
            id=pod.id,
            metadata=pod.config.metadata,
            state=self.sandboxes.state(pod),
            created_at=pod.created_at_ns,
            network=pb.PodSandboxNetworkStatus(
                ip=ips[0] if ips else "", additional_ips=[pb.PodIP(ip=ip) for ip in ips[1:]]
            ),
            linux=pb.LinuxPodSandboxStatus(namespaces=pb.Namespace(options=pod.namespace_options)),
            labels=pod.config.labels,
            annotations=pod.config.annotations,
            runtime_handler=pod.runtime_handler,
        )


def _required_id(value: str) -> str:
    if not value:
        raise InvalidArgument("pod_sandbox_id must not be empty")
    return value
