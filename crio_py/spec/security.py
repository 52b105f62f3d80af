"""Security settings read from CRI messages: the seccomp choice and pod sysctls."""

from __future__ import annotations

import logging
from typing import Any

from crio_py import seccomp
from crio_py.cri import api_pb2
from crio_py.errors import InvalidArgument

log = logging.getLogger(__name__)

# Sysctls a namespace isolates, by namespace. Anything else is node-wide: refused.
_IPC_EXACT = ("kernel.sem",)
_IPC_PREFIXES = ("kernel.shm", "kernel.msg", "fs.mqueue.")
_NET_PREFIX = "net."


def seccomp_section(
    sc: api_pb2.LinuxContainerSecurityContext | api_pb2.LinuxSandboxSecurityContext,
    capabilities: list[str],
    runtime_default_path: str,
    default_when_empty: bool = False,
) -> dict[str, Any] | None:
    """The ``linux.seccomp`` section for a security context (None: unconfined).

    ``seccomp`` wins over the deprecated ``seccomp_profile_path``; with neither the container is
    unconfined, as with every CRI runtime (kubelet asks for RuntimeDefault explicitly), unless
    ``default_when_empty`` (the ``seccomp_use_default_when_empty`` setting) makes it RuntimeDefault.
    """
    if sc.HasField("seccomp"):
        kind = api_pb2.SecurityProfile.ProfileType.Name(sc.seccomp.profile_type)
        path = sc.seccomp.localhost_ref
    elif not sc.seccomp_profile_path and default_when_empty:
        kind, path = seccomp.RUNTIME_DEFAULT, ""
    else:
        kind, path = seccomp.parse_profile_path(sc.seccomp_profile_path)
    return seccomp.spec_seccomp(kind, path, capabilities, runtime_default_path)


def _normalize_sysctl(name: str) -> str:
    # "net/ipv4/conf/eth0.100/rp_filter" is the slash spelling of "net.ipv4.conf.eth0/100.rp_filter".
    if "/" in name:
        return name.translate(str.maketrans("./", "/."))
    return name


def _namespace_of(name: str) -> str:
    if name in _IPC_EXACT or name.startswith(_IPC_PREFIXES):
        return "ipc"
    if name.startswith(_NET_PREFIX):
        return "network"
    return ""


def pod_sysctls(
    requested: dict[str, str], defaults: dict[str, str], host_network: bool, host_ipc: bool
) -> dict[str, str]:
    """The sysctls of a pod: the daemon's defaults under the pod's own, checked for namespacing.

    A sysctl is allowed only when the pod has its own namespace for it: IPC for ``kernel.shm*``,
    ``kernel.msg*``, ``kernel.sem``, ``fs.mqueue.*``; network for ``net.*``. The pod's own
    sysctls are refused otherwise; defaults that do not apply to this pod are skipped.
    """
    host = {"ipc": host_ipc, "network": host_network}
    out: dict[str, str] = {}
    for name, value in defaults.items():
        key = _normalize_sysctl(name)
        ns = _namespace_of(key)
        if ns and not host[ns]:
            out[key] = value
        else:
            log.debug("default sysctl %s does not apply to this pod", key, extra={"sysctl": key})
    for name, value in requested.items():
        key = _normalize_sysctl(name)
        ns = _namespace_of(key)
        if not ns:
            raise InvalidArgument(f"sysctl {name!r} is not namespaced: it would change the whole node")
        if host[ns]:
            raise InvalidArgument(f"sysctl {name!r} needs the pod's own {ns} namespace, but the pod uses the host's")
        out[key] = value
    return out
