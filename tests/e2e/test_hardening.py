"""Privilege rules and hostile requests against the real daemon (issue 15)."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from crio_py import cgroups
from crio_py.cri import api_pb2 as pb
from tests.support.cri import pod_config
from tests.support.daemon import DaemonHandle
from tests.support.pods import Pod

pytestmark = pytest.mark.e2e


def test_a_privileged_container_in_a_non_privileged_pod_is_refused(pod: Pod) -> None:  # finding 2
    with pytest.raises(grpc.RpcError) as err:
        pod.create("root", "true", security=pb.LinuxContainerSecurityContext(privileged=True))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"its pod sandbox {pod.id} is not privileged" in err.value.details()
    assert list(pod.daemon.runtime.ListContainers(pb.ListContainersRequest()).containers) == []
    # The name stays free: the same container, unprivileged, is created at once.
    assert pod.create("root", "true")


def test_a_hostile_create_leaves_the_pod_and_its_monitor_serving(pod: Pod) -> None:  # findings 1, 4, 5
    for resources in (
        pb.LinuxContainerResources(cpu_shares=-1),
        pb.LinuxContainerResources(memory_limit_in_bytes=4096),
        pb.LinuxContainerResources(cpuset_cpus="0-4095"),
    ):
        with pytest.raises(grpc.RpcError) as err:
            pod.create("bad", "true", resources=resources)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as err:
        pod.create("huge", "x" * (1024 * 1024), "y")
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    cid = pod.run("after", "sh", "-c", "echo still here")
    assert pod.output(cid) == "still here\n"


def _cgroup_dirs(path: str) -> list[Path]:
    return [Path(h.mountpoint) / path.lstrip("/") for h in cgroups.hierarchies()]


def test_a_cgroup_parent_the_pod_made_goes_with_the_pod(daemon: DaemonHandle, busybox: str, cgroup_parent: str) -> None:
    # finding 6: runc made the parent's directories in every hierarchy and they stayed forever.
    nested = f"{cgroup_parent}/team/app"
    first = daemon.runtime.RunPodSandbox(
        pb.RunPodSandboxRequest(config=pod_config(cgroup_parent=nested))
    ).pod_sandbox_id
    second = daemon.runtime.RunPodSandbox(
        pb.RunPodSandboxRequest(config=pod_config(cgroup_parent=nested))
    ).pod_sandbox_id
    assert any(d.is_dir() for d in _cgroup_dirs(nested))
    daemon.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=first))
    daemon.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=first))
    assert any(d.is_dir() for d in _cgroup_dirs(nested)), "the other pod still lives there"
    daemon.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=second))
    daemon.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=second))
    assert [d for d in _cgroup_dirs(cgroup_parent) if d.exists()] == [], daemon.log_text()[-3000:]


def test_a_host_path_as_cgroup_parent_is_refused(daemon: DaemonHandle) -> None:
    with pytest.raises(grpc.RpcError) as err:
        daemon.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=pod_config(cgroup_parent="/sys/fs/cgroup/x")))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "is a host path" in err.value.details()
    assert [d for d in _cgroup_dirs("/sys") if d.exists()] == []


def test_a_command_the_image_lacks_is_invalid_argument(pod: Pod) -> None:  # found by the fuzz suite
    for argv in (["no-such-command"], ["/etc/passwd"], ["/"]):
        with pytest.raises(grpc.RpcError) as err:
            pod.create("missing", *argv)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
        assert f'exec: "{argv[0]}"' in err.value.details()
    assert pod.output(pod.run("missing", "echo", "name free again")) == "name free again\n"


def test_exec_of_a_command_that_cannot_run_is_invalid_argument(pod: Pod) -> None:  # found by the fuzz suite
    cid = pod.run("target", "sleep", "300")
    for argv in (["//"], ["/etc"], ["/etc/passwd"], ["no-such-command"]):
        with pytest.raises(grpc.RpcError) as err:
            pod.exec(cid, *argv)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    assert pod.exec(cid, "echo", "fine").stdout == b"fine\n"
