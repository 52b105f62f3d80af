"""Cgroups: which version the host runs, where pods and containers go, stats and cleanup.

Two drivers name the same places differently. With ``cgroupfs`` a cgroup is a path below the
root of every hierarchy (``/kubepods/pod<uid>/crio-py-<id>``); with ``systemd`` pods are slices
(``kubepods-pod<uid>.slice``) and runc asks systemd for a scope per container, spelled
``<slice>:<prefix>:<id>`` in the OCI spec. Everything on disk below is addressed by the
cgroupfs-style path; :func:`fs_path` turns either spelling into it.

The host's layout is read from ``/proc/self/mountinfo``: cgroup v1 (one mount per controller,
possibly with an empty v2 mount beside them, the "hybrid" layout) or unified v2.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from crio_py.errors import Internal, InvalidArgument

log = logging.getLogger(__name__)

CGROUPFS = "cgroupfs"
SYSTEMD = "systemd"
DRIVERS = (CGROUPFS, SYSTEMD)
# Where pods go when kubelet names no parent. A slice name's dashes mean nesting, hence the
# underscore: "crio-py.slice" would be a child of "crio.slice".
DEFAULT_CGROUPFS_PARENT = "/crio-py"
DEFAULT_SYSTEMD_PARENT = "crio_py.slice"
CONTAINER_PREFIX = "crio-py"

_MOUNTINFO = "/proc/self/mountinfo"
# rmdir of a cgroup whose last task is still exiting fails with EBUSY for a few milliseconds.
_REMOVE_RETRY_SECONDS = 2.0


@dataclass(frozen=True)
class Hierarchy:
    """One mounted cgroup hierarchy: its mount point, version and controllers (v1)."""

    mountpoint: str
    version: int
    controllers: tuple[str, ...]


def parse_mountinfo(text: str) -> list[Hierarchy]:
    """The cgroup hierarchies listed in a mountinfo text, in mount order."""
    out: list[Hierarchy] = []
    for line in text.splitlines():
        pre, sep, post = line.partition(" - ")
        if not sep:
            continue
        fields = pre.split()
        fstype, _source, *rest = post.split()
        options = rest[0].split(",") if rest else []
        mountpoint = fields[4].replace("\\040", " ")
        if fstype == "cgroup2":
            out.append(Hierarchy(mountpoint, 2, ()))
        elif fstype == "cgroup":
            known = ("rw", "ro", "relatime", "noatime", "nosuid", "nodev", "noexec", "xattr")
            controllers = tuple(o for o in options if o not in known and not o.startswith("release_agent"))
            out.append(Hierarchy(mountpoint, 1, controllers))
    return out


def version_of(hierarchies: list[Hierarchy]) -> int:
    """2 when the only cgroup mount is a v2 one (unified mode), else 1 (legacy or hybrid)."""
    if hierarchies and all(h.version == 2 for h in hierarchies):
        return 2
    return 1


@functools.cache
def hierarchies() -> tuple[Hierarchy, ...]:
    """The host's cgroup hierarchies (read once: they do not change while the daemon runs)."""
    return tuple(parse_mountinfo(Path(_MOUNTINFO).read_text()))


def cgroup_version() -> int:
    """The cgroup version containers get on this host: 1 (legacy/hybrid) or 2 (unified)."""
    return _layout().version


def pod_cgroup_parent(driver: str, requested_parent: str) -> str:
    """The cgroup parent of a pod: kubelet's ``cgroup_parent``, or ours when it sent none.

    cgroupfs parents are absolute paths (``/kubepods/burstable/pod<uid>``); systemd parents are
    slice names (``kubepods-burstable-pod<uid>.slice``). A parent in the other driver's spelling
    means kubelet and crio-py disagree on the driver, which is reported rather than guessed at.
    """
    if driver not in DRIVERS:
        raise InvalidArgument(f"unknown cgroup driver {driver!r} (known: {', '.join(DRIVERS)})")
    if driver == CGROUPFS:
        if not requested_parent:
            return DEFAULT_CGROUPFS_PARENT
        if not requested_parent.startswith("/") or ".." in requested_parent.split("/"):
            raise InvalidArgument(
                f"cgroup parent {requested_parent!r} must be an absolute path without '..' with the "
                "cgroupfs driver (is kubelet configured for systemd?)"
            )
        return requested_parent.rstrip("/") or "/"
    if not requested_parent:
        return DEFAULT_SYSTEMD_PARENT
    if "/" in requested_parent or not requested_parent.endswith(".slice"):
        raise InvalidArgument(
            f"cgroup parent {requested_parent!r} must be a systemd slice name like 'kubepods.slice' with the "
            "systemd driver (is kubelet configured for cgroupfs?)"
        )
    return requested_parent


