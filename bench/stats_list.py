#!/usr/bin/env python3
"""ListContainerStats and ListPodSandboxStats with 100 running containers, against a daemon of its own.

    .venv/bin/python bench/stats_list.py [--pods 20 --per-pod 5 --calls 50]

Starts the pods and containers (untimed), then times sequential calls of each RPC (kubelet makes
them every 10 s) and prints p50/p99 and the bytes of one answer. The same two RPCs against
containerd, with 30 pods, are rows of bench/compare.py.
Goal: both p50 < 50 ms with 100 containers on a 2-core machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from crio_py.cri import api_pb2 as pb
from tests.support.bench import busybox_daemon
from tests.support.cri import pod_config, unique
from tests.support.daemon import DaemonHandle

GOAL_MS = 50.0


def percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


def start_pod(daemon: DaemonHandle, image: str, parent: str, per_pod: int, logs: Path) -> None:
    rt = daemon.runtime
    name = unique("stats")
    # A cgroup per pod below the parent, as kubelet makes them.
    config = pod_config(name, cgroup_parent=f"{parent}/pod-{name}", log_directory=str(logs))
    pod_id = rt.RunPodSandbox(pb.RunPodSandboxRequest(config=config), timeout=300).pod_sandbox_id
    for i in range(per_pod):
        ctr = pb.ContainerConfig(
            metadata=pb.ContainerMetadata(name=f"c{i}"),
            image=pb.ImageSpec(image=image),
            command=["sleep", "3600"],
            log_path=f"c{i}.log",
        )
        cid = rt.CreateContainer(
            pb.CreateContainerRequest(pod_sandbox_id=pod_id, config=ctr, sandbox_config=config), timeout=300
        ).container_id
        rt.StartContainer(pb.StartContainerRequest(container_id=cid), timeout=300)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed(n: int, call: Callable[[], Any], daemon_pid: int) -> tuple[list[float], float, int]:
    """Wall seconds of each call, the daemon's CPU seconds per call, and the bytes of an answer."""
    samples, size = [], 0
    cpu0 = cpu_seconds(daemon_pid)
    for _ in range(n):
        t0 = time.perf_counter()
        resp = call()
        samples.append(time.perf_counter() - t0)
        size = resp.ByteSize()
    return samples, (cpu_seconds(daemon_pid) - cpu0) / n, size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=20)
    parser.add_argument("--per-pod", type=int, default=5)
    parser.add_argument("--calls", type=int, default=50)
    ns = parser.parse_args()
    with busybox_daemon("stats") as bench:
        daemon, image, workdir, parent = bench.daemon, bench.image, bench.work, bench.cgroup_parent
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda _: start_pod(daemon, image, parent, ns.per_pod, workdir / "logs"), range(ns.pods)))
        total = ns.pods * ns.per_pod
        rt = daemon.runtime
        print(f"{total} running containers in {ns.pods} pods; {ns.calls} sequential calls each")
        for name, call in (
            ("ListContainerStats", lambda: rt.ListContainerStats(pb.ListContainerStatsRequest(), timeout=60)),
            ("ListPodSandboxStats", lambda: rt.ListPodSandboxStats(pb.ListPodSandboxStatsRequest(), timeout=60)),
        ):
            assert daemon.proc is not None
            samples, cpu, size = timed(ns.calls, call, daemon.proc.pid)
            p50 = statistics.median(samples) * 1000
            print(
                f"  {name:<20} p50 {p50:6.1f} ms  p99 {percentile(samples, 0.99) * 1000:6.1f} ms  "
                f"daemon CPU {cpu * 1000:5.1f} ms/call  answer {size / 1024:.0f} KiB  "
                f"goal p50 < {GOAL_MS:.0f} ms: {'met' if p50 < GOAL_MS else 'NOT met'}"
            )
        print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (wall times grow with it; CPU does not)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
