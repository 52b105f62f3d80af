"""Which cgroup controllers and huge page sizes this host offers a container.

kubelet asks for what a node *could* have (hugepage limits for every page size it knows, on every
container), not what this one has. runc fails a container whose limits name a controller it cannot
join, so the spec keeps only what is available here, as containerd and CRI-O do:

- cgroup v1 (legacy or hybrid): the controllers mounted somewhere (a kernel can build hugetlb in
  and still leave it unmounted);
- cgroup v2: the controllers listed in the ``cgroup.controllers`` of the cgroup's parent (the
  nearest existing ancestor), i.e. what runc can enable on the way down.
"""

from __future__ import annotations

import functools
from pathlib import Path

from crio_py.cgroups import cgroup_version, fs_path, hierarchies

_HUGEPAGES = "/sys/kernel/mm/hugepages"


def page_size_name(kib: int) -> str:
    """A huge page size as CRI and OCI spell it (kubelet's HugePageUnitSizeFromByteSize): 2048 -> ``2MB``."""
    for unit, size in (("GB", 1 << 20), ("MB", 1 << 10)):
        if kib % size == 0:
            return f"{kib // size}{unit}"
    return f"{kib}KB"


@functools.cache
def hugepage_sizes() -> frozenset[str]:
    """The huge page sizes the kernel offers (``/sys/kernel/mm/hugepages/hugepages-<N>kB``)."""
    try:
        names = [p.name for p in Path(_HUGEPAGES).iterdir()]
    except OSError:
        return frozenset()
    sizes = set()
    for name in names:
        number = name.removeprefix("hugepages-").removesuffix("kB")
        if number.isdigit():
            sizes.add(page_size_name(int(number)))
    return frozenset(sizes)


def mounted_v1_controllers() -> frozenset[str]:
    """Every controller of a mounted v1 hierarchy (named hierarchies like ``name=systemd`` left out)."""
    return frozenset(c for h in hierarchies() if h.version == 1 for c in h.controllers if not c.startswith("name="))


def _v2_controllers(cgroups_path: str) -> frozenset[str]:
    mount = next((h.mountpoint for h in hierarchies() if h.version == 2), None)
    if mount is None:
        return frozenset()
    # The cgroup itself usually does not exist yet (runc creates it): its parent decides.
    d = Path(mount) / fs_path(cgroups_path).lstrip("/")
    for candidate in (d, *d.parents):
        try:
            return frozenset((candidate / "cgroup.controllers").read_text().split())
        except FileNotFoundError:
            if candidate == Path(mount):
                break
        except OSError:
            break
    return frozenset()


def available_controllers(cgroups_path: str = "/") -> frozenset[str]:
    """The controllers a container at ``cgroups_path`` (OCI cgroupsPath, either driver's spelling) can use."""
    if cgroup_version() == 2:
        return _v2_controllers(cgroups_path)
    return mounted_v1_controllers()