def container_cgroups_path(driver: str, parent: str, kind_prefix: str, id: str) -> str:
    """The OCI ``linux.cgroupsPath`` of a container: ``<parent>/<prefix>-<id>`` or ``<slice>:<prefix>:<id>``."""
    parent = pod_cgroup_parent(driver, parent)
    if driver == CGROUPFS:
        return f"{parent.rstrip('/')}/{kind_prefix}-{id}"
    return f"{parent}:{kind_prefix}:{id}"


def systemd_slice_path(slice_name: str) -> str:
    """The cgroupfs path of a slice: ``a-b.slice`` lives at ``/a.slice/a-b.slice``."""
    if slice_name in ("", "-.slice"):
        return "/"
    stem = slice_name.removesuffix(".slice")
    parts = stem.split("-")
    return "/" + "/".join("-".join(parts[: i + 1]) + ".slice" for i in range(len(parts)))


def fs_path(cgroups_path: str) -> str:
    """The path below each hierarchy's root of an OCI cgroupsPath in either driver's spelling."""
    if ":" in cgroups_path:
        slice_name, prefix, name = cgroups_path.split(":", 2)
        return f"{systemd_slice_path(slice_name).rstrip('/')}/{prefix}-{name}.scope"
    if cgroups_path.endswith(".slice") and "/" not in cgroups_path:
        return systemd_slice_path(cgroups_path)
    return "/" + cgroups_path.strip("/")


def _all_dirs(path: str) -> list[Path]:
    rel = fs_path(path).lstrip("/")
    return [Path(h.mountpoint) / rel for h in hierarchies()]


def find_cgroup_dirs(path: str) -> dict[str, Path]:
    """The existing directories of a cgroup, keyed by v1 controller (``memory``, ``name=systemd``;
    co-mounted controllers share a directory) or ``"unified"`` for the v2 hierarchy."""
    out: dict[str, Path] = {}
    for h in hierarchies():
        d = Path(h.mountpoint) / fs_path(path).lstrip("/")
        if d.is_dir():
            for key in h.controllers if h.version == 1 else ("unified",):
                out[key] = d
    return out


def _rmdir_tree(top: Path) -> None:
    """rmdir ``top`` and its children, deepest first (cgroup dirs hold only pseudo-files)."""
    for dirpath, _dirs, _files in os.walk(top, topdown=False):
        deadline = time.monotonic() + _REMOVE_RETRY_SECONDS
        while True:
            try:
                os.rmdir(dirpath)
                break
            except FileNotFoundError:
                break
            except OSError as exc:
                if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                    raise Internal(
                        f"cannot remove cgroup {dirpath}: {exc.strerror} (are processes still in it?)"
                    ) from exc
                time.sleep(0.05)


def first_missing_ancestor(path: str) -> str:
    """The shortest prefix of a cgroupfs path that no hierarchy has yet ("" when it all exists).

    What a pod creating ``path`` would make, so that removing the pod can remove it again
    (:func:`remove_empty_ancestors`) and leave what existed before (kubelet's own cgroups) alone.
    """
    parts = [p for p in fs_path(path).split("/") if p]
    for depth in range(1, len(parts) + 1):
        prefix = "/" + "/".join(parts[:depth])
        if not any((Path(h.mountpoint) / prefix.lstrip("/")).is_dir() for h in hierarchies()):
            return prefix
    return ""


def remove_empty_ancestors(path: str, top: str) -> None:
    """rmdir ``path`` and its ancestors down to ``top`` (a prefix of it) in every hierarchy,
    stopping at the first that is not empty (another pod still uses it)."""
    path, top = fs_path(path), fs_path(top)
    if top == "/" or not (path == top or path.startswith(top + "/")):
        return
    for h in hierarchies():
        current = path
        while len(current) >= len(top):
            try:
                os.rmdir(Path(h.mountpoint) / current.lstrip("/"))
            except FileNotFoundError:
                pass
            except OSError:
                break
            current = os.path.dirname(current)


def remove_cgroup(path: str) -> None:
    """Remove a cgroup (``path`` in either driver's spelling) from every hierarchy, children first.

    Idempotent: a cgroup that is already gone is not an error. Fails with Internal naming the
    directory when one stays busy, i.e. still holds processes.
    """
    if fs_path(path) == "/":
        raise InvalidArgument("refusing to remove the root cgroup")
    for d in _all_dirs(path):
        if d.is_dir():
            _rmdir_tree(d)


