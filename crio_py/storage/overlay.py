"""Overlay mounts of a layer chain: a container's root filesystem.

Writable (the default): ``lowerdir=<layers, top first>,upperdir=<upper>,workdir=<work>``. This is
what containers get even when their root is read-only: the runtime must create its mount points
(images like pause ship no /proc or /dev), and it makes the root read-only itself once they exist
(``root.readonly`` in the spec).

Read-only (``readonly=True``): ``lowerdir=<upper>:<layers>`` mounted ``MS_RDONLY``, no upper and no
work directory. overlayfs refuses a lone lowerdir without an upper, so the (possibly empty) upper
always joins as the topmost lower: a one-layer image mounts, and whatever an earlier writable mount
left in the upper shows through. ``work`` is not used then.

When the options would exceed a page (deep images), the mount is made from inside the layers'
common parent with relative names (as containers/storage does), in a forked child so that the
daemon's working directory never moves.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

from crio_py.errors import Internal
from crio_py.storage.mounts import MS_RDONLY, mount, unmount

__all__ = ["mount_overlay", "unmount"]

_PAGE = os.sysconf("SC_PAGE_SIZE")


def _options(lowers: list[str], upper: Path, work: Path, readonly: bool) -> str:
    data = f"lowerdir={':'.join(lowers)}"
    return data if readonly else f"{data},upperdir={upper},workdir={work}"


def mount_overlay(lowerdirs: list[Path], upper: Path, work: Path, target: Path, readonly: bool = False) -> None:
    """Mount the layers (top first) at ``target``: writes go to ``upper``, or nowhere if ``readonly``."""
    if not lowerdirs:
        raise Internal(f"overlay mount on {target}: the image has no layers")
    target.mkdir(parents=True, exist_ok=True)
    upper.mkdir(parents=True, exist_ok=True)
    lowers = [upper, *lowerdirs] if readonly else list(lowerdirs)
    if not readonly:
        work.mkdir(parents=True, exist_ok=True)
    flags = MS_RDONLY if readonly else 0
    data = _options([str(p) for p in lowers], upper, work, readonly)
    if len(data) < _PAGE:
        mount("overlay", target, "overlay", flags, data)
        return
    common = os.path.commonpath([str(p) for p in lowers])
    short = _options([os.path.relpath(p, common) for p in lowers], upper, work, readonly)
    if len(short) >= _PAGE:
        raise Internal(f"overlay mount on {target}: {len(lowers)} layers do not fit in the mount options")
    _mount_from(common, short, target, flags)


def _mount_from(cwd: str, data: str, target: Path, flags: int) -> None:
    """Mount with options relative to ``cwd``; the child reports mount(2)'s errno as its exit code."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.chdir(cwd)
            mount("overlay", target, "overlay", flags, data)
            code = 0
        except Internal:
            code = ctypes.get_errno() or 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    err = os.waitstatus_to_exitcode(status)
    if err != 0:
        raise Internal(f"overlay mount on {target} from {cwd}: {os.strerror(err) if err > 0 else f'status {err}'}")
