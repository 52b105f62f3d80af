"""Pinned network namespaces: created once, kept alive by a bind mount on a file, like ``ip netns add``.

The namespace is made in a short-lived thread: ``unshare(CLONE_NEWNET)`` changes only the calling
thread, so the daemon's other threads never leave the host namespace, and the thread ends right
after the bind mount has pinned the new namespace.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import os
import socket
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from crio_py.errors import AlreadyExists, Internal, InvalidArgument, NotFound

CLONE_NEWNET = 0x40000000
MS_BIND = 0x1000
MS_REC = 0x4000
MS_SHARED = 1 << 20
MNT_DETACH = 2
_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]

T = TypeVar("T")
_shared_lock = threading.Lock()


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(source: str | None, target: str, flags: int) -> None:
    src = source.encode() if source is not None else None
    _check(_libc.mount(src, target.encode(), b"none", flags, None), f"mount {target}")


def _in_thread(fn: Callable[[], T]) -> T:
    """Run ``fn`` in a fresh thread (whose namespace changes die with it) and return its result."""
    values: list[T] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            values.append(fn())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, name="netns", daemon=True)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return values[0]


def _make_shared(netns_dir: Path) -> None:
    """Make the dir a shared mount so that the pins show in (and leave) later mount namespaces too."""
    # Serialised so that two first calls do not both find no mount point and stack two binds.
    with _shared_lock:
        try:
            _mount(None, str(netns_dir), MS_SHARED | MS_REC)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            # EINVAL: not a mount point yet; bind it onto itself first, as iproute2 does.
            _mount(str(netns_dir), str(netns_dir), MS_BIND | MS_REC)
            _mount(None, str(netns_dir), MS_SHARED | MS_REC)


def is_netns(path: Path) -> bool:
    """True when ``path`` is a pinned (mounted) network namespace, not just the empty file left behind."""
    try:
        return os.stat(path).st_dev == os.stat("/proc/self/ns/net").st_dev
    except OSError:
        return False


def create_netns(netns_dir: Path, name: str) -> Path:
    """Create a network namespace pinned at ``<netns_dir>/<name>`` and return that path."""
    if not name or "/" in name or name in (".", ".."):
        raise InvalidArgument(f"invalid network namespace name {name!r}")
    path = netns_dir / name
    try:
        netns_dir.mkdir(parents=True, exist_ok=True, mode=0o755)
        _make_shared(netns_dir)
        if is_netns(path):
            raise AlreadyExists(f"network namespace {path} already exists")
        # O_EXCL is not wanted: an empty file left by a crash between create and mount is reused.
        os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o444))
    except OSError as exc:
        raise Internal(f"cannot prepare network namespace {path}: {exc}") from exc

    def pin() -> None:
        _check(_libc.unshare(CLONE_NEWNET), "unshare(CLONE_NEWNET)")
        _mount(f"/proc/self/task/{threading.get_native_id()}/ns/net", str(path), MS_BIND)

    try:
        _in_thread(pin)
    except OSError as exc:
        path.unlink(missing_ok=True)
        raise Internal(f"cannot create network namespace {path}: {exc}") from exc
    return path


def remove_netns(path: Path) -> None:
    """Unpin and delete a namespace file; nothing to do when it is already gone."""
    ret = _libc.umount2(str(path).encode(), MNT_DETACH)
    if ret != 0:
        err = ctypes.get_errno()
        # EINVAL: not mounted (already unpinned); ENOENT: no file at all.
        if err not in (errno.EINVAL, errno.ENOENT):
            raise Internal(f"cannot unmount network namespace {path}: {os.strerror(err)}")
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        raise Internal(f"cannot remove network namespace file {path}: {exc.strerror}") from exc


def run_in_netns(netns_path: Path, fn: Callable[[], T]) -> T:
    """Call ``fn`` in a thread that has joined the namespace at ``netns_path``; sockets it opens live there."""
    if not is_netns(netns_path):
        raise NotFound(f"network namespace {netns_path} does not exist")

    def enter() -> T:
        fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            _check(_libc.setns(fd, CLONE_NEWNET), f"setns {netns_path}")
        finally:
            os.close(fd)
        return fn()

    return _in_thread(enter)


def set_loopback_up(netns_path: Path) -> None:
    """Bring ``lo`` up in the namespace (for pods when there is no CNI config to do it)."""

    def up() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            req = struct.pack("16sH14x", b"lo", 0)
            flags = struct.unpack("16sH14x", fcntl.ioctl(sock, _SIOCGIFFLAGS, req))[1]
            fcntl.ioctl(sock, _SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | _IFF_UP))

    try:
        run_in_netns(netns_path, up)
    except OSError as exc:
        raise Internal(f"cannot bring lo up in {netns_path}: {exc}") from exc
