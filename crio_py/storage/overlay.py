"""Overlay mounts of a layer chain: a container's root filesystem.

A writable rootfs is ``lowerdir=<layers, top first>,upperdir=<upper>,workdir=<work>``. A
read-only one (the pause container) has no upper layer; overlayfs needs two lowerdirs then, so a
single-layer image gets an empty directory as its second. When the mount options would exceed a
page, the mount is made from inside the layer store with relative paths (as containers/storage
does), which keeps deep images mountable.
"""

from __future__ import annotations

import os
from pathlib import Path

from crio_py.errors import Internal
from crio_py.storage.mounts import MS_RDONLY, mount

_PAGE = os.sysconf("SC_PAGE_SIZE")


def _mount(data: str, target: Path, flags: int) -> None:
    mount("overlay", target, "overlay", flags, data)


def mount_overlay(lowerdirs: list[Path], upper: Path, work: Path, target: Path, readonly: bool = False) -> None:
    """Mount the layers (top first) at ``target``; writable into ``upper`` unless ``readonly``."""
    if not lowerdirs:
        raise Internal(f"overlay mount on {target}: the image has no layers")
    target.mkdir(parents=True, exist_ok=True)
    lowers = list(lowerdirs)
    if readonly:
        if len(lowers) == 1:
            empty = upper.parent / "empty"
            empty.mkdir(exist_ok=True)
            lowers.append(empty)
        data, flags = "lowerdir=" + ":".join(map(str, lowers)), MS_RDONLY
    else:
        upper.mkdir(parents=True, exist_ok=True)
        work.mkdir(parents=True, exist_ok=True)
        data, flags = f"lowerdir={':'.join(map(str, lowers))},upperdir={upper},workdir={work}", 0
    if len(data) < _PAGE - 1:
        _mount(data, target, flags)
        return
    # Too long for one page: mount from the common parent of the layers with relative names.
    common = Path(os.path.commonpath([str(p) for p in lowers]))
    relative = ":".join(os.path.relpath(p, common) for p in lowers)
    short = f"lowerdir={relative}" + ("" if readonly else f",upperdir={upper},workdir={work}")
    pid = os.fork()
    if pid == 0:  # the child changes directory; the daemon's cwd stays put
        try:
            os.chdir(common)
            _mount(short, target, flags)
            os._exit(0)
        except BaseException:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise Internal(f"overlay mount on {target} with {len(lowers)} layers failed")
