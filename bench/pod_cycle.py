#!/usr/bin/env python3
"""RunPodSandbox + StopPodSandbox + RemovePodSandbox against a daemon of its own.

Prints p50/p99 of each RPC over sequential cycles (no CNI, then a bridge network on a test
bridge made by the reference plugins, then by ours), and the wall time of 20 concurrent
RunPodSandbox calls.
Goal: RunPodSandbox p50 <= 80 ms on a 2-core machine (containerd 1.6: ~106 ms here).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from crio_py.cri import api_pb2 as pb
from tests.support.cri import kill_cgroup_processes_and_remove, pod_config, remove_everything, unique
from tests.support.daemon import DaemonHandle, cleanup_workdir, new_daemon

BRIDGE = "cpbench0"
SUBNET = "10.239.0.0/16"


def percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


def cycles(daemon: DaemonHandle, n: int, parent: str) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {"RunPodSandbox": [], "StopPodSandbox": [], "RemovePodSandbox": []}
    rt = daemon.runtime
    for i in range(n):
        config = pod_config(f"bench-{i}", cgroup_parent=parent)
        start = time.perf_counter()
        pod_id = rt.RunPodSandbox(pb.RunPodSandboxRequest(config=config), timeout=120).pod_sandbox_id
        times["RunPodSandbox"].append(time.perf_counter() - start)
        start = time.perf_counter()
        rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod_id), timeout=120)
        times["StopPodSandbox"].append(time.perf_counter() - start)
        start = time.perf_counter()
        rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod_id), timeout=120)
        times["RemovePodSandbox"].append(time.perf_counter() - start)
    return times


def concurrent_runs(daemon: DaemonHandle, n: int, parent: str) -> float:
    configs = [pod_config(unique("conc"), cgroup_parent=parent) for _ in range(n)]
    start = time.perf_counter()
    with ThreadPoolExecutor(n) as pool:
        list(pool.map(lambda c: daemon.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=c), timeout=300), configs))
    elapsed = time.perf_counter() - start
    remove_everything(daemon)
    return elapsed


def report(label: str, times: dict[str, list[float]]) -> None:
    for rpc, samples in times.items():
        print(
            f"  {label:<10} {rpc:<17} p50 {statistics.median(samples) * 1000:7.1f} ms"
            f"  p99 {percentile(samples, 0.99) * 1000:7.1f} ms  (n={len(samples)})"
        )


def write_bridge_conflist(conf_dir: Path, data_dir: Path) -> None:
    conf = {
        "cniVersion": "1.0.0",
        "name": "bench",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                # No gateway: the host's ip_forward stays as it was.
                "isGateway": False,
                "ipMasq": False,
                "ipam": {"type": "host-local", "ranges": [[{"subnet": SUBNET}]], "dataDir": str(data_dir)},
            },
        ],
    }
    (conf_dir / "10-bench.conflist").write_text(json.dumps(conf))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cycles", type=int, default=50)
    parser.add_argument("--concurrent", type=int, default=20)
    ns = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="crio-py-bench-"))
    parent = "/" + unique("crio-py-bench")
    daemon = new_daemon(workdir)
    daemon.config["log_level"] = "warning"
    print(f"pod sandbox cycles ({ns.cycles} sequential), then {ns.concurrent} concurrent RunPodSandbox")
    try:
        daemon.start()
        report("no CNI", cycles(daemon, ns.cycles, parent))
        elapsed = concurrent_runs(daemon, ns.concurrent, parent)
        print(f"  no CNI     {ns.concurrent} concurrent RunPodSandbox: {elapsed:.2f} s")
        write_bridge_conflist(Path(daemon.config["cni"]["conf_dir"]), workdir / "ipam")
        ours = workdir / "cni-bin"
        subprocess.run([sys.executable, "-m", "cni_plugins.install", str(ours)], check=True, capture_output=True)
        for label, plugin_dir in (("reference", "/usr/lib/cni"), ("crio-py", str(ours))):
            # The plugin dir is read at start: restart the daemon on the other plugin set.
            daemon.stop()
            daemon.config["cni"]["plugin_dirs"] = [plugin_dir]
            daemon.start()
            report(label, cycles(daemon, ns.cycles, parent))
            elapsed = concurrent_runs(daemon, ns.concurrent, parent)
            print(f"  {label:<10} {ns.concurrent} concurrent RunPodSandbox: {elapsed:.2f} s")
        print("goal: RunPodSandbox p50 <= 80 ms (containerd 1.6: ~106 ms)")
    finally:
        remove_everything(daemon)
        daemon.stop()
        kill_cgroup_processes_and_remove(parent)
        subprocess.run(["ip", "link", "del", BRIDGE], capture_output=True)
        cleanup_workdir(workdir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
