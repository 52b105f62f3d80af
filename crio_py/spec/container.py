"""The OCI runtime spec of an application container, joined to its pod's namespaces."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crio_py.cgroups import CONTAINER_PREFIX, container_cgroups_path
from crio_py.config import Config
from crio_py.cri import api_pb2
from crio_py.errors import FailedPrecondition, InvalidArgument
from crio_py.spec import capabilities
from crio_py.spec.common import (
    DEFAULT_PATH,
    NAMESPACE_TYPES,
    OCI_VERSION,
    base_namespaces,
    capabilities_section,
    image_process_config,
    merge_env,
    user_section,
)
from crio_py.spec.devices import ALLOW_ALL, DENY_ALL, host_devices, request_devices
from crio_py.spec.limits import clamp_oom_score_adj, linux_resources, rlimits
from crio_py.spec.mounts import (
    DEFAULT_MASKED_PATHS,
    DEFAULT_READONLY_PATHS,
    default_mounts,
    merge_mounts,
    pod_file_mounts,
    request_mounts,
)
from crio_py.spec.security import seccomp_section
from crio_py.spec.user import resolve_user

NODE = api_pb2.NamespaceMode.NODE
POD = api_pb2.NamespaceMode.POD
CONTAINER = api_pb2.NamespaceMode.CONTAINER
TARGET = api_pb2.NamespaceMode.TARGET


@dataclass
class ContainerSpecContext:
    """Everything :func:`container_spec` needs; the domain gathers it, the spec only reads it.

    ``namespace_paths`` holds the pod's namespaces to join, keyed ``net``, ``ipc``, ``uts`` and
    ``pid`` (the pod's when it shares one, the target container's for ``TARGET``); each is
    needed only when the container's namespace options ask for it (kubelet copies the pod's
    host-network/pid/ipc choices into every container's options). ``pod_files`` maps
    container paths (``/etc/hostname``, ``/etc/hosts``, ``/etc/resolv.conf``, ``/dev/shm``) to
    host files to bind. ``cgroup_parent`` is the pod's (see crio_py.cgroups.pod_cgroup_parent).
    """

    container_id: str
    sandbox_id: str
    config: api_pb2.ContainerConfig
    sandbox_config: api_pb2.PodSandboxConfig
    image_config: dict[str, Any]
    rootfs: Path
    cgroup_parent: str
    settings: Config
    namespace_paths: dict[str, str] = field(default_factory=dict)
    pod_files: dict[str, str] = field(default_factory=dict)
    recursive_read_only_supported: bool = False
    annotations: dict[str, str] = field(default_factory=dict)


def process_args(config: api_pb2.ContainerConfig, image: dict[str, Any], where: str) -> list[str]:
    """Kubelet's rule: ``command`` replaces the Entrypoint and drops Cmd; ``args`` alone replace Cmd."""
    entrypoint = list(image.get("Entrypoint") or [])
    cmd = list(image.get("Cmd") or [])
    if config.command:
        args = [*config.command, *config.args]
    elif config.args:
        args = [*entrypoint, *config.args]
    else:
        args = [*entrypoint, *cmd]
    if not args:
        raise InvalidArgument(f"{where}: no command: neither the request nor the image names one")
    return args


def _env_item(kv: api_pb2.KeyValue, where: str) -> str:
    value: str | bytes = kv.value
    if isinstance(value, bytes):
        try:
            value = value.decode()
        except UnicodeDecodeError:
            raise InvalidArgument(f"{where}: the value of environment variable {kv.key!r} is not UTF-8") from None
    if not kv.key or "=" in kv.key:
        raise InvalidArgument(f"{where}: environment variable name {kv.key!r} must be non-empty and without '='")
    return f"{kv.key}={value}"


def _join(ctx: ContainerSpecContext, key: str, where: str) -> dict[str, Any]:
    path = ctx.namespace_paths.get(key)
    if not path:
        raise FailedPrecondition(f"{where}: the {key} namespace to join is not known (is the pod sandbox running?)")
    return {"type": NAMESPACE_TYPES[key], "path": path}


def _effective_namespace_options(
    own: api_pb2.NamespaceOption, sandbox: api_pb2.PodSandboxConfig
) -> api_pb2.NamespaceOption:
    """Network and IPC are the pod's, whatever the container says (as in CRI-O and containerd);
    so is a host PID namespace. kubelet sends both consistently, crictl users often do not."""
    pod = sandbox.linux.security_context.namespace_options
    out = api_pb2.NamespaceOption()
    out.CopyFrom(own)
    out.network, out.ipc = pod.network, pod.ipc
    if pod.pid == NODE:
        out.pid = NODE
    return out


def _namespaces(ctx: ContainerSpecContext, opts: api_pb2.NamespaceOption, where: str) -> list[dict[str, Any]]:
    out = base_namespaces()
    if opts.HasField("userns_options") and opts.userns_options.mode != NODE:
        raise InvalidArgument(f"{where}: user namespaces are not supported by crio-py")
    if opts.network != NODE:
        out.append(_join(ctx, "net", where))
        # Kubelet gives host-network pods the host's UTS namespace too, and pod-network pods the pod's.
        out.append(_join(ctx, "uts", where))
    if opts.ipc != NODE:
        out.append(_join(ctx, "ipc", where))
    if opts.pid in (POD, TARGET):
        out.append(_join(ctx, "pid", where))
    elif opts.pid == CONTAINER:
        out.append({"type": "pid"})
    return out


