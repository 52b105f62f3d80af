"""The long-lived plugin service: pyroute2 and the plugins imported once, many requests per worker.

Two kinds of request arrive on one SOCK_SEQPACKET socket:

- a launcher's (``client.py``): one plugin call, carrying the caller's environment and its
  stdin, stdout and stderr fds;
- a runtime's chain request (crio-py's daemon, ``CHAIN_MAGIC``): every plugin of a network list
  for one command in one message, answered with every plugin's exit code and output. For ADD
  each plugin gets the previous one's result as ``prevResult``, as libcni passes it.

Each connection is served in a thread of its own: a plugin enters a container's netns with
setns, which moves only the calling thread, and the thread ends with the request, so nothing a
request changes outlives it. By default one process does it all (crio-py restarts it should it
die); ``--workers N`` forks N such workers after the imports, sharing the listening socket, and
replaces any that dies.

Run: ``python -m cni_plugins.service --socket /run/crio-py/cni-plugins.sock``.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import os
import select
import signal
import socket
import stat
import struct
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from cni_plugins import plugins, skel
from cni_plugins.client import DEFAULT_SOCKET, FALLBACK, SOCKET_ENV, parse_request, write_all

# Seconds workers get to finish their requests and exit at shutdown before they are killed.
CLOSE_GRACE = 2.0
# A runtime's request for a whole network list: CHAIN_MAGIC \0 JSON.
CHAIN_MAGIC = b"crio-py-cni-chain/1"

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


def run_chain(request: dict[str, Any]) -> list[dict[str, Any]]:
    """Run every plugin of a chain request in order; one ``{rc, stdout, stderr}`` per plugin run.

    ``chain``: pass each result on as the next plugin's prevResult (ADD). ``keep_going``: go on
    past a failed plugin (DEL, GC); otherwise the first failure ends the list.
    """
    env = {str(k): str(v) for k, v in request["env"].items()}
    chain, keep_going = bool(request.get("chain")), bool(request.get("keep_going"))
    outcomes: list[dict[str, Any]] = []
    prev: Any = None
    for step in request["plugins"]:
        conf = step["config"]
        if chain and prev is not None:
            conf = {**conf, "prevResult": prev}
        try:
            plugin = plugins.get(step["type"])
        except KeyError:
            outcome = skel.Outcome(1, b"", f"not a plugin of the crio-py service: {step['type']!r}".encode())
        else:
            outcome = skel.run(plugin, env, json.dumps(conf).encode())
        outcomes.append(
            {
                "rc": outcome.rc,
                "stdout": outcome.stdout.decode(errors="replace"),
                "stderr": outcome.stderr.decode(errors="replace"),
            }
        )
        if outcome.rc != 0 and not keep_going:
            break
        if chain:
            try:
                prev = json.loads(outcome.stdout)
            except ValueError:
                prev = None
    return outcomes


def serve_one(conn: socket.socket) -> None:
    """Serve one accepted connection: a launcher's plugin call or a runtime's chain request."""
    msg, fds, _, _ = socket.recv_fds(conn, MAX_REQUEST, 3)
    try:
        if msg.startswith(CHAIN_MAGIC + b"\0"):
            if not _peer_is_root(conn):
                conn.send(b'{"error": "the chain request must come from root"}')
                return
            try:
                request = json.loads(msg[len(CHAIN_MAGIC) + 1 :])
                reply = {"results": run_chain(request)}
            except (ValueError, KeyError, TypeError, AttributeError) as e:
                reply = {"error": f"malformed chain request: {type(e).__name__}: {e}"}
            conn.send(json.dumps(reply).encode())
            return
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


class Worker:
    """Accepts connections and serves each in a thread (in the service or a forked worker)."""

    def __init__(self, listener: socket.socket) -> None:
        self.listener = listener
        self.inflight: set[threading.Thread] = set()
        self.lock = threading.Lock()

    def _serve(self, conn: socket.socket) -> None:
        try:
            with conn:
                serve_one(conn)
        except Exception as e:  # a broken connection or request must not end the worker
            print(f"cni-plugins service: request failed: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        finally:
            with self.lock:
                self.inflight.discard(threading.current_thread())

    def serve(self, alive: Callable[[], bool]) -> None:
        """Accept until _Stop is raised (by a signal handler) or ``alive()`` turns false."""
        while alive():
            ready, _, _ = select.select([self.listener], [], [], 5.0)
            if not ready:
                continue
            try:
                conn, _ = self.listener.accept()
            except BlockingIOError:  # another worker took it
                continue
            conn.setblocking(True)
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            with self.lock:
                self.inflight.add(thread)
            thread.start()

    def finish(self) -> None:
        """Wait for the requests already taken."""
        for thread in list(self.inflight):
            thread.join()

    def run(self, parent: int) -> None:
        """The body of a forked worker process."""

        def on_term(signum: int, frame: Any) -> None:
            with self.lock:
                idle = not self.inflight
            if idle:
                os._exit(0)
            raise _Stop

        signal.signal(signal.SIGTERM, on_term)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.set_wakeup_fd(-1)
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:
            return
        plugins.warm_up()
        with contextlib.suppress(_Stop):
            self.serve(lambda: True)
        # Stopping: requests already taken finish; the listener stays with the parent.
        self.listener.close()
        self.finish()


class Service:
    """The listening socket and the workers."""

    def __init__(self, path: str, workers: int) -> None:
        self.path = path
        self.pool_size = max(0, workers)
        self.workers: set[int] = set()
        self.listener = self._listen(path)
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
        # Non-blocking: every worker wakes for a connection, the ones that lose the race go on.
        sock.setblocking(False)
        return sock

    def _spawn(self) -> None:
        pid = os.fork()
        if pid:
            self.workers.add(pid)
            return
        code = 0
        try:
            Worker(self.listener).run(self.parent)
        except BaseException:
            code = 1
        finally:
            os._exit(code)

    def _reap(self) -> None:
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.workers.discard(pid)

    def run(self) -> None:
        """Serve until SIGTERM or SIGINT."""

        def stop(signum: int, frame: Any) -> None:
            raise _Stop

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        if self.pool_size == 0:
            self._serve_here()
            return
        # Wake the loop when a worker exits so that it is replaced at once.
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda s, f: None)
        try:
            while True:
                self._reap()
                while len(self.workers) < self.pool_size:
                    self._spawn()
                ready, _, _ = select.select([wake_r], [], [], 5.0)
                if os.getppid() != self.owner:
                    break
                if ready:
                    with contextlib.suppress(BlockingIOError):
                        os.read(wake_r, 4096)
        except _Stop:
            pass
        finally:
            self.close()

    def _serve_here(self) -> None:
        worker = Worker(self.listener)
        try:
            with contextlib.suppress(_Stop):
                worker.serve(lambda: os.getppid() == self.owner)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
            self.listener.close()
            worker.finish()

    def close(self) -> None:
        """Stop the workers (requests they took finish first), remove the socket."""
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        self.listener.close()
        for pid in list(self.workers):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        # A worker that missed SIGTERM (signalled between fork and installing its handler) or is
        # stuck would hold the service forever: wait a little, then SIGKILL.
        deadline = time.monotonic() + CLOSE_GRACE
        for pid in list(self.workers):
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
    parser.add_argument(
        "--workers", type=int, default=0, help="forked worker processes; 0 (default): serve in this one process"
    )
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
