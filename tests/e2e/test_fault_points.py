"""The daemon SIGKILLed at every fault point (crio_py.faults), restarted: it serves, what the API
lists is real, nothing exists that it does not list, the interrupted request succeeds when
retried with the same name, and what was acknowledged before is still there (issue 15)."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from crio_py import cgroups, faults
from crio_py.cri import api_pb2 as pb
from crio_py.proc import process_alive
from tests.e2e.conftest import BUSYBOX_REPO
from tests.support.cri import host_mounts_under, pod_config
from tests.support.daemon import DaemonHandle
from tests.support.registry import Registry

pytestmark = pytest.mark.e2e


class Scenario:
    """One daemon, a pod and a container built up to the step before the fault point's RPC."""

    def __init__(self, daemon: DaemonHandle, registry: Registry, cgroup_parent: str, logs: Path) -> None:
        self.daemon = daemon
        self.image = f"{registry.host}/{BUSYBOX_REPO}:latest"
        self.pod_config = pod_config("faulty", cgroup_parent=cgroup_parent, log_directory=str(logs))
        self.ctr_config = pb.ContainerConfig(
            metadata=pb.ContainerMetadata(name="work"), image=pb.ImageSpec(image=self.image),
            command=["sleep", "300"], log_path="work.log",
        )  # fmt: skip
        self.pod_id = ""
        self.ctr_id = ""
        self.acknowledged: set[str] = set()

    def pull(self) -> None:
        self.daemon.images.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=self.image)), timeout=120)

    def run_pod(self) -> None:
        req = pb.RunPodSandboxRequest(config=self.pod_config)
        self.pod_id = self.daemon.runtime.RunPodSandbox(req, timeout=120).pod_sandbox_id
        self.acknowledged.add(self.pod_id)

    def create(self) -> None:
        req = pb.CreateContainerRequest(
            pod_sandbox_id=self.pod_id, config=self.ctr_config, sandbox_config=self.pod_config
        )
        self.ctr_id = self.daemon.runtime.CreateContainer(req, timeout=60).container_id
        self.acknowledged.add(self.ctr_id)

    def start(self) -> None:
        self.daemon.runtime.StartContainer(pb.StartContainerRequest(container_id=self.ctr_id), timeout=60)

    def stop(self) -> None:
        self.daemon.runtime.StopContainer(pb.StopContainerRequest(container_id=self.ctr_id, timeout=5), timeout=60)

    def remove(self) -> None:
        self.daemon.runtime.RemoveContainer(pb.RemoveContainerRequest(container_id=self.ctr_id), timeout=60)
        self.acknowledged.discard(self.ctr_id)

    def stop_pod(self) -> None:
        self.daemon.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=self.pod_id), timeout=60)

    def remove_pod(self) -> None:
        self.daemon.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=self.pod_id), timeout=60)
        self.acknowledged.discard(self.pod_id)

    def remove_image(self) -> None:
        self.daemon.images.RemoveImage(pb.RemoveImageRequest(image=pb.ImageSpec(image=self.image)), timeout=60)


# Per RPC: the steps before it (acknowledged) and the interrupted step itself.
def plan(s: Scenario, rpc: str) -> tuple[list[Callable[[], None]], Callable[[], None]]:
    return {
        "PullImage": ([], s.pull),
        "RunPodSandbox": ([s.pull], s.run_pod),
        "CreateContainer": ([s.pull, s.run_pod], s.create),
        "StartContainer": ([s.pull, s.run_pod, s.create], s.start),
        "StopContainer": ([s.pull, s.run_pod, s.create, s.start], s.stop),
        "RemoveContainer": ([s.pull, s.run_pod, s.create, s.start, s.stop], s.remove),
        "StopPodSandbox": ([s.pull, s.run_pod], s.stop_pod),
        "RemovePodSandbox": ([s.pull, s.run_pod, s.stop_pod], s.remove_pod),
        "ImageGC": ([s.pull], s.remove_image),
    }[rpc]


