"""LinuxContainerResources: every value in the range the kernel (and runc) accept, or refused.

A value out of range used to reach runc and come back INTERNAL from a half-made container.
Zero means "not set" for every number, as kubelet sends it. The one normalisation: cpu_shares 1
becomes 2, the kernel's minimum (cgroup v2's shares-to-weight conversion fails on 1).
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

from crio_py.cri import api_pb2 as pb
from crio_py.errors import InvalidArgument
from crio_py.server.validation import limits

_CPU_LIST = re.compile(r"\d+(-\d+)?(,\d+(-\d+)?)*")
_PAGE_SIZE = re.compile(r"(\d+)(KB|MB|GB|TB)")
_UNIFIED_KEY = re.compile(r"[a-z][a-z0-9_]*\.[a-z0-9_.]+")
_UNITS = {"KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40}


def check_resources(res: pb.LinuxContainerResources, where: str) -> None:
    """Raise InvalidArgument naming the first field out of range; raise cpu_shares 1 to 2."""
    if res.cpu_shares == 1:
        res.cpu_shares = limits.MIN_CPU_SHARES
    _range(res.cpu_shares, f"{where}.cpu_shares", limits.MIN_CPU_SHARES, limits.MAX_CPU_SHARES)
    _range(res.cpu_period, f"{where}.cpu_period", limits.MIN_CPU_PERIOD, limits.MAX_CPU_PERIOD)
    if res.cpu_quota != -1:
        _range(res.cpu_quota, f"{where}.cpu_quota", limits.MIN_CPU_QUOTA, limits.MAX_CPU_QUOTA, "-1 (no limit), ")
    if res.memory_limit_in_bytes != -1:
        _range(
            res.memory_limit_in_bytes,
            f"{where}.memory_limit_in_bytes",
            limits.MIN_MEMORY_BYTES,
            limits.MAX_MEMORY_BYTES,
            "-1 (no limit), ",
        )
    if res.memory_swap_limit_in_bytes != -1:
        _range(
            res.memory_swap_limit_in_bytes,
            f"{where}.memory_swap_limit_in_bytes",
            limits.MIN_MEMORY_BYTES,
            limits.MAX_MEMORY_BYTES,
            "-1 (no limit), ",
        )
    if res.memory_swap_limit_in_bytes > 0 and res.memory_limit_in_bytes <= 0:
        # The kernel (v1) and runc (v2) both refuse it, and a refused runc update can leave the
        # container's recorded limits out of step with its cgroup: every later update fails too.
        raise InvalidArgument(
            f"{where}.memory_swap_limit_in_bytes needs memory_limit_in_bytes (it counts memory plus swap)"
        )
    if 0 < res.memory_swap_limit_in_bytes < res.memory_limit_in_bytes:
        raise InvalidArgument(
            f"{where}.memory_swap_limit_in_bytes {res.memory_swap_limit_in_bytes} counts memory plus swap and must "
            f"not be below memory_limit_in_bytes {res.memory_limit_in_bytes}"
        )
    low, high = limits.OOM_SCORE_ADJ_RANGE
    if not low <= res.oom_score_adj <= high:
        raise InvalidArgument(f"{where}.oom_score_adj {res.oom_score_adj} is not in {low}..{high}")
    if res.cpuset_cpus:
        _check_cpu_list(res.cpuset_cpus, f"{where}.cpuset_cpus", _online("/sys/devices/system/cpu/online"))
    if res.cpuset_mems:
        _check_cpu_list(res.cpuset_mems, f"{where}.cpuset_mems", _online("/sys/devices/system/node/online"))
    for i, hp in enumerate(res.hugepage_limits):
        _check_hugepage(hp, f"{where}.hugepage_limits[{i}]")
    for key, value in res.unified.items():
        if not _UNIFIED_KEY.fullmatch(key):
            raise InvalidArgument(f"{where}.unified key {key[:80]!r} is not a cgroup v2 file name like 'memory.high'")
        if "\n" in value:
            raise InvalidArgument(f"{where}.unified[{key!r}] must be a single line")


def _range(value: int, where: str, low: int, high: int, also: str = "") -> None:
    if value and not low <= value <= high:
        raise InvalidArgument(f"{where} {value} is not {also}0 (unset) or in {low}..{high}")


def _parse_cpu_list(text: str) -> set[int]:
    out: set[int] = set()
    for part in text.split(","):
        first, _, last = part.partition("-")
        low, high = int(first), int(last or first)
        if low > high or high > 1 << 16:
            raise ValueError(part)
        out.update(range(low, high + 1))
    return out


@functools.cache
def _online(path: str) -> frozenset[int]:
    """CPUs or memory nodes the host has online (one node 0 when the kernel has no NUMA)."""
    try:
        return frozenset(_parse_cpu_list(Path(path).read_text().strip()))
    except (OSError, ValueError):
        return frozenset({0})


def _check_cpu_list(text: str, where: str, online: frozenset[int]) -> None:
    try:
        wanted = _parse_cpu_list(text) if _CPU_LIST.fullmatch(text) else None
    except ValueError:
        wanted = None
    if wanted is None:
        raise InvalidArgument(f"{where} {text[:80]!r} is not a list like '0-3,5'")
    missing = sorted(wanted - online)
    if missing:
        have = ",".join(str(c) for c in sorted(online))
        raise InvalidArgument(
            f"{where} {text[:80]!r} names {missing[:8]} which this host does not have (online: {have})"
        )


@functools.cache
def _host_page_sizes() -> frozenset[int]:
    try:
        names = [p.name for p in Path("/sys/kernel/mm/hugepages").iterdir()]
    except OSError:
        return frozenset()
    return frozenset(int(n.removeprefix("hugepages-").removesuffix("kB")) * 1024 for n in names if n.endswith("kB"))


def _check_hugepage(hp: pb.HugepageLimit, where: str) -> None:
    m = _PAGE_SIZE.fullmatch(hp.page_size)
    size = int(m.group(1)) * _UNITS[m.group(2)] if m else 0
    if not size:
        raise InvalidArgument(f"{where}.page_size {hp.page_size[:40]!r} is not a size like '2MB' or '1GB'")
    if size not in _host_page_sizes():
        raise InvalidArgument(f"{where}.page_size {hp.page_size} is not a huge page size of this host")
    if hp.limit > limits.MAX_HUGEPAGE_LIMIT:
        raise InvalidArgument(f"{where}.limit {hp.limit} is over {limits.MAX_HUGEPAGE_LIMIT}")
