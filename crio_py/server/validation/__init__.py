"""The one validation layer: every CRI request is checked here before a handler sees it.

``RequestValidator.check(rpc, request)`` runs the checks every request gets (sizes, NUL bytes,
enum values: :mod:`.fields`) and those of its RPC (names, paths, resources, security: :mod:`.pod`,
:mod:`.container`, :mod:`.resources`), and raises InvalidArgument naming the field. Behind it
the domain may assume valid input. Every limit is in :mod:`.limits`. Two checks need state and
are called by the handlers: the runtime handler must be configured, and a privileged container
needs a privileged pod (:func:`check_privilege`).

A few values are normalised rather than refused, where kubelet relies on it: cpu_shares 1 is
raised to 2, and the timeouts of StopContainer and ExecSync are capped at MAX_TIMEOUT_SECONDS.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

from google.protobuf.message import Message

from crio_py import cgroups
from crio_py.errors import InvalidArgument
from crio_py.server.validation import limits
from crio_py.server.validation.common import check_absolute_path, check_required
from crio_py.server.validation.container import check_container_config, check_exec_size, check_privilege
from crio_py.server.validation.fields import check_fields
from crio_py.server.validation.pod import check_pod_config
from crio_py.server.validation.resources import check_resources

__all__ = ["RequestValidator", "check_privilege", "limits"]

_CONTAINER_ID_RPCS = (
    "StartContainer",
    "RemoveContainer",
    "ContainerStatus",
    "ReopenContainerLog",
    "ContainerStats",
    "Attach",
    "CheckpointContainer",
)
_POD_ID_RPCS = ("StopPodSandbox", "RemovePodSandbox", "PodSandboxStatus", "PodSandboxStats")


class RequestValidator:
    """Checks requests by RPC name; ``cgroup_driver`` gives the running config's cgroup driver."""

    def __init__(self, cgroup_driver: Callable[[], str] = lambda: cgroups.CGROUPFS):
        self._cgroup_driver = cgroup_driver
        self._checks: dict[str, Callable[[Any], None]] = {
            "RunPodSandbox": self._run_pod_sandbox,
            "CreateContainer": _create_container,
            "StopContainer": _stop_container,
            "ExecSync": _exec_sync,
            "Exec": _exec,
            "PortForward": _port_forward,
            "UpdateContainerResources": _update_container_resources,
            "UpdatePodSandboxResources": _update_pod_sandbox_resources,
            "UpdateRuntimeConfig": _update_runtime_config,
            "PullImage": _image_required,
            "RemoveImage": _image_required,
            **dict.fromkeys(_CONTAINER_ID_RPCS, _container_id),
            **dict.fromkeys(_POD_ID_RPCS, _pod_id),
        }

    def check(self, rpc: str, request: Message) -> None:
        """Raise InvalidArgument if ``request`` (of RPC ``rpc``) is not acceptable; may normalise it."""
        check_fields(request)
        specific = self._checks.get(rpc)
        if specific is not None:
            specific(request)

    def _run_pod_sandbox(self, request: Any) -> None:
        if not request.HasField("config"):
            raise InvalidArgument("config must be set")
        check_pod_config(request.config, self._cgroup_driver())


def _container_id(request: Any) -> None:
    check_required(request.container_id, "container_id")
    if getattr(request, "location", ""):
        check_absolute_path(request.location, "location")


def _pod_id(request: Any) -> None:
    check_required(request.pod_sandbox_id, "pod_sandbox_id")


def _create_container(request: Any) -> None:
    _pod_id(request)
    if not request.HasField("config"):
        raise InvalidArgument("config must be set")
    check_container_config(request.config)


def _timeout(request: Any) -> None:
    if request.timeout < 0:
        raise InvalidArgument(f"timeout {request.timeout} must not be negative")
    request.timeout = min(request.timeout, limits.MAX_TIMEOUT_SECONDS)


def _stop_container(request: Any) -> None:
    _container_id(request)
    _timeout(request)


def _exec(request: Any) -> None:
    _container_id(request)
    if not request.cmd:
        raise InvalidArgument("cmd must not be empty")
    check_exec_size(request.cmd, (), "cmd")


def _exec_sync(request: Any) -> None:
    _exec(request)
    _timeout(request)


def _port_forward(request: Any) -> None:
    _pod_id(request)
    for i, port in enumerate(request.port):
        if not 1 <= port <= limits.MAX_PORT:
            raise InvalidArgument(f"port[{i}] {port} is not in 1..{limits.MAX_PORT}")


def _update_container_resources(request: Any) -> None:
    _container_id(request)
    if request.HasField("linux"):
        check_resources(request.linux, "linux")


def _update_pod_sandbox_resources(request: Any) -> None:
    _pod_id(request)
    for field in ("overhead", "resources"):
        if request.HasField(field):
            check_resources(getattr(request, field), field)


def _update_runtime_config(request: Any) -> None:
    cidrs = request.runtime_config.network_config.pod_cidr
    for cidr in filter(None, (c.strip() for c in cidrs.split(","))):
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise InvalidArgument(f"runtime_config.network_config.pod_cidr {cidr[:80]!r} is not a CIDR") from None


def _image_required(request: Any) -> None:
    check_required(request.image.image, "image.image")
