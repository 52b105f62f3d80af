"""One container seen from its monitor: its directory, stdio, log, attach socket and end."""

from __future__ import annotations

import errno
import posix
import sys

from conmon.attach import STDERR_TAG, STDOUT_TAG, Attach
from conmon.crilog import CriLog
from conmon.exitfile import exit_record, oom_counter, read_oom_kills, write_exit_file
from conmon.loop import IN, OUT, Loop, attempt

READ_SIZE = 64 * 1024
# Output still readable when the container exits is logged before the exit file is written,
# up to this much per stream (a leftover process could write forever).
DRAIN_LIMIT = 16 * 1024 * 1024
# Attach input waiting for the container to read its stdin; beyond it, input is paused.
STDIN_BACKLOG = 256 * 1024
_TAGS = {b"stdout": STDOUT_TAG, b"stderr": STDERR_TAG}
_DIR_FLAGS = posix.O_RDONLY | posix.O_DIRECTORY | posix.O_CLOEXEC


class Container:
    """State of a container from create to exit; the monitor drives it from its event loop."""

    def __init__(self, loop: Loop, pod_fd: int, pod_dir: str, req: dict[str, object]) -> None:
        self.id = str(req["id"])
        self.dir = f"{pod_dir}/{self.id}"
        self.tty = bool(req.get("tty"))
        self.stdin = bool(req.get("stdin"))
        self.stdin_once = bool(req.get("stdin_once"))
        self.pid = 0
        self.running = False
        self.exit: dict[str, object] | None = None
        self.console_fd = -1
        self._loop = loop
        self._outputs: dict[int, bytes] = {}
        self._stdin_fd = -1
        self._stdin_backlog = b""
        self._stdin_closing = False
        self._oom_counter: str | None = None
        self._oom_kills = 0
        attempt(posix.mkdir, self.id, 0o700, dir_fd=pod_fd)
        self.dir_fd = posix.open(self.id, _DIR_FLAGS, dir_fd=pod_fd)
        try:
            for stale in ("exit", "pid"):
                attempt(posix.unlink, stale, dir_fd=self.dir_fd)
            self.log = CriLog(str(req["log_path"]), int(req.get("log_size_max") or 0))  # type: ignore[call-overload]
            self.attach = Attach(loop, self.dir_fd, self._on_attach_input, self._on_attach_end)
        except BaseException:
            posix.close(self.dir_fd)
            raise

    def start(self, pid: int, outputs: dict[int, bytes], stdin_fd: int, console_fd: int) -> None:
        """Watch the created container ``pid`` and its stdio (fds now owned by this object)."""
        self.pid = pid
        self.running = True
        self.console_fd = console_fd
        self._oom_counter = oom_counter(pid)
        self._oom_kills = read_oom_kills(self._oom_counter)
        for fd, stream in outputs.items():
            posix.set_blocking(fd, False)
            self._outputs[fd] = stream
            self._loop.add(fd, IN, lambda _events, fd=fd: self._read_output(fd))
        if stdin_fd >= 0:
            posix.set_blocking(stdin_fd, False)
            self._stdin_fd = stdin_fd

    def _read_output(self, fd: int) -> int:
        """Log and forward one read of ``fd``: bytes read, 0 at its end (then it is closed), -1 if none."""
        try:
            data = posix.read(fd, READ_SIZE)
        except BlockingIOError:
            return -1
        except OSError as e:
            # A pty master reads EIO once no process holds the terminal any more: its end.
            if e.errno != errno.EIO:
                sys.stderr.write(f"conmon: reading output of {self.id}: {e}\n")
            data = b""
        stream = self._outputs[fd]
        if data:
            self.log.write(stream, data)
            self.attach.broadcast(_TAGS[stream], data)
            return len(data)
        self._loop.remove(fd)
        del self._outputs[fd]
        posix.close(fd)
        if fd == self.console_fd:
            self.console_fd = -1
        self.log.flush(stream)
        self._finish_if_done()
        return 0

    def exited(self, wait_status: int, finished_at_ns: int) -> None:
        """Record the container's end: drain its output, then write the exit file."""
        self.running = False
        for fd in list(self._outputs):
            drained = 0
            while drained < DRAIN_LIMIT:
                n = self._read_output(fd)
                if n <= 0:
                    break
                drained += n
        for stream in (b"stdout", b"stderr"):
            self.log.flush(stream)
        oom_killed = read_oom_kills(self._oom_counter) > self._oom_kills
        self.exit = exit_record(wait_status, oom_killed, finished_at_ns)
        try:
            write_exit_file(self.dir_fd, self.exit)
        except OSError as e:
            sys.stderr.write(f"conmon: writing the exit file of {self.id}: {e}\n")
        self._close_stdin()
        self._finish_if_done()

    def _finish_if_done(self) -> None:
        if not self.running and self.pid and not self._outputs:
            self.attach.close()
            self.log.close()

    def resize(self, width: int, height: int) -> None:
        """Set the terminal size (TIOCSWINSZ on the pty master)."""
        if self.console_fd < 0:
            raise ValueError(f"container {self.id} has no terminal")
        import fcntl
        import termios

        size = b"".join(n.to_bytes(2, sys.byteorder) for n in (height, width, 0, 0))
        fcntl.ioctl(self.console_fd, termios.TIOCSWINSZ, size)

    def _on_attach_input(self, data: bytes) -> None:
        if self._stdin_fd < 0 or self._stdin_closing:
            return
        if not self._stdin_backlog:
            try:
                data = data[posix.write(self._stdin_fd, data) :]
            except BlockingIOError:
                pass
            except OSError:
                # The container closed its stdin: nobody will read more.
                self._close_stdin()
                return
            if not data:
                return
            self._loop.add(self._stdin_fd, OUT, self._on_stdin_writable)
        self._stdin_backlog += data
        if len(self._stdin_backlog) > STDIN_BACKLOG:
            self.attach.pause_input(True)

    def _on_stdin_writable(self, _events: int) -> None:
        try:
            written = posix.write(self._stdin_fd, self._stdin_backlog)
        except BlockingIOError:
            return
        except OSError:
            self._stdin_backlog = b""
            self._close_stdin()
            return
        self._stdin_backlog = self._stdin_backlog[written:]
        if len(self._stdin_backlog) <= STDIN_BACKLOG:
            self.attach.pause_input(False)
        if not self._stdin_backlog:
            self._loop.remove(self._stdin_fd)
            if self._stdin_closing:
                self._close_stdin()

    def _on_attach_end(self) -> None:
        if self.stdin_once and self._stdin_fd >= 0:
            self._stdin_closing = True
            if not self._stdin_backlog:
                self._close_stdin()

    def _close_stdin(self) -> None:
        if self._stdin_fd < 0:
            return
        self._loop.remove(self._stdin_fd)
        posix.close(self._stdin_fd)
        self._stdin_fd = -1
        self._stdin_backlog = b""

    def status(self) -> dict[str, object]:
        """What the ``status`` request reports about this container."""
        return {"pid": self.pid, "running": self.running, "exit": self.exit}

    def close(self) -> None:
        """Release everything (failed create, or the monitor exiting); the container itself is left alone."""
        for fd in list(self._outputs):
            self._loop.remove(fd)
            posix.close(fd)
        self._outputs.clear()
        self.console_fd = -1
        self._close_stdin()
        self.attach.close()
        self.log.close()
        posix.close(self.dir_fd)
