"""CreateContainer, ExecSync and Exec: the container config and command lines."""

from __future__ import annotations

from collections.abc import Iterable

from crio_py.cri import api_pb2 as pb
from crio_py.errors import InvalidArgument
from crio_py.server.validation import limits
from crio_py.server.validation.common import (
    check_absolute_path,
    check_name,
    check_relative_path,
    check_required,
)
from crio_py.server.validation.pod import check_security_basics
from crio_py.server.validation.resources import check_resources
from crio_py.spec import capabilities


def check_container_config(config: pb.ContainerConfig, where: str = "config") -> None:
    """Raise InvalidArgument for a malformed container config; a valid one passes silently."""
    if not config.HasField("metadata"):
        raise InvalidArgument(f"{where}.metadata must be set")
    check_name(config.metadata.name, f"{where}.metadata.name")
    check_required(config.image.image, f"{where}.image.image")
    check_exec_size([*config.command, *config.args], [(kv.key, kv.value) for kv in config.envs], where)
    for i, kv in enumerate(config.envs):
        if not kv.key or "=" in kv.key:
            raise InvalidArgument(f"{where}.envs[{i}].key {kv.key[:80]!r} must be non-empty and without '='")
    if config.working_dir:
        check_absolute_path(config.working_dir, f"{where}.working_dir")
    if config.log_path:
        check_relative_path(config.log_path, f"{where}.log_path (relative to the pod's log_directory)")
    for i, m in enumerate(config.mounts):
        check_absolute_path(m.container_path, f"{where}.mounts[{i}].container_path")
        if m.host_path or not m.image.image:
            check_absolute_path(m.host_path, f"{where}.mounts[{i}].host_path")
    for i, d in enumerate(config.devices):
        check_absolute_path(d.container_path, f"{where}.devices[{i}].container_path")
        check_absolute_path(d.host_path, f"{where}.devices[{i}].host_path")
        if not set(d.permissions) <= set("rwm") or len(set(d.permissions)) != len(d.permissions):
            raise InvalidArgument(f"{where}.devices[{i}].permissions {d.permissions[:20]!r} must be a subset of 'rwm'")
    linux = config.linux
    if linux.HasField("resources"):
        check_resources(linux.resources, f"{where}.linux.resources")
    sc = linux.security_context
    sc_where = f"{where}.linux.security_context"
    check_security_basics(sc, sc_where)
    caps = sc.capabilities
    for field in ("add_capabilities", "drop_capabilities", "add_ambient_capabilities"):
        for i, cap in enumerate(getattr(caps, field)):
            if cap.upper() == "ALL" and field != "add_ambient_capabilities":
                continue
            try:
                capabilities.normalize(cap)
            except InvalidArgument:
                raise InvalidArgument(
                    f"{sc_where}.capabilities.{field}[{i}] {cap[:40]!r} is not a capability"
                ) from None
    for field in ("masked_paths", "readonly_paths"):
        for i, path in enumerate(getattr(sc, field)):
            check_absolute_path(path, f"{sc_where}.{field}[{i}]")
    ns = sc.namespace_options
    ns_where = f"{sc_where}.namespace_options"
    for field in ("network", "ipc"):
        if getattr(ns, field) == pb.TARGET:
            raise InvalidArgument(f"{ns_where}.{field}: TARGET is only valid for the pid namespace")
    if ns.pid == pb.TARGET and not ns.target_id:
        raise InvalidArgument(f"{ns_where}: pid mode TARGET needs target_id")


def check_exec_size(argv: Iterable[str], env: Iterable[tuple[str, bytes | str]], where: str) -> None:
    """argv and environment within what one execve takes (MAX_ARG_BYTES each, MAX_EXEC_BYTES together)."""
    total = 0
    for arg in argv:
        size = len(arg.encode())
        if size > limits.MAX_ARG_BYTES:
            raise InvalidArgument(
                f"{where}: an argument is {size} bytes long; at most {limits.MAX_ARG_BYTES} are allowed"
            )
        total += size + 1
    for key, value in env:
        size = len(key.encode()) + 1 + len(value if isinstance(value, bytes) else value.encode())
        if size > limits.MAX_ARG_BYTES:
            raise InvalidArgument(
                f"{where}: environment variable {key[:40]!r} is {size} bytes long; at most {limits.MAX_ARG_BYTES} "
                "are allowed"
            )
        total += size + 1
    if total > limits.MAX_EXEC_BYTES:
        raise InvalidArgument(
            f"{where}: the command line and environment take {total} bytes; at most {limits.MAX_EXEC_BYTES} are allowed"
        )


def check_privilege(config: pb.ContainerConfig, pod_config: pb.PodSandboxConfig, pod_id: str) -> None:
    """A privileged container only in a privileged pod: the pod's setting bounds its containers."""
    if config.linux.security_context.privileged and not pod_config.linux.security_context.privileged:
        raise InvalidArgument(
            f"container {config.metadata.name!r} asks to be privileged but its pod sandbox {pod_id} is not "
            "privileged; set privileged on the pod's security context too"
        )
