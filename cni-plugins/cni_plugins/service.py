"""The long-lived plugin service: pyroute2 and the plugins imported once, a request per worker.

The parent imports everything, then keeps a pool of pre-forked idle workers blocked in
``accept()`` on the listening socket, so no fork or import sits on a request's path. A worker
serves exactly one request and exits: netns switching (setns) and any state a plugin leaves
behind die with it, and a crash cannot hurt other requests. As soon as a worker takes a request
it tells the parent, which forks a replacement.

Run: ``python -m cni_plugins.service --socket /run/crio-py/cni-plugins.sock``.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import os
import select
import signal
import socket
import stat
import struct
import sys
import time
from typing import Any

from cni_plugins import plugins, skel
from cni_plugins.client import DEFAULT_SOCKET, FALLBACK, SOCKET_ENV, parse_request, write_all

# Seconds idle workers get to exit at shutdown before they are killed.
CLOSE_GRACE = 2.0

PR_SET_PDEATHSIG = 1
MAX_REQUEST = 1 << 20


class _Stop(Exception):
    pass


def _read_all(fd: int) -> bytes:
    chunks = []
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _peer_is_root(conn: socket.socket) -> bool:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _, uid, _ = struct.unpack("3i", creds)
    return uid == 0


def serve_one(conn: socket.socket) -> None:
    """Serve one accepted connection: run the plugin with the client's env and stdio fds."""
    msg, fds, _, _ = socket.recv_fds(conn, MAX_REQUEST, 3)
    try:
        req = parse_request(msg)
        if req is None or len(fds) != 3 or req[0] not in plugins.MODULES or not _peer_is_root(conn):
            conn.send(FALLBACK)
            return
        plugin, env = req
        stdin_fd, stdout_fd, stderr_fd = fds
        stdin = b"" if env.get("CNI_COMMAND") == "VERSION" else _read_all(stdin_fd)
        outcome = skel.run(plugins.get(plugin), env, stdin)
        write_all(stdout_fd, outcome.stdout)
        if outcome.stderr:
            write_all(stderr_fd, outcome.stderr)
        conn.send(b"rc:%d" % outcome.rc)
    finally:
        for fd in fds:
            os.close(fd)


class Service:
    """The listening socket and the worker pool."""

    def __init__(self, path: str, workers: int) -> None:
        self.path = path
        self.pool_size = max(1, workers)
        self.idle: set[int] = set()
        self.busy: set[int] = set()
        self.listener = self._listen(path)
        self.notify_r, self.notify_w = os.pipe2(os.O_CLOEXEC)
        self.parent = os.getpid()
        # Whoever started us (the daemon): when it is gone, so is our reason to serve, even if
        # its death signal never came (PR_SET_PDEATHSIG is lost when the starting thread exits).
        self.owner = os.getppid()

    @staticmethod
    def _listen(path: str) -> socket.socket:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(os.lstat(path).st_mode):
                probe = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
                try:
                    probe.connect(path)
                    raise SystemExit(f"cni-plugins service: {path} is already served")
                except ConnectionRefusedError:
                    os.unlink(path)
                finally:
                    probe.close()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        old = os.umask(0o177)
        try:
            sock.bind(path)
        finally:
            os.umask(old)
        sock.listen(128)
        return sock

    def _spawn(self) -> None:
        pid = os.fork()
        if pid:
            self.idle.add(pid)
            return
        code = 0
        try:
            self._worker()
        except BaseException:
            code = 1
        finally:
            os._exit(code)

    def _worker(self) -> None:
        busy = False

        def on_term(signum: int, frame: Any) -> None:
            if not busy:
                os._exit(0)

        signal.signal(signal.SIGTERM, on_term)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.set_wakeup_fd(-1)
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != self.parent:
            return
        os.close(self.notify_r)
        gc.disable()
        plugins.warm_up()
        conn, _ = self.listener.accept()
        busy = True
        os.write(self.notify_w, b"%d\n" % os.getpid())
        self.listener.close()
        with conn:
            serve_one(conn)

    def _reap(self) -> None:
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.idle.discard(pid)
            self.busy.discard(pid)

    def run(self) -> None:
        """Serve until SIGTERM or SIGINT."""

        def stop(signum: int, frame: Any) -> None:
            raise _Stop

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        # Wake the loop when a worker exits so the pool is topped up at once.
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda s, f: None)
        try:
            while True:
                self._reap()
                # A busy worker is replaced once it exits, not while it serves (a fork competes
                # with the request for the CPU); only an empty pool is refilled at once.
                while not self.idle or len(self.idle) + len(self.busy) < self.pool_size:
                    self._spawn()
                ready, _, _ = select.select([self.notify_r, wake_r], [], [], 5.0)
                if os.getppid() != self.owner:
                    break
                if wake_r in ready:
                    with contextlib.suppress(BlockingIOError):
                        os.read(wake_r, 4096)
                if self.notify_r in ready:
                    for line in os.read(self.notify_r, 4096).split():
                        pid = int(line)
                        self.idle.discard(pid)
                        self.busy.add(pid)
        except _Stop:
            pass
        finally:
            self.close()

    def close(self) -> None:
        """Stop idle workers (busy ones finish their request), remove the socket."""
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        self.listener.close()
        for pid in list(self.idle):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        # An idle worker exits on SIGTERM; one that missed it (e.g. signalled between fork and
        # installing its handler) would hold the service forever: wait a little, then SIGKILL.
        deadline = time.monotonic() + CLOSE_GRACE
        for pid in list(self.idle):
            with contextlib.suppress(ChildProcessError):
                while os.waitpid(pid, os.WNOHANG) == (0, 0):
                    if time.monotonic() > deadline:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGKILL)
                        os.waitpid(pid, 0)
                        break
                    time.sleep(0.01)


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m cni_plugins.service [--socket PATH] [--workers N]``."""
    parser = argparse.ArgumentParser(prog="cni_plugins.service", description=__doc__.splitlines()[0])
    parser.add_argument("--socket", default=os.environ.get(SOCKET_ENV, DEFAULT_SOCKET), help="unix socket to serve")
    parser.add_argument("--workers", type=int, default=4, help="idle pre-forked workers kept ready")
    opts = parser.parse_args(argv)
    plugins.preload()
    plugins.warm_up()
    # Objects allocated so far are never freed; keeping them out of the collector's view keeps
    # the workers' copy-on-write pages shared.
    gc.freeze()
    service = Service(opts.socket, opts.workers)
    print(f"cni-plugins service listening on {opts.socket}", file=sys.stderr, flush=True)
    service.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
