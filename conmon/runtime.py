"""Running the OCI runtime's ``create`` for a container, with the stdio the monitor holds.

``<runtime> --root <root> [runtime_args...] create --bundle <b> --pid-file <dir>/pid
[--console-socket <sock>] <id>``. Without a terminal the container's stdio are pipes given to
the runtime as its own stdio (runc hands them on to the container), so the runtime's error
message, if any, is on the stderr pipe. With a terminal, runc sends the pty master over the
console socket (SCM_RIGHTS) and the runtime's own output goes to a separate pipe.
"""

from __future__ import annotations

import _signal
import _socket
import posix
import sys

from conmon.loop import accept, listen_unix, proc_path

CONSOLE_SOCKET = "console.sock"
PID_FILE = "pid"
MAX_ERROR = 64 * 1024
# Python ignores these; ignored signals survive exec, and a container must start with defaults.
_RESET_SIGNALS = (_signal.SIGPIPE, _signal.SIGXFSZ, _signal.SIGHUP, _signal.SIGINT)
_SCM_FD_SPACE = _socket.CMSG_SPACE(4)

_subreaper = False


def become_subreaper() -> None:
    """Make orphaned descendants (the container once ``runtime create`` exits) our children.

    Done through ``_ctypes`` rather than ``ctypes``: the package costs ~8 ms and ~0.3 MiB more,
    for one call. Deferred to the first create so that the monitor's start stays short.
    """
    global _subreaper
    if _subreaper:
        return
    import _ctypes

    class _Int(_ctypes._SimpleCData):
        _type_ = "i"

    class _Function(_ctypes.CFuncPtr):
        _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
        _restype_ = _Int

    class _Process:
        _handle = _ctypes.dlopen(None, 0)

    pr_set_child_subreaper = 36
    if _Function(("prctl", _Process()))(pr_set_child_subreaper, 1, 0, 0, 0) != 0:
        errno = _ctypes.get_errno()
        raise OSError(errno, f"prctl(PR_SET_CHILD_SUBREAPER): {posix.strerror(errno)}")
    _subreaper = True


def create_argv(req: dict[str, object], container_dir: str, console: str | None) -> list[str]:
    """The runtime command line for a create request."""
    argv = [str(req["runtime"]), "--root", str(req["root"])]
    argv += [str(a) for a in req.get("runtime_args") or ()]  # type: ignore[attr-defined]
    argv += ["create", "--bundle", str(req["bundle"]), "--pid-file", f"{container_dir}/{PID_FILE}"]
    if console is not None:
        argv += ["--console-socket", console]
    argv.append(str(req["id"]))
    return argv


def spawn(argv: list[str], stdin: int, stdout: int, stderr: int) -> int:
    """Start ``argv`` with the given stdio fds; its pid. Other fds of ours are close-on-exec."""
    run = posix.posix_spawn if "/" in argv[0] else posix.posix_spawnp
    return run(
        argv[0],
        argv,
        posix.environ,
        file_actions=[
            (posix.POSIX_SPAWN_DUP2, stdin, 0),
            (posix.POSIX_SPAWN_DUP2, stdout, 1),
            (posix.POSIX_SPAWN_DUP2, stderr, 2),
        ],
        setsigdef=_RESET_SIGNALS,
        setsigmask=(),
    )


def console_socket(dir_fd: int) -> tuple[_socket.socket, str]:
    """A socket for the runtime to send the pty master to, and the path to give the runtime."""
    sock = listen_unix(_socket.SOCK_STREAM, dir_fd, CONSOLE_SOCKET, backlog=1)
    return sock, proc_path(dir_fd, CONSOLE_SOCKET, posix.getpid())


def receive_console(listener: _socket.socket, timeout: float) -> int | None:
    """The pty master fd sent on ``listener``, if a sender is waiting (or arrives within ``timeout``)."""
    if timeout:
        listener.settimeout(timeout)
    try:
        conn = accept(listener)
    except TimeoutError:
        return None
    finally:
        listener.setblocking(False)
    if conn is None:
        return None
    try:
        # runc sends right after connecting; the accept may just have been quicker.
        conn.settimeout(2.0)
        _, ancillary, _, _ = conn.recvmsg(4096, _SCM_FD_SPACE)
    finally:
        conn.close()
    fds = [
        int.from_bytes(data[i : i + 4], sys.byteorder, signed=True)
        for level, kind, data in ancillary
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS
        for i in range(0, len(data) - 3, 4)
    ]
    for extra in fds[1:]:
        posix.close(extra)
    if not fds:
        return None
    posix.set_inheritable(fds[0], False)
    return fds[0]


def read_error(fd: int) -> str:
    """What the runtime wrote to ``fd`` before failing (non-blocking, at most MAX_ERROR bytes)."""
    chunks: list[bytes] = []
    size = 0
    while size < MAX_ERROR:
        try:
            chunk = posix.read(fd, MAX_ERROR - size)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks).decode(errors="replace").strip()


def read_pid(dir_fd: int) -> int:
    """The container's pid from the runtime's pid file."""
    fd = posix.open(PID_FILE, posix.O_RDONLY | posix.O_CLOEXEC, dir_fd=dir_fd)
    try:
        return int(posix.read(fd, 64))
    finally:
        posix.close(fd)
