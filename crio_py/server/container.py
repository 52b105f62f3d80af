"""RuntimeService handlers for containers: lifecycle, status, list, exec, resources, logs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from crio_py.container import Container, ContainerManager
from crio_py.container.model import CRI_STATE
from crio_py.cri import api_pb2 as pb
from crio_py.errors import InvalidArgument
from crio_py.lifecycle import PodLifecycle
from crio_py.sandbox import SandboxManager
from crio_py.server.listing import STREAM_CHUNK, labels_match
from crio_py.server.validation import check_privilege


class ContainerHandlers:
    containers: ContainerManager
    lifecycle: PodLifecycle
    sandboxes: SandboxManager

    def CreateContainer(self, request: pb.CreateContainerRequest, context: Any) -> pb.CreateContainerResponse:
        pod = self.sandboxes.get(request.pod_sandbox_id)
        check_privilege(request.config, pod.config, pod.id)
        # A retry waits for the first request's container at most until its own deadline.
        ctr = self.lifecycle.create_container(pod.id, request.config, context.time_remaining())
        return pb.CreateContainerResponse(container_id=ctr.id)

    def StartContainer(self, request: pb.StartContainerRequest, context: Any) -> pb.StartContainerResponse:
        self.containers.start(self.containers.get(_required_id(request.container_id)))
        return pb.StartContainerResponse()

    def StopContainer(self, request: pb.StopContainerRequest, context: Any) -> pb.StopContainerResponse:
        ctr = self.containers.find(_required_id(request.container_id))
        if ctr is not None:  # stopping an unknown container succeeds (CRI semantics)
            self.containers.stop(ctr, request.timeout)
        return pb.StopContainerResponse()

    def RemoveContainer(self, request: pb.RemoveContainerRequest, context: Any) -> pb.RemoveContainerResponse:
        ctr = self.containers.find(_required_id(request.container_id))
        if ctr is not None:
            self.containers.remove(ctr)
        return pb.RemoveContainerResponse()

    def ContainerStatus(self, request: pb.ContainerStatusRequest, context: Any) -> pb.ContainerStatusResponse:
        ctr = self.containers.get(_required_id(request.container_id))
        info = {"info": json.dumps(self.containers.verbose_info(ctr))} if request.verbose else {}
        return pb.ContainerStatusResponse(status=container_status(ctr), info=info)

    def ListContainers(self, request: pb.ListContainersRequest, context: Any) -> pb.ListContainersResponse:
        return pb.ListContainersResponse(containers=self._list_containers(request.filter))

    def StreamContainers(self, request: pb.StreamContainersRequest, context: Any) -> Iterator[Any]:
        items = self._list_containers(request.filter)
        for start in range(0, len(items), STREAM_CHUNK):
            yield pb.StreamContainersResponse(containers=items[start : start + STREAM_CHUNK])

    def _list_containers(self, f: pb.ContainerFilter) -> list[pb.Container]:
        items = []
        for ctr in self.containers.list():
            if f.id and not ctr.id.startswith(f.id):
                continue
            if f.pod_sandbox_id and not ctr.pod_id.startswith(f.pod_sandbox_id):
                continue
            state = CRI_STATE[ctr.phase]
            if f.HasField("state") and f.state.state != state:
                continue
            if not labels_match(f.label_selector, ctr.config.labels):
                continue
            items.append(
                pb.Container(
                    id=ctr.id,
                    pod_sandbox_id=ctr.pod_id,
                    metadata=ctr.config.metadata,
                    image=_image_spec(ctr),
                    image_ref=ctr.image_ref,
                    image_id=ctr.image_id,
                    state=state,
                    created_at=ctr.created_at_ns,
                    labels=ctr.config.labels,
                    annotations=ctr.config.annotations,
                )
            )
        return items

    def ExecSync(self, request: pb.ExecSyncRequest, context: Any) -> pb.ExecSyncResponse:
        ctr = self.containers.get(_required_id(request.container_id))
        result = self.containers.exec_sync(ctr, list(request.cmd), int(request.timeout))
        return pb.ExecSyncResponse(stdout=result.stdout, stderr=result.stderr, exit_code=result.exit_code)

    def UpdateContainerResources(
        self, request: pb.UpdateContainerResourcesRequest, context: Any
    ) -> pb.UpdateContainerResourcesResponse:
        ctr = self.containers.get(_required_id(request.container_id))
        if request.HasField("linux"):
            self.containers.update_resources(ctr, request.linux)
        return pb.UpdateContainerResourcesResponse()

    def ReopenContainerLog(self, request: pb.ReopenContainerLogRequest, context: Any) -> pb.ReopenContainerLogResponse:
        self.containers.reopen_log(self.containers.get(_required_id(request.container_id)))
        return pb.ReopenContainerLogResponse()


def container_status(ctr: Container) -> pb.ContainerStatus:
    """The CRI status of a container (ContainerStatus; PodSandboxStatus lists one per container)."""
    return pb.ContainerStatus(
        id=ctr.id,
        metadata=ctr.config.metadata,
        state=CRI_STATE[ctr.phase],
        created_at=ctr.created_at_ns,
        started_at=ctr.started_at_ns,
        finished_at=ctr.finished_at_ns,
        exit_code=ctr.exit_code,
        image=_image_spec(ctr),
        image_ref=ctr.image_ref,
        image_id=ctr.image_id,
        reason=ctr.reason,
        message=ctr.message,
        labels=ctr.config.labels,
        annotations=ctr.config.annotations,
        mounts=ctr.config.mounts,
        log_path=ctr.log_path,
        user=pb.ContainerUser(
            linux=pb.LinuxContainerUser(uid=ctr.uid, gid=ctr.gid, supplemental_groups=ctr.additional_gids)
        ),
        resources=pb.ContainerResources(linux=ctr.config.linux.resources),
    )


def _image_spec(ctr: Container) -> pb.ImageSpec:
    """The image as the request named it (kubelet shows user_specified_image in events)."""
    requested = ctr.config.image
    return pb.ImageSpec(
        image=ctr.image_name,
        user_specified_image=requested.user_specified_image or ctr.image_name,
        annotations=requested.annotations,
    )


def _required_id(value: str) -> str:
    if not value:
        raise InvalidArgument("container_id must not be empty")
    return value
