"""The OCI runtime handler: crio-py's calls to runc (or any runc-compatible CLI).

``runc create`` is not here: the container monitor (conmon/) runs it, because it must hold the
container's stdio for its whole life. It builds that command line from :meth:`OCIRuntime.base_argv`.

Every call has a deadline and fails with the error class that says what the caller can do,
carrying the container id and the runtime's own words (its stderr or log).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import logging
import os
import selectors
import shutil
import signal as signals
import struct
import subprocess
import tempfile
import termios
import time
import tty as tty_mod
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from crio_py.config import RuntimeHandler
from crio_py.errors import CrioError, DeadlineExceeded, FailedPrecondition, Internal, InvalidArgument, NotFound
from crio_py.oci.errors import is_command_fault

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 30.0
MAX_EXEC_OUTPUT = 16 * 1024 * 1024
# After runc exec exits, a background child of the exec'd command may still hold the output
# pipes open; read what is already there, then stop waiting for an end that may never come.
_DRAIN_AFTER_EXIT = 0.5
# How long the exec'd process may take to appear in runc's pid file after a timeout.
_PID_FILE_WAIT = 2.0
# runc exits with this when exec itself failed, as opposed to the command exiting with it.
_RUNC_FAILED = 255


@dataclass(frozen=True)
class ExecResult:
    """The outcome of :meth:`OCIRuntime.exec_sync`; each stream is capped at ``max_output`` bytes."""

    exit_code: int
    stdout: bytes
    stderr: bytes
    timed_out: bool
    truncated: bool


def _runc_message(text: str) -> str:
    """The error in runc's output: ``msg="..."`` of logrus text lines or JSON log lines, else the text."""
    messages: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        if line.startswith("{"):
            try:
                entry = json.loads(line)
            except ValueError:
                messages.append(line)
                continue
            if entry.get("level") in ("error", "fatal"):
                messages.append(str(entry.get("msg", "")))
            continue
        if 'msg="' in line:
            messages.append(line.split('msg="', 1)[1].rsplit('"', 1)[0].replace('\\"', '"'))
        else:
            messages.append(line)
    # runc reports a fatal error both as a log line and as plain text: say it once.
    return "; ".join(dict.fromkeys(messages))


def _error_class(message: str) -> type[CrioError]:
    lower = message.lower()
    if "does not exist" in lower and "container" in lower:
        return NotFound
    if any(s in lower for s in ("not running", "stopped", "not in created state", "is paused", "not paused")):
        return FailedPrecondition
    return Internal


