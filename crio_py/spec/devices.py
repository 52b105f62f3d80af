"""Device nodes for containers and the matching device-cgroup rules."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from typing import Any

from crio_py.cri import api_pb2
from crio_py.errors import InvalidArgument
from crio_py.spec.mounts import check_path

# Start from nothing; runc itself adds the few devices every container needs (null, zero, ...).
DENY_ALL = {"allow": False, "access": "rwm"}
ALLOW_ALL = {"allow": True, "access": "rwm"}
# Host /dev entries a privileged container must not get copies of: they are mounts of their own
# (pts, shm, mqueue), per-process (fd) or owned by the console setup.
_SKIP_DIRS = {"pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"}
_SKIP_FILES = {"console"}


def _node(host_path: str, container_path: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    st = os.stat(host_path)
    if stat.S_ISCHR(st.st_mode):
        kind = "c"
    elif stat.S_ISBLK(st.st_mode):
        kind = "b"
    else:
        return None
    major, minor = os.major(st.st_rdev), os.minor(st.st_rdev)
    device = {
        "path": container_path,
        "type": kind,
        "major": major,
        "minor": minor,
        "fileMode": stat.S_IMODE(st.st_mode),
        "uid": st.st_uid,
        "gid": st.st_gid,
    }
    return device, {"allow": True, "type": kind, "major": major, "minor": minor}


def request_devices(devices: Iterable[api_pb2.Device], where: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Device nodes and cgroup rules for a request's devices.

    A host directory brings every device below it (``/dev/snd`` → ``/dev/snd/*``).
    ``permissions`` is a subset of ``rwm``; empty means all.
    """
    nodes: list[dict[str, Any]] = []
    rules: list[dict[str, Any]] = []
    for dev in devices:
        host = check_path(dev.host_path, f"{where}: device host_path")
        target = check_path(dev.container_path, f"{where}: device container_path")
        access = dev.permissions or "rwm"
        if not set(access) <= set("rwm") or len(set(access)) != len(access):
            raise InvalidArgument(f"{where}: device {host}: permissions {dev.permissions!r} must be a subset of 'rwm'")
        if not os.path.exists(host):
            raise InvalidArgument(f"{where}: device {host} does not exist on the host")
        if os.path.isdir(host):
            pairs = []
            for dirpath, _dirs, files in os.walk(host):
                for name in sorted(files):
                    h = os.path.join(dirpath, name)
                    pairs.append((h, os.path.join(target, os.path.relpath(h, host))))
        else:
            pairs = [(host, target)]
        found = False
        for h, t in pairs:
            entry = _node(h, t)
            if entry is None:
                continue
            found = True
            nodes.append(entry[0])
            rules.append({**entry[1], "access": access})
        if not found:
            raise InvalidArgument(f"{where}: {host} is not a device (nor a directory of devices)")
    return nodes, rules


def host_devices() -> list[dict[str, Any]]:
    """Every device node of the host's /dev, for privileged containers."""
    out: list[dict[str, Any]] = []
    for dirpath, dirs, files in os.walk("/dev"):
        dirs[:] = sorted(d for d in dirs if not (dirpath == "/dev" and d in _SKIP_DIRS))
        for name in sorted(files):
            if dirpath == "/dev" and name in _SKIP_FILES:
                continue
            path = os.path.join(dirpath, name)
            if os.path.islink(path):
                continue
            try:
                entry = _node(path, path)
            except OSError:
                continue
            if entry is not None:
                out.append(entry[0])
    return out