def _annotations(ctx: ContainerSpecContext) -> dict[str, str]:
    c, pod = ctx.config, ctx.sandbox_config.metadata
    ours = {
        "io.kubernetes.cri.container-type": "container",
        "io.kubernetes.cri.container-name": c.metadata.name,
        "io.kubernetes.cri.sandbox-id": ctx.sandbox_id,
        "io.kubernetes.cri.sandbox-name": pod.name,
        "io.kubernetes.cri.sandbox-namespace": pod.namespace,
        "io.kubernetes.cri.sandbox-uid": pod.uid,
        "io.kubernetes.cri.image-name": c.image.image,
        "io.kubernetes.container.name": c.metadata.name,
        "io.kubernetes.pod.name": pod.name,
        "io.kubernetes.pod.namespace": pod.namespace,
        "io.kubernetes.pod.uid": pod.uid,
    }
    # The request's annotations may not pose as ours: ours are what the daemon relies on.
    return {**dict(c.annotations), **ctx.annotations, **ours}


def container_spec(ctx: ContainerSpecContext) -> dict[str, Any]:
    """The OCI runtime spec (config.json) of an application container."""
    cfg = ctx.config
    where = f"container {cfg.metadata.name or ctx.container_id}"
    linux_cfg = cfg.linux
    sc = linux_cfg.security_context
    image = image_process_config(ctx.image_config)
    opts = _effective_namespace_options(sc.namespace_options, ctx.sandbox_config)
    host_network = opts.network == NODE
    if sc.HasField("run_as_group") and not (sc.HasField("run_as_user") or sc.run_as_username):
        # kubelet's rule: a group alone would pair with whatever user the image names.
        raise InvalidArgument(f"{where}: run_as_group is set without run_as_user or run_as_username")

    user = resolve_user(ctx.rootfs, sc, image.get("User", ""))
    caps = capabilities.resolve(
        ctx.settings.default_capabilities,
        list(sc.capabilities.add_capabilities),
        list(sc.capabilities.drop_capabilities),
        sc.privileged,
    )
    ambient = [capabilities.normalize(c) for c in sc.capabilities.add_ambient_capabilities]
    if ambient:
        caps = [c for c in capabilities.ALL_CAPABILITIES if c in {*caps, *ambient}]
    hostname = "" if host_network else ctx.sandbox_config.hostname
    env = merge_env(
        [DEFAULT_PATH, f"HOSTNAME={hostname or os.uname().nodename}"],
        ["TERM=xterm"] if cfg.tty else [],
        image.get("Env") or [],
        [_env_item(kv, where) for kv in cfg.envs],
    )
    process: dict[str, Any] = {
        "terminal": cfg.tty,
        "user": user_section(user),
        "args": process_args(cfg, image, where),
        "env": env,
        "cwd": cfg.working_dir or image.get("WorkingDir") or "/",
        "capabilities": capabilities_section(caps, ambient),
        "rlimits": rlimits(),
        "noNewPrivileges": sc.no_new_privs,
    }
    if linux_cfg.HasField("resources"):
        process["oomScoreAdj"] = clamp_oom_score_adj(linux_cfg.resources.oom_score_adj)

    binds, rootfs_propagation = request_mounts(cfg.mounts, ctx.recursive_read_only_supported, where)
    mounts = merge_mounts(
        default_mounts(ctx.settings.shm_size, sc.privileged),
        pod_file_mounts(ctx.pod_files, sc.readonly_rootfs),
        binds,
    )

    devices, device_rules = request_devices(cfg.devices, where)
    cgroups_path = container_cgroups_path(
        ctx.settings.cgroup_manager, ctx.cgroup_parent, CONTAINER_PREFIX, ctx.container_id
    )
    resources = linux_resources(linux_cfg.resources if linux_cfg.HasField("resources") else None, where, cgroups_path)
    linux: dict[str, Any] = {"namespaces": _namespaces(ctx, opts, where), "cgroupsPath": cgroups_path}
    if sc.privileged:
        host = host_devices()
        taken = {d["path"] for d in devices}
        linux["devices"] = devices + [d for d in host if d["path"] not in taken]
        linux["resources"] = {"devices": [ALLOW_ALL], **resources}
    else:
        linux["devices"] = devices
        linux["resources"] = {"devices": [DENY_ALL, *device_rules], **resources}
        linux["maskedPaths"] = list(sc.masked_paths) or list(DEFAULT_MASKED_PATHS)
        linux["readonlyPaths"] = list(sc.readonly_paths) or list(DEFAULT_READONLY_PATHS)
        section = seccomp_section(
            sc, caps, ctx.settings.seccomp_profile, ctx.settings.seccomp_use_default_when_empty
        )
        if section is not None:
            linux["seccomp"] = section
    if rootfs_propagation:
        linux["rootfsPropagation"] = rootfs_propagation

    spec: dict[str, Any] = {
        "ociVersion": OCI_VERSION,
        "process": process,
        "root": {"path": str(ctx.rootfs), "readonly": sc.readonly_rootfs},
        "mounts": mounts,
        "annotations": _annotations(ctx),
        "linux": linux,
    }
    if hostname:
        spec["hostname"] = hostname
    return spec
