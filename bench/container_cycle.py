#!/usr/bin/env python3
"""Create/Start/Stop/Remove of a busybox `sleep` container through crio-py, against the same
cycle with runc called directly on an equivalent bundle, in the same run.

Goals: CreateContainer + StartContainer <= 1.3x bare runc, and <= 0.8x containerd's figures
here (CreateContainer 16 ms, StartContainer 94 ms).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from crio_py.cri import api_pb2 as pb
from crio_py.storage import mounts, overlay
from tests.support.bench import busybox_daemon
from tests.support.cri import kill_cgroup_processes_and_remove, pod_config, unique
from tests.support.daemon import DaemonHandle

CONTAINERD_MS = {"CreateContainer": 16.0, "StartContainer": 94.0}
Samples = dict[str, list[float]]


def p50(samples: list[float]) -> float:
    """Median of ``samples`` (seconds), in milliseconds."""
    return statistics.median(samples) * 1000


def p99(samples: list[float]) -> float:
    """99th percentile of ``samples`` (seconds), in milliseconds."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000


def timed(fn: Callable[[Any], Any], request: Any) -> tuple[Any, float]:
    """``fn(request)``'s result and how long it took (seconds)."""
    start = time.perf_counter()
    result = fn(request)
    return result, time.perf_counter() - start


def crio_cycle(daemon: DaemonHandle, pod_id: str, pod_cfg: pb.PodSandboxConfig, image: str, name: str,
               times: Samples) -> None:
    """Create, start, stop (timeout 0) and remove one sleep container; add each RPC's time to ``times``."""
    rt = daemon.runtime
    config = pb.ContainerConfig(metadata=pb.ContainerMetadata(name=name), image=pb.ImageSpec(image=image),
                                command=["sleep", "3600"], log_path=f"{name}.log")
    resp, t = timed(rt.CreateContainer, pb.CreateContainerRequest(pod_sandbox_id=pod_id, config=config,
                                                                   sandbox_config=pod_cfg))
    times["CreateContainer"].append(t)
    cid = resp.container_id
    times["StartContainer"].append(timed(rt.StartContainer, pb.StartContainerRequest(container_id=cid))[1])
    times["StopContainer"].append(timed(rt.StopContainer, pb.StopContainerRequest(container_id=cid))[1])
    times["RemoveContainer"].append(timed(rt.RemoveContainer, pb.RemoveContainerRequest(container_id=cid))[1])


def overlay_lowerdirs(rootfs: Path) -> list[Path]:
    """The lower layers of the overlay mounted at ``rootfs``, top first, from the mount table."""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields, _, tail = line.partition(" - ")
        if fields.split()[4] == str(rootfs) and tail.startswith("overlay "):
            for option in tail.split()[2].split(","):
                if option.startswith("lowerdir="):
                    return [Path(d) for d in option.removeprefix("lowerdir=").split(":")]
    raise RuntimeError(f"no overlay mounted at {rootfs}")


def bare_bundle(bundle_src: Path, work: Path) -> tuple[Path, dict[str, Any], list[Path]]:
    """A bundle directory for bare runc, the spec crio-py generated for ``bundle_src`` and its image layers."""
    spec = json.loads((bundle_src / "config.json").read_text())
    bundle = work / "bare"
    bundle.mkdir()
    spec["root"]["path"] = str(bundle / "rootfs")
    return bundle, spec, overlay_lowerdirs(bundle_src / "rootfs")


def runc_cycle(bundle: Path, spec: dict[str, Any], lowerdirs: list[Path], root: Path, cgroup_parent: str,
               times: Samples) -> None:
    """runc create/start/kill/delete of one container on ``bundle``; add each step's time to ``times``.

    Each container gets a fresh overlay of the image (untimed, as crio-py's mount is not timed
    apart either): runc's first walk of a new overlay is part of what a real create pays.
    """
    cid = unique("bare")
    spec["linux"]["cgroupsPath"] = f"{cgroup_parent}/{cid}"
    (bundle / "config.json").write_text(json.dumps(spec))
    overlay.mount_overlay(lowerdirs, bundle / "upper" / cid, bundle / "work" / cid, bundle / "rootfs")
    base = ["runc", "--root", str(root)]
    try:
        with open(bundle.parent / "out.log", "ab") as out:  # the container's stdio, as a monitor would hold it
            times["create"].append(_run_timed([*base, "create", "--bundle", str(bundle), cid], out))
        times["start"].append(_run_timed([*base, "start", cid]))
        start = time.perf_counter()
        subprocess.run([*base, "kill", cid, "KILL"], check=True)
        while json.loads(subprocess.run([*base, "state", cid], capture_output=True, check=True).stdout)[
            "status"
        ] != "stopped":
            time.sleep(0.001)
        times["kill+wait"].append(time.perf_counter() - start)
        times["delete"].append(_run_timed([*base, "delete", cid]))
    finally:
        mounts.unmount(bundle / "rootfs")


