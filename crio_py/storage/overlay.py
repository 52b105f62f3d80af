"""Overlay mounts of a layer chain: a container's root filesystem.

The mount is always writable (``lowerdir=<layers, top first>,upperdir=<upper>,workdir=<work>``),
even for a read-only container: the runtime must be able to create its mount points (images like
pause ship no /proc or /dev), and it makes the root read-only itself once they exist
(``root.readonly`` in the spec). When the options would exceed a page, the mount is made from
inside the layer store with relative paths (as containers/storage does), so deep images mount.
"""

from __future__ import annotations

import os
from pathlib import Path

from crio_py.errors import Internal
from crio_py.storage.mounts import mount

_PAGE = os.sysconf("SC_PAGE_SIZE")


def _mount(data: str, target: Path) -> None:
    mount("overlay", target, "overlay", 0, data)


def mount_overlay(lowerdirs: list[Path], upper: Path, work: Path, target: Path) -> None:
    """Mount the layers (top first) at ``target``, writes going to ``upper``."""
    if not lowerdirs:
        raise Internal(f"overlay mount on {target}: the image has no layers")
    target.mkdir(parents=True, exist_ok=True)
    upper.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    lowers = list(lowerdirs)
    data = f"lowerdir={':'.join(map(str, lowers))},upperdir={upper},workdir={work}"
    if len(data) < _PAGE - 1:
        _mount(data, target)
        return
    # Too long for one page: mount from the common parent of the layers with relative names.
    common = Path(os.path.commonpath([str(p) for p in lowers]))
    relative = ":".join(os.path.relpath(p, common) for p in lowers)
    short = f"lowerdir={relative},upperdir={upper},workdir={work}"
    pid = os.fork()
    if pid == 0:  # the child changes directory; the daemon's cwd stays put
        try:
            os.chdir(common)
            _mount(short, target)
            os._exit(0)
        except BaseException:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise Internal(f"overlay mount on {target} with {len(lowers)} layers failed")
