"""Mount and unmount through libc, for the mounts the runtime makes itself (tmpfs, overlay)."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
from pathlib import Path

from crio_py.errors import Internal

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
_MNT_DETACH = 2


def mount(source: str, target: Path, fstype: str, flags: int, data: str) -> None:
    """mount(2); Internal naming the target and the error on failure."""
    if _libc.mount(source.encode(), str(target).encode(), fstype.encode(), flags, data.encode()) != 0:
        err = ctypes.get_errno()
        raise Internal(f"{fstype} mount on {target} failed: {os.strerror(err)} (options: {data[:300]})")


def mount_tmpfs(target: Path, size: int, mode: str = "1777") -> None:
    """A size-limited tmpfs (nosuid, nodev, noexec) at ``target``."""
    target.mkdir(parents=True, exist_ok=True, mode=0o755)
    mount("shm", target, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, f"mode={mode},size={size}")


def unmount(target: Path) -> None:
    """Unmount ``target`` if mounted (lazily when busy); idempotent."""
    if _libc.umount2(str(target).encode(), 0) == 0:
        return
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOENT):
        return
    if err == errno.EBUSY and _libc.umount2(str(target).encode(), _MNT_DETACH) == 0:
        return
    raise Internal(f"unmounting {target}: {os.strerror(err)}")
