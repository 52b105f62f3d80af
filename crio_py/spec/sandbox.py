"""The OCI runtime spec of a pod's infra (pause) container, which holds the pod's namespaces."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crio_py.cgroups import CONTAINER_PREFIX, container_cgroups_path
from crio_py.config import Config
from crio_py.cri import api_pb2
from crio_py.errors import InvalidArgument
from crio_py.spec import capabilities
from crio_py.spec.common import (
    DEFAULT_PATH,
    OCI_VERSION,
    base_namespaces,
    capabilities_section,
    image_process_config,
    merge_env,
    user_section,
)
from crio_py.spec.devices import ALLOW_ALL, DENY_ALL
from crio_py.spec.limits import SANDBOX_OOM_SCORE_ADJ, clamp_oom_score_adj, linux_resources, rlimits
from crio_py.spec.mounts import (
    DEFAULT_MASKED_PATHS,
    DEFAULT_READONLY_PATHS,
    default_mounts,
    merge_mounts,
    pod_file_mounts,
)
from crio_py.spec.security import pod_sysctls, seccomp_section
from crio_py.spec.user import resolve_user

NODE = api_pb2.NamespaceMode.NODE


@dataclass
class SandboxSpecContext:
    """Everything :func:`sandbox_spec` needs.

    ``netns_path`` is the pinned network namespace to join; empty means a new one (or the
    host's, for host-network pods). ``pod_files`` maps container paths to host files to bind,
    as for containers (normally just ``/dev/shm``).
    """

    sandbox_id: str
    config: api_pb2.PodSandboxConfig
    rootfs: Path
    cgroup_parent: str
    settings: Config
    netns_path: str = ""
    image_config: dict[str, Any] = field(default_factory=dict)
    pod_files: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)


def _args(ctx: SandboxSpecContext, image: dict[str, Any]) -> list[str]:
    args = shlex.split(ctx.settings.pause_command) or [*(image.get("Entrypoint") or []), *(image.get("Cmd") or [])]
    if not args:
        raise InvalidArgument(
            f"pod sandbox {ctx.sandbox_id}: no pause command: pause_command is empty and so is the image's"
        )
    return args


def _namespaces(ctx: SandboxSpecContext, opts: api_pb2.NamespaceOption) -> list[dict[str, Any]]:
    out = base_namespaces()
    if opts.HasField("userns_options") and opts.userns_options.mode != NODE:
        raise InvalidArgument(f"pod sandbox {ctx.sandbox_id}: user namespaces are not supported by crio-py")
    if opts.network != NODE:
        out.append({"type": "network", "path": ctx.netns_path} if ctx.netns_path else {"type": "network"})
        out.append({"type": "uts"})
    if opts.ipc != NODE:
        out.append({"type": "ipc"})
    # The pause process is pid 1 of the pod's pid namespace when the pod shares one, and of its
    # own otherwise (there is nothing to share with).
    if opts.pid != NODE:
        out.append({"type": "pid"})
    return out


def _annotations(ctx: SandboxSpecContext) -> dict[str, str]:
    meta = ctx.config.metadata
    ours = {
        "io.kubernetes.cri.container-type": "sandbox",
        "io.kubernetes.cri.sandbox-id": ctx.sandbox_id,
        "io.kubernetes.cri.sandbox-name": meta.name,
        "io.kubernetes.cri.sandbox-namespace": meta.namespace,
        "io.kubernetes.cri.sandbox-uid": meta.uid,
        "io.kubernetes.cri.sandbox-log-directory": ctx.config.log_directory,
        "io.kubernetes.pod.name": meta.name,
        "io.kubernetes.pod.namespace": meta.namespace,
        "io.kubernetes.pod.uid": meta.uid,
    }
    return {**dict(ctx.config.annotations), **ctx.annotations, **ours}


def sandbox_spec(ctx: SandboxSpecContext) -> dict[str, Any]:
    """The OCI runtime spec (config.json) of a pod's pause container."""
    linux_cfg = ctx.config.linux
    sc = linux_cfg.security_context
    opts = sc.namespace_options
    host_network = opts.network == NODE
    image = image_process_config(ctx.image_config)
    user = resolve_user(ctx.rootfs, sc, image.get("User", ""))
    caps = capabilities.resolve(ctx.settings.default_capabilities, [], [], sc.privileged)
    process: dict[str, Any] = {
        "terminal": False,
        "user": user_section(user),
        "args": _args(ctx, image),
        "env": merge_env([DEFAULT_PATH], image.get("Env") or []),
        "cwd": "/",
        "capabilities": capabilities_section(caps),
        "rlimits": rlimits(),
        # Pause never needs to gain privileges; the flag closes setuid binaries in the image.
        "noNewPrivileges": True,
        "oomScoreAdj": clamp_oom_score_adj(SANDBOX_OOM_SCORE_ADJ),
    }
    cgroups_path = container_cgroups_path(
        ctx.settings.cgroup_manager, ctx.cgroup_parent, CONTAINER_PREFIX, ctx.sandbox_id
    )
    resources = linux_resources(
        linux_cfg.overhead if linux_cfg.HasField("overhead") else None,
        f"pod sandbox {ctx.sandbox_id} overhead",
        cgroups_path,
    )
    linux: dict[str, Any] = {
        "namespaces": _namespaces(ctx, opts),
        "cgroupsPath": cgroups_path,
        "resources": {"devices": [ALLOW_ALL if sc.privileged else DENY_ALL], **resources},
        "sysctl": pod_sysctls(dict(linux_cfg.sysctls), ctx.settings.default_sysctls, host_network, opts.ipc == NODE),
    }
    if not sc.privileged:
        linux["maskedPaths"] = list(DEFAULT_MASKED_PATHS)
        linux["readonlyPaths"] = list(DEFAULT_READONLY_PATHS)
        section = seccomp_section(
            sc, caps, ctx.settings.seccomp_profile, ctx.settings.seccomp_use_default_when_empty
        )
        if section is not None:
            linux["seccomp"] = section
    spec: dict[str, Any] = {
        "ociVersion": OCI_VERSION,
        "process": process,
        "root": {"path": str(ctx.rootfs), "readonly": True},
        "mounts": merge_mounts(
            default_mounts(ctx.settings.shm_size, sc.privileged), pod_file_mounts(ctx.pod_files, True)
        ),
        "annotations": _annotations(ctx),
        "linux": linux,
    }
    if not host_network and ctx.config.hostname:
        spec["hostname"] = ctx.config.hostname
    return spec
