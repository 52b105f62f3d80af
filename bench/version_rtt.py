#!/usr/bin/env python3
"""Version round-trip latency over the CRI socket and the idle daemon's memory.

Starts a daemon of its own in a temp directory (or uses --socket), makes 2,000 Version calls,
prints p50/p99 and the idle RSS/PSS of the daemon. Goals: p50 <= 1 ms, idle RSS <= 40 MiB.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from crio_py.cri import api_pb2 as pb
from tests.support.daemon import DaemonHandle, cleanup_workdir, new_daemon


def memory_kib(pid: int) -> tuple[int, int]:
    """(RSS, PSS) in KiB from /proc/PID/smaps_rollup."""
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, value = line.split(":", 1)
        fields[key] = int(value.split()[0])
    return fields["Rss"], fields["Pss"]


def run(daemon: DaemonHandle, calls: int) -> None:
    stub = daemon.runtime
    for _ in range(200):  # warm up the channel and the server's threads
        stub.Version(pb.VersionRequest())
    samples = []
    for _ in range(calls):
        start = time.perf_counter()
        stub.Version(pb.VersionRequest())
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    p50 = statistics.median(samples)
    p99 = samples[int(len(samples) * 0.99) - 1]
    print(f"Version round trip over {calls} calls: p50 {p50:.3f} ms  p99 {p99:.3f} ms  (goal p50 <= 1 ms)")
    time.sleep(1)
    assert daemon.proc is not None
    rss, pss = memory_kib(daemon.proc.pid)
    print(f"idle daemon memory: RSS {rss / 1024:.1f} MiB  PSS {pss / 1024:.1f} MiB  (goal RSS <= 40 MiB)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=2000)
    ns = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="crio-py-bench-"))
    daemon = new_daemon(workdir)
    daemon.config["log_level"] = "info"
    try:
        daemon.start()
        run(daemon, ns.calls)
    finally:
        daemon.stop()
        cleanup_workdir(workdir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
