"""The daemon's side of the pod monitors (conmon/): start or find them, and talk to them.

Every call has a deadline and raises :class:`MonitorError` when it passes: a stuck monitor
never hangs a CRI call. Exit records are read from disk, so they survive the monitor.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
import logging
import os
import select
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crio_py import metrics, trace
from crio_py.errors import CrioError

if TYPE_CHECKING:
    from crio_py.monitor.watcher import ExitWatcher

log = logging.getLogger(__name__)

DEFAULT_MONITORS_DIR = Path("/run/crio-py/monitors")
DEFAULT_TIMEOUT = 10.0
# alive() must answer quickly even when a monitor is stopped (SIGSTOP) or swamped.
ALIVE_TIMEOUT = 2.0
# Extra time the daemon waits for a create reply beyond the monitor's own runtime deadline.
CREATE_SLACK = 5.0
# Reason the daemon reports for a container whose monitor died before recording its exit.
MONITOR_GONE_REASON = "ContainerMonitorGone"

CONTROL_SOCKET = "control.sock"
PID_FILE = "monitor.pid"
MONITOR_LOG = "monitor.log"
EXIT_FILE = "exit"
ATTACH_SOCKET = "attach.sock"
_SUN_PATH_MAX = 107


class MonitorError(CrioError):
    """A monitor could not be started, did not answer in time, or refused a request."""

    code = "INTERNAL"


@dataclass(frozen=True)
class CreateRequest:
    """What the monitor needs to run the runtime's create for a container."""

    container_id: str
    bundle: Path
    runtime_path: str
    runtime_root: Path
    log_path: Path
    tty: bool = False
    stdin: bool = False
    stdin_once: bool = False
    # Bytes; <= 0 means unlimited. When reached, the log is truncated and continues (conmon's rule).
    log_size_max: int = -1
    # Global runtime options, placed before "create" (e.g. "--systemd-cgroup").
    runtime_args: tuple[str, ...] = field(default_factory=tuple)
    # The monitor kills the runtime after this long; the call fails shortly after.
    timeout: float = 60.0

    @classmethod
    def for_runtime(
        cls, runtime_argv: list[str], container_id: str, bundle: Path, log_path: Path, **options: Any
    ) -> CreateRequest:
        """A request for a runtime whose command line (binary, ``--root``, root, global options)
        is ``runtime_argv`` (OCIRuntime.base_argv())."""
        return cls(
            container_id=container_id,
            bundle=bundle,
            runtime_path=runtime_argv[0],
            runtime_root=Path(runtime_argv[2]),
            runtime_args=tuple(runtime_argv[3:]),
            log_path=log_path,
            **options,
        )


@dataclass(frozen=True)
class ExitStatus:
    """A container's exit as its monitor recorded it; exit_code is 128+N when killed by signal N."""

    exit_code: int
    signal: int | None
    oom_killed: bool
    finished_at_ns: int


def exit_status_from(record: dict[str, Any]) -> ExitStatus:
    """An ExitStatus from an exit record (exit file, subscribe reply or exit event)."""
    return ExitStatus(
        exit_code=int(record["exit_code"]),
        signal=None if record.get("signal") is None else int(record["signal"]),
        oom_killed=bool(record.get("oom_killed")),
        finished_at_ns=int(record["finished_at_ns"]),
    )


@dataclass
class Subscription:
    """A connection subscribed to a monitor's exit events (one JSON line each, see conmon)."""

    sock: socket.socket
    exits: dict[str, ExitStatus]  # recorded before the subscription
    buffer: bytes = b""  # bytes of events read along with the reply


# The ops of monitors from before the "version" op (protocol version 1).
V1_FEATURES = frozenset({"ping", "status", "create", "reopen_log", "resize", "shutdown"})


@functools.cache
def _monitor_main() -> str:
    spec = importlib.util.find_spec("conmon")
    if spec is None or spec.origin is None:
        raise MonitorError("the conmon package (container monitor) is not installed")
    return str(Path(spec.origin).with_name("__main__.py"))


def _unix_address(path: Path) -> tuple[str, int]:
    """An address for ``path`` within sun_path's limit, and a directory fd to close afterwards (or -1)."""
    if len(os.fsencode(path)) <= _SUN_PATH_MAX:
        return str(path), -1
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    return f"/proc/self/fd/{dir_fd}/{path.name}", dir_fd


def connect_unix(path: Path, timeout: float, kind: int = socket.SOCK_STREAM) -> socket.socket:
    """A unix socket connected to ``path`` (any length), with ``timeout`` on every operation.

    Attach sockets are SOCK_SEQPACKET (see conmon.attach); pass ``kind`` for them.
    """
    sock = socket.socket(socket.AF_UNIX, kind)
    sock.settimeout(timeout)
    address, dir_fd = _unix_address(path)
    try:
        sock.connect(address)
    except BaseException:
        sock.close()
        raise
    finally:
        if dir_fd >= 0:
            os.close(dir_fd)
    return sock


