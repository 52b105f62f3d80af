#!/usr/bin/env python3
"""The whole lifecycle of a pod with one container, RPC by RPC, against a daemon of its own.

Each cycle: RunPodSandbox, CreateContainer, StartContainer, StopContainer(timeout 0),
RemoveContainer, StopPodSandbox, RemovePodSandbox. Prints p50/p99 per RPC and of the whole
cycle; also how long StopContainer(timeout 2) takes on a container that exits on SIGTERM
(the exit must be noticed at once, not at the next poll).
Goal: the event-driven core (issue 11) makes no step slower than the polling one.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from crio_py.cri import api_pb2 as pb
from tests.support.bench import busybox_daemon
from tests.support.cri import pod_config, unique
from tests.support.daemon import DaemonHandle

STEPS = (
    "RunPodSandbox",
    "CreateContainer",
    "StartContainer",
    "StopContainer(0)",
    "RemoveContainer",
    "StopPodSandbox",
    "RemovePodSandbox",
)


def percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))] * 1000


def cycle(daemon: DaemonHandle, image: str, parent: str, logs: Path, times: dict[str, list[float]]) -> None:
    rt = daemon.runtime
    pod_cfg = pod_config(unique("bench"), cgroup_parent=parent, log_directory=str(logs))
    ctr_cfg = pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name="c"),
        image=pb.ImageSpec(image=image),
        command=["sleep", "3600"],
        log_path="c.log",
    )
    total = time.perf_counter()
    pod_id = rt.RunPodSandbox(pb.RunPodSandboxRequest(config=pod_cfg), timeout=120).pod_sandbox_id
    times["RunPodSandbox"].append(time.perf_counter() - total)
    start = time.perf_counter()
    cid = rt.CreateContainer(
        pb.CreateContainerRequest(pod_sandbox_id=pod_id, config=ctr_cfg, sandbox_config=pod_cfg), timeout=120
    ).container_id
    times["CreateContainer"].append(time.perf_counter() - start)
    for step, fn in (
        ("StartContainer", lambda: rt.StartContainer(pb.StartContainerRequest(container_id=cid), timeout=60)),
        (
            "StopContainer(0)",
            lambda: rt.StopContainer(pb.StopContainerRequest(container_id=cid, timeout=0), timeout=60),
        ),
        ("RemoveContainer", lambda: rt.RemoveContainer(pb.RemoveContainerRequest(container_id=cid), timeout=60)),
        ("StopPodSandbox", lambda: rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod_id), timeout=60)),
        (
            "RemovePodSandbox",
            lambda: rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod_id), timeout=60),
        ),
    ):
        start = time.perf_counter()
        fn()
        times[step].append(time.perf_counter() - start)
    times["whole cycle"].append(time.perf_counter() - total)


def graceful_stops(daemon: DaemonHandle, image: str, parent: str, logs: Path, n: int) -> list[float]:
    """StopContainer(timeout 2) of containers that exit at once on SIGTERM."""
    rt = daemon.runtime
    pod_cfg = pod_config(unique("bench"), cgroup_parent=parent, log_directory=str(logs))
    pod_id = rt.RunPodSandbox(pb.RunPodSandboxRequest(config=pod_cfg), timeout=120).pod_sandbox_id
    out = []
    for i in range(n):
        cfg = pb.ContainerConfig(
            metadata=pb.ContainerMetadata(name=f"t{i}"),
            image=pb.ImageSpec(image=image),
            command=["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"],
        )
        cid = rt.CreateContainer(
            pb.CreateContainerRequest(pod_sandbox_id=pod_id, config=cfg, sandbox_config=pod_cfg), timeout=60
        ).container_id
        rt.StartContainer(pb.StartContainerRequest(container_id=cid), timeout=60)
        start = time.perf_counter()
        rt.StopContainer(pb.StopContainerRequest(container_id=cid, timeout=2), timeout=60)
        out.append(time.perf_counter() - start)
        rt.RemoveContainer(pb.RemoveContainerRequest(container_id=cid), timeout=60)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cycles", type=int, default=30)
    ns = parser.parse_args()
    with busybox_daemon("life") as bench:
        daemon, image, work, parent = bench.daemon, bench.image, bench.work, bench.cgroup_parent
        times: dict[str, list[float]] = {k: [] for k in (*STEPS, "whole cycle")}
        cycle(daemon, image, parent, work / "logs", {k: [] for k in times})  # warm-up
        for _ in range(ns.cycles):
            cycle(daemon, image, parent, work / "logs", times)
        print(f"lifecycle ({ns.cycles} cycles: pod + one busybox sleep container)")
        for step, samples in times.items():
            p50 = statistics.median(samples) * 1000
            print(f"  {step:<18} p50 {p50:7.1f} ms  p99 {percentile(samples, 0.99):7.1f} ms")
        stops = graceful_stops(daemon, image, parent, work / "logs", max(ns.cycles // 3, 5))
        print(
            f"  StopContainer(2) of a container exiting on SIGTERM: p50 {statistics.median(stops) * 1000:.1f} ms"
            f"  p99 {percentile(stops, 0.99):.1f} ms"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