class OCIRuntime:
    """One runtime handler: its binary, its state root and the cgroup driver it is told about."""

    def __init__(self, handler: RuntimeHandler, cgroup_manager: str = "cgroupfs", timeout: float = DEFAULT_TIMEOUT):
        self.handler = handler
        self.cgroup_manager = cgroup_manager
        self.timeout = timeout

    def binary(self) -> str:
        """The runtime executable; a bare name is looked up on PATH at each call."""
        path = self.handler.path
        found = path if "/" in path else shutil.which(path)
        if not found or not os.access(found, os.X_OK):
            raise FailedPrecondition(f"OCI runtime {path!r} is not an executable (check runtimes.*.path)")
        return found

    def base_argv(self) -> list[str]:
        """The runtime's command line up to the subcommand: binary, ``--root`` and the cgroup driver."""
        argv = [self.binary(), "--root", self.handler.root]
        if self.cgroup_manager == "systemd":
            argv.append("--systemd-cgroup")
        return argv

    def _run(
        self, what: str, id: str, args: list[str], timeout: float | None = None, input: bytes | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        argv = [*self.base_argv(), *args]
        limit = timeout or self.timeout
        log.debug("runtime %s", what, extra={"container_id": id, "argv": argv})
        try:
            return subprocess.run(argv, input=input, capture_output=True, timeout=limit, check=False)
        except subprocess.TimeoutExpired:
            raise DeadlineExceeded(
                f"{self.handler.path} {what} of container {id} did not finish within {limit:g}s"
            ) from None

    def _fail(self, what: str, id: str, output: bytes) -> CrioError:
        message = _runc_message(output.decode(errors="replace")) or "failed without a message"
        return _error_class(message)(f"{self.handler.path} {what} of container {id}: {message}")

    def version(self) -> str:
        """The runtime's version line (``runc version 1.1.5``)."""
        done = self._run("version", "-", ["--version"])
        return done.stdout.decode(errors="replace").splitlines()[0] if done.returncode == 0 and done.stdout else ""

    @functools.cached_property
    def _features(self) -> dict[str, Any]:
        try:
            done = self._run("features", "-", ["features"])
            return json.loads(done.stdout) if done.returncode == 0 else {}
        except (CrioError, ValueError):
            return {}

    def features(self) -> dict[str, Any]:
        """``runc features`` (empty when the runtime is too old to tell); read once per handler."""
        return self._features

    def supports_recursive_read_only(self) -> bool:
        """Whether the runtime can make bind mounts read-only recursively (the ``rro`` option)."""
        supported = "rro" in (self.features().get("mountOptions") or [])
        log.debug(
            "recursive read-only mounts %s",
            "supported" if supported else "unsupported",
            extra={"runtime": self.handler.path},
        )
        return supported

    def start(self, id: str, timeout: float | None = None) -> None:
        """Start a created container's process."""
        done = self._run("start", id, ["start", id], timeout)
        if done.returncode != 0:
            raise self._fail("start", id, done.stderr)

    def kill(
        self, id: str, signal: int | str = signals.SIGTERM, all: bool = False, timeout: float | None = None
    ) -> bool:
        """Send ``signal`` to the container's init (every process with ``all``).

        False when there was nothing to signal: the container is stopped or gone, which for a
        caller wanting it dead is success.
        """
        sig = str(int(signal)) if isinstance(signal, int) else signal
        args = ["kill", *(["--all"] if all else []), id, sig]
        done = self._run("kill", id, args, timeout)
        if done.returncode == 0:
            return True
        error = self._fail("kill", id, done.stderr)
        if isinstance(error, NotFound | FailedPrecondition):
            return False
        raise error

    def delete(self, id: str, force: bool = False, timeout: float | None = None) -> None:
        """Delete the container from the runtime; a container the runtime does not know is already deleted."""
        done = self._run("delete", id, ["delete", *(["--force"] if force else []), id], timeout)
        if done.returncode == 0:
            return
        error = self._fail("delete", id, done.stderr)
        if not isinstance(error, NotFound):
            raise error

    def state(self, id: str, timeout: float | None = None) -> dict[str, Any] | None:
        """The runtime's state of a container (``status``, ``pid``, ``bundle``...), None when unknown."""
        done = self._run("state", id, ["state", id], timeout)
        if done.returncode != 0:
            error = self._fail("state", id, done.stderr)
            if isinstance(error, NotFound):
                return None
            raise error
        try:
            return json.loads(done.stdout)
        except ValueError as exc:
            raise Internal(f"{self.handler.path} state of container {id}: unreadable output: {exc}") from exc

    def list(self, timeout: float | None = None) -> list[dict[str, Any]]:
        """Every container the runtime knows under its root."""
        done = self._run("list", "-", ["list", "--format", "json"], timeout)
        if done.returncode != 0:
            raise self._fail("list", "-", done.stderr)
        return json.loads(done.stdout or b"null") or []

    def pause(self, id: str, timeout: float | None = None) -> None:
        """Freeze every process of the container."""
        done = self._run("pause", id, ["pause", id], timeout)
        if done.returncode != 0:
            raise self._fail("pause", id, done.stderr)

    def resume(self, id: str, timeout: float | None = None) -> None:
        """Thaw a paused container."""
        done = self._run("resume", id, ["resume", id], timeout)
        if done.returncode != 0:
            raise self._fail("resume", id, done.stderr)

    def update(self, id: str, resources: dict[str, Any], timeout: float | None = None) -> None:
        """Change a running container's cgroup limits (an OCI ``linux.resources`` object)."""
        done = self._run("update", id, ["update", "--resources", "-", id], timeout, json.dumps(resources).encode())
        if done.returncode != 0:
            raise self._fail("update", id, done.stderr)

    def exec_sync(
        self,
        id: str,
        argv: list[str],
        env: list[str] | None = None,
        cwd: str | None = None,
        user: dict[str, Any] | None = None,
        timeout: float | None = None,
        max_output: int = MAX_EXEC_OUTPUT,
    ) -> ExecResult:
        """Run ``argv`` in a running container and collect its output.

        The process inherits the container's own process settings (user, environment, working
        directory, capabilities, no_new_privs) from its bundle; ``env``, ``cwd`` and ``user``
        (an OCI ``process.user``) replace them when given. ``timeout`` in seconds (None or 0:
        none): when it passes the process is killed and ``timed_out`` is set. Output past
        ``max_output`` bytes per stream is dropped and ``truncated`` set.
        """
        process = self._exec_spec(id, argv, False, env, cwd, user)
        with tempfile.TemporaryDirectory(prefix="crio-py-exec-") as tmp:
            process_file, pid_file, log_file = (Path(tmp, n) for n in ("process.json", "pid", "log.json"))
            process_file.write_text(json.dumps(process))
            binary, *options = self.base_argv()
            # The command's own stderr is ours to return, so runc's errors go to a log file instead.
            cmd = [
                binary, "--log", str(log_file), "--log-format", "json", *options,
                "exec", "--process", str(process_file), "--pid-file", str(pid_file), id,
            ]  # fmt: skip
            log.debug("runtime exec", extra={"container_id": id, "argv": cmd})
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            try:
                stdout, stderr, timed_out, truncated = self._collect(proc, pid_file, timeout, max_output)
            finally:
                if proc.poll() is None:
                    proc.kill()
                proc.wait()
            code = proc.returncode
            if code == _RUNC_FAILED and not timed_out:
                failure = _runc_message(log_file.read_text(errors="replace")) if log_file.exists() else ""
                if failure:
                    lower = failure.lower()
                    cls = _error_class(failure)
                    if is_command_fault(failure) or "no such file or directory" in lower:
                        cls = InvalidArgument
                    raise cls(f"exec in container {id}: {failure}")
        return ExecResult(code, bytes(stdout), bytes(stderr), timed_out, truncated)

    def _exec_spec(
        self,
        id: str,
        argv: list[str],
        terminal: bool,
        env: list[str] | None = None,
        cwd: str | None = None,
        user: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The OCI process of an exec: the container's own, with ``argv`` and the given overrides."""
        if not argv:
            raise InvalidArgument(f"exec in container {id}: no command given")
        st = self.state(id)
        if st is None:
            raise NotFound(f"exec in container {id}: the runtime does not know the container")
        if st.get("status") != "running":
            raise FailedPrecondition(f"exec in container {id}: the container is {st.get('status')}, not running")
        process = self._bundle_process(st)
        process.update({"terminal": terminal, "args": list(argv)})
        process.pop("consoleSize", None)
        if env is not None:
            process["env"] = list(env)
        if terminal and not any(e.startswith("TERM=") for e in process.get("env") or []):
            process["env"] = [*(process.get("env") or []), "TERM=xterm"]
        if cwd:
            process["cwd"] = cwd
        if user is not None:
            process["user"] = user
        process.setdefault("cwd", "/")
        process.setdefault("user", {"uid": 0, "gid": 0})
        return process

    def exec_interactive(
        self, id: str, argv: list[str], tty: bool, stdin: bool, size: tuple[int, int] | None = None
    ) -> InteractiveExec:
        """Start ``argv`` in a running container with its stdio on pipes, or on a terminal with ``tty``.

        For a terminal, runc gets one end of a pty of ours as its stdio and relays it to the
        container's own console (which it sets up through its internal console socket), forwarding
        SIGWINCH as a resize; staying in the foreground it hands back the exit code, which a
        detached ``runc exec --console-socket`` could not without a subreaper. ``size`` is the
        terminal's (width, height) from the start.
        """
        process = self._exec_spec(id, argv, tty)
        if tty and size:
            # runc sizes the container's console before the command runs; the host pty's size only
            # reaches it after the start, too late for a command that asks at once (`stty size`).
            process["consoleSize"] = {"width": size[0], "height": size[1]}
        tmp = Path(tempfile.mkdtemp(prefix="crio-py-exec-"))
        try:
            process_file, pid_file = tmp / "process.json", tmp / "pid"
            process_file.write_text(json.dumps(process))
            cmd = [*self.base_argv(), "exec", "--process", str(process_file), "--pid-file", str(pid_file), id]
            log.debug("runtime exec (interactive)", extra={"container_id": id, "argv": cmd, "tty": tty})
            if tty:
                master, slave = os.openpty()
                # Ours only relays: the container's own console does echo and line discipline.
                tty_mod.setraw(slave)
                if size:
                    fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", size[1], size[0], 0, 0))
                try:
                    proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
                finally:
                    os.close(slave)
                return InteractiveExec(proc, pid_file, tmp, stdin=os.dup(master), stdout=master, stderr=None, tty=True)
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
            fds = [os.dup(f.fileno()) if f else None for f in (proc.stdin, proc.stdout, proc.stderr)]
            for f in (proc.stdin, proc.stdout, proc.stderr):
                if f:
                    f.close()
            return InteractiveExec(proc, pid_file, tmp, stdin=fds[0], stdout=fds[1], stderr=fds[2], tty=False)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    @staticmethod
    def _bundle_process(state: dict[str, Any]) -> dict[str, Any]:
        try:
            return dict(json.loads(Path(state["bundle"], "config.json").read_text())["process"])
        except (OSError, KeyError, TypeError, ValueError):
            return {}

    @staticmethod
    def _collect(
        proc: subprocess.Popen[bytes], pid_file: Path, timeout: float | None, max_output: int
    ) -> tuple[bytearray, bytearray, bool, bool]:
        assert proc.stdout is not None and proc.stderr is not None
        out, err = bytearray(), bytearray()
        buffers: dict[IO[bytes], bytearray] = {proc.stdout: out, proc.stderr: err}
        timed_out = truncated = False
        deadline = time.monotonic() + timeout if timeout else None
        exited_at: float | None = None
        with selectors.DefaultSelector() as sel:
            for stream in buffers:
                os.set_blocking(stream.fileno(), False)
                sel.register(stream, selectors.EVENT_READ)
            while sel.get_map():
                now = time.monotonic()
                if deadline is not None and now >= deadline and not timed_out:
                    timed_out = True
                    _kill_exec(proc, pid_file)
                if proc.poll() is not None:
                    exited_at = exited_at or now
                    if now - exited_at > _DRAIN_AFTER_EXIT:
                        break
                for key, _ in sel.select(0.1):
                    stream = key.fileobj
                    chunk = os.read(key.fd, 65536)
                    if not chunk:
                        sel.unregister(stream)
                        continue
                    buf = buffers[stream]  # type: ignore[index]
                    room = max(max_output - len(buf), 0)
                    if len(chunk) > room:
                        truncated = True
                    buf += chunk[:room]
        for stream in buffers:
            stream.close()
        return out, err, timed_out, truncated


class InteractiveExec:
    """A running ``runc exec`` of :meth:`OCIRuntime.exec_interactive`; the file descriptors are ours to close.

    With a terminal, ``stdin`` and ``stdout`` are two descriptors of the pty's master side.
    """

    def __init__(
        self,
        proc: subprocess.Popen[bytes],
        pid_file: Path,
        tmp: Path,
        stdin: int | None,
        stdout: int | None,
        stderr: int | None,
        tty: bool,
    ):
        self.proc = proc
        self.pid = proc.pid
        self.stdin, self.stdout, self.stderr = stdin, stdout, stderr
        self.tty = tty
        self._pid_file = pid_file
        self._tmp = tmp

    def resize(self, width: int, height: int) -> None:
        """Set the terminal size; runc passes it on to the container's console on SIGWINCH."""
        if not self.tty or self.stdout is None or self.proc.poll() is not None:
            return
        fcntl.ioctl(self.stdout, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signals.SIGWINCH)

    def close_stdin(self) -> None:
        """The client's input ended: the process reads end-of-file (without a terminal)."""
        if self.stdin is not None and not self.tty:
            os.close(self.stdin)
            self.stdin = None

    def kill(self) -> None:
        """Kill the exec'd process (not only runc, which would leave it behind) and reap runc."""
        if self.proc.poll() is None:
            _kill_exec(self.proc, self._pid_file)
        self.proc.wait()

    def wait(self) -> int:
        """runc's exit code: the process's own, 128+N after signal N, 255 when runc failed."""
        return self.proc.wait()

    def close(self) -> None:
        """Release the descriptors and the temporary files (after kill() or wait())."""
        for fd in {self.stdin, self.stdout, self.stderr} - {None}:
            with contextlib.suppress(OSError):
                os.close(fd)  # type: ignore[arg-type]
        self.stdin = self.stdout = self.stderr = None
        shutil.rmtree(self._tmp, ignore_errors=True)


def _kill_exec(proc: subprocess.Popen[bytes], pid_file: Path) -> None:
    """Kill the exec'd process itself: runc only forwards catchable signals, so killing runc would orphan it."""
    deadline = time.monotonic() + _PID_FILE_WAIT
    while time.monotonic() < deadline and proc.poll() is None:
        with contextlib.suppress(OSError, ValueError):
            pid = int(pid_file.read_text().strip())
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signals.SIGKILL)
            return
        time.sleep(0.02)
    if proc.poll() is None:
        proc.kill()
