"""conmon.exitfile: exit records, their atomic file, and the OOM counter of a cgroup."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

from conmon import exitfile


def wait_status(code: int = 0, sig: int = 0) -> int:
    pid = os.fork()
    if pid == 0:
        if sig:
            os.kill(os.getpid(), sig)
        os._exit(code)
    return os.waitpid(pid, 0)[1]


def test_exit_and_signal_records() -> None:
    assert exitfile.exit_record(wait_status(3), False, 5) == {
        "exit_code": 3,
        "signal": None,
        "oom_killed": False,
        "finished_at_ns": 5,
    }
    killed = exitfile.exit_record(wait_status(sig=signal.SIGKILL), True, 6)
    assert (killed["exit_code"], killed["signal"], killed["oom_killed"]) == (137, 9, True)


def test_exit_file_is_replaced_whole(tmp_path: Path) -> None:
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        exitfile.write_exit_file(fd, {"exit_code": 1})
        exitfile.write_exit_file(fd, {"exit_code": 2, "signal": None})
    finally:
        os.close(fd)
    assert json.loads((tmp_path / "exit").read_text()) == {"exit_code": 2, "signal": None}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exit"]


def test_oom_counter_of_a_process_and_its_value(tmp_path: Path) -> None:
    counter = exitfile.oom_counter(os.getpid())
    lines = Path(f"/proc/{os.getpid()}/cgroup").read_text().splitlines()
    memory_v1 = [line.split(":", 2)[2] for line in lines if "memory" in line.split(":", 2)[1].split(",")]
    if memory_v1:
        assert counter == f"/sys/fs/cgroup/memory{memory_v1[0]}/memory.oom_control"
        assert "oom_kill " in Path(counter).read_text()
    else:
        assert counter is not None and counter.endswith("/memory.events")
    fake = tmp_path / "memory.events"
    fake.write_text("low 0\nhigh 0\nmax 4\noom 2\noom_kill 2\n")
    assert exitfile.read_oom_kills(str(fake)) == 2
    assert exitfile.read_oom_kills(str(tmp_path / "missing")) == 0
    assert exitfile.read_oom_kills(None) == 0
    assert exitfile.oom_counter(2**22 + 12345) is None
