"""A container's end: its exit status, whether the kernel OOM-killed in its cgroup, the exit file.

The exit file is JSON, written to a temporary name, fsynced and renamed, so a reader sees the
whole record or none:
``{"exit_code": int, "signal": int|null, "oom_killed": bool, "finished_at_ns": int}``;
a process killed by signal N has exit_code 128+N, as shells and kubelet report it.
"""

from __future__ import annotations

import posix

from conmon import wire

EXIT_FILE = "exit"
_V1_MEMORY = "/sys/fs/cgroup/memory"


def _v2_root() -> str:
    # Pure v2 mounts at /sys/fs/cgroup; hybrid hosts mount it at /sys/fs/cgroup/unified.
    try:
        posix.stat("/sys/fs/cgroup/cgroup.controllers")
        return "/sys/fs/cgroup"
    except OSError:
        return "/sys/fs/cgroup/unified"


def oom_counter(pid: int) -> str | None:
    """The file counting OOM kills in the memory cgroup of ``pid``, or None if there is none.

    cgroup v1: ``memory.oom_control`` (``oom_kill N``); v2: ``memory.events`` (``oom_kill N``).
    """
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    unified = None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return f"{_V1_MEMORY}{path}/memory.oom_control"
        if controllers == "":
            unified = f"{_v2_root()}{path}/memory.events"
    return unified


def read_oom_kills(counter: str | None) -> int:
    """The ``oom_kill`` count in ``counter`` (0 when it cannot be read)."""
    if counter is None:
        return 0
    try:
        with open(counter) as f:
            for line in f:
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
    except (OSError, ValueError):
        pass
    return 0


def exit_record(wait_status: int, oom_killed: bool, finished_at_ns: int) -> dict[str, object]:
    """The exit file's content for a ``waitpid`` status."""
    if posix.WIFSIGNALED(wait_status):
        signal = posix.WTERMSIG(wait_status)
        return {"exit_code": 128 + signal, "signal": signal, "oom_killed": oom_killed, "finished_at_ns": finished_at_ns}
    return {
        "exit_code": posix.WEXITSTATUS(wait_status),
        "signal": None,
        "oom_killed": oom_killed,
        "finished_at_ns": finished_at_ns,
    }


def write_exit_file(dir_fd: int, record: dict[str, object]) -> None:
    """Publish ``record`` as ``exit`` in the container directory ``dir_fd``, atomically and durably."""
    tmp = f".{EXIT_FILE}.tmp"
    fd = posix.open(tmp, posix.O_WRONLY | posix.O_CREAT | posix.O_TRUNC | posix.O_CLOEXEC, 0o644, dir_fd=dir_fd)
    try:
        data = memoryview(wire.dumps(record))
        while data:
            data = data[posix.write(fd, data) :]
        posix.fsync(fd)
    finally:
        posix.close(fd)
    posix.rename(tmp, EXIT_FILE, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    posix.fsync(dir_fd)