def _bind_unix(sock: socket.socket, path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    address, dir_fd = _unix_address(path)
    try:
        sock.bind(address)
    finally:
        if dir_fd >= 0:
            os.close(dir_fd)


def _runtime_message(stderr: str) -> str:
    """The runtime's error: the ``msg`` of runc's log lines if there are any, else its text."""
    messages: list[str] = []
    for line in stderr.splitlines():
        line = line.strip()
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                messages.append(str(entry.get("msg", line)))
                continue
        if 'msg="' in line:
            line = line.split('msg="', 1)[1].rsplit('"', 1)[0].replace('\\"', '"')
        if line:
            messages.append(line)
    return "; ".join(dict.fromkeys(messages))


def _wait_exit(proc: subprocess.Popen[bytes], timeout: float) -> int:
    """``proc``'s exit status, killing it after ``timeout``.

    Popen.wait(timeout) polls with growing sleeps and would notice a 10 ms exit after ~15 ms; a
    pidfd wakes us when it happens.
    """
    pidfd = os.pidfd_open(proc.pid)
    try:
        exited = select.select([pidfd], [], [], timeout)[0]
    finally:
        os.close(pidfd)
    if not exited:
        proc.kill()
    return proc.wait()


class PodMonitor:
    """The monitor of one pod, found through its directory; the process may have gone."""

    def __init__(self, pod_id: str, directory: Path, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.pod_id = pod_id
        self.directory = directory
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"PodMonitor({self.pod_id!r}, {str(self.directory)!r})"

    @property
    def control_socket(self) -> Path:
        """The monitor's control socket."""
        return self.directory / CONTROL_SOCKET

    def pid(self) -> int | None:
        """The monitor's pid from its pid file (the process may have died since)."""
        try:
            return int((self.directory / PID_FILE).read_text())
        except (OSError, ValueError):
            return None

    def call(self, request: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        """Send one control request (see conmon's docstring) and return the reply.

        Raises MonitorError if the monitor is not running, does not answer within ``timeout``
        or refuses the request (the reply is then on the exception's ``reply``).
        """
        timeout = self.timeout if timeout is None else timeout
        op = request.get("op")
        extra = {"pod_id": self.pod_id, "container_id": request.get("id")}
        deadline = time.monotonic() + timeout
        try:
            with connect_unix(self.control_socket, timeout) as sock:
                sock.sendall(json.dumps(request).encode() + b"\n")
                data = b""
                while not data.endswith(b"\n"):
                    sock.settimeout(max(deadline - time.monotonic(), 0.001))
                    chunk = sock.recv(65536)
                    if not chunk:
                        raise MonitorError(f"monitor of pod {self.pod_id} closed the connection during {op}")
                    data += chunk
        except TimeoutError:
            log.warning("monitor did not answer", extra={**extra, "op": op, "timeout": timeout})
            raise MonitorError(f"monitor of pod {self.pod_id} did not answer {op} within {timeout:g}s") from None
        except (FileNotFoundError, ConnectionRefusedError):
            raise MonitorError(f"monitor of pod {self.pod_id} is not running") from None
        except OSError as e:
            raise MonitorError(f"talking to the monitor of pod {self.pod_id}: {e}") from None
        try:
            reply: dict[str, Any] = json.loads(data)
        except ValueError:
            raise MonitorError(f"monitor of pod {self.pod_id} sent a malformed reply to {op}") from None
        if not reply.get("ok"):
            error = MonitorError(f"monitor of pod {self.pod_id} refused {op}: {reply.get('error', 'no reason given')}")
            error.reply = reply  # type: ignore[attr-defined]
            raise error
        return reply

    def ping(self, timeout: float | None = None) -> int:
        """The monitor's pid, once it answers."""
        return int(self.call({"op": "ping"}, timeout)["pid"])

    def alive(self) -> bool:
        """True if the monitor answers (within ALIVE_TIMEOUT at most)."""
        try:
            self.ping(min(self.timeout, ALIVE_TIMEOUT))
        except MonitorError:
            return False
        return True

    def version(self) -> tuple[int, frozenset[str]]:
        """The monitor's protocol version and the ops it serves (version 1's for an older monitor)."""
        try:
            reply = self.call({"op": "version"}, min(self.timeout, ALIVE_TIMEOUT))
        except MonitorError as e:
            if "unknown op" in str(e):
                return 1, V1_FEATURES
            raise
        return int(reply["version"]), frozenset(reply["features"])

    def subscribe(self, timeout: float | None = None) -> Subscription:
        """A connection on which the monitor pushes each container exit (see conmon), with the
        exits it recorded before; MonitorError if it is not running or refuses."""
        timeout = min(self.timeout, ALIVE_TIMEOUT) if timeout is None else timeout
        try:
            sock = connect_unix(self.control_socket, timeout)
        except (FileNotFoundError, ConnectionRefusedError):
            raise MonitorError(f"monitor of pod {self.pod_id} is not running") from None
        except OSError as e:
            raise MonitorError(f"subscribing to the monitor of pod {self.pod_id}: {e}") from None
        try:
            sock.sendall(b'{"op":"subscribe"}\n')
            data = b""
            while b"\n" not in data:
                chunk = sock.recv(65536)
                if not chunk:
                    raise MonitorError(f"monitor of pod {self.pod_id} closed the connection during subscribe")
                data += chunk
            line, rest = data.split(b"\n", 1)
            reply = json.loads(line)
            if not reply.get("ok"):
                raise MonitorError(f"monitor of pod {self.pod_id} refused subscribe: {reply.get('error')}")
            exits = {cid: exit_status_from(rec) for cid, rec in reply["exits"].items()}
        except (OSError, ValueError, KeyError, TypeError) as e:
            sock.close()
            raise MonitorError(f"subscribing to the monitor of pod {self.pod_id}: {e}") from None
        except MonitorError:
            sock.close()
            raise
        sock.settimeout(None)
        return Subscription(sock, exits, rest)

    def status(self) -> dict[str, dict[str, Any]]:
        """The containers the monitor serves: id -> {"pid", "running", "exit"}."""
        containers: dict[str, dict[str, Any]] = self.call({"op": "status"})["containers"]
        return containers

    def create_container(self, req: CreateRequest) -> int:
        """Run the runtime's create through the monitor; the container's pid.

        Raises MonitorError with the runtime's own error message when create fails.
        """
        extra = {"pod_id": self.pod_id, "container_id": req.container_id}
        request = {
            "op": "create",
            "id": req.container_id,
            "bundle": str(req.bundle),
            "runtime": req.runtime_path,
            "root": str(req.runtime_root),
            "log_path": str(req.log_path),
            "tty": req.tty,
            "stdin": req.stdin,
            "stdin_once": req.stdin_once,
            "log_size_max": req.log_size_max,
            "runtime_args": list(req.runtime_args),
            "timeout": req.timeout,
        }
        started = time.monotonic()
        try:
            reply = self.call(request, req.timeout + CREATE_SLACK)
        except MonitorError as e:
            reply = getattr(e, "reply", None)
            if reply is None:
                raise
            detail = _runtime_message(str(reply.get("stderr", "")))
            message = f"creating container {req.container_id}: {reply.get('error')}"
            log.warning("container create failed", extra={**extra, "error": message, "runtime_stderr": detail})
            raise MonitorError(f"{message}: {detail}" if detail else message) from None
        pid = int(reply["pid"])
        log.debug("container created", extra={**extra, "pid": pid, "seconds": round(time.monotonic() - started, 3)})
        return pid

    def reopen_log(self, container_id: str) -> None:
        """Make the monitor continue the container's log in a new file (after kubelet renamed it)."""
        self.call({"op": "reopen_log", "id": container_id})

    def resize(self, container_id: str, width: int, height: int) -> None:
        """Set the size of the container's terminal."""
        self.call({"op": "resize", "id": container_id, "width": width, "height": height})

    def exit_status(self, container_id: str) -> ExitStatus | None:
        """The container's recorded exit, or None if none was recorded (yet).

        Read from disk: works when the monitor is gone. None with ``alive()`` False means the
        exit will never be recorded: report the container UNKNOWN (reason MONITOR_GONE_REASON),
        or RUNNING while the runtime still says it runs (its output is no longer logged).
        """
        path = self.directory / container_id / EXIT_FILE
        try:
            return exit_status_from(json.loads(path.read_bytes()))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as e:
            # The monitor writes it atomically: a damaged one is moved aside (so that status,
            # list and the daemon's start keep working) and the exit counts as never recorded.
            corrupt = path.with_name(f"{EXIT_FILE}.corrupt")
            with contextlib.suppress(OSError):
                os.replace(path, corrupt)
            extra = {"container_id": container_id, "path": str(corrupt), "error": str(e)}
            log.error("unreadable exit file moved aside", extra=extra)
            return None

    def attach_socket_path(self, container_id: str) -> Path:
        """The container's attach socket (SOCK_SEQPACKET; protocol in conmon.attach)."""
        return self.directory / container_id / ATTACH_SOCKET

    def connect_attach(self, container_id: str, timeout: float | None = None) -> socket.socket:
        """A connection to the container's attach socket (its path may exceed sun_path)."""
        path = self.attach_socket_path(container_id)
        try:
            return connect_unix(path, self.timeout if timeout is None else timeout, socket.SOCK_SEQPACKET)
        except OSError as e:
            raise MonitorError(f"attaching to container {container_id}: {e}") from None

    def shutdown(self, force: bool = False) -> int:
        """Ask the monitor to exit once no container runs (at once if ``force``); how many still run.

        Containers are never killed; with ``force`` running ones lose their logs and exit record.
        """
        running = int(self.call({"op": "shutdown", "force": force})["running"])
        log.info("monitor shutdown requested", extra={"pod_id": self.pod_id, "running": running, "force": force})
        return running


class MonitorClient:
    """Starts pod monitors and finds running ones under ``monitors_dir`` (one directory per pod)."""

    def __init__(
        self,
        monitors_dir: Path = DEFAULT_MONITORS_DIR,
        python: str = sys.executable,
        timeout: float = DEFAULT_TIMEOUT,
        watcher: ExitWatcher | None = None,
    ) -> None:
        self.monitors_dir = Path(monitors_dir)
        # Hears every exit of the monitors this client finds or starts (the daemon's has one).
        self._watcher = watcher
        self.python = python
        self.timeout = timeout
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    def pod_monitor(self, pod_id: str) -> PodMonitor:
        """The monitor of ``pod_id`` whether or not it runs (exit records outlive it)."""
        if not pod_id or "/" in pod_id or pod_id in (".", ".."):
            raise MonitorError(f"bad pod id {pod_id!r}")
        return PodMonitor(pod_id, self.monitors_dir / pod_id, self.timeout)

    def ensure_pod_monitor(self, pod_id: str) -> PodMonitor:
        """The running monitor of ``pod_id``: the one already running (after a daemon restart too), else a new one."""
        monitor = self.pod_monitor(pod_id)
        with self._lock(pod_id):
            if not monitor.alive():
                if (monitor.directory / MONITOR_LOG).exists():  # it ran before: this is a restart
                    metrics.MONITOR_RESTARTS.inc()
                with trace.span("monitor start"):
                    self._start(monitor)
            if self._watcher is not None:
                self._watcher.watch(monitor)
        return monitor

    @property
    def watcher(self) -> ExitWatcher:
        """The exit watcher; MonitorError for a client made without one."""
        if self._watcher is None:
            raise MonitorError("this monitor client watches no exits")
        return self._watcher

    def watch(self, pod_id: str) -> None:
        """Hear the exits of the pod's monitor (after a daemon restart); gone at once if it is not running."""
        with self._lock(pod_id):
            self.watcher.watch(self.pod_monitor(pod_id))

    def _lock(self, pod_id: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(pod_id, threading.Lock())

    def _start(self, monitor: PodMonitor) -> None:
        extra = {"pod_id": monitor.pod_id}
        started = time.monotonic()
        monitor.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        # We bind the control socket and hand it over: requests can be sent (and wait in the
        # backlog) before the monitor is up, so starting needs no polling.
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
            _bind_unix(listener, monitor.control_socket)
            listener.listen(64)
            argv = [
                self.python, "-S", "-I", _monitor_main(),
                "--pod-dir", str(monitor.directory), "--pod-id", monitor.pod_id,
                "--listen-fd", str(listener.fileno()),
            ]  # fmt: skip
            with open(monitor.directory / MONITOR_LOG, "ab") as stderr:
                try:
                    first = subprocess.Popen(
                        argv,
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL,
                        stderr=stderr,
                        pass_fds=(listener.fileno(),),
                        cwd="/",
                    )
                except OSError as e:
                    raise MonitorError(f"starting the monitor of pod {monitor.pod_id}: {e}") from None
            # The first process exits as soon as the monitor has detached (conmon.__main__).
            code = _wait_exit(first, self.timeout)
        if code != 0:
            raise MonitorError(f"monitor of pod {monitor.pod_id} failed to start: {self._log_tail(monitor)}")
        try:
            pid = monitor.ping()
        except MonitorError as e:
            raise MonitorError(f"{e}; monitor log: {self._log_tail(monitor)}") from None
        log.info("monitor started", extra={**extra, "pid": pid, "seconds": round(time.monotonic() - started, 4)})

    @staticmethod
    def _log_tail(monitor: PodMonitor) -> str:
        try:
            text = (monitor.directory / MONITOR_LOG).read_text(errors="replace")
        except OSError:
            return "(no monitor log)"
        return text.strip().splitlines()[-1] if text.strip() else "(empty monitor log)"

    def remove_pod(self, pod_id: str) -> None:
        """Delete the pod's monitor directory (exit records included); MonitorError while it runs."""
        monitor = self.pod_monitor(pod_id)
        if monitor.alive():
            raise MonitorError(f"monitor of pod {pod_id} is still running: shut it down first")
        shutil.rmtree(monitor.directory, ignore_errors=True)
