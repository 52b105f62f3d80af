"""kubelet's resource requests on this host: limits for controllers and page sizes it may lack.

kubelet puts a hugepage limit for every page size it knows on every container (0 when the pod
asks for none); a host without the hugetlb controller (this one: compiled in, not mounted) must
still run the container, as containerd and CRI-O do.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from crio_py import cgroups
from crio_py.cri import api_pb2 as pb
from tests.support.daemon import DaemonHandle
from tests.support.pods import Pod

pytestmark = pytest.mark.e2e

MiB = 1 << 20


def host_has_hugetlb() -> bool:
    """Read independently of crio-py: a mounted v1 hugetlb hierarchy, or hugetlb in v2's root."""
    v1 = v2_root = None
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        pre, _, post = line.partition(" - ")
        fstype, _source, options = post.split()[:3]
        if fstype == "cgroup":
            v1 = v1 or "hugetlb" in options.split(",")
        elif fstype == "cgroup2":
            v2_root = pre.split()[4]
    if v1 is not None:
        return bool(v1)
    assert v2_root is not None
    return "hugetlb" in (Path(v2_root) / "cgroup.controllers").read_text().split()


def kubelet_resources() -> pb.LinuxContainerResources:
    """What kubelet 1.32 sends for a burstable container with a 64 MiB limit (kuberuntime_container_linux.go)."""
    return pb.LinuxContainerResources(
        cpu_period=100000,
        cpu_shares=102,
        memory_limit_in_bytes=64 * MiB,
        oom_score_adj=999,
        hugepage_limits=[pb.HugepageLimit(page_size="2MB", limit=0), pb.HugepageLimit(page_size="1GB", limit=0)],
    )


def spec_of(pod: Pod, cid: str) -> dict:
    info = pod.daemon.runtime.ContainerStatus(pb.ContainerStatusRequest(container_id=cid, verbose=True)).info
    return json.loads(info["info"])


def test_kubelet_hugepage_limits_create_and_start_on_this_host(pod: Pod) -> None:
    cid = pod.run("hugepages", "sleep", "300", resources=kubelet_resources())
    assert pod.status(cid).state == pb.CONTAINER_RUNNING
    assert pod.exec(cid, "echo", "alive").stdout == b"alive\n"
    info = spec_of(pod, cid)
    resources = info["runtimeSpec"]["linux"]["resources"]
    if host_has_hugetlb():
        assert {h["pageSize"] for h in resources["hugepageLimits"]} <= {"2MB", "1GB"}
    else:
        assert "hugepageLimits" not in resources
    # the rest of the request still applies
    dirs = cgroups.find_cgroup_dirs(info["cgroupsPath"])
    limit = dirs["memory"] / "memory.limit_in_bytes" if "memory" in dirs else dirs["unified"] / "memory.max"
    assert int(limit.read_text()) == 64 * MiB
    # kubelet's in-place resize sends the same shape again
    resized = kubelet_resources()
    resized.memory_limit_in_bytes = 96 * MiB
    pod.daemon.runtime.UpdateContainerResources(pb.UpdateContainerResourcesRequest(container_id=cid, linux=resized))
    assert int(limit.read_text()) == 96 * MiB


def test_status_says_which_controllers_containers_get(daemon: DaemonHandle) -> None:
    info = json.loads(daemon.runtime.Status(pb.StatusRequest(verbose=True)).info["cgroups"])
    assert info["driver"] == "cgroupfs"
    assert info["version"] in (1, 2)
    assert {"cpu", "memory"} <= set(info["controllers"])
    assert ("hugetlb" in info["controllers"]) == host_has_hugetlb()
    offered = {p.name for p in Path("/sys/kernel/mm/hugepages").iterdir()}
    assert len(info["hugepageSizes"]) == len(offered)
    if "hugepages-2048kB" in offered:
        assert "2MB" in info["hugepageSizes"]
