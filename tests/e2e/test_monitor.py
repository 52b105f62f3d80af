"""The pod monitor (conmon/) with real runc and busybox containers, through crio_py.monitor."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from crio_py.cgroups import remove_cgroup
from crio_py.errors import CrioError
from crio_py.monitor import CreateRequest, ExitStatus, MonitorClient, MonitorError, PodMonitor
from crio_py.proc import process_alive
from tests.support.busybox_rootfs import busybox_rootfs

pytestmark = pytest.mark.e2e

RUNC = shutil.which("runc") or "/usr/sbin/runc"
REPO = Path(__file__).resolve().parents[2]
CRI_LINE = re.compile(rb"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z) (stdout|stderr) ([PF]) (.*)$")


@pytest.fixture(scope="module")
def rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return busybox_rootfs(tmp_path_factory.mktemp("monitor-rootfs") / "rootfs")


def wait_for(what: str, check: Callable[[], Any], timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


class Harness:
    """Containers and monitors of one test, all removed afterwards (runc state, cgroups, processes)."""

    def __init__(self, rootfs: Path) -> None:
        self.rootfs = rootfs
        self.workdir = Path(tempfile.mkdtemp(prefix="crio-py-monitor-"))
        self.runc_root = self.workdir / "runc"
        self.logs = self.workdir / "logs"
        self.logs.mkdir()
        self.cgroup_parent = f"crio-py-test-monitor-{uuid.uuid4().hex[:8]}"
        self.client = MonitorClient(self.workdir / "monitors")
        self.containers: list[str] = []
        self.monitor_pids: set[int] = set()

    def monitor(self, pod_id: str = "pod") -> PodMonitor:
        monitor = self.client.ensure_pod_monitor(pod_id)
        pid = monitor.pid()
        assert pid is not None
        self.monitor_pids.add(pid)
        return monitor

    def bundle(
        self, cid: str, script: str, *, tty: bool = False, memory: int | None = None, config: bool = True
    ) -> Path:
        bundle = self.workdir / "bundles" / cid
        bundle.mkdir(parents=True)
        if not config:
            return bundle
        subprocess.run([RUNC, "spec", "--bundle", str(bundle)], check=True)
        spec = json.loads((bundle / "config.json").read_text())
        spec["root"] = {"path": str(self.rootfs), "readonly": True}
        spec["process"]["terminal"] = tty
        spec["process"]["args"] = ["sh", "-c", script]
        spec["linux"]["cgroupsPath"] = f"/{self.cgroup_parent}/{cid}"
        if memory is not None:
            spec["linux"]["resources"]["memory"] = {"limit": memory, "swap": memory}
        (bundle / "config.json").write_text(json.dumps(spec))
        return bundle

    def request(self, cid: str, bundle: Path, **kwargs: Any) -> CreateRequest:
        return CreateRequest(cid, bundle, RUNC, self.runc_root, self.logs / f"{cid}.log", **kwargs)

    def create(self, monitor: PodMonitor, cid: str, script: str, *, start: bool = True, **kwargs: Any) -> int:
        bundle_kwargs = {k: kwargs.pop(k) for k in ("memory",) if k in kwargs}
        bundle = self.bundle(cid, script, tty=kwargs.get("tty", False), **bundle_kwargs)
        self.containers.append(cid)
        pid = monitor.create_container(self.request(cid, bundle, **kwargs))
        if start:
            self.runc("start", cid)
        return pid

    def runc(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([RUNC, "--root", str(self.runc_root), *args], check=True, capture_output=True, text=True)

    def wait_exit(self, monitor: PodMonitor, cid: str, timeout: float = 20.0) -> ExitStatus:
        status: ExitStatus = wait_for(f"exit of {cid}", lambda: monitor.exit_status(cid), timeout)
        return status

    def log_entries(self, cid: str, path: Path | None = None) -> list[tuple[str, str, bytes]]:
        data = (path or self.logs / f"{cid}.log").read_bytes()
        assert data.endswith(b"\n")
        entries = []
        for line in data[:-1].split(b"\n"):
            match = CRI_LINE.match(line)
            assert match, f"not a CRI log line: {line[:200]!r}"
            entries.append((match[2].decode(), match[3].decode(), match[4]))
        return entries

    def cleanup(self) -> None:
        for cid in self.containers:
            subprocess.run([RUNC, "--root", str(self.runc_root), "delete", "--force", cid], capture_output=True)
        for pid_file in (self.workdir / "monitors").glob("*/monitor.pid"):
            with contextlib.suppress(ValueError, OSError):
                self.monitor_pids.add(int(pid_file.read_text()))
        for pid in self.monitor_pids:
            if process_alive(pid) and b"conmon" in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(CrioError):
            remove_cgroup(self.cgroup_parent)
        shutil.rmtree(self.workdir, ignore_errors=True)


def lines_of(entries: list[tuple[str, str, bytes]], stream: str) -> list[bytes]:
    """Full lines of ``stream``, P entries joined to the F entry that ends them (kubelet's reading)."""
    lines, partial = [], b""
    for s, tag, content in entries:
        if s != stream:
            continue
        partial += content
        if tag == "F":
            lines.append(partial)
            partial = b""
    if partial:
        lines.append(partial)
    return lines


@pytest.fixture
def harness(rootfs: Path) -> Iterator[Harness]:
    h = Harness(rootfs)
    try:
        yield h
    finally:
        h.cleanup()


def test_logs_in_cri_format_with_partial_lines(harness: Harness) -> None:
    monitor = harness.monitor()
    script = textwrap.dedent(
        """
        echo out one
        echo err one >&2
        head -c 1048576 /dev/zero | tr '\\0' a; echo
        echo out two
        printf no-newline
        """
    )
    harness.create(monitor, "logs", script)
    status = harness.wait_exit(monitor, "logs")
    assert (status.exit_code, status.signal, status.oom_killed) == (0, None, False)
    entries = harness.log_entries("logs")
    assert lines_of(entries, "stderr") == [b"err one"]
    assert lines_of(entries, "stdout") == [b"out one", b"a" * 1048576, b"out two", b"no-newline"]
    big = [content for _, tag, content in entries if content.startswith(b"a")]
    assert len(big) == 64 and all(len(c) == 16384 for c in big)
    assert [tag for _, tag, c in entries if c.startswith(b"a")][-1] == "F"
    assert entries[-1] == ("stdout", "P", b"no-newline")


@pytest.mark.parametrize(("script", "code"), [("exit 0", 0), ("echo x; exit 1", 1)])
def test_exit_codes(harness: Harness, script: str, code: int) -> None:
    monitor = harness.monitor()
    harness.create(monitor, "c", script)
    status = harness.wait_exit(monitor, "c")
    assert (status.exit_code, status.signal, status.oom_killed) == (code, None, False)
    assert abs(status.finished_at_ns - time.time_ns()) < 60 * 10**9


def test_killed_by_signal_is_137(harness: Harness) -> None:
    monitor = harness.monitor()
    pid = harness.create(monitor, "k", "sleep 100")
    assert monitor.status()["k"] == {"pid": pid, "running": True, "exit": None}
    os.kill(pid, signal.SIGKILL)
    status = harness.wait_exit(monitor, "k")
    assert (status.exit_code, status.signal, status.oom_killed) == (137, 9, False)
    assert monitor.status()["k"]["running"] is False


def test_oom_killed(harness: Harness) -> None:
    monitor = harness.monitor()
    harness.create(monitor, "oom", "head -c 100000000 /dev/zero | tail", memory=8 * 1024 * 1024)
    status = harness.wait_exit(monitor, "oom")
    assert status.exit_code == 137
    assert status.oom_killed is True


def test_create_failure_carries_runtime_stderr(harness: Harness) -> None:
    monitor = harness.monitor()
    bundle = harness.bundle("broken", "", config=False)
    with pytest.raises(MonitorError, match=r"runtime create failed: exit status 1: .*config\.json"):
        monitor.create_container(harness.request("broken", bundle))
    assert monitor.alive()
    assert "broken" not in monitor.status()


def test_unwritable_log_directory_fails_create(harness: Harness) -> None:
    monitor = harness.monitor()
    bundle = harness.bundle("nolog", "echo hi")
    request = CreateRequest("nolog", bundle, RUNC, harness.runc_root, harness.workdir / "missing" / "nolog.log")
    with pytest.raises(MonitorError, match=r"cannot open log file .*missing/nolog\.log"):
        monitor.create_container(request)
    assert not (harness.runc_root / "nolog").exists()


def test_monitor_outlives_the_daemon(harness: Harness) -> None:
    """A "daemon" process starts the monitor and a container, then is SIGKILLed; logging goes on."""
    harness.bundle("bg", "for i in $(seq 1 60); do echo tick $i; sleep 0.05; done; exit 7")
    daemon = textwrap.dedent(
        f"""
        import subprocess, sys, time
        from pathlib import Path
        from crio_py.monitor import CreateRequest, MonitorClient
        client = MonitorClient(Path({str(harness.workdir / "monitors")!r}))
        monitor = client.ensure_pod_monitor("pod")
        req = CreateRequest("bg", Path({str(harness.workdir / "bundles" / "bg")!r}), {RUNC!r},
                            Path({str(harness.runc_root)!r}), Path({str(harness.logs / "bg.log")!r}))
        monitor.create_container(req)
        subprocess.run([{RUNC!r}, "--root", {str(harness.runc_root)!r}, "start", "bg"], check=True)
        print("ready", flush=True)
        time.sleep(100)
        """
    )
    harness.containers.append("bg")
    proc = subprocess.Popen([sys.executable, "-c", daemon], stdout=subprocess.PIPE, cwd=REPO)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"ready\n"
    finally:
        proc.kill()
        proc.wait()
    monitor = harness.monitor()  # re-attaches: the same process
    log = harness.logs / "bg.log"
    size = log.stat().st_size
    wait_for("more log lines after the daemon died", lambda: log.stat().st_size > size)
    status = harness.wait_exit(monitor, "bg")
    assert status.exit_code == 7
    assert lines_of(harness.log_entries("bg"), "stdout") == [b"tick %d" % i for i in range(1, 61)]
    assert len(harness.monitor_pids) == 1


def test_reopen_after_rename_loses_nothing(harness: Harness) -> None:
    monitor = harness.monitor()
    count = 3000
    # A pause every 10 lines (not every line: 3000 forks of usleep outlast the exit wait on a busy
    # machine) keeps the writer running while the log is rotated under it.
    harness.create(
        monitor, "rot",
        f"i=0; while [ $i -lt {count} ]; do echo line $i; i=$((i+1)); [ $((i % 10)) -eq 0 ] && usleep 5000; done",
    )
    log = harness.logs / "rot.log"
    rotated = []
    for n in range(5):
        # Each file gets lines before it is rotated away, however fast or slow the writer runs.
        wait_for(f"lines in {log.name} before rotation {n}", lambda: log.exists() and log.stat().st_size > 0, 20)
        rotated.append(log.with_name(f"rot.log.{n}"))
        log.rename(rotated[-1])
        monitor.reopen_log("rot")
    harness.wait_exit(monitor, "rot", timeout=60)
    entries = []
    for path in [*rotated, log]:
        entries += harness.log_entries("rot", path)
    assert all(path.stat().st_size > 0 for path in rotated)
    assert lines_of(entries, "stdout") == [b"line %d" % i for i in range(count)]


def test_attach_round_trips_stdin_to_stdout(harness: Harness) -> None:
    monitor = harness.monitor()
    harness.create(monitor, "cat", "cat", start=False, stdin=True, stdin_once=True)
    with monitor.connect_attach("cat") as conn:
        harness.runc("start", "cat")
        conn.send(b"hello attach\n")
        assert conn.recv(65536) == b"\x02hello attach\n"
        conn.shutdown(socket.SHUT_WR)  # stdin_once: the end of our input closes cat's stdin
        assert harness.wait_exit(monitor, "cat").exit_code == 0
        assert conn.recv(65536) == b""  # the monitor hangs up once the output ended
    assert lines_of(harness.log_entries("cat"), "stdout") == [b"hello attach"]


def test_terminal_resize(harness: Harness) -> None:
    monitor = harness.monitor()
    harness.create(monitor, "tty", "stty size; echo done", start=False, tty=True)
    monitor.resize("tty", 123, 45)
    harness.runc("start", "tty")
    assert harness.wait_exit(monitor, "tty").exit_code == 0
    assert lines_of(harness.log_entries("tty"), "stdout") == [b"45 123\r", b"done\r"]
    with pytest.raises(MonitorError, match="no container"):
        monitor.resize("nope", 80, 24)


def test_sigkilled_monitor_leaves_containers_running(harness: Harness) -> None:
    monitor = harness.monitor()
    pid = harness.create(monitor, "orphan", "sleep 100")
    monitor_pid = monitor.pid()
    assert monitor_pid is not None
    os.kill(monitor_pid, signal.SIGKILL)
    wait_for("the monitor to die", lambda: not process_alive(monitor_pid))
    assert not monitor.alive()
    assert process_alive(pid)
    assert json.loads(harness.runc("state", "orphan").stdout)["status"] == "running"
    assert monitor.exit_status("orphan") is None
    with pytest.raises(MonitorError, match="not running"):
        monitor.reopen_log("orphan")


def test_shutdown_waits_for_running_containers(harness: Harness) -> None:
    monitor = harness.monitor()
    harness.create(monitor, "short", "sleep 0.5")
    monitor_pid = monitor.pid()
    assert monitor_pid is not None
    assert monitor.shutdown() == 1
    assert monitor.alive()
    with pytest.raises(MonitorError, match="shutting down"):
        harness.create(monitor, "late", "true")
    harness.wait_exit(monitor, "short")
    wait_for("the monitor to exit", lambda: not process_alive(monitor_pid))
    assert not (monitor.directory / "control.sock").exists()
    assert monitor.exit_status("short") is not None


def test_fast_writer_loses_nothing_and_monitor_memory_stays_bounded(harness: Harness) -> None:
    monitor = harness.monitor()
    count = 12_000_000  # about 100 MB of output
    harness.create(monitor, "fast", f"seq 1 {count}")
    harness.wait_exit(monitor, "fast", timeout=120)
    monitor_pid = monitor.pid()
    with open(f"/proc/{monitor_pid}/status") as f:
        peak_kib = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    assert peak_kib < 32 * 1024
    expected = 1
    partial = b""
    with open(harness.logs / "fast.log", "rb") as f:
        for line in f:
            match = CRI_LINE.match(line[:-1])
            assert match and match[2] == b"stdout"
            partial += match[4]
            if match[3] == b"F":
                assert partial == b"%d" % expected
                expected += 1
                partial = b""
    assert expected == count + 1
