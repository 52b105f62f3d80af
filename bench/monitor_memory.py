"""Memory and start time of crio-py's pod monitor against Debian's C conmon, same containers, same run.

    sudo /opt/crio-py/venv/bin/python bench/monitor_memory.py [--starts 20]

A pod with 1 and a pod with 5 busybox ``sleep`` containers, first under one crio-py monitor per
pod, then under C conmon (one per container, as CRI-O runs it). Memory is RSS, PSS and USS from
/proc/PID/smaps_rollup, summed over a pod's monitor processes. PSS splits shared pages among
the processes mapping them: for the Python monitor libpython's text is shared with every other
process of the same interpreter (this bench, the daemon, other pods' monitors), so the count
of such processes is printed with the table. Start is the p50 time from asking for a monitor to
its first answer; start+create adds the runtime's create of one container (C conmon has only
the latter: it runs ``runc create`` as it starts). No assertions: this prints figures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from crio_py.cgroups import remove_cgroup  # noqa: E402
from crio_py.errors import CrioError  # noqa: E402
from crio_py.monitor import CreateRequest, MonitorClient, PodMonitor  # noqa: E402
from crio_py.proc import process_alive  # noqa: E402
from tests.support.busybox_rootfs import busybox_rootfs  # noqa: E402

RUNC = shutil.which("runc") or "/usr/sbin/runc"
CONMON = shutil.which("conmon") or "/usr/bin/conmon"


def memory_kib(pid: int) -> tuple[int, int, int]:
    """(RSS, PSS, USS) of ``pid`` in KiB; USS (private pages) is what the process alone costs."""
    fields = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3:
                fields[parts[0].rstrip(":")] = int(parts[1])
    return fields["Rss"], fields["Pss"], fields["Private_Clean"] + fields["Private_Dirty"]


def python_processes() -> int:
    """Processes mapping the interpreter library this bench runs on."""
    lib = f"libpython{sys.version_info.major}.{sys.version_info.minor}"
    count = 0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if lib in (entry / "maps").read_text():
                    count += 1
    return count


class Bench:
    def __init__(self) -> None:
        self.work = Path(tempfile.mkdtemp(prefix="crio-py-bench-"))
        self.rootfs = busybox_rootfs(self.work / "rootfs")
        self.runc_root = self.work / "runc"
        self.cgroup_parent = f"crio-py-bench-{uuid.uuid4().hex[:8]}"
        self.client = MonitorClient(self.work / "monitors")
        self.containers: list[str] = []
        self.pids: list[int] = []

    def bundle(self, cid: str) -> Path:
        bundle = self.work / "bundles" / cid
        bundle.mkdir(parents=True)
        subprocess.run([RUNC, "spec", "--bundle", str(bundle)], check=True)
        spec = json.loads((bundle / "config.json").read_text())
        spec["root"] = {"path": str(self.rootfs), "readonly": True}
        spec["process"]["terminal"] = False
        spec["process"]["args"] = ["sleep", "100000"]
        spec["linux"]["cgroupsPath"] = f"/{self.cgroup_parent}/{cid}"
        (bundle / "config.json").write_text(json.dumps(spec))
        self.containers.append(cid)
        return bundle

    def runc(self, *args: str) -> None:
        subprocess.run([RUNC, "--root", str(self.runc_root), *args], check=True, capture_output=True)

    def python_create(self, monitor: PodMonitor, cid: str) -> None:
        request = CreateRequest(cid, self.bundle(cid), RUNC, self.runc_root, self.work / f"{cid}.log")
        monitor.create_container(request)

    def python_pod(self, name: str, containers: int) -> int:
        monitor = self.client.ensure_pod_monitor(name)
        pid = monitor.pid()
        assert pid is not None
        self.pids.append(pid)
        for i in range(containers):
            self.python_create(monitor, f"{name}-{i}")
            self.runc("start", f"{name}-{i}")
        return pid

    def conmon_create(self, cid: str) -> int:
        """Start a C conmon for ``cid`` and wait until the container is created; conmon's pid."""
        bundle = self.bundle(cid)
        cdir = self.work / "conmon" / cid
        cdir.mkdir(parents=True)
        argv = [
            CONMON, "-c", cid, "-u", cid, "-n", cid, "-r", RUNC, "-b", str(bundle),
            "-p", str(cdir / "pid"), "-P", str(cdir / "conmon.pid"), "-l", str(self.work / f"{cid}.log"),
            "--exit-dir", str(cdir), "--socket-dir-path", str(cdir), "--runtime-arg", f"--root={self.runc_root}",
            "--log-level", "error",
        ]  # fmt: skip
        subprocess.run(argv, check=True)
        deadline = time.monotonic() + 10
        while not (cdir / "pid").exists():
            if time.monotonic() > deadline:
                raise RuntimeError(f"conmon did not create {cid}")
            time.sleep(0.0005)
        pid = int((cdir / "conmon.pid").read_text())
        self.pids.append(pid)
        return pid

    def conmon_pod(self, name: str, containers: int) -> list[int]:
        pids = []
        for i in range(containers):
            pids.append(self.conmon_create(f"{name}-{i}"))
            self.runc("start", f"{name}-{i}")
        return pids

    def start_latency(self, starts: int) -> tuple[float, float]:
        """p50 of monitor start alone, and of start plus one create (ms)."""
        alone, with_create = [], []
        for i in range(starts):
            t0 = time.perf_counter()
            monitor = self.client.ensure_pod_monitor(f"start-{i}")
            t1 = time.perf_counter()
            self.python_create(monitor, f"start-{i}-c")
            t2 = time.perf_counter()
            alone.append(t1 - t0)
            with_create.append(t2 - t0)
            pid = monitor.pid()
            assert pid is not None
            self.pids.append(pid)
            self.runc("delete", "--force", f"start-{i}-c")
            monitor.shutdown(force=True)
            # The next start is measured alone, not racing this monitor's exit.
            while process_alive(pid):
                time.sleep(0.001)
        return statistics.median(alone) * 1000, statistics.median(with_create) * 1000

    def conmon_latency(self, starts: int) -> float:
        times = []
        for i in range(starts):
            t0 = time.perf_counter()
            self.conmon_create(f"cstart-{i}")
            times.append(time.perf_counter() - t0)
            self.runc("delete", "--force", f"cstart-{i}")
        return statistics.median(times) * 1000

    def cleanup(self) -> None:
        for cid in self.containers:
            subprocess.run([RUNC, "--root", str(self.runc_root), "delete", "--force", cid], capture_output=True)
        for pid in self.pids:
            if process_alive(pid):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(CrioError):
            remove_cgroup(self.cgroup_parent)
        shutil.rmtree(self.work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--starts", type=int, default=20)
    args = parser.parse_args()
    bench = Bench()
    rows = []
    try:
        py1 = bench.python_pod("py1", 1)
        py5 = bench.python_pod("py5", 5)
        time.sleep(0.5)
        sharing = python_processes()
        for label, pids in (("crio-py conmon, 1 ctr", [py1]), ("crio-py conmon, 5 ctrs", [py5])):
            rss, pss, uss = map(sum, zip(*(memory_kib(p) for p in pids), strict=True))
            rows.append((label, len(pids), rss, pss, uss))
        c1 = bench.conmon_pod("c1", 1)
        c5 = bench.conmon_pod("c5", 5)
        time.sleep(0.5)
        for label, pids in (("C conmon 2.1.6, 1 ctr", c1), ("C conmon 2.1.6, 5 ctrs", c5)):
            rss, pss, uss = map(sum, zip(*(memory_kib(p) for p in pids), strict=True))
            rows.append((label, len(pids), rss, pss, uss))
        py_start, py_create = bench.start_latency(args.starts)
        c_create = bench.conmon_latency(args.starts)
    finally:
        bench.cleanup()
    print(f"{'per pod':<24} {'procs':>5} {'RSS MiB':>8} {'PSS MiB':>8} {'USS MiB':>8}")
    for label, procs, rss, pss, uss in rows:
        print(f"{label:<24} {procs:>5} {rss / 1024:>8.2f} {pss / 1024:>8.2f} {uss / 1024:>8.2f}")
    print(f"(processes mapping libpython while measured: {sharing}, this bench and 2 monitors included)")
    print(f"\n{'start, p50 of ' + str(args.starts):<24} {'start ms':>8} {'+create ms':>10}")
    print(f"{'crio-py conmon':<24} {py_start:>8.1f} {py_create:>10.1f}")
    print(f"{'C conmon 2.1.6':<24} {'-':>8} {c_create:>10.1f}")


if __name__ == "__main__":
    main()
