"""Disk use of a directory tree, counted as ``du`` does: allocated blocks, each inode once."""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple


class TreeUsage(NamedTuple):
    used_bytes: int
    inodes: int


def tree_usage(path: Path) -> TreeUsage:
    """Bytes allocated and inodes below ``path``, not crossing into mounts (a mounted rootfs
    shows the image layers again) and counting hard links once. A missing tree is empty."""
    used = inodes = 0
    seen: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = [d for d in dirnames if not os.path.ismount(os.path.join(dirpath, d))]
        for name in dirnames + filenames:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            key = (st.st_dev, st.st_ino)
            if key in seen:
                continue
            seen.add(key)
            inodes += 1
            used += st.st_blocks * 512
    return TreeUsage(used, inodes)
