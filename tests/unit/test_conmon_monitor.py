"""The pod monitor process and crio_py.monitor's client, with a fake runtime (no runc, no root).

The fake runtime is a Python script: it starts the bundle's ``run.sh`` with its own stdio (which
the monitor gave it), writes that pid to --pid-file and exits without reaping it, as ``runc
create`` leaves the container behind for the monitor, its subreaper. (A shell would not do: dash
reaps a background job that ends before the script does, and the monitor never sees that exit.)
A bundle with a ``fail`` file makes it print that and exit 1, one with a ``hang`` file makes it
never return, one with an ``exit-first`` file makes it exit only once the container has ended.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from crio_py.monitor import CreateRequest, ExitStatus, MonitorClient, MonitorError, PodMonitor
from crio_py.monitor.client import _runtime_message
from crio_py.proc import process_alive

FAKE_RUNTIME = f"""#!{sys.executable} -IS
import os, signal, sys, time

args = sys.argv[1:]
bundle = args[args.index("--bundle") + 1]
pid_file = args[args.index("--pid-file") + 1]
if os.path.exists(f"{{bundle}}/fail"):
    sys.stderr.write(open(f"{{bundle}}/fail").read())
    sys.exit(1)
if os.path.exists(f"{{bundle}}/hang"):
    time.sleep(60)
pid = os.posix_spawn("/bin/sh", ["sh", f"{{bundle}}/run.sh"], os.environ, setsigdef=[signal.SIGPIPE])
if os.path.exists(f"{{bundle}}/exit-first"):
    os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
with open(pid_file, "w") as f:
    f.write(str(pid))
