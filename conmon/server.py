"""The pod monitor: control socket, container creates, child reaping, timers. See conmon's docstring."""

from __future__ import annotations

import _signal
import _socket
import posix
import sys
import time

from conmon import wire
from conmon.loop import IN, Loop, accept, attempt, listen_unix, monotonic

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from conmon.container import Container

# What only containers need (conmon.runtime, conmon.container and its modules) is imported by
# the first create: a new monitor answers its first request about a millisecond sooner.

# The control protocol's version; "version" lists the ops this monitor serves, so a daemon
# newer than its monitors (they outlive daemon upgrades) never sends one it does not know.
PROTOCOL_VERSION = 2
CONTROL_SOCKET = "control.sock"
PID_FILE = "monitor.pid"
MAX_REQUEST = 1024 * 1024
DEFAULT_CREATE_TIMEOUT = 60.0
MAX_CREATE_TIMEOUT = 86400.0
# Exits of pids we did not know yet (a container dying before its pid file was read) are kept
# until claimed; older ones are orphans we merely reaped.
_UNCLAIMED_KEEP = 64

Reply = dict[str, object]


class RequestError(Exception):
    """A request the monitor refuses; its message goes back to the client."""


class _Control:
    __slots__ = ("buffer", "busy", "sock")

    def __init__(self, sock: _socket.socket) -> None:
        self.sock = sock
        self.buffer = b""
        self.busy = False


class _Create:
    """A runtime ``create`` in flight; its reply waits for the runtime to exit."""

    __slots__ = ("console", "console_fd", "container", "control", "deadline", "error_fd", "outputs", "stdin_fd")

    def __init__(self, control: _Control, container: Container, deadline: float) -> None:
        self.control = control
        self.container = container
        self.deadline = deadline
        self.outputs: dict[int, bytes] = {}
        self.stdin_fd = -1
        self.error_fd = -1
        self.console: _socket.socket | None = None
        self.console_fd = -1

    def close_fds(self) -> None:
        fds = [*self.outputs, self.stdin_fd, self.console_fd]
        if self.error_fd not in self.outputs:
            fds.append(self.error_fd)
        for fd in fds:
            if fd >= 0:
                posix.close(fd)
        self.outputs = {}
        self.stdin_fd = self.error_fd = self.console_fd = -1


def _ignore(_signum: int, _frame: object) -> None:
    """SIGCHLD handler: the wake-up fd carries the news, this only has to exist."""


