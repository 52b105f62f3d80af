"""The monitor's single-threaded event loop over epoll, and unix-socket helpers.

Everything the monitor waits for (control and attach sockets, container output, the SIGCHLD
wake-up pipe) is a file descriptor here; one thread means no locks and a small footprint.
"""

from __future__ import annotations

import _socket
import posix
import select
import time

# Type-only imports: collections.abc and typing would cost the monitor ~3 ms and ~0.3 MiB.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    Handler = Callable[[int], None]

IN = select.EPOLLIN
OUT = select.EPOLLOUT
# The longest single wait: epoll_wait takes an int of milliseconds, and a deadline that became
# infinite (a create the monitor already killed) or absurd must not raise OverflowError and end
# the monitor of every container of the pod. Waking up hourly costs nothing.
MAX_WAIT = 3600.0


class Loop:
    """fd -> handler(events) dispatch; handlers run one at a time, level-triggered."""

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._handlers: dict[int, Handler] = {}

    def add(self, fd: int, events: int, handler: Handler) -> None:
        """Call ``handler(events)`` whenever ``fd`` is ready for ``events``."""
        self._epoll.register(fd, events)
        self._handlers[fd] = handler

    def modify(self, fd: int, events: int) -> None:
        """Wait for other events on an added fd (0: only errors and hang-ups)."""
        self._epoll.modify(fd, events)

    def remove(self, fd: int) -> None:
        """Stop watching ``fd`` (before closing it); unknown fds are ignored."""
        if self._handlers.pop(fd, None) is not None:
            self._epoll.unregister(fd)

    def run_once(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds (negative: forever) and dispatch what is ready."""
        if timeout < 0:
            timeout = -1
        elif not timeout <= MAX_WAIT:  # also NaN
            timeout = MAX_WAIT
        for fd, events in self._epoll.poll(timeout):
            # An earlier handler of this batch may have removed this fd.
            handler = self._handlers.get(fd)
            if handler is not None:
                handler(events)


def attempt(call: Callable[..., object], *args: object, **kwargs: object) -> bool:
    """``call(*args, **kwargs)``, False if it raised OSError (contextlib.suppress costs an import)."""
    try:
        call(*args, **kwargs)
    except OSError:
        return False
    return True


def monotonic() -> float:
    """Seconds on the monotonic clock (deadlines and timers)."""
    return time.monotonic()


def unix_socket(kind: int) -> _socket.socket:
    """A non-blocking, close-on-exec unix socket of ``kind`` (SOCK_STREAM or SOCK_SEQPACKET)."""
    sock = _socket.socket(_socket.AF_UNIX, kind | _socket.SOCK_CLOEXEC)
    sock.setblocking(False)
    return sock


def proc_path(dir_fd: int, name: str, pid: int | str = "self") -> str:
    """A path to ``name`` inside an open directory: short whatever the directory's real path.

    sun_path holds 108 bytes, less than ``<monitors>/<64-hex pod>/<64-hex ctr>/attach.sock``.
    """
    return f"/proc/{pid}/fd/{dir_fd}/{name}"


def listen_unix(kind: int, dir_fd: int, name: str, backlog: int = 16) -> _socket.socket:
    """A listening unix socket bound at ``name`` in the directory ``dir_fd``, replacing a stale one."""
    attempt(posix.unlink, name, dir_fd=dir_fd)
    sock = unix_socket(kind)
    try:
        sock.bind(proc_path(dir_fd, name))
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    return sock


def accept(listener: _socket.socket) -> _socket.socket | None:
    """The next pending connection (non-blocking; CPython accepts with SOCK_CLOEXEC), or None."""
    try:
        fd, _ = listener._accept()
    except (BlockingIOError, InterruptedError):
        return None
    conn = _socket.socket(fileno=fd)
    conn.setblocking(False)
    return conn
