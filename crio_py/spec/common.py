"""Pieces shared by the container and the sandbox (pause) specs."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from crio_py.cgroups import cgroup_version
from crio_py.spec.user import ResolvedUser

OCI_VERSION = "1.0.2"
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Namespace names as the domain passes their paths, mapped to OCI namespace types.
NAMESPACE_TYPES = {"net": "network", "ipc": "ipc", "uts": "uts", "pid": "pid"}


def merge_env(*layers: Iterable[str]) -> list[str]:
    """``KEY=value`` lists merged in order: a later layer's value for a key replaces the earlier one in place."""
    out: dict[str, str] = {}
    for layer in layers:
        for item in layer:
            key = item.partition("=")[0]
            out[key] = item
    return list(out.values())


def user_section(user: ResolvedUser) -> dict[str, Any]:
    """The OCI ``process.user``."""
    section: dict[str, Any] = {"uid": user.uid, "gid": user.gid}
    if user.additional_gids:
        section["additionalGids"] = list(user.additional_gids)
    return section


def capabilities_section(caps: list[str], ambient: list[str] | None = None) -> dict[str, Any]:
    """The OCI ``process.capabilities``. Inheritable stays empty unless ambient capabilities need it
    (a non-empty inheritable set let execve'd set-capability binaries gain privileges: CVE-2022-24769)."""
    section: dict[str, Any] = {"bounding": list(caps), "effective": list(caps), "permitted": list(caps)}
    if ambient:
        section["inheritable"] = list(ambient)
        section["ambient"] = list(ambient)
    return section


def base_namespaces() -> list[dict[str, Any]]:
    """The namespaces every container gets new: mount, and cgroup where the host runs cgroup v2."""
    out: list[dict[str, Any]] = [{"type": "mount"}]
    if cgroup_version() == 2:
        out.append({"type": "cgroup"})
    return out


def image_process_config(image_config: dict[str, Any]) -> dict[str, Any]:
    """The ``config`` part of an OCI image config (empty when the image has none)."""
    return image_config.get("config") or {}