class Monitor:
    """Serves one pod: every container of the pod, from its runtime create to its exit file."""

    def __init__(self, pod_dir: str, pod_id: str, listener: _socket.socket | None) -> None:
        self.pod_dir = pod_dir
        self.pod_id = pod_id
        self.pod_fd = posix.open(pod_dir, posix.O_RDONLY | posix.O_DIRECTORY | posix.O_CLOEXEC)
        self.loop = Loop()
        self.containers: dict[str, Container] = {}
        self._by_pid: dict[int, Container] = {}
        self._creates: dict[int, _Create] = {}
        self._unclaimed: dict[int, int] = {}
        self._controls: dict[int, _Control] = {}
        self._subscribers: set[_Control] = set()
        self._draining = False
        self.stopped = False
        if listener is None:
            listener = listen_unix(_socket.SOCK_STREAM, self.pod_fd, CONTROL_SOCKET)
        listener.setblocking(False)
        self._listener = listener
        self.loop.add(listener.fileno(), IN, self._accept)
        self._wake_r, wake_w = posix.pipe2(posix.O_CLOEXEC | posix.O_NONBLOCK)
        _signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        _signal.signal(_signal.SIGCHLD, _ignore)
        for ignored in (_signal.SIGHUP, _signal.SIGINT):
            _signal.signal(ignored, _signal.SIG_IGN)
        self.loop.add(self._wake_r, IN, self._on_wakeup)
        self._ops: dict[str, Callable[[_Control, dict[str, object]], Reply | None]] = {
            "ping": self._ping,
            "version": self._version,
            "subscribe": self._subscribe,
            "status": self._status,
            "create": self._create,
            "reopen_log": self._reopen_log,
            "resize": self._resize,
            "shutdown": self._shutdown,
        }

    def write_pid_file(self) -> None:
        """Publish our pid as ``monitor.pid`` (atomically: a reader never sees a partial pid)."""
        tmp = f".{PID_FILE}.tmp"
        flags = posix.O_WRONLY | posix.O_CREAT | posix.O_TRUNC | posix.O_CLOEXEC
        fd = posix.open(tmp, flags, 0o644, dir_fd=self.pod_fd)
        try:
            posix.write(fd, b"%d\n" % posix.getpid())
        finally:
            posix.close(fd)
        posix.rename(tmp, PID_FILE, src_dir_fd=self.pod_fd, dst_dir_fd=self.pod_fd)

    def run(self) -> None:
        """Serve until a shutdown request lets us go."""
        while not self.stopped:
            self.loop.run_once(self._timeout())
            self._timers()
        self._cleanup()

    # -- timers -------------------------------------------------------------------------------

    def _timeout(self) -> float:
        deadlines = [c.deadline for c in self._creates.values()]
        deadlines += [d for d in (c.log.next_deadline() for c in self.containers.values()) if d]
        if not deadlines:
            return -1
        return max(min(deadlines) - monotonic(), 0.0)

    def _timers(self) -> None:
        now = monotonic()
        for pid, job in self._creates.items():
            if job.deadline <= now:
                # Its exit is handled like any other failure, with a clearer message.
                job.deadline = float("inf")
                attempt(posix.kill, pid, _signal.SIGKILL)
        for container in self.containers.values():
            container.log.flush_due(now)

    # -- control connections ------------------------------------------------------------------

    def _accept(self, _events: int) -> None:
        sock = accept(self._listener)
        if sock is None:
            return
        control = _Control(sock)
        fd = sock.fileno()
        self._controls[fd] = control
        self.loop.add(fd, IN, lambda _events: self._on_control(control))

    def _on_control(self, control: _Control) -> None:
        try:
            data = control.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data or len(control.buffer) + len(data) > MAX_REQUEST:
            self._close_control(control)
            return
        control.buffer += data
        self._serve(control)

    def _serve(self, control: _Control) -> None:
        while not control.busy and b"\n" in control.buffer:
            line, control.buffer = control.buffer.split(b"\n", 1)
            reply = self._handle(control, line)
            if reply is None:
                control.busy = True
            else:
                self._reply(control, reply)

    def _handle(self, control: _Control, line: bytes) -> Reply | None:
        try:
            req = wire.loads(line)
            if not isinstance(req, dict):
                raise RequestError("a request is a JSON object")
            op = self._ops.get(req.get("op"))  # type: ignore[arg-type]
            if op is None:
                raise RequestError(f"unknown op {req.get('op')!r}")
            return op(control, req)
        except (RequestError, OSError, ValueError, KeyError, TypeError) as e:
            return {"ok": False, "error": str(e) or type(e).__name__}

    def _reply(self, control: _Control, reply: Reply) -> None:
        if control.sock.fileno() < 0:
            return
        control.busy = False
        try:
            # Replies are small: a client that does not read them is dropped, not waited for.
            data = wire.dumps(reply)
            if control.sock.send(data) != len(data):
                raise BlockingIOError
        except OSError:
            self._close_control(control)
            return
        self._serve(control)

    def _close_control(self, control: _Control) -> None:
        self._subscribers.discard(control)
        self.loop.remove(control.sock.fileno())
        self._controls.pop(control.sock.fileno(), None)
        control.sock.close()

    # -- requests -----------------------------------------------------------------------------

    def _ping(self, _control: _Control, _req: dict[str, object]) -> Reply:
        return {"ok": True, "pid": posix.getpid(), "pod_id": self.pod_id}

    def _version(self, _control: _Control, _req: dict[str, object]) -> Reply:
        return {"ok": True, "version": PROTOCOL_VERSION, "features": sorted(self._ops)}

    def _subscribe(self, control: _Control, _req: dict[str, object]) -> Reply:
        """Push every later exit on this connection; the reply carries the exits already recorded."""
        self._subscribers.add(control)
        exits = {cid: c.exit for cid, c in self.containers.items() if c.exit is not None}
        return {"ok": True, "pid": posix.getpid(), "pod_id": self.pod_id, "exits": exits}

    def _publish(self, event: Reply) -> None:
        """Send ``event`` to every subscriber; one that cannot take a small line at once is dropped."""
        data = wire.dumps(event)
        for control in list(self._subscribers):
            try:
                if control.sock.send(data) != len(data):
                    raise BlockingIOError
            except OSError:
                sys.stderr.write(f"conmon: pod {self.pod_id}: dropping an exit subscriber that does not read\n")
                self._close_control(control)

    def _status(self, _control: _Control, _req: dict[str, object]) -> Reply:
        containers = {cid: c.status() for cid, c in self.containers.items() if c.pid}
        return {"ok": True, "pid": posix.getpid(), "pod_id": self.pod_id, "containers": containers}

    def _container(self, req: dict[str, object]) -> Container:
        container = self.containers.get(str(req.get("id")))
        if container is None or not container.pid:
            raise RequestError(f"no container {req.get('id')!r} in this monitor")
        return container

    def _reopen_log(self, _control: _Control, req: dict[str, object]) -> Reply:
        self._container(req).log.reopen()
        return {"ok": True}

    def _resize(self, _control: _Control, req: dict[str, object]) -> Reply:
        width, height = int(req["width"]), int(req["height"])  # type: ignore[call-overload]
        if not (0 < width < 65536 and 0 < height < 65536):
            raise RequestError(f"bad terminal size {width}x{height}")
        self._container(req).resize(width, height)
        return {"ok": True}

    def _shutdown(self, _control: _Control, req: dict[str, object]) -> Reply:
        running = sum(1 for c in self.containers.values() if c.running) + len(self._creates)
        self._draining = True
        if req.get("force") or running == 0:
            self.stopped = True
        return {"ok": True, "running": running}

    def _create(self, control: _Control, req: dict[str, object]) -> Reply | None:
        if self._draining:
            raise RequestError("the monitor is shutting down")
        cid = req.get("id")
        for key in ("id", "bundle", "runtime", "root", "log_path"):
            if not isinstance(req.get(key), str) or not req[key]:
                raise RequestError(f"create needs a string {key!r}")
        if "/" in cid or cid in (".", ".."):  # type: ignore[operator]
            raise RequestError(f"bad container id {cid!r}")
        if cid in self.containers:
            raise RequestError(f"container {cid} already exists in this monitor")
        from conmon import runtime
        from conmon.container import Container

        runtime.become_subreaper()
        timeout = float(req.get("timeout") or DEFAULT_CREATE_TIMEOUT)  # type: ignore[arg-type]
        if not 0 < timeout <= MAX_CREATE_TIMEOUT:  # also NaN
            raise RequestError(f"create timeout {timeout} is not in (0, {MAX_CREATE_TIMEOUT:g}] seconds")
        container = Container(self.loop, self.pod_fd, self.pod_dir, req)
        job = _Create(control, container, monotonic() + timeout)
        try:
            pid = self._spawn(job, req)
        except BaseException:
            job.close_fds()
            container.close()
            raise
        self.containers[container.id] = container
        self._creates[pid] = job
        if job.console is not None:
            self.loop.add(job.console.fileno(), IN, lambda _events: self._on_console(job))
        return None

    def _spawn(self, job: _Create, req: dict[str, object]) -> int:
        """Start the runtime for ``job``; its pid. The job owns our ends of the stdio."""
        from conmon import runtime

        container = job.container
        devnull = posix.open("/dev/null", posix.O_RDWR | posix.O_CLOEXEC)
        child: list[int] = [devnull]
        try:
            stdin = devnull
            if container.tty:
                job.console, console_path = runtime.console_socket(container.dir_fd)
                job.error_fd, out = posix.pipe2(posix.O_CLOEXEC)
                child.append(out)
                stdout = stderr = out
            else:
                console_path = None
                out_r, stdout = posix.pipe2(posix.O_CLOEXEC)
                job.outputs[out_r] = b"stdout"
                child.append(stdout)
                err_r, stderr = posix.pipe2(posix.O_CLOEXEC)
                job.outputs[err_r] = b"stderr"
                job.error_fd = err_r
                child.append(stderr)
                if req.get("stdin"):
                    stdin, job.stdin_fd = posix.pipe2(posix.O_CLOEXEC)
                    child.append(stdin)
            argv = runtime.create_argv(req, container.dir, console_path)
            return runtime.spawn(argv, stdin, stdout, stderr)
        finally:
            for fd in child:
                posix.close(fd)

    def _on_console(self, job: _Create) -> None:
        from conmon import runtime

        if job.console is None:
            return
        fd = runtime.receive_console(job.console, 0.0)
        if fd is not None:
            job.console_fd = fd
            self._close_console(job)

    def _close_console(self, job: _Create) -> None:
        from conmon import runtime

        if job.console is not None:
            self.loop.remove(job.console.fileno())
            job.console.close()
            job.console = None
            attempt(posix.unlink, runtime.CONSOLE_SOCKET, dir_fd=job.container.dir_fd)

    def _create_done(self, job: _Create, wait_status: int) -> None:
        from conmon import runtime

        container = job.container
        error = None
        if job.deadline == float("inf"):
            error = "timed out"
        elif not posix.WIFEXITED(wait_status) or posix.WEXITSTATUS(wait_status) != 0:
            error = f"exit status {posix.waitstatus_to_exitcode(wait_status)}"
        pid = 0
        if error is None:
            if container.tty and job.console_fd < 0 and job.console is not None:
                # runc sent the pty before exiting; its connection may still wait in the backlog.
                job.console_fd = runtime.receive_console(job.console, 1.0) or -1
            try:
                pid = runtime.read_pid(container.dir_fd)
            except (OSError, ValueError) as e:
                error = f"no pid file: {e}"
            if container.tty and job.console_fd < 0 and error is None:
                error = "the runtime sent no terminal"
        self._close_console(job)
        if error is not None:
            detail = runtime.read_error(job.error_fd) if job.error_fd >= 0 else ""
            job.close_fds()
            del self.containers[container.id]
            container.close()
            self._reply(job.control, {"ok": False, "error": f"runtime create failed: {error}", "stderr": detail})
            return
        if container.tty:
            outputs = {job.console_fd: b"stdout"}
            stdin_fd = posix.dup(job.console_fd) if container.stdin else -1
        else:
            outputs = job.outputs
            stdin_fd = job.stdin_fd
        if job.error_fd not in outputs and job.error_fd >= 0:
            posix.close(job.error_fd)
        container.start(pid, outputs, stdin_fd, job.console_fd if container.tty else -1)
        self._by_pid[pid] = container
        status = self._unclaimed.pop(pid, None)
        if status is not None:
            self._container_exited(container, status)
        self._reply(job.control, {"ok": True, "pid": pid})

    # -- children -----------------------------------------------------------------------------

    def _on_wakeup(self, _events: int) -> None:
        try:
            while posix.read(self._wake_r, 512):
                pass
        except BlockingIOError:
            pass
        while True:
            try:
                pid, status = posix.waitpid(-1, posix.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self._reaped(pid, status)

    def _reaped(self, pid: int, status: int) -> None:
        job = self._creates.pop(pid, None)
        if job is not None:
            self._create_done(job, status)
            return
        container = self._by_pid.get(pid)
        if container is not None:
            self._container_exited(container, status)
            return
        self._unclaimed[pid] = status
        if len(self._unclaimed) > _UNCLAIMED_KEEP:
            del self._unclaimed[next(iter(self._unclaimed))]

    def _container_exited(self, container: Container, status: int) -> None:
        del self._by_pid[container.pid]
        container.exited(status, time.time_ns())
        # After the exit file: a daemon that misses this event finds the file at its restart.
        self._publish({"event": "exit", "id": container.id, **container.exit})  # type: ignore[dict-item]
        if self._draining and not self._creates and not any(c.running for c in self.containers.values()):
            self.stopped = True

    def _cleanup(self) -> None:
        """Leave the pod directory as a dead monitor's: no socket, no pid file; exit files stay."""
        for name in (CONTROL_SOCKET, PID_FILE):
            attempt(posix.unlink, name, dir_fd=self.pod_fd)
        for container in self.containers.values():
            container.close()


def serve(pod_dir: str, pod_id: str, listen_fd: int) -> int:
    """Run the monitor of ``pod_id`` in ``pod_dir`` (listening on ``listen_fd`` if >= 0)."""
    listener = None
    if listen_fd >= 0:
        # Inherited from the daemon: it must not leak on into the runtime and the containers.
        posix.set_inheritable(listen_fd, False)
        listener = _socket.socket(fileno=listen_fd)
    try:
        monitor = Monitor(pod_dir, pod_id, listener)
        monitor.write_pid_file()
    except OSError as e:
        sys.stderr.write(f"conmon: pod {pod_id}: {e}\n")
        return 1
    monitor.run()
    # Everything is closed and flushed by now; the daemon waits for this process to be gone
    # (RemovePodSandbox), so skip the interpreter's tear-down.
    sys.stderr.flush()
    posix._exit(0)
