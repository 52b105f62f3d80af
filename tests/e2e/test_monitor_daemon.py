"""The monitor through the daemon: logging goes on while the daemon is down, log reopen after a
kubelet-style rotation loses nothing, a killed monitor leaves the daemon able to clean up, and
long lines reach the CRI log in partial pieces."""

from __future__ import annotations

import os
import re
import signal
import time
from datetime import datetime
from pathlib import Path

import grpc
import pytest

from crio_py.cri import api_pb2 as pb
from crio_py.monitor import MONITOR_GONE_REASON
from crio_py.proc import process_alive
from tests.support.cri import host_mounts_under
from tests.support.pods import Pod

pytestmark = pytest.mark.e2e
# One numbered line every 0.1 s: a lost or doubled line shows as a gap or repeat in the numbers.
COUNTER = "i=0; while true; do i=$((i+1)); echo line $i; sleep 0.1; done"
COUNTER_LINE = re.compile(r"^(\S+) stdout F line (\d+)$", re.M)


def counted(*paths: Path) -> list[tuple[float, int]]:
    """(time logged, number) of each counter line in ``paths``, in file order."""
    return [
        (datetime.fromisoformat(m.group(1)).timestamp(), int(m.group(2)))
        for path in paths
        for m in COUNTER_LINE.finditer(path.read_text())
    ]


def numbers(*paths: Path) -> list[int]:
    """The counter's numbers in ``paths``, in file order."""
    return [n for _, n in counted(*paths)]


def assert_contiguous(seen: list[int]) -> None:
    assert seen == list(range(1, len(seen) + 1)), "a counter line was lost or doubled"


def wait_for_lines(path: Path, count: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists() or len(numbers(path)) < count:
        assert time.monotonic() < deadline, f"fewer than {count} lines in {path}"
        time.sleep(0.05)


def test_logging_goes_on_while_the_daemon_is_down(pod: Pod) -> None:
    cid = pod.run("counter", "sh", "-c", COUNTER)
    log = Path(pod.status(cid).log_path)
    wait_for_lines(log, 3)
    pod.daemon.kill()
    down_at = time.time()
    wait_for_lines(log, len(numbers(log)) + 5)
    up_at = time.time()
    pod.daemon.start()
    # Only the monitor was there to write these.
    assert len([n for at, n in counted(log) if down_at < at < up_at]) >= 5
    assert pod.status(cid).state == pb.CONTAINER_RUNNING
    last_before_stop = numbers(log)[-1]
    # sh is pid 1 of its pid namespace and ignores SIGTERM: 1 s later it gets SIGKILL (137).
    pod.daemon.runtime.StopContainer(pb.StopContainerRequest(container_id=cid, timeout=1))
    status = pod.status(cid)
    assert status.state == pb.CONTAINER_EXITED and status.exit_code in (137, 143)
    seen = numbers(log)
    assert_contiguous(seen)
    assert seen[-1] >= last_before_stop


def test_reopen_after_rotation_loses_nothing(pod: Pod) -> None:
    cid = pod.run("rotated", "sh", "-c", COUNTER)
    log = Path(pod.status(cid).log_path)
    wait_for_lines(log, 3)
    rotated = log.with_name(log.name + ".1")
    os.rename(log, rotated)  # kubelet renames, then asks for a reopen
    wait_for_lines(rotated, len(numbers(rotated)) + 2)  # the monitor keeps writing to the renamed file
    pod.daemon.runtime.ReopenContainerLog(pb.ReopenContainerLogRequest(container_id=cid))
    wait_for_lines(log, 3)
    pod.daemon.runtime.StopContainer(pb.StopContainerRequest(container_id=cid, timeout=0))
    old, new = numbers(rotated), numbers(log)
    assert old and new  # lines on both sides of the reopen
    assert_contiguous(old + new)
    with pytest.raises(grpc.RpcError) as err:
        pod.daemon.runtime.ReopenContainerLog(pb.ReopenContainerLogRequest(container_id=cid))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_a_killed_monitor_leaves_the_daemon_in_charge(pod: Pod) -> None:
    cid = pod.run("orphan", "sleep", "300")
    pid = pod.pid(cid)
    monitor_dir = Path(pod.daemon.config["run_root"]) / "monitors" / pod.id
    os.kill(int((monitor_dir / "monitor.pid").read_text()), signal.SIGKILL)
    # Noticed at once (its connection ended): still running (the runtime did not lose it),
    # flagged: its output is no longer logged.
    deadline = time.monotonic() + 1
    while (status := pod.status(cid)).reason != MONITOR_GONE_REASON:
        assert time.monotonic() < deadline, "the monitor's death was not noticed within a second"
        time.sleep(0.02)
    assert status.state == pb.CONTAINER_RUNNING
    assert status.reason == MONITOR_GONE_REASON and "monitor" in status.message
    # StopContainer works through the runtime; with nobody to record the exit, it is UNKNOWN.
    pod.daemon.runtime.StopContainer(pb.StopContainerRequest(container_id=cid, timeout=0))
    status = pod.status(cid)
    assert (status.state, status.reason) == (pb.CONTAINER_UNKNOWN, MONITOR_GONE_REASON)
    assert not process_alive(pid)  # (a zombie at most: init reaps orphans when it will)
    pod.daemon.runtime.RemoveContainer(pb.RemoveContainerRequest(container_id=cid))
    pod.daemon.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod.id))
    pod.daemon.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod.id))
    assert pod.daemon.proc is not None and pod.daemon.proc.poll() is None
    assert not process_alive(pod.pause_pid)
    assert not monitor_dir.exists()
    assert host_mounts_under(pod.daemon.workdir) == []


def test_a_long_line_arrives_as_partial_pieces(pod: Pod) -> None:
    cid = pod.run("long", "sh", "-c", "head -c 1048576 /dev/zero | tr '\\0' x; echo; echo err >&2")
    pod.wait_exit(cid)
    lines = pod.log_lines(cid)
    stdout = [(tag, text) for stream, tag, text in lines if stream == "stdout"]
    assert len(stdout) > 1 and all(tag == "P" for tag, _ in stdout[:-1]) and stdout[-1][0] == "F"
    assert "".join(text for _, text in stdout) == "x" * 1048576
    assert [(stream, tag, text) for stream, tag, text in lines if stream == "stderr"] == [("stderr", "F", "err")]
