"""Load: 200 pods run and removed by 8 concurrent clients mixed with List/Status calls (issue 15).

Zero errors and nothing left behind. The latency of ListPodSandbox and ContainerStatus under the
load is printed (figures, not a timed assertion: speed goals live in bench/).
"""

from __future__ import annotations

import contextlib
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from crio_py import cgroups
from crio_py.cri import api_pb2 as pb
from tests.support.cri import host_mounts_under, pod_config
from tests.support.daemon import DaemonHandle

pytestmark = pytest.mark.e2e

PODS = int(os.environ.get("LOAD_PODS", "200"))
CLIENTS = 8


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else 0.0


def test_pods_from_concurrent_clients_leave_nothing(daemon: DaemonHandle, busybox: str, cgroup_parent: str) -> None:
    errors: list[str] = []
    list_ms: list[float] = []
    status_ms: list[float] = []
    done = threading.Event()
    containers: list[str] = []

    def one_pod(i: int) -> None:
        rt = daemon.runtime
        try:
            config = pod_config(f"load-{i}", cgroup_parent=cgroup_parent)
            pod = rt.RunPodSandbox(pb.RunPodSandboxRequest(config=config), timeout=120).pod_sandbox_id
            ctr = rt.CreateContainer(pb.CreateContainerRequest(pod_sandbox_id=pod, sandbox_config=config,
                config=pb.ContainerConfig(metadata=pb.ContainerMetadata(name="c"), image=pb.ImageSpec(image=busybox),
                                          command=["sleep", "300"])), timeout=120).container_id  # fmt: skip
            containers.append(ctr)
            rt.StartContainer(pb.StartContainerRequest(container_id=ctr), timeout=120)
            rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod), timeout=120)
            rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod), timeout=120)
        except Exception as exc:  # collected: every failure is reported, not the first
            errors.append(f"pod {i}: {exc}")

    def observer() -> None:
        rt = daemon.runtime
        while not done.is_set():
            started = time.perf_counter()
            rt.ListPodSandbox(pb.ListPodSandboxRequest(), timeout=30)
            list_ms.append(time.perf_counter() - started)
            if containers:
                started = time.perf_counter()
                with contextlib.suppress(grpc.RpcError):  # NOT_FOUND once its pod is removed
                    rt.ContainerStatus(pb.ContainerStatusRequest(container_id=random.choice(containers)), timeout=30)
                status_ms.append(time.perf_counter() - started)
            time.sleep(0.02)

    watcher = threading.Thread(target=observer)
    watcher.start()
    started = time.monotonic()
    try:
        with ThreadPoolExecutor(CLIENTS) as pool:
            list(pool.map(one_pod, range(PODS)))
    finally:
        done.set()
        watcher.join()
    elapsed = time.monotonic() - started
    print(f"\nload: {PODS} pods by {CLIENTS} clients in {elapsed:.1f} s; ListPodSandbox p50/p99 "
          f"{_p(list_ms, 0.5):.1f}/{_p(list_ms, 0.99):.1f} ms ({len(list_ms)} calls), ContainerStatus p50/p99 "
          f"{_p(status_ms, 0.5):.1f}/{_p(status_ms, 0.99):.1f} ms ({len(status_ms)} calls)")
    assert errors == []
    assert list(daemon.runtime.ListPodSandbox(pb.ListPodSandboxRequest()).items) == []
    assert list(daemon.runtime.ListContainers(pb.ListContainersRequest()).containers) == []
    assert host_mounts_under(daemon.workdir) == []
    run_root = Path(daemon.config["run_root"])
    for kind in ("netns", "monitors", "pods"):
        assert list((run_root / kind).glob("*")) == [], kind
    for dirs in cgroups.find_cgroup_dirs(cgroup_parent).values():
        assert [d for d in dirs.iterdir() if d.is_dir()] == [], dirs
