"""Network namespace switching for the calling thread (setns), and sysctl access.

A netlink socket stays bound to the namespace it was created in, so plugins enter a container's
namespace only long enough to open a socket and write per-namespace sysctls.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from collections.abc import Iterator

CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL(None, use_errno=True)


class NetnsMissing(Exception):
    """The namespace path does not exist."""


def setns(fd: int, nstype: int = CLONE_NEWNET) -> None:
    """Move the calling thread into the namespace ``fd`` refers to."""
    if _libc.setns(fd, nstype) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def open_netns(path: str) -> int:
    """An O_RDONLY fd of a netns path; NetnsMissing when it does not exist."""
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NetnsMissing(path) from None


@contextlib.contextmanager
def entered(fd: int) -> Iterator[None]:
    """Run the block inside the namespace ``fd``, then return to the thread's own namespace."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        setns(fd)
        try:
            yield
        finally:
            setns(own)
    finally:
        os.close(own)


def write_sysctl(name: str, value: str, only_if_different: bool = True) -> bool:
    """Set /proc/sys/<name> (slashes as separators) in the current namespace; False if it does not exist."""
    path = "/proc/sys/" + name
    try:
        if only_if_different:
            with open(path) as f:
                if f.read().strip() == value:
                    return True
        with open(path, "w") as f:
            f.write(value)
        return True
    except FileNotFoundError:
        return False
