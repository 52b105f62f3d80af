"""The monitor through the daemon: logging goes on while the daemon is down, log reopen after a
kubelet-style rotation loses nothing, and a killed monitor leaves the daemon able to clean up."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import grpc
import pytest

from crio_py.cri import api_pb2 as pb
from crio_py.proc import process_alive
from tests.e2e.test_containers import Pod
from tests.support.cri import host_mounts_under, pod_config
from tests.support.daemon import DaemonHandle

pytestmark = pytest.mark.e2e
COUNTER = "i=0; while true; do i=$((i+1)); echo line $i; sleep 0.05; done"


@pytest.fixture
def pod(daemon: DaemonHandle, busybox: str, cgroup_parent: str, tmp_path: Path) -> Pod:
    return Pod(daemon, busybox, pod_config(cgroup_parent=cgroup_parent, log_directory=str(tmp_path / "logs")))


def numbers(*paths: Path) -> list[int]:
    out = []
    for path in paths:
        out += [int(m.group(1)) for m in re.finditer(r" stdout F line (\d+)$", path.read_text(), re.M)]
    return out


def wait_for_lines(path: Path, count: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while len(numbers(path)) < count:
        assert time.monotonic() < deadline, f"fewer than {count} lines in {path}"
        time.sleep(0.05)


def test_logging_goes_on_while_the_daemon_is_down(pod: Pod) -> None:
    cid = pod.run("counter", "sh", "-c", COUNTER)
    log = Path(pod.status(cid).log_path)
    wait_for_lines(log, 5)
    pod.daemon.kill()
    before = len(numbers(log))
    time.sleep(1)
    during = len(numbers(log))
    assert during >= before + 10  # ~20 lines a second, nobody but the monitor to write them
    pod.daemon.start()
    assert pod.status(cid).state == pb.CONTAINER_RUNNING
    pod.daemon.runtime.StopContainer(pb.StopContainerRequest(container_id=cid, timeout=5))
    status = pod.status(cid)
    assert status.state == pb.CONTAINER_EXITED and status.exit_code in (137, 143)
    seen = numbers(log)
    assert seen == list(range(1, len(seen) + 1))  # no line lost or doubled


def test_reopen_after_rotation_loses_nothing(pod: Pod) -> None:
    cid = pod.run("rotated", "sh", "-c", COUNTER)
    log = Path(pod.status(cid).log_path)
    wait_for_lines(log, 5)
    rotated = log.with_name(log.name + ".1")
    os.rename(log, rotated)  # kubelet renames, then asks for a reopen
    time.sleep(0.2)
    pod.daemon.runtime.ReopenContainerLog(pb.ReopenContainerLogRequest(container_id=cid))
    wait_for_lines(log, 5)
    pod.daemon.runtime.StopContainer(pb.StopContainerRequest(container_id=cid, timeout=0))
    seen = numbers(rotated, log)
    assert seen == list(range(1, len(seen) + 1))
    with pytest.raises(grpc.RpcError) as err:
        pod.daemon.runtime.ReopenContainerLog(pb.ReopenContainerLogRequest(container_id=cid))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_a_killed_monitor_leaves_the_daemon_in_charge(pod: Pod) -> None:
    cid = pod.run("orphan", "sleep", "300")
    pid = pod.pid(cid)
    monitor_pid = int((Path(pod.daemon.config["run_root"]) / "monitors" / pod.id / "monitor.pid").read_text())
    os.kill(monitor_pid, signal.SIGKILL)
    time.sleep(0.2)
    status = pod.status(cid)
    assert status.state == pb.CONTAINER_RUNNING and "monitor" in status.message.lower()
    # Stop and remove still work through the runtime; nothing is left behind.
    pod.daemon.runtime.StopContainer(pb.StopContainerRequest(container_id=cid, timeout=0))
    assert pod.status(cid).state in (pb.CONTAINER_EXITED, pb.CONTAINER_UNKNOWN)
    assert not process_alive(pid)  # (a zombie at most: init reaps orphans when it will)
    pod.daemon.runtime.RemoveContainer(pb.RemoveContainerRequest(container_id=cid))
    pod.daemon.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod.id))
    pod.daemon.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod.id))
    assert host_mounts_under(pod.daemon.workdir) == []


def test_a_long_line_arrives_as_partial_pieces(pod: Pod) -> None:
    cid = pod.run("long", "sh", "-c", "head -c 1048576 /dev/zero | tr '\\0' x; echo; echo err >&2")
    pod.wait_exit(cid)
    lines = pod.log_lines(cid)
    stdout = [(tag, text) for stream, tag, text in lines if stream == "stdout"]
    assert all(tag == "P" for tag, _ in stdout[:-1]) and stdout[-1][0] == "F"
    assert "".join(text for _, text in stdout) == "x" * 1048576
    assert ("stderr", "F", "err") in lines
