"""Mounts of a container: the defaults every Linux container has, pod files, request mounts."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Any

from crio_py.cri import api_pb2
from crio_py.errors import FailedPrecondition, InvalidArgument

log = logging.getLogger(__name__)

# Host information a container has no business reading, and kernel knobs it must not turn.
DEFAULT_MASKED_PATHS = (
    "/proc/acpi",
    "/proc/asound",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/sys/devices/virtual/powercap",
    "/sys/firmware",
)
DEFAULT_READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")

_PROPAGATION = {
    api_pb2.MountPropagation.PROPAGATION_PRIVATE: "rprivate",
    api_pb2.MountPropagation.PROPAGATION_HOST_TO_CONTAINER: "rslave",
    api_pb2.MountPropagation.PROPAGATION_BIDIRECTIONAL: "rshared",
}


def default_mounts(shm_size: int, privileged: bool) -> list[dict[str, Any]]:
    """proc, a tmpfs /dev with devpts, /dev/shm and mqueue, sysfs and cgroupfs (read-only unless privileged)."""
    sys_mode = "rw" if privileged else "ro"
    return [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
        {
            "destination": "/dev",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
        },
        {
            "destination": "/dev/pts",
            "type": "devpts",
            "source": "devpts",
            "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
        },
        {
            "destination": "/dev/shm",
            "type": "tmpfs",
            "source": "shm",
            "options": ["nosuid", "noexec", "nodev", "mode=1777", f"size={shm_size}"],
        },
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", sys_mode]},
        {
            "destination": "/sys/fs/cgroup",
            "type": "cgroup",
            "source": "cgroup",
            "options": ["nosuid", "noexec", "nodev", "relatime", sys_mode],
        },
    ]


def check_path(path: str, what: str) -> str:
    """``path`` normalised; InvalidArgument when it is relative or climbs out with ``..``."""
    if not path.startswith("/"):
        raise InvalidArgument(f"{what} {path!r} must be an absolute path")
    if ".." in path.split("/"):
        raise InvalidArgument(f"{what} {path!r} must not contain '..'")
    return str(PurePosixPath(path))


def pod_file_mounts(pod_files: dict[str, str], readonly_rootfs: bool) -> list[dict[str, Any]]:
    """Bind mounts of the pod's shared files (``/etc/hosts``, ``/etc/resolv.conf``, ``/dev/shm``...)."""
    out = []
    for dest, source in sorted(pod_files.items()):
        options = ["rbind", "rprivate"]
        if dest == "/dev/shm":
            options += ["nosuid", "nodev", "noexec", "rw"]
        else:
            # A read-only rootfs means read-only pod files too: they are part of what the image sees.
            options.append("ro" if readonly_rootfs else "rw")
        out.append({"destination": dest, "type": "bind", "source": source, "options": options})
    return out


def request_mounts(
    mounts: Iterable[api_pb2.Mount], recursive_read_only_supported: bool, where: str
) -> tuple[list[dict[str, Any]], str]:
    """The OCI mounts of a request's mounts and the rootfs propagation they need ("" for the default).

    A bidirectional mount needs the rootfs shared, a host-to-container one at least slave.
    Recursive read-only needs ``readonly``, private propagation and a runtime that can do it.
    SELinux relabeling is ignored: crio-py does not run with SELinux labels.
    """
    out: list[dict[str, Any]] = []
    rootfs_propagation = ""
    for m in mounts:
        dest = check_path(m.container_path, f"{where}: mount container_path")
        source = check_path(m.host_path, f"{where}: mount host_path")
        if m.HasField("image") and m.image.image:
            raise InvalidArgument(f"{where}: image volume mounts ({m.image.image} at {dest}) are not supported")
        propagation = _PROPAGATION.get(m.propagation)
        if propagation is None:
            raise InvalidArgument(f"{where}: mount {dest}: unknown propagation {m.propagation}")
        options = ["rbind", propagation, "ro" if m.readonly else "rw"]
        if m.recursive_read_only:
            if not m.readonly:
                raise InvalidArgument(f"{where}: mount {dest}: recursive_read_only needs readonly")
            if propagation != "rprivate":
                raise InvalidArgument(f"{where}: mount {dest}: recursive_read_only needs private propagation")
            if not recursive_read_only_supported:
                raise InvalidArgument(
                    f"{where}: mount {dest}: recursive read-only mounts are not supported by this runtime handler"
                )
            options.append("rro")
        if propagation == "rshared":
            rootfs_propagation = "rshared"
        elif propagation == "rslave" and rootfs_propagation != "rshared":
            rootfs_propagation = "rslave"
        out.append({"destination": dest, "type": "bind", "source": source, "options": options})
    return out, rootfs_propagation