"""


class Pod:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.runtime = tmp_path / "fake-runtime"
        self.runtime.write_text(FAKE_RUNTIME)
        self.runtime.chmod(0o755)
        self.client = MonitorClient(tmp_path / "monitors", timeout=5.0)
        self.monitor = self.client.ensure_pod_monitor("pod")
        self.pids: list[int] = []

    def request(self, cid: str, script: str = "", fail: str | None = None, **kwargs: Any) -> CreateRequest:
        bundle = self.tmp / "bundles" / cid
        bundle.mkdir(parents=True)
        (bundle / "run.sh").write_text(script)
        if fail is not None:
            (bundle / "fail").write_text(fail)
        return CreateRequest(cid, bundle, str(self.runtime), self.tmp / "root", self.tmp / f"{cid}.log", **kwargs)

    def create(self, cid: str, script: str, **kwargs: Any) -> int:
        pid = self.monitor.create_container(self.request(cid, script, **kwargs))
        self.pids.append(pid)
        return pid

    def wait_exit(self, cid: str) -> ExitStatus:
        deadline = time.monotonic() + 10
        while (status := self.monitor.exit_status(cid)) is None:
            assert time.monotonic() < deadline, f"no exit recorded for {cid}"
            time.sleep(0.01)
        return status

    def log_lines(self, cid: str) -> list[str]:
        return [line.split(" ", 1)[1] for line in (self.tmp / f"{cid}.log").read_text().splitlines()]

    def cleanup(self) -> None:
        for pid in [*self.pids, self.monitor.pid() or 0]:
            if process_alive(pid):
                os.kill(pid, signal.SIGKILL)


def wait_for(condition: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


@pytest.fixture
def pod(tmp_path: Path) -> Iterator[Pod]:
    p = Pod(tmp_path)
    try:
        yield p
    finally:
        p.cleanup()


def test_start_and_reattach(pod: Pod) -> None:
    pid = pod.monitor.pid()
    assert pid and pod.monitor.ping() == pid and pod.monitor.alive()
    # A restarted daemon finds the same monitor through the directory.
    again = MonitorClient(pod.tmp / "monitors").ensure_pod_monitor("pod")
    assert again.pid() == pid
    assert os.getppid() != pid and Path(f"/proc/{pid}/stat").read_text().split()[3] != str(os.getpid())


def test_logs_and_exit_code(pod: Pod) -> None:
    pod.create("c", "echo out; echo err >&2; exit 4")
    status = pod.wait_exit("c")
    assert (status.exit_code, status.signal, status.oom_killed) == (4, None, False)
    assert sorted(pod.log_lines("c")) == ["stderr F err", "stdout F out"]
    assert pod.monitor.status()["c"]["exit"]["exit_code"] == 4


def test_runtime_failure_carries_its_stderr(pod: Pod) -> None:
    message = 'time="2026-01-01T00:00:00Z" level=error msg="container_linux.go: \\"bad\\" config"\n'
    with pytest.raises(MonitorError, match=r'runtime create failed: exit status 1: container_linux.go: "bad" config'):
        pod.monitor.create_container(pod.request("f", fail=message))
    assert "f" not in pod.monitor.status()
    assert not (pod.monitor.directory / "f" / "attach.sock").exists()


def test_missing_runtime_and_bad_requests(pod: Pod) -> None:
    request = pod.request("m", "true")
    with pytest.raises(MonitorError, match="No such file"):
        pod.monitor.create_container(
            CreateRequest("m", request.bundle, "/nonexistent/runc", Path("/r"), request.log_path)
        )
    with pytest.raises(MonitorError, match="unknown op"):
        pod.monitor.call({"op": "dance"})
    with pytest.raises(MonitorError, match="bad container id"):
        pod.monitor.create_container(CreateRequest("../x", request.bundle, "/bin/true", Path("/r"), request.log_path))
    with pytest.raises(MonitorError, match="cannot open log file"):
        pod.monitor.create_container(
            CreateRequest("l", request.bundle, str(pod.runtime), Path("/r"), pod.tmp / "nodir" / "l.log")
        )
    assert pod.monitor.alive()


def test_a_create_past_its_deadline_fails_and_the_monitor_lives_on(pod: Pod) -> None:
    # The killed create's deadline became infinite; epoll.poll(inf) raised OverflowError and
    # ended the monitor of every container of the pod.
    running = pod.create("before", "exec sleep 30")
    hung = pod.request("hung", "true", timeout=0.3)
    (hung.bundle / "hang").touch()
    with pytest.raises(MonitorError, match="creating container hung"):
        pod.monitor.create_container(hung)
    assert pod.monitor.alive()
    assert pod.monitor.status()["before"]["pid"] == running
    pod.create("after", "exit 3")
    assert pod.wait_exit("after").exit_code == 3
    os.kill(running, signal.SIGKILL)
    assert pod.wait_exit("before").signal == signal.SIGKILL


def test_a_container_that_ends_before_its_runtime_exits_is_reaped_by_the_monitor(pod: Pod) -> None:
    # The runtime exits only once its container is a zombie: both reach the monitor when the
    # runtime exits (the container reparented to it, the subreaper), in either order. The old shell
    # fake runtime reaped such a container itself and the monitor reported it running forever.
    for n in range(3):
        request = pod.request(f"quick{n}", f"exit {n + 5}")
        (request.bundle / "exit-first").touch()
        pod.pids.append(pod.monitor.create_container(request))
        assert pod.wait_exit(f"quick{n}").exit_code == n + 5


@pytest.mark.parametrize("timeout", [float("inf"), float("nan"), -1.0, 1e300])
def test_a_create_timeout_out_of_range_is_refused(pod: Pod, timeout: float) -> None:
    req = pod.request("t", "true")
    request = {"op": "create", "id": "t", "bundle": str(req.bundle), "runtime": req.runtime_path}
    request |= {"root": str(req.runtime_root), "log_path": str(req.log_path), "timeout": timeout}
    with pytest.raises(MonitorError, match="create timeout"):
        pod.monitor.call(request, timeout=5)
    assert pod.monitor.alive()


def test_duplicate_container_id_is_refused(pod: Pod) -> None:
    pod.create("d", "sleep 5")
    again = dataclasses.replace(pod.request("d2", "true"), container_id="d")
    with pytest.raises(MonitorError, match="already exists"):
        pod.monitor.create_container(again)


def test_attach_stdin_once(pod: Pod) -> None:
    pod.create("cat", "exec cat", stdin=True, stdin_once=True)
    with pod.monitor.connect_attach("cat") as conn:
        conn.send(b"ping\n")
        assert conn.recv(1024) == b"\x02ping\n"
        conn.shutdown(socket.SHUT_WR)
        assert pod.wait_exit("cat").exit_code == 0
        assert conn.recv(1024) == b""
    assert pod.log_lines("cat") == ["stdout F ping"]


def test_reopen_and_resize(pod: Pod) -> None:
    go = pod.tmp / "go"
    pod.create("r", f"echo one; while [ ! -e {go} ]; do sleep 0.01; done; echo two")
    wait_for(lambda: (pod.tmp / "r.log").exists() and "one" in (pod.tmp / "r.log").read_text())
    (pod.tmp / "r.log").rename(pod.tmp / "r.log.1")
    pod.monitor.reopen_log("r")
    go.touch()
    pod.wait_exit("r")
    assert pod.log_lines("r") == ["stdout F two"]
    with pytest.raises(MonitorError, match="no terminal"):
        pod.monitor.resize("r", 80, 24)
    with pytest.raises(MonitorError, match="no container"):
        pod.monitor.reopen_log("nope")


def test_a_stuck_monitor_times_out(pod: Pod) -> None:
    pid = pod.monitor.pid()
    assert pid
    os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises(MonitorError, match=r"did not answer ping within 0\.2s"):
            pod.monitor.ping(timeout=0.2)
        assert time.monotonic() - started < 1
    finally:
        os.kill(pid, signal.SIGCONT)
    assert pod.monitor.alive()


def test_killed_monitor(pod: Pod) -> None:
    pid = pod.create("k", "sleep 5")
    monitor_pid = pod.monitor.pid()
    assert monitor_pid
    os.kill(monitor_pid, signal.SIGKILL)
    wait_for(lambda: not process_alive(monitor_pid))
    assert not pod.monitor.alive()
    assert pod.monitor.exit_status("k") is None
    assert process_alive(pid)
    with pytest.raises(MonitorError, match="not running"):
        pod.monitor.status()


def test_shutdown(pod: Pod) -> None:
    go = pod.tmp / "go"
    pod.create("s", f"while [ ! -e {go} ]; do sleep 0.01; done")
    monitor_pid = pod.monitor.pid()
    assert monitor_pid
    assert pod.monitor.shutdown() == 1
    with pytest.raises(MonitorError, match="shutting down"):
        pod.create("late", "true")
    go.touch()
    pod.wait_exit("s")
    wait_for(lambda: not process_alive(monitor_pid))
    assert not (pod.monitor.directory / "monitor.pid").exists()
    with contextlib.suppress(MonitorError):
        pod.monitor.shutdown(force=True)


def test_force_shutdown_leaves_containers(pod: Pod) -> None:
    pid = pod.create("f", "sleep 5")
    assert pod.monitor.shutdown(force=True) == 1
    monitor = PodMonitor("pod", pod.monitor.directory, 1.0)
    wait_for(lambda: not monitor.alive())
    assert process_alive(pid)


def test_runtime_message_extraction() -> None:
    assert _runtime_message('time="x" level=error msg="a \\"b\\""\nplain words\n') == 'a "b"; plain words'
    assert _runtime_message('{"level":"error","msg":"json says"}\n') == "json says"
    assert _runtime_message("") == ""


def test_version_lists_the_ops(pod: Pod) -> None:
    version, features = pod.monitor.version()
    assert version >= 2 and {"create", "subscribe", "version", "shutdown"} <= features


def test_subscribers_hear_every_exit_and_get_the_earlier_ones(pod: Pod) -> None:
    pod.create("early", "exit 2")
    pod.wait_exit("early")
    first, second = pod.monitor.subscribe(), pod.monitor.subscribe()
    assert first.exits["early"].exit_code == 2 and second.exits["early"].exit_code == 2
    pod.create("late", "exit 6")
    for sub in (first, second):
        data = sub.buffer
        sub.sock.settimeout(10)
        while b"\n" not in data:
            data += sub.sock.recv(4096)
        event = json.loads(data.split(b"\n", 1)[0])
        assert (event["event"], event["id"], event["exit_code"]) == ("exit", "late", 6)
        sub.sock.close()
    # The exit file is written before the event is sent.
    assert pod.wait_exit("late").exit_code == 6


def test_a_damaged_exit_file_is_moved_aside_and_counts_as_no_exit(pod: Pod, caplog: pytest.LogCaptureFixture) -> None:
    # It was MonitorError (INTERNAL) from every status and list, and stopped the daemon's start.
    pod.create("x", "exit 5")
    assert pod.wait_exit("x").exit_code == 5
    exit_file = pod.monitor.directory / "x" / "exit"
    exit_file.write_text('{"exit_code": "five"')
    assert pod.monitor.exit_status("x") is None
    assert not exit_file.exists()
    assert (pod.monitor.directory / "x" / "exit.corrupt").read_text() == '{"exit_code": "five"'
    assert "unreadable exit file moved aside" in caplog.text
