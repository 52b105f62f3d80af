"""Process limits and cgroup resources: rlimits, oom_score_adj, LinuxContainerResources."""

from __future__ import annotations

import functools
import logging
import resource
from pathlib import Path
from typing import Any

from crio_py.cgroups import cgroup_version
from crio_py.cgroups.controllers import available_controllers, hugepage_sizes
from crio_py.cri import api_pb2
from crio_py.errors import InvalidArgument
from crio_py.spec.capabilities import caps_from_mask

log = logging.getLogger(__name__)

DEFAULT_NOFILE = 1048576
SANDBOX_OOM_SCORE_ADJ = -998


@functools.cache
def _own_oom_score_adj() -> int:
    return int(Path("/proc/self/oom_score_adj").read_text())


@functools.cache
def _has_sys_resource() -> bool:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return "CAP_SYS_RESOURCE" in caps_from_mask(int(line.split()[1], 16))
    return False


_warned: set[str] = set()


def _warn_once(what: str, requested: int, used: int) -> None:
    if what in _warned:
        return
    _warned.add(what)
    log.warning(
        "%s %d needs CAP_SYS_RESOURCE, which crio-py lacks; using %d instead (logged once per setting)",
        what,
        requested,
        used,
        extra={"requested": requested, "used": used},
    )


def clamp_oom_score_adj(value: int) -> int:
    """``value``, raised to the daemon's own oom_score_adj when lowering below it is not allowed.

    Without CAP_SYS_RESOURCE the kernel refuses to set a value below the caller's, and runc
    would fail the whole container (containerd calls this restrict_oom_score_adj).
    """
    value = max(-1000, min(1000, value))
    if _has_sys_resource():
        return value
    own = _own_oom_score_adj()
    if value < own:
        _warn_once("oom_score_adj", value, own)
        return own
    return value


def rlimits() -> list[dict[str, Any]]:
    """The default rlimits: RLIMIT_NOFILE 1048576, capped at the daemon's hard limit when it may not raise it."""
    nofile = DEFAULT_NOFILE
    if not _has_sys_resource():
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        if hard != resource.RLIM_INFINITY and hard < nofile:
            _warn_once("RLIMIT_NOFILE", nofile, hard)
            nofile = hard
    return [{"type": "RLIMIT_NOFILE", "hard": nofile, "soft": nofile}]


def linux_resources(res: api_pb2.LinuxContainerResources | None, where: str, cgroups_path: str) -> dict[str, Any]:
    """The OCI ``linux.resources`` (without devices) for CRI resources; unset fields are left out.

    ``memory_swap_limit_in_bytes`` is memory plus swap, as OCI's ``memory.swap`` (runc converts
    it for cgroup v2). ``unified`` entries need cgroup v2 and are refused on v1. Settings of a
    controller the cgroup at ``cgroups_path`` cannot use (hugetlb not mounted, a v2 controller
    its parent lacks) and hugepage limits of page sizes the kernel does not offer are left out
    with a debug log: kubelet sends them for every node, runc would fail the container.
    """
    out: dict[str, Any] = {}
    if res is None:
        return out
    cpu: dict[str, Any] = {}
    if res.cpu_shares:
        cpu["shares"] = res.cpu_shares
    if res.cpu_quota:
        cpu["quota"] = res.cpu_quota
    if res.cpu_period:
        cpu["period"] = res.cpu_period
    if res.cpuset_cpus:
        cpu["cpus"] = res.cpuset_cpus
    if res.cpuset_mems:
        cpu["mems"] = res.cpuset_mems
    if cpu:
        out["cpu"] = cpu
    memory: dict[str, Any] = {}
    if res.memory_limit_in_bytes:
        memory["limit"] = res.memory_limit_in_bytes
    if res.memory_swap_limit_in_bytes:
        if res.memory_limit_in_bytes and 0 < res.memory_swap_limit_in_bytes < res.memory_limit_in_bytes:
            raise InvalidArgument(
                f"{where}: memory_swap_limit_in_bytes ({res.memory_swap_limit_in_bytes}) counts memory plus "
                f"swap and must not be below memory_limit_in_bytes ({res.memory_limit_in_bytes})"
            )
        memory["swap"] = res.memory_swap_limit_in_bytes
    if memory:
        out["memory"] = memory
    if res.unified and cgroup_version() != 2:
        raise InvalidArgument(
            f"{where}: unified cgroup settings {sorted(res.unified)} need cgroup v2; this host runs v1"
        )
    if res.hugepage_limits or res.unified:
        controllers = available_controllers(cgroups_path)
        hugepages = _hugepage_limits(res, where, controllers)
        if hugepages:
            out["hugepageLimits"] = hugepages
        unified = _unified(res, where, controllers)
        if unified:
            out["unified"] = unified
    return out


def _skipped(where: str, what: str, why: str) -> None:
    log.debug("%s: skipping %s: %s", where, what, why, extra={"setting": what, "reason": why})


def _hugepage_limits(
    res: api_pb2.LinuxContainerResources, where: str, controllers: frozenset[str]
) -> list[dict[str, Any]]:
    if not res.hugepage_limits:
        return []
    if "hugetlb" not in controllers:
        why = "controller not mounted" if cgroup_version() == 1 else "not in the parent's cgroup.controllers"
        _skipped(where, "hugepage limits", f"hugetlb {why}")
        return []
    offered = hugepage_sizes()
    out = []
    for h in res.hugepage_limits:
        if h.page_size in offered:
            out.append({"pageSize": h.page_size, "limit": h.limit})
        else:
            _skipped(where, f"hugepage limit {h.page_size}", f"page sizes offered: {sorted(offered) or 'none'}")
    return out


def _unified(res: api_pb2.LinuxContainerResources, where: str, controllers: frozenset[str]) -> dict[str, str]:
    out = {}
    for key, value in res.unified.items():
        controller = key.partition(".")[0]
        # cgroup.* files belong to every cgroup, not to a controller
        if controller == "cgroup" or controller in controllers:
            out[key] = value
        else:
            _skipped(where, f"unified {key}", f"{controller} not in the parent's cgroup.controllers")
    return out
