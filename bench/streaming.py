#!/usr/bin/env python3
"""Exec and port-forward through the streaming server, against a daemon of its own.

    .venv/bin/python bench/streaming.py [--execs 100 --mib 64]

Exec: ``--execs`` sequential round trips of ``true`` (the Exec RPC, the upgrade, the streams, runc
exec, the status) over SPDY and over WebSocket, next to ExecSync of the same command: p50 and p99.
Port-forward: ``--mib`` MiB sent to an echo server in the pod and read back at once, through
port-forward (SPDY, and SPDY in WebSocket) and through a direct connection made inside the pod's
network namespace; MiB/s counts the bytes sent. The same figures against containerd are rows of
bench/compare.py. Goals: Exec p50 within 2x ExecSync; port-forward at least 1/4 of direct.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from crio_py.cri import api_pb2 as pb
from crio_py.network.netns import run_in_netns
from tests.support.bench import busybox_daemon
from tests.support.cri import pod_config
from tests.support.daemon import DaemonHandle
from tests.support.pods import Pod
from tests.support.streaming import (
    direct_echo_seconds,
    exec_round_trip,
    forward_echo_seconds,
    wait_until,
)

ECHO_PORT = 5000


def percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


def timed(n: int, fn: Callable[[], float]) -> list[float]:
    fn()  # warm-up
    return [fn() for _ in range(n)]


def exec_sync(daemon: DaemonHandle, cid: str) -> float:
    t0 = time.perf_counter()
    resp = daemon.runtime.ExecSync(pb.ExecSyncRequest(container_id=cid, cmd=["true"], timeout=10), timeout=30)
    elapsed = time.perf_counter() - t0
    if resp.exit_code != 0:
        raise RuntimeError(f"ExecSync true exited {resp.exit_code}")
    return elapsed


def run(daemon: DaemonHandle, pod: Pod, execs: int, mib: int) -> None:
    sleeper = pod.run("sleeper", "sleep", "100000")
    echo = pod.run("echo", "nc", "-ll", "-p", str(ECHO_PORT), "-e", "cat")
    wait_until(
        lambda: f":{ECHO_PORT:04X}" in pod.exec(echo, "cat", "/proc/net/tcp", "/proc/net/tcp6").stdout.decode(),
        10,
        "the echo server",
    )
    rows = {
        "ExecSync true": timed(execs, lambda: exec_sync(daemon, sleeper)),
        "Exec true, SPDY": timed(execs, lambda: exec_round_trip(daemon.runtime, sleeper, "spdy")),
        "Exec true, WebSocket": timed(execs, lambda: exec_round_trip(daemon.runtime, sleeper, "websocket")),
    }
    print(f"{execs} sequential round trips each:")
    base = statistics.median(rows["ExecSync true"])
    for name, samples in rows.items():
        p50 = statistics.median(samples)
        print(
            f"  {name:<22} p50 {p50 * 1000:7.1f} ms  p99 {percentile(samples, 0.99) * 1000:7.1f} ms  x{p50 / base:.2f}"
        )

    info = daemon.runtime.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=pod.id, verbose=True)).info
    netns = Path(json.loads(info["info"])["netns"])

    def direct() -> socket.socket:
        sock = run_in_netns(netns, lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM))
        sock.connect(("127.0.0.1", ECHO_PORT))
        return sock

    size = mib * 1024 * 1024

    def url() -> str:
        return daemon.runtime.PortForward(pb.PortForwardRequest(pod_sandbox_id=pod.id)).url

    rates = {
        "direct into the pod": [size / direct_echo_seconds(direct, size) for _ in range(3)],
        "port-forward, SPDY": [size / forward_echo_seconds(url(), ECHO_PORT, size) for _ in range(3)],
        "port-forward, WebSocket": [
            size / forward_echo_seconds(url(), ECHO_PORT, size, websocket=True) for _ in range(3)
        ],
    }
    print(f"echo of {mib} MiB (sent and received at once), best of 3:")
    best_direct = max(rates["direct into the pod"])
    for name, samples in rates.items():
        best = max(samples)
        print(f"  {name:<24} {best / 2**20:8.1f} MiB/s  x{best / best_direct:.2f} of direct")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--execs", type=int, default=100)
    parser.add_argument("--mib", type=int, default=64)
    ns = parser.parse_args()
    with busybox_daemon("streaming") as bench:
        config = pod_config(cgroup_parent=bench.cgroup_parent, log_directory=str(bench.work / "logs"))
        run(bench.daemon, Pod(bench.daemon, bench.image, config), ns.execs, ns.mib)
    return 0


if __name__ == "__main__":
    sys.exit(main())
