"""RuntimeService Exec, Attach and PortForward: check the request, hand out a one-time streaming URL.

Also the streaming server's view of the daemon (:class:`StreamingBackend`): start an exec through the
container's runtime, connect to a container's attach socket, open a socket in a pod's network
namespace. The URL's session itself is served by ``crio_py.streaming``.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

from crio_py.container import ContainerManager
from crio_py.container.model import RUNNING
from crio_py.cri import api_pb2 as pb
from crio_py.errors import FailedPrecondition, Internal, InvalidArgument, NotFound
from crio_py.monitor import MonitorClient, MonitorError
from crio_py.network.netns import run_in_netns
from crio_py.sandbox import SandboxManager
from crio_py.streaming import AttachRequest, ExecRequest, PortForwardRequest, StreamingServer
from crio_py.streaming.backend import ExecProcess


class StreamingHandlers:
    containers: ContainerManager
    sandboxes: SandboxManager
    streaming: StreamingServer | None

    def Exec(self, request: pb.ExecRequest, context: Any) -> pb.ExecResponse:
        if not request.cmd:
            raise InvalidArgument("Exec needs a command (cmd must not be empty)")
        _check_streams(request)
        ctr = self._running(request.container_id)
        item = ExecRequest(ctr.id, request.tty, request.stdin, request.stdout, request.stderr, cmd=list(request.cmd))
        return pb.ExecResponse(url=self._server().url(item))

    def Attach(self, request: pb.AttachRequest, context: Any) -> pb.AttachResponse:
        _check_streams(request)
        ctr = self._running(request.container_id)
        item = AttachRequest(ctr.id, request.tty, request.stdin, request.stdout, request.stderr)
        return pb.AttachResponse(url=self._server().url(item))

    def PortForward(self, request: pb.PortForwardRequest, context: Any) -> pb.PortForwardResponse:
        if not request.pod_sandbox_id:
            raise InvalidArgument("pod_sandbox_id must not be empty")
        bad = [p for p in request.port if not 0 < p < 65536]
        if bad:
            raise InvalidArgument(f"ports {bad} are out of range 1-65535")
        pod = self.sandboxes.get(request.pod_sandbox_id)
        if self.sandboxes.state(pod) != pb.SANDBOX_READY:
            raise FailedPrecondition(f"pod sandbox {pod.id} is not ready: cannot forward ports to it")
        return pb.PortForwardResponse(url=self._server().url(PortForwardRequest(pod.id, list(request.port))))

    def _running(self, container_id: str) -> Any:
        if not container_id:
            raise InvalidArgument("container_id must not be empty")
        ctr = self.containers.get(container_id)
        if ctr.phase != RUNNING:
            raise FailedPrecondition(f"container {ctr.id} is not running ({ctr.phase})")
        return ctr

    def _server(self) -> StreamingServer:
        if self.streaming is None:
            raise FailedPrecondition("the streaming server is not running")
        return self.streaming


def _check_streams(request: pb.ExecRequest | pb.AttachRequest) -> None:
    if not (request.stdin or request.stdout or request.stderr):
        raise InvalidArgument("one of stdin, stdout and stderr must be requested")
    if request.tty and request.stderr:
        raise InvalidArgument("tty and stderr cannot both be true: a terminal has one output stream")


class StreamingBackend:
    """What the streaming server needs from the daemon; each call blocks (the server calls it on a thread)."""

    def __init__(self, containers: ContainerManager, sandboxes: SandboxManager, monitors: MonitorClient):
        self.containers = containers
        self.sandboxes = sandboxes
        self.monitors = monitors

    def _container(self, container_id: str) -> Any:
        ctr = self.containers.get(container_id)
        if ctr.phase != RUNNING:
            raise FailedPrecondition(f"container {ctr.id} is not running ({ctr.phase})")
        return ctr

    def exec(self, request: ExecRequest, size: tuple[int, int] | None) -> ExecProcess:
        ctr = self._container(request.container_id)
        runtime = self.containers.runtime_of(ctr)
        return runtime.exec_interactive(ctr.id, request.cmd, request.tty, request.stdin, size)

    def attach(self, container_id: str) -> socket.socket:
        ctr = self._container(container_id)
        try:
            return self.monitors.pod_monitor(ctr.pod_id).connect_attach(ctr.id)
        except MonitorError as exc:
            raise Internal(f"attach to container {ctr.id}: {exc.message}") from None

    def resize(self, container_id: str, width: int, height: int) -> None:
        ctr = self.containers.get(container_id)
        try:
            self.monitors.pod_monitor(ctr.pod_id).resize(ctr.id, width, height)
        except MonitorError as exc:
            raise Internal(f"resize the terminal of container {ctr.id}: {exc.message}") from None

    def port_socket(self, pod_id: str) -> socket.socket:
        pod = self.sandboxes.get(pod_id)
        if self.sandboxes.state(pod) != pb.SANDBOX_READY:
            raise FailedPrecondition(f"pod sandbox {pod.id} is not ready")
        if pod.host_network:
            return socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if not pod.netns_path:
            raise NotFound(f"pod sandbox {pod.id} has no network namespace")
        return run_in_netns(Path(pod.netns_path), lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM))