def _run_timed(argv: list[str], out: IO[bytes] | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out or subprocess.DEVNULL,
                   stderr=out or subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def main() -> int:
    """Run both series, print their percentiles and the ratios against the goals."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cycles", type=int, default=50)
    ns = parser.parse_args()
    # Unique: a fixed name would have this run kill a concurrent run's containers on cleanup.
    bare_parent = "/" + unique("crio-py-bench-bare")
    with busybox_daemon("ctr") as bench:
        daemon, image, work, parent = bench.daemon, bench.image, bench.work, bench.cgroup_parent
        try:
            run_series(daemon, image, work, parent, bare_parent, ns.cycles)
        finally:
            kill_cgroup_processes_and_remove(bare_parent)
    return 0


def run_series(daemon: DaemonHandle, image: str, work: Path, parent: str, bare_parent: str, cycles: int) -> None:
    """Alternate crio-py and bare runc container cycles; print both and the ratios."""
    pod_cfg = pod_config(cgroup_parent=parent, log_directory=str(work / "logs"))
    pod_id = daemon.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=pod_cfg)).pod_sandbox_id
    # An equivalent bundle for bare runc: the spec of a container the daemon created, its layers.
    ref = daemon.runtime.CreateContainer(pb.CreateContainerRequest(
        pod_sandbox_id=pod_id, sandbox_config=pod_cfg,
        config=pb.ContainerConfig(metadata=pb.ContainerMetadata(name="template"),
                                  image=pb.ImageSpec(image=image), command=["sleep", "3600"])))
    info = json.loads(daemon.runtime.ContainerStatus(
        pb.ContainerStatusRequest(container_id=ref.container_id, verbose=True)).info["info"])
    bundle, spec, lowerdirs = bare_bundle(Path(info["bundle"]), work)
    ours: Samples = {k: [] for k in ("CreateContainer", "StartContainer", "StopContainer", "RemoveContainer")}
    bare: Samples = {k: [] for k in ("create", "start", "kill+wait", "delete")}
    # Alternated cycle by cycle, so that both series see the same background load.
    for i in range(cycles):
        crio_cycle(daemon, pod_id, pod_cfg, image, f"c{i}", ours)
        runc_cycle(bundle, spec, lowerdirs, work / "runc-root", bare_parent, bare)
    print(f"container cycles ({cycles}), busybox sleep, one pod")
    for rpc, samples in ours.items():
        print(f"  crio-py {rpc:<16} p50 {p50(samples):7.1f} ms  p99 {p99(samples):7.1f} ms")
    for step, samples in bare.items():
        print(f"  runc    {step:<16} p50 {p50(samples):7.1f} ms  p99 {p99(samples):7.1f} ms")
    ours_cs = p50(ours["CreateContainer"]) + p50(ours["StartContainer"])
    bare_cs = p50(bare["create"]) + p50(bare["start"])
    print(f"Create+Start: crio-py {ours_cs:.1f} ms, bare runc {bare_cs:.1f} ms: {ours_cs / bare_cs:.2f}x "
          "(goal <= 1.3x)")
    # containerd's CreateContainer only writes metadata; its shim and runc create run in
    # StartContainer. The per-RPC ratios are for reference, the sum is the comparison.
    for rpc, theirs in CONTAINERD_MS.items():
        print(f"  {rpc} vs containerd ({theirs:.0f} ms): {p50(ours[rpc]) / theirs:.2f}x")
    containerd = sum(CONTAINERD_MS.values())
    print(f"Create+Start vs containerd here ({containerd:.0f} ms): {ours_cs / containerd:.2f}x (goal <= 0.8x)")


if __name__ == "__main__":
    sys.exit(main())
