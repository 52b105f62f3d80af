"""Non-blocking reads and writes of plain file descriptors (pipes, a pty master) from asyncio, and pidfd waits."""

from __future__ import annotations

import asyncio
import errno
import os

READ_SIZE = 64 * 1024


async def _ready(fd: int, writable: bool) -> None:
    loop = asyncio.get_running_loop()
    future: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not future.done():
            future.set_result(None)

    if writable:
        loop.add_writer(fd, wake)
    else:
        loop.add_reader(fd, wake)
    try:
        await future
    finally:
        if writable:
            loop.remove_writer(fd)
        else:
            loop.remove_reader(fd)


async def read(fd: int, size: int = READ_SIZE) -> bytes:
    """Up to ``size`` bytes; b"" at the end (a pty master reports its end as EIO)."""
    while True:
        try:
            return os.read(fd, size)
        except BlockingIOError:
            await _ready(fd, writable=False)
        except OSError as exc:
            if exc.errno == errno.EIO:
                return b""
            raise


async def write(fd: int, data: bytes) -> None:
    """Write all of ``data``; BrokenPipeError when the reader is gone."""
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            await _ready(fd, writable=True)
        except OSError as exc:
            if exc.errno == errno.EIO:
                raise BrokenPipeError(str(exc)) from None
            raise


async def wait_exit(pid: int) -> None:
    """Return once process ``pid`` (our child) exited, without reaping it."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        await _ready(pidfd, writable=False)
    finally:
        os.close(pidfd)


def set_nonblocking(fd: int) -> None:
    os.set_blocking(fd, False)