def merge_mounts(*layers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Later layers replace earlier mounts with the same destination; parents mount before children.

    The sort is stable and by depth only, so mounts at the same depth keep their given order.
    """
    by_dest: dict[str, dict[str, Any]] = {}
    for layer in layers:
        for mount in layer:
            by_dest.pop(mount["destination"], None)
            by_dest[mount["destination"]] = mount
    return sorted(by_dest.values(), key=lambda m: len(PurePosixPath(m["destination"]).parts))


def ensure_host_paths(mounts: Iterable[api_pb2.Mount]) -> list[str]:
    """Create the missing host paths of bind mounts as directories, as other runtimes do.

    Returns the directories created (so a failed container create can remove them again).
    Kept out of spec generation, which must not change the host.
    """
    created: list[str] = []
    for m in mounts:
        source = check_path(m.host_path, "mount host_path")
        if os.path.lexists(source):
            continue
        parent = source
        while not os.path.lexists(os.path.dirname(parent)):
            parent = os.path.dirname(parent)
        try:
            os.makedirs(source, mode=0o755, exist_ok=True)
        except OSError as exc:
            raise InvalidArgument(f"cannot create host path {source} for a mount: {exc.strerror}") from exc
        log.info("created missing mount source %s", source, extra={"path": source})
        created.append(parent)
    return created


def _mount_table(mountinfo: str) -> list[tuple[str, list[str]]]:
    table = []
    for line in mountinfo.splitlines():
        pre, sep, _ = line.partition(" - ")
        if sep:
            fields = pre.split()
            table.append((fields[4].replace("\\040", " "), fields[6:]))
    return table


def check_mount_propagation(mounts: Iterable[api_pb2.Mount], mountinfo: str | None = None) -> None:
    """Refuse propagating mounts whose host side does not propagate.

    Bidirectional needs the source on a shared host mount, host-to-container on a shared or
    slave one; otherwise the container would silently never see (or send) new mounts. Run after
    :func:`ensure_host_paths` (the sources must exist); ``mountinfo`` defaults to the daemon's.
    """
    wanted = [m for m in mounts if m.propagation != api_pb2.MountPropagation.PROPAGATION_PRIVATE]
    if not wanted:
        return
    table = _mount_table(mountinfo if mountinfo is not None else Path("/proc/self/mountinfo").read_text())
    for m in wanted:
        source = os.path.realpath(m.host_path)
        point, optional = "/", []
        # The innermost mount wins; among equals the last listed, which is the one on top.
        for candidate, fields in table:
            inside = source == candidate or source.startswith(candidate.rstrip("/") + "/")
            if inside and len(candidate) >= len(point):
                point, optional = candidate, fields
        shared = any(f.startswith("shared:") for f in optional)
        slave = any(f.startswith("master:") for f in optional)
        bidirectional = m.propagation == api_pb2.MountPropagation.PROPAGATION_BIDIRECTIONAL
        if bidirectional and not shared:
            raise FailedPrecondition(
                f"mount {m.container_path}: bidirectional propagation needs {source} on a shared mount, "
                f"but {point} is not shared (mount --make-rshared {point})"
            )
        if not bidirectional and not (shared or slave):
            raise FailedPrecondition(
                f"mount {m.container_path}: host-to-container propagation needs {source} on a shared or slave "
                f"mount, but {point} is private (mount --make-rshared {point})"
            )
