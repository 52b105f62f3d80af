"""The event-driven lifecycle core with real runc and monitors: exits pushed by the monitor and
recorded at once, Stop that returns with the exit recorded, restore that asks the runtime,
process identity across a (faked) reboot, records of older versions."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from crio_py.cri import api_pb2 as pb
from crio_py.monitor import MONITOR_GONE_REASON
from crio_py.proc import BOOT_ID_ENV
from tests.support.pods import Pod

pytestmark = pytest.mark.e2e
# Exits 7 the moment it gets SIGTERM (sh is pid 1 of its pid namespace: only a trap ends it).
GRACEFUL = "trap 'exit 7' TERM; sleep 3600 & wait"


def wait_for(what: str, check: Callable[[], Any], timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)
    return value


def record_path(pod: Pod, kind: str, object_id: str) -> Path:
    return Path(pod.daemon.config["root"]) / "state" / kind / f"{object_id}.json"


def test_exits_go_from_running_to_exited_never_through_unknown(pod: Pod) -> None:
    polls = 0
    for i in range(50):
        cid = pod.run(f"short{i}", "sh", "-c", "sleep 0.3; exit 3")
        while True:
            status = pod.status(cid)
            polls += 1
            assert status.state in (pb.CONTAINER_RUNNING, pb.CONTAINER_EXITED), status
            if status.state == pb.CONTAINER_EXITED:
                break
        assert (status.exit_code, status.reason) == (3, "Error")
        assert status.finished_at >= status.started_at > 0
        pod.daemon.runtime.RemoveContainer(pb.RemoveContainerRequest(container_id=cid))
    assert polls >= 1000
    assert MONITOR_GONE_REASON not in pod.daemon.log_text()


def test_stop_returns_with_the_exit_recorded(pod: Pod) -> None:
    graceful = pod.run("graceful", "sh", "-c", GRACEFUL)
    pod.daemon.runtime.StopContainer(pb.StopContainerRequest(container_id=graceful, timeout=10))
    status = pod.status(graceful)
    assert (status.state, status.exit_code, status.reason) == (pb.CONTAINER_EXITED, 7, "Error")
    killed = pod.run("killed", "sleep", "3600")
    pod.daemon.runtime.StopContainer(pb.StopContainerRequest(container_id=killed, timeout=0))
    status = pod.status(killed)
    assert (status.state, status.exit_code, status.reason) == (pb.CONTAINER_EXITED, 137, "Error")
    # Stopping again is fine and changes nothing.
    pod.daemon.runtime.StopContainer(pb.StopContainerRequest(container_id=killed, timeout=0))
    assert pod.status(killed).finished_at == status.finished_at
    assert MONITOR_GONE_REASON not in pod.daemon.log_text()


def test_an_exit_nobody_asked_about_is_recorded_at_once(pod: Pod) -> None:
    cid = pod.run("quiet", "sh", "-c", "exit 5")
    # Nobody calls ContainerStatus: the record on disk changes by itself.
    path = record_path(pod, "containers", cid)
    record = wait_for("the exit in the record", lambda: (r := json.loads(path.read_text()))["phase"] == "exited" and r)
    assert (record["exit_code"], record["reason"]) == (5, "Error")
    assert f'"container_id": "{cid}"' in pod.daemon.log_text() or cid in pod.daemon.log_text()


def test_start_of_an_exited_container_is_failed_precondition_naming_the_state(pod: Pod) -> None:
    cid = pod.run("done", "true")
    pod.wait_exit(cid)
    with pytest.raises(grpc.RpcError) as err:
        pod.daemon.runtime.StartContainer(pb.StartContainerRequest(container_id=cid))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "exited" in err.value.details()


def test_a_start_the_daemon_died_in_is_running_after_restore(pod: Pod) -> None:
    cid = pod.create("interrupted", "sleep", "3600")
    pod.daemon.kill()
    # As if the daemon had been SIGKILLed just after `runc start`: the runtime runs the
    # container, the record still says "created".
    runc = pod.daemon.config["runtimes"]["runc"]
    subprocess.run(["runc", "--root", runc["root"], "start", cid], check=True)
    pod.daemon.start()
    status = pod.status(cid)
    assert status.state == pb.CONTAINER_RUNNING and status.started_at > 0
    with pytest.raises(grpc.RpcError) as err:
        pod.daemon.runtime.StartContainer(pb.StartContainerRequest(container_id=cid))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "running" in err.value.details()
    pod.daemon.runtime.StopContainer(pb.StopContainerRequest(container_id=cid, timeout=0))
    assert (pod.status(cid).state, pod.status(cid).exit_code) == (pb.CONTAINER_EXITED, 137)


def test_an_exit_while_the_daemon_is_down_is_picked_up_at_restore(pod: Pod) -> None:
    cid = pod.run("while-down", "sleep", "3600")
    pid = pod.pid(cid)
    pod.daemon.kill()
    os.kill(pid, signal.SIGKILL)
    monitor_dir = Path(pod.daemon.config["run_root"]) / "monitors" / pod.id
    wait_for("the monitor's exit file", lambda: (monitor_dir / cid / "exit").exists())
    pod.daemon.start()
    status = pod.status(cid)
    assert (status.state, status.exit_code) == (pb.CONTAINER_EXITED, 137)


def test_a_faked_reboot_makes_every_pod_notready_and_containers_exited(
    pod: Pod, monkeypatch: pytest.MonkeyPatch
) -> None:
    cid = pod.run("before-reboot", "sleep", "3600")
    pod.daemon.kill()
    monkeypatch.setenv(BOOT_ID_ENV, "00000000-0000-0000-0000-000000000000")
    pod.daemon.start()
    pods = pod.daemon.runtime.ListPodSandbox(pb.ListPodSandboxRequest()).items
    assert [(p.id, p.state) for p in pods] == [(pod.id, pb.SANDBOX_NOTREADY)]
    status = pod.status(cid)
    assert (status.state, status.reason) == (pb.CONTAINER_EXITED, "NodeRebooted")
    # Their leftovers go with the usual calls.
    pod.daemon.runtime.RemoveContainer(pb.RemoveContainerRequest(container_id=cid))
    pod.daemon.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod.id))
    pod.daemon.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod.id))
    assert not Path(f"/proc/{pod.pause_pid}").exists()


def test_records_of_an_older_version_and_with_unknown_keys_load(pod: Pod) -> None:
    cid = pod.run("old-record", "sleep", "3600")
    pod.daemon.kill()
    ctr_path, pod_path = record_path(pod, "containers", cid), record_path(pod, "pods", pod.id)
    old = json.loads(ctr_path.read_text())
    for key in ("schema", "pid_start", "boot_id"):  # what version 1 records did not have
        del old[key]
    ctr_path.write_text(json.dumps(old))
    newer = json.loads(pod_path.read_text())
    newer["a_field_of_a_newer_daemon"] = {"x": 1}
    pod_path.write_text(json.dumps(newer))
    pod.daemon.start()
    assert pod.status(cid).state == pb.CONTAINER_RUNNING
    status = pod.daemon.runtime.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=pod.id)).status
    assert status.state == pb.SANDBOX_READY
    pod.daemon.runtime.StopContainer(pb.StopContainerRequest(container_id=cid, timeout=0))
    assert pod.status(cid).exit_code == 137
