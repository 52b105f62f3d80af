"""Small facts about host processes: liveness, identity (pid + start time), the boot id."""

from __future__ import annotations

import os
import select

# Tests fake a reboot by giving the daemon another boot id (see boot_id()).
BOOT_ID_ENV = "CRIO_PY_TEST_BOOT_ID"


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (state is [0]), None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, IndexError, ProcessLookupError):
        return None


def process_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (a zombie has exited; only its reaping is left)."""
    if pid <= 0:
        return False
    fields = _stat_fields(pid)
    return fields is not None and fields[0] != "Z"


def start_time(pid: int) -> int:
    """When ``pid`` started, in clock ticks since boot (/proc/PID/stat field 22); 0 if it is gone.

    With the pid it identifies a process: a recycled pid has another start time.
    """
    if pid <= 0:
        return 0
    fields = _stat_fields(pid)
    return int(fields[19]) if fields is not None else 0


def same_process(pid: int, started: int) -> bool:
    """True while the process ``pid`` that started at ``started`` (0: unknown, trust the pid) lives."""
    if not process_alive(pid):
        return False
    return started == 0 or start_time(pid) == started


def start_time_ns(started: int) -> int:
    """A start time in clock ticks since boot as nanoseconds since the epoch."""
    with open("/proc/stat") as f:
        btime = next(int(line.split()[1]) for line in f if line.startswith("btime "))
    return btime * 1_000_000_000 + started * 1_000_000_000 // os.sysconf("SC_CLK_TCK")


def boot_id() -> str:
    """This boot's id: a record written under another one describes processes a reboot ended."""
    faked = os.environ.get(BOOT_ID_ENV)
    if faked:
        return faked
    with open("/proc/sys/kernel/random/boot_id") as f:
        return f.read().strip()


def wait_gone(pid: int, started: int, timeout: float) -> bool:
    """Wait until the process ``pid`` (start time ``started``) has exited; False on timeout.

    A pidfd wakes us the moment it exits: no polling.
    """
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        # Opened after a check of the start time: the fd then holds this very process.
        if not same_process(pid, started):
            return True
        return bool(select.select([pidfd], [], [], max(timeout, 0))[0])
    finally:
        os.close(pidfd)