def check_consistent(s: Scenario, cgroup_parent: str) -> None:
    """Everything the API lists is real; nothing exists that it does not list."""
    daemon = s.daemon
    pods = {p.id: p for p in daemon.runtime.ListPodSandbox(pb.ListPodSandboxRequest()).items}
    ctrs = {c.id: c for c in daemon.runtime.ListContainers(pb.ListContainersRequest()).containers}
    assert s.acknowledged <= set(pods) | set(ctrs), "an acknowledged object was lost"
    for pod_id, pod in pods.items():
        info = json.loads(daemon.runtime.PodSandboxStatus(
            pb.PodSandboxStatusRequest(pod_sandbox_id=pod_id, verbose=True)).info["info"])  # fmt: skip
        if pod.state == pb.SANDBOX_READY:
            assert process_alive(info["pid"]) and Path(info["netns"]).exists()
    for cid, ctr in ctrs.items():
        assert ctr.pod_sandbox_id in pods
        if ctr.state == pb.CONTAINER_RUNNING:
            info = json.loads(daemon.runtime.ContainerStatus(
                pb.ContainerStatusRequest(container_id=cid, verbose=True)).info["info"])  # fmt: skip
            assert process_alive(info["pid"])
    known = set(pods) | set(ctrs)
    for point in host_mounts_under(daemon.workdir):
        assert any(i in point for i in known), f"mount {point} belongs to nothing listed"
    run_root = Path(daemon.config["run_root"])
    for kind in ("netns", "monitors", "pods"):
        found = {p.name for p in (run_root / kind).glob("*")} if (run_root / kind).exists() else set()
        assert found <= set(pods), f"{kind} of unlisted pods: {found - set(pods)}"
    containers_dir = Path(daemon.config["root"]) / "containers"
    found = {p.name for p in containers_dir.glob("*")} if containers_dir.exists() else set()
    assert found <= known, f"bundles of unlisted objects: {found - known}"
    for dirs in cgroups.find_cgroup_dirs(cgroup_parent).values():
        for d in dirs.iterdir():
            if d.is_dir() and d.name.startswith("crio-py-"):
                assert d.name.removeprefix("crio-py-") in known, f"cgroup {d} of nothing listed"


def done_already(s: Scenario, point: str, err: grpc.RpcError) -> bool:
    """A retry refused because the killed request had finished its work (a start that ran)."""
    if point.startswith("StartContainer"):
        status = s.daemon.runtime.ContainerStatus(pb.ContainerStatusRequest(container_id=s.ctr_id)).status
        return status.state == pb.CONTAINER_RUNNING
    if point.startswith("ImageGC"):
        images = s.daemon.images.ListImages(pb.ListImagesRequest()).images
        return err.code() == grpc.StatusCode.NOT_FOUND and all(s.image not in i.repo_tags for i in images)
    return False


@pytest.mark.parametrize("point", faults.POINTS)
def test_a_kill_at_the_fault_point_leaves_a_consistent_daemon(
    point: str, daemon_handle: DaemonHandle, registry: Registry, cgroup_parent: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    s = Scenario(daemon_handle, registry, cgroup_parent, tmp_path / "logs")
    before, interrupted = plan(s, point.split(":")[0])
    daemon_handle.start()
    for step in before:
        step()
    daemon_handle.stop()
    monkeypatch.setenv(faults.ENV, point)
    daemon_handle.start()
    monkeypatch.delenv(faults.ENV)
    with pytest.raises(grpc.RpcError) as err:
        interrupted()
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert daemon_handle.proc is not None and daemon_handle.proc.wait(30) == -signal.SIGKILL
    daemon_handle.proc = None
    daemon_handle.start()
    check_consistent(s, cgroup_parent)
    # The same request, the same name: it succeeds now, or finds its work was done before the kill.
    try:
        interrupted()
    except grpc.RpcError as again:
        assert done_already(s, point, again), f"retry failed: {again.code().name}: {again.details()}"
    check_consistent(s, cgroup_parent)
    assert os.environ.get(faults.ENV) is None
