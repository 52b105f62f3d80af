"""The pod lifecycle orchestrator with real runc: a pod's containers stop in parallel, and no
CreateContainer racing RemovePodSandbox ever leaves a container behind."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path

import grpc
import pytest

from crio_py import cgroups
from crio_py.cri import api_pb2 as pb
from crio_py.lifecycle import POD_STOP_TIMEOUT
from tests.support.cri import pod_config
from tests.support.daemon import DaemonHandle
from tests.support.pods import Pod

pytestmark = pytest.mark.e2e


def test_containers_ignoring_sigterm_cost_one_timeout_not_three(pod: Pod) -> None:
    # sleep is pid 1 of its pid namespace: SIGTERM does nothing to it, only SIGKILL does.
    ids = [pod.run(f"stubborn{i}", "sleep", "3600") for i in range(3)]
    started = time.monotonic()
    pod.daemon.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod.id), timeout=120)
    elapsed = time.monotonic() - started
    assert POD_STOP_TIMEOUT <= elapsed < 2 * POD_STOP_TIMEOUT
    for cid in ids:
        status = pod.status(cid)
        assert (status.state, status.exit_code) == (pb.CONTAINER_EXITED, 137)
    status = pod.daemon.runtime.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=pod.id)).status
    assert status.state == pb.SANDBOX_NOTREADY


def runc_ids(daemon: DaemonHandle) -> set[str]:
    root = daemon.config["runtimes"]["runc"]["root"]
    out = subprocess.run(["runc", "--root", root, "list", "--format", "json"], capture_output=True, check=True)
    return {c["id"] for c in json.loads(out.stdout or b"null") or []}


def test_create_container_racing_remove_pod_never_leaves_an_orphan(
    daemon: DaemonHandle, busybox: str, cgroup_parent: str
) -> None:
    created = refused = 0
    for round_ in range(100):
        config = pod_config(f"race{round_}", cgroup_parent=cgroup_parent)
        pod_id = daemon.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=config), timeout=60).pod_sandbox_id
        outcome: dict[str, object] = {}

        def create(pod_id: str = pod_id, config: pb.PodSandboxConfig = config, outcome: dict = outcome) -> None:
            request = pb.CreateContainerRequest(
                pod_sandbox_id=pod_id,
                sandbox_config=config,
                config=pb.ContainerConfig(
                    metadata=pb.ContainerMetadata(name="c"), image=pb.ImageSpec(image=busybox), command=["sleep", "60"]
                ),
            )
            try:
                outcome["id"] = daemon.runtime.CreateContainer(request, timeout=60).container_id
            except grpc.RpcError as exc:
                outcome["error"] = exc.code()

        creator = threading.Thread(target=create)
        creator.start()
        daemon.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod_id), timeout=60)
        creator.join(60)
        if "id" in outcome:
            created += 1
        else:
            assert outcome["error"] in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION), outcome
            refused += 1
        assert daemon.runtime.ListContainers(pb.ListContainersRequest()).containers == []
        assert daemon.runtime.ListPodSandbox(pb.ListPodSandboxRequest()).items == []
    assert runc_ids(daemon) == set()
    assert list((Path(daemon.config["root"]) / "state" / "containers").glob("*.json")) == []
    assert created + refused == 100


def test_a_retry_after_a_client_timeout_gets_the_same_pod_and_container(
    daemon: DaemonHandle, busybox: str, cgroup_parent: str
) -> None:
    config = pod_config("retried", cgroup_parent=cgroup_parent)
    request = pb.RunPodSandboxRequest(config=config)
    # The first call gives up long before the pod is made; the daemon carries on.
    with pytest.raises(grpc.RpcError) as err:
        daemon.runtime.RunPodSandbox(request, timeout=0.05)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    pod_id = daemon.runtime.RunPodSandbox(request, timeout=60).pod_sandbox_id
    assert daemon.runtime.RunPodSandbox(request, timeout=60).pod_sandbox_id == pod_id  # finished: same id
    assert [p.id for p in daemon.runtime.ListPodSandbox(pb.ListPodSandboxRequest()).items] == [pod_id]

    create = pb.CreateContainerRequest(
        pod_sandbox_id=pod_id,
        sandbox_config=config,
        config=pb.ContainerConfig(
            metadata=pb.ContainerMetadata(name="c"), image=pb.ImageSpec(image=busybox), command=["sleep", "60"]
        ),
    )
    with pytest.raises(grpc.RpcError) as err:
        daemon.runtime.CreateContainer(create, timeout=0.02)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    cid = daemon.runtime.CreateContainer(create, timeout=60).container_id
    assert daemon.runtime.CreateContainer(create, timeout=60).container_id == cid
    assert [c.id for c in daemon.runtime.ListContainers(pb.ListContainersRequest()).containers] == [cid]


def test_a_failed_removal_keeps_the_container_and_is_finished_at_start_up(pod: Pod) -> None:
    cid = pod.run("blocked", "sleep", "3600")
    info = json.loads(
        pod.daemon.runtime.ContainerStatus(pb.ContainerStatusRequest(container_id=cid, verbose=True)).info["info"]
    )
    pod.daemon.runtime.StopContainer(pb.StopContainerRequest(container_id=cid, timeout=0))
    # A process of ours in the container's cgroup keeps it busy: the cgroup cannot be removed.
    cgroup_dir = next(iter(cgroups.find_cgroup_dirs(info["cgroupsPath"]).values()))
    blocker = subprocess.Popen(["sleep", "3600"])
    try:
        (cgroup_dir / "cgroup.procs").write_text(str(blocker.pid))
        with pytest.raises(grpc.RpcError) as err:
            pod.daemon.runtime.RemoveContainer(pb.RemoveContainerRequest(container_id=cid))
        assert err.value.code() == grpc.StatusCode.INTERNAL and "cgroup" in err.value.details()
        # Kept, with its record, until every resource is gone.
        assert pod.status(cid).state == pb.CONTAINER_EXITED
        record = Path(pod.daemon.config["root"]) / "state" / "containers" / f"{cid}.json"
        assert json.loads(record.read_text())["phase"] == "removing"
    finally:
        blocker.kill()
        blocker.wait()
    pod.daemon.kill()
    pod.daemon.start()  # the removal is finished at start-up
    assert [c.id for c in pod.daemon.runtime.ListContainers(pb.ListContainersRequest()).containers] == []
    assert not record.exists() and not cgroup_dir.exists()


def test_a_pod_without_a_ready_network_is_refused_naming_the_conf_dir(
    daemon_handle: DaemonHandle, cgroup_parent: str
) -> None:
    daemon_handle.config["cni"]["require_network"] = True  # the default outside tests
    daemon_handle.start()
    with pytest.raises(grpc.RpcError) as err:
        daemon_handle.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=pod_config(cgroup_parent=cgroup_parent)))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert daemon_handle.config["cni"]["conf_dir"] in err.value.details()
    assert daemon_handle.runtime.ListPodSandbox(pb.ListPodSandboxRequest()).items == []
    # The host's network needs no CNI.
    host = pod_config(cgroup_parent=cgroup_parent, network=pb.NODE)
    pod_id = daemon_handle.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=host), timeout=60).pod_sandbox_id
    status = daemon_handle.runtime.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=pod_id)).status
    assert status.state == pb.SANDBOX_READY