@dataclass(frozen=True)
class MemoryStats:
    """Memory use of a cgroup in bytes, as kubelet's summary API wants it."""

    usage_bytes: int
    working_set_bytes: int
    rss_bytes: int
    limit_bytes: int | None
    page_faults: int
    major_page_faults: int


@dataclass(frozen=True)
class CpuStats:
    """Cumulative CPU time of a cgroup."""

    usage_ns: int


# Stats read a few files per container for every container, every 10 s: plain strings and
# open() rather than pathlib, and the controller's mount point looked up once.


def _read(path: str) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return os.read(fd, 1 << 16)  # every stats file is a few KiB at most
    except OSError:
        return None
    finally:
        os.close(fd)


def _read_int(path: str) -> int | None:
    data = _read(path)
    if data is None:
        return None
    text = data.strip()
    if text == b"max":
        return None
    return int(text)


def _read_kv(path: str) -> dict[str, int] | None:
    data = _read(path)
    if data is None:
        return None
    lines = data.decode().splitlines()
    out: dict[str, int] = {}
    for line in lines:
        key, _, val = line.partition(" ")
        try:
            out[key] = int(val)
        except ValueError:
            continue
    return out


class _Layout:
    """The version and each controller's mount point, derived once per ``hierarchies()`` answer."""

    def __init__(self, found: tuple[Hierarchy, ...]):
        self.found = found
        self.version = version_of(list(found))
        self.roots: dict[str, str | None] = {}

    def root(self, controller: str) -> str | None:
        if controller not in self.roots:
            self.roots[controller] = next(
                (
                    h.mountpoint.rstrip("/")
                    for h in self.found
                    if (h.version == 2 and self.version == 2) or controller in h.controllers
                ),
                None,
            )
        return self.roots[controller]


_layout_cache: list[_Layout] = []


def _layout() -> _Layout:
    # Keyed by identity, not by value: hashing the hierarchies on every read costs more than the read.
    found = hierarchies()
    cached = _layout_cache[0] if _layout_cache else None
    if cached is None or cached.found is not found:
        cached = _Layout(found)
        _layout_cache[:] = [cached]
    return cached


def _controller_dir(path: str, controller: str) -> str | None:
    """Where ``path`` is in the controller's hierarchy (existing or not: the first read tells)."""
    root = _layout().root(controller)
    return None if root is None else root + fs_path(path).rstrip("/")


# v1 reports "no limit" as the largest page-aligned long, not as a word.
_V1_UNLIMITED = 1 << 62


def memory_stats(path: str) -> MemoryStats | None:
    """Memory statistics of a cgroup, or None when it does not exist (any more)."""
    d = _controller_dir(path, "memory")
    if d is None:
        return None
    v2 = cgroup_version() == 2
    usage = _read_int(d + ("/memory.current" if v2 else "/memory.usage_in_bytes"))
    stat = _read_kv(d + "/memory.stat")
    if usage is None or stat is None:
        return None
    if v2:
        inactive = stat.get("inactive_file", 0)
        rss = stat.get("anon", 0)
        limit = _read_int(d + "/memory.max")
        faults, major = stat.get("pgfault", 0), stat.get("pgmajfault", 0)
    else:
        inactive = stat.get("total_inactive_file", 0)
        rss = stat.get("total_rss", 0)
        limit = _read_int(d + "/memory.limit_in_bytes")
        limit = None if limit is None or limit >= _V1_UNLIMITED else limit
        faults, major = stat.get("total_pgfault", 0), stat.get("total_pgmajfault", 0)
    return MemoryStats(
        usage_bytes=usage,
        working_set_bytes=max(usage - inactive, 0),
        rss_bytes=rss,
        limit_bytes=limit,
        page_faults=faults,
        major_page_faults=major,
    )


def cpu_stats(path: str) -> CpuStats | None:
    """CPU statistics of a cgroup, or None when it does not exist (any more)."""
    if cgroup_version() == 2:
        d = _controller_dir(path, "cpu")
        stat = None if d is None else _read_kv(d + "/cpu.stat")
        return None if stat is None else CpuStats(usage_ns=stat.get("usage_usec", 0) * 1000)
    d = _controller_dir(path, "cpuacct")
    usage = None if d is None else _read_int(d + "/cpuacct.usage")
    return None if usage is None else CpuStats(usage_ns=usage)


def process_count(path: str) -> int | None:
    """Tasks in a cgroup and its children (``pids.current``), or None when it is gone or unaccounted."""
    d = _controller_dir(path, "pids")
    return None if d is None else _read_int(d + "/pids.current")
