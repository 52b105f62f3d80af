#!/usr/bin/env python3
"""crio-py against containerd, side by side on this machine, through the same CRI client code.

    .venv/bin/python bench/compare.py                 # the full table (~10 minutes)
    .venv/bin/python bench/compare.py --quick         # a smoke run (CI): every figure, few samples
    .venv/bin/python bench/compare.py --json out.json # the table, and every figure as JSON

One run sets up, each under a temporary directory of its own:
- a loopback docker-registry holding a busybox image, a pause image (catatonit) and an image
  to pull (random layers);
- crio-py from this checkout (its own root, run root, socket), our CNI plugins;
- containerd from Debian's package (its own root, state, socket, config), its CRI plugin, runc,
  the reference CNI plugins;
- the same chain for both (bridge + host-local + portmap, each runtime on its own bridge and
  subnet), the same pod and container configs, the same images from the registry.

Then it drives both with the same code, alternating between them sample by sample: the whole
pod lifecycle step by step (quiet, and with a CPU hog it starts itself), 20 pods started at
once, memory with 10 and 30 pods (daemon, and per-pod helpers: monitors or shims; containers'
own processes excluded), cold and warm pulls, ExecSync round trips, List/Status calls with 30
pods, Exec over SPDY and WebSocket, port-forward throughput next to a direct connection. It
prints one table (ratio = crio-py / containerd; below 1 is ours faster or smaller) and removes
everything it started. The machine's load average is printed next to the figures: on a shared
machine, compare only figures of one run. It never fails on a ratio.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "cni-plugins"))

import grpc  # noqa: E402
from cni_plugins import install, iptables  # noqa: E402

from crio_py.cri import api_pb2 as pb  # noqa: E402
from crio_py.cri import api_pb2_grpc  # noqa: E402
from crio_py.image.pause import build_pause_layer  # noqa: E402
from tests.support.cri import kill_cgroup_processes_and_remove  # noqa: E402
from tests.support.daemon import cleanup_workdir, new_daemon  # noqa: E402
from tests.support.oci_images import Layer, busybox_layer, push_image, tar_of_entries  # noqa: E402
from tests.support.registry import LAYER_TAR, Registry  # noqa: E402
from tests.support.streaming import (  # noqa: E402
    direct_echo_seconds,
    exec_round_trip,
    forward_echo_seconds,
    wait_until,
)

REFERENCE_CNI = "/usr/lib/cni"
BUSYBOX = "bench/busybox:1"
PAUSE = "pause:3.10"
PULLED = "bench/pull:1"
# The container of every pod: stops on SIGTERM at once (sh as PID 1 runs its trap during wait).
COMMAND = ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]
RPC_TIMEOUT = 300
ECHO_PORT = 5000


@dataclass(frozen=True)
class Sizes:
    """How many samples of each figure a run takes."""

    cycles: int
    loaded_cycles: int
    burst: int
    burst_rounds: int
    pods_low: int
    pods_high: int
    pulls: int
    execs: int
    calls: int
    pull_layers: int
    pull_layer_mb: float
    forward_mib: int = 32


FULL = Sizes(30, 15, 20, 2, 10, 30, 5, 50, 50, 3, 4)
QUICK = Sizes(3, 2, 3, 1, 2, 3, 1, 5, 5, 1, 0.5, 4)


def pct(values: list[float], p: float) -> float:
    """The p-th percentile (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


def pss_rss_kib(pid: int) -> tuple[int, int]:
    """(PSS, RSS) of a process in KiB; (0, 0) when it is gone."""
    fields = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                parts = line.split()
                if len(parts) == 3:
                    fields[parts[0].rstrip(":")] = int(parts[1])
    except OSError:
        return 0, 0
    return fields.get("Pss", 0), fields.get("Rss", 0)


def processes() -> dict[int, tuple[int, str, str]]:
    """pid -> (parent pid, command line, cgroup file) of every process."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{entry}/cgroup") as f:
                cgroup = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        found[int(entry)] = (ppid, cmdline, cgroup)
    return found


def descendants(pid: int, table: dict[int, tuple[int, str, str]]) -> set[int]:
    """``pid`` and every process below it."""
    tree = {pid}
    grew = True
    while grew:
        grew = False
        for child, (ppid, _, _) in table.items():
            if ppid in tree and child not in tree:
                tree.add(child)
                grew = True
    return tree


class Hog:
    """A CPU hog of one busy process per CPU (a ``stress -c N``), stopped by pid."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        for _ in range(os.cpu_count() or 1):
            self.procs.append(subprocess.Popen([sys.executable, "-S", "-c", "while True: pass"]))

    def stop(self) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait()
        self.procs = []


# ---- the two runtimes ----------------------------------------------------------------------


@dataclass
class Runtime:
    """One CRI endpoint under test, its network and what it started."""

    label: str
    work: Path
    bridge: str
    subnet: str
    cgroup_parent: str
    registry: str
    proc: subprocess.Popen[bytes] | None = None
    channel: grpc.Channel | None = None
    pods: list[str] = field(default_factory=list)

    @property
    def socket(self) -> Path:
        raise NotImplementedError

    @property
    def log_path(self) -> Path:
        raise NotImplementedError

    def log_tail(self) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-15:])
        except OSError:
            return "(no log)"

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        """Close the channel; terminate the process (killed after 30 s)."""
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def spawn(self, argv: list[str], cwd: str | Path) -> None:
        """Start the endpoint's process, its output in the log, and wait until it answers."""
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(argv, stdout=log, stderr=log, cwd=cwd, start_new_session=True)
        log.close()
        self.connect()

    def connect(self, timeout: float = 60) -> None:
        """Wait until the endpoint answers Version."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.label} exited with {self.proc.returncode}:\n{self.log_tail()}")
            if self.socket.exists():
                self.channel = grpc.insecure_channel(f"unix://{self.socket}")
                try:
                    self.rt.Version(pb.VersionRequest(), timeout=2)
                    return
                except grpc.RpcError:
                    self.channel.close()
                    self.channel = None
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.label} did not answer within {timeout:g}s:\n{self.log_tail()}")
            time.sleep(0.05)

    @property
    def rt(self) -> api_pb2_grpc.RuntimeServiceStub:
        assert self.channel is not None
        return api_pb2_grpc.RuntimeServiceStub(self.channel)

    @property
    def img(self) -> api_pb2_grpc.ImageServiceStub:
        assert self.channel is not None
        return api_pb2_grpc.ImageServiceStub(self.channel)

    def network_config(self) -> bytes:
        """The conflist both runtimes get (each on its own bridge, subnet and dataDir)."""
        return json.dumps(
            {
                "cniVersion": "1.0.0",
                "name": f"bench-{self.bridge}",
                "plugins": [
                    {
                        "type": "bridge",
                        "bridge": self.bridge,
                        "isGateway": True,
                        "ipMasq": True,
                        "hairpinMode": True,
                        "ipam": {
                            "type": "host-local",
                            "ranges": [[{"subnet": self.subnet}]],
                            "routes": [{"dst": "0.0.0.0/0"}],
                            "dataDir": str(self.work / "ipam"),
                        },
                    },
                    {"type": "portmap", "capabilities": {"portMappings": True}},
                ],
            },
            indent=1,
        ).encode()

    def daemon_and_helpers(self) -> tuple[set[int], set[int]]:
        """(the daemon's processes, the per-pod helpers): helpers name our work dir on their
        command line and live outside the pods' cgroups (the containers' processes do not count)."""
        assert self.proc is not None
        table = processes()
        daemon = descendants(self.proc.pid, table)
        helpers = set()
        for pid, (_, cmdline, cgroup) in table.items():
            if pid in daemon or str(self.work) not in cmdline or self.cgroup_parent in cgroup:
                continue
            if pid == os.getpid():
                continue
            helpers.add(pid)
        return daemon, helpers


@dataclass
class CrioPy(Runtime):
    """crio-py from this checkout, with our CNI plugins."""

    daemon: Any = None

    @property
    def socket(self) -> Path:
        return self.work / "run" / "crio-py.sock"

    @property
    def log_path(self) -> Path:
        return self.work / "daemon.log"

    def start(self) -> None:
        self.daemon = new_daemon(self.work)
        cfg = self.daemon.config
        cfg["log_level"] = "warning"
        cfg["pause_image"] = f"{self.registry}/{PAUSE}"
        cfg["registries"] = {"insecure": [self.registry]}
        cfg["metrics"] = {"enabled": False}
        bin_dir = self.work / "cni-bin"
        install.install(str(bin_dir), sys.executable)
        cfg["cni"]["plugin_dirs"] = [str(bin_dir)]
        Path(cfg["cni"]["conf_dir"], "10-bench.conflist").write_bytes(self.network_config())
        self.daemon.write_config()
        self.spawn(self.daemon.command("daemon"), ROOT)


CONTAINERD_TOML = """\
version = 2
root = "{work}/root"
state = "{work}/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing"]

[grpc]
  address = "{work}/containerd.sock"
[ttrpc]
  address = "{work}/containerd.sock.ttrpc"
[debug]
  address = ""
  level = "warn"
[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{work}/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{registry}/{pause}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  # No CAP_SYS_RESOURCE on the machines this runs on (crio-py clamps the same way).
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "{runc}"
        Root = "{work}/runc"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin}"
    conf_dir = "{work}/cni"
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."{registry}"]
    endpoint = ["http://{registry}"]
"""


@dataclass
class Containerd(Runtime):
    """Debian's containerd with its CRI plugin, runc and the reference CNI plugins."""

    @property
    def socket(self) -> Path:
        return self.work / "containerd.sock"

    @property
    def log_path(self) -> Path:
        return self.work / "containerd.log"

    def start(self) -> None:
        (self.work / "cni").mkdir(parents=True, exist_ok=True)
        (self.work / "cni" / "10-bench.conflist").write_bytes(self.network_config())
        config = self.work / "config.toml"
        config.write_text(
            CONTAINERD_TOML.format(
                work=self.work,
                registry=self.registry,
                pause=PAUSE,
                runc=shutil.which("runc") or "/usr/sbin/runc",
                cni_bin=REFERENCE_CNI,
            )
        )
        self.spawn(["containerd", "--config", str(config)], "/")

    def stop(self) -> None:
        super().stop()
        # Shims of containers that could not be removed outlive containerd: stop them by pid.
        for pid, (_, cmdline, _) in processes().items():
            if "containerd-shim" in cmdline and str(self.work) in cmdline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


# ---- what is measured ----------------------------------------------------------------------


class Driver:
    """The CRI client code both runtimes get."""

    def __init__(self, rt: Runtime) -> None:
        self.r = rt
        self.count = 0

    def pod_config(self) -> pb.PodSandboxConfig:
        self.count += 1
        name = f"bench-{self.count}-{random.randrange(1 << 30):x}"
        logs = self.r.work / "pod-logs" / name
        return pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name=name, namespace="bench", uid=f"uid-{name}", attempt=0),
            hostname=name,
            log_directory=str(logs),
            labels={"app": "bench"},
            linux=pb.LinuxPodSandboxConfig(
                cgroup_parent=self.r.cgroup_parent,
                security_context=pb.LinuxSandboxSecurityContext(
                    namespace_options=pb.NamespaceOption(network=pb.POD, pid=pb.CONTAINER, ipc=pb.POD)
                ),
            ),
        )

    def container_config(self) -> pb.ContainerConfig:
        return pb.ContainerConfig(
            metadata=pb.ContainerMetadata(name="work"),
            image=pb.ImageSpec(image=f"{self.r.registry}/{BUSYBOX}"),
            command=COMMAND,
            log_path="work.log",
            labels={"app": "bench"},
        )

    def lifecycle(self) -> dict[str, float]:
        """One pod with one container from start to removal; seconds per step."""
        rt = self.r.rt
        times: dict[str, float] = {}

        def step(name: str, call: Callable[[], Any]) -> Any:
            t0 = time.perf_counter()
            out = call()
            times[name] = time.perf_counter() - t0
            return out

        config = self.pod_config()
        pod = step("runp", lambda: rt.RunPodSandbox(pb.RunPodSandboxRequest(config=config), timeout=RPC_TIMEOUT))
        pid = pod.pod_sandbox_id
        ctr_req = pb.CreateContainerRequest(pod_sandbox_id=pid, config=self.container_config(), sandbox_config=config)
        cid = step("create", lambda: rt.CreateContainer(ctr_req, timeout=RPC_TIMEOUT)).container_id
        step("start", lambda: rt.StartContainer(pb.StartContainerRequest(container_id=cid), timeout=RPC_TIMEOUT))
        stop = pb.StopContainerRequest(container_id=cid, timeout=10)
        step("stop", lambda: rt.StopContainer(stop, timeout=RPC_TIMEOUT))
        step("rm", lambda: rt.RemoveContainer(pb.RemoveContainerRequest(container_id=cid), timeout=RPC_TIMEOUT))
        step("stopp", lambda: rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pid), timeout=RPC_TIMEOUT))
        step("rmp", lambda: rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pid), timeout=RPC_TIMEOUT))
        times["cycle"] = sum(times.values())
        return times

    def running_pod(self) -> tuple[str, str]:
        """A pod with a running container: (pod id, container id)."""
        rt = self.r.rt
        config = self.pod_config()
        pid = rt.RunPodSandbox(pb.RunPodSandboxRequest(config=config), timeout=RPC_TIMEOUT).pod_sandbox_id
        self.r.pods.append(pid)
        req = pb.CreateContainerRequest(pod_sandbox_id=pid, config=self.container_config(), sandbox_config=config)
        cid = rt.CreateContainer(req, timeout=RPC_TIMEOUT).container_id
        rt.StartContainer(pb.StartContainerRequest(container_id=cid), timeout=RPC_TIMEOUT)
        return pid, cid

    def streaming_pod(self) -> tuple[str, str, str]:
        """A pod with a running container and an echo server on ECHO_PORT: (pod id, container id, pod IP)."""
        rt = self.r.rt
        config = self.pod_config()
        pid = rt.RunPodSandbox(pb.RunPodSandboxRequest(config=config), timeout=RPC_TIMEOUT).pod_sandbox_id
        self.r.pods.append(pid)
        ids = []
        for name, command in (("work", COMMAND), ("echo", ["nc", "-ll", "-p", str(ECHO_PORT), "-e", "cat"])):
            ctr = self.container_config()
            ctr.metadata.name, ctr.log_path = name, f"{name}.log"
            ctr.command[:] = command
            req = pb.CreateContainerRequest(pod_sandbox_id=pid, config=ctr, sandbox_config=config)
            ids.append(rt.CreateContainer(req, timeout=RPC_TIMEOUT).container_id)
            rt.StartContainer(pb.StartContainerRequest(container_id=ids[-1]), timeout=RPC_TIMEOUT)
        listening = f":{ECHO_PORT:04X}".encode()
        probe = pb.ExecSyncRequest(container_id=ids[1], cmd=["cat", "/proc/net/tcp", "/proc/net/tcp6"], timeout=10)
        wait_until(lambda: listening in rt.ExecSync(probe, timeout=RPC_TIMEOUT).stdout, 30, "the echo server")
        status = rt.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=pid), timeout=RPC_TIMEOUT).status
        return pid, ids[0], status.network.ip

    def remove_pod(self, pid: str) -> None:
        """Stop and remove a pod and its containers, as kubelet does."""
        rt = self.r.rt
        containers = rt.ListContainers(
            pb.ListContainersRequest(filter=pb.ContainerFilter(pod_sandbox_id=pid)), timeout=RPC_TIMEOUT
        ).containers
        for ctr in containers:
            rt.StopContainer(pb.StopContainerRequest(container_id=ctr.id, timeout=10), timeout=RPC_TIMEOUT)
            rt.RemoveContainer(pb.RemoveContainerRequest(container_id=ctr.id), timeout=RPC_TIMEOUT)
        rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pid), timeout=RPC_TIMEOUT)
        rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pid), timeout=RPC_TIMEOUT)
        if pid in self.r.pods:
            self.r.pods.remove(pid)

    def remove_all(self) -> None:
        """Every pod the runtime knows, in parallel (4 at a time), untimed."""
        items = self.r.rt.ListPodSandbox(pb.ListPodSandboxRequest(), timeout=RPC_TIMEOUT).items
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda p: self.remove_pod(p.id), items))

    def burst(self, n: int) -> float:
        """Seconds until ``n`` pods, each with a running container, started at once are all up."""
        t0 = time.perf_counter()
        with ThreadPoolExecutor(n) as pool:
            list(pool.map(lambda _: self.running_pod(), range(n)))
        return time.perf_counter() - t0

    def memory(self) -> dict[str, float]:
        """MiB: the daemon's processes, all helpers, and per pod; RSS and PSS."""
        daemon, helpers = self.r.daemon_and_helpers()
        d = [pss_rss_kib(p) for p in daemon]
        h = [pss_rss_kib(p) for p in helpers]
        pods = max(1, len(self.r.pods))
        mib = 1024.0
        return {
            "daemon_pss": sum(x[0] for x in d) / mib,
            "daemon_rss": sum(x[1] for x in d) / mib,
            "daemon_procs": len(daemon),
            "helpers_pss": sum(x[0] for x in h) / mib,
            "helpers_rss": sum(x[1] for x in h) / mib,
            "helper_procs": len(helpers),
            "per_pod_helper_pss": sum(x[0] for x in h) / mib / pods,
            "per_pod_helper_rss": sum(x[1] for x in h) / mib / pods,
            "total_pss": (sum(x[0] for x in d) + sum(x[0] for x in h)) / mib,
            "total_rss": (sum(x[1] for x in d) + sum(x[1] for x in h)) / mib,
        }

    def pull(self, image: str) -> float:
        t0 = time.perf_counter()
        self.r.img.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=image)), timeout=RPC_TIMEOUT)
        return time.perf_counter() - t0

    def remove_image(self, image: str) -> None:
        self.r.img.RemoveImage(pb.RemoveImageRequest(image=pb.ImageSpec(image=image)), timeout=RPC_TIMEOUT)

    def exec_sync(self, cid: str) -> float:
        t0 = time.perf_counter()
        resp = self.r.rt.ExecSync(pb.ExecSyncRequest(container_id=cid, cmd=["true"], timeout=10), timeout=RPC_TIMEOUT)
        elapsed = time.perf_counter() - t0
        if resp.exit_code != 0:
            raise RuntimeError(f"{self.r.label}: ExecSync true exited {resp.exit_code}: {resp.stderr!r}")
        return elapsed

    def calls(self, pid: str, cid: str) -> dict[str, Callable[[], Any]]:
        """The read-only calls kubelet makes all the time."""
        rt, img = self.r.rt, self.r.img
        image = pb.ImageSpec(image=f"{self.r.registry}/{BUSYBOX}")
        return {
            "ListPodSandbox": lambda: rt.ListPodSandbox(pb.ListPodSandboxRequest(), timeout=RPC_TIMEOUT),
            "ListContainers": lambda: rt.ListContainers(pb.ListContainersRequest(), timeout=RPC_TIMEOUT),
            "PodSandboxStatus": lambda: rt.PodSandboxStatus(
                pb.PodSandboxStatusRequest(pod_sandbox_id=pid), timeout=RPC_TIMEOUT
            ),
            "ContainerStatus": lambda: rt.ContainerStatus(
                pb.ContainerStatusRequest(container_id=cid), timeout=RPC_TIMEOUT
            ),
            "ImageStatus": lambda: img.ImageStatus(pb.ImageStatusRequest(image=image), timeout=RPC_TIMEOUT),
            "ListImages": lambda: img.ListImages(pb.ListImagesRequest(), timeout=RPC_TIMEOUT),
            "Status": lambda: rt.Status(pb.StatusRequest(), timeout=RPC_TIMEOUT),
            "ListContainerStats": lambda: rt.ListContainerStats(pb.ListContainerStatsRequest(), timeout=RPC_TIMEOUT),
            "ListPodSandboxStats": lambda: rt.ListPodSandboxStats(
                pb.ListPodSandboxStatsRequest(), timeout=RPC_TIMEOUT
            ),
        }


# ---- the run -------------------------------------------------------------------------------


@dataclass
class Table:
    """Rows of figure, crio-py, containerd, ratio; and the raw samples for the JSON."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)

    def add(self, figure: str, unit: str, ours: float, theirs: float, note: str = "") -> None:
        ratio = ours / theirs if theirs else float("nan")
        self.rows.append(
            {"figure": figure, "unit": unit, "crio-py": ours, "containerd": theirs, "ratio": ratio, "note": note}
        )

    def add_samples(self, figure: str, ours: list[float], theirs: list[float], note: str = "") -> None:
        """p50 and p99 rows of timings in seconds (shown in ms)."""
        self.raw[figure] = {"crio-py": ours, "containerd": theirs}
        self.add(f"{figure} p50", "ms", statistics.median(ours) * 1000, statistics.median(theirs) * 1000, note)
        self.add(f"{figure} p99", "ms", pct(ours, 99) * 1000, pct(theirs, 99) * 1000, note)

    def render(self) -> str:
        width = max(len(r["figure"]) for r in self.rows) + 2
        lines = [f"{'figure':<{width}}{'unit':<6}{'crio-py':>10}{'containerd':>12}{'ratio':>8}  note"]
        lines.append("-" * (width + 42))
        for r in self.rows:
            lines.append(
                f"{r['figure']:<{width}}{r['unit']:<6}{r['crio-py']:>10.1f}{r['containerd']:>12.1f}"
                f"{r['ratio']:>8.2f}  {r['note']}"
            )
        return "\n".join(lines)


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load {one:.1f}/{five:.1f}"


@contextlib.contextmanager
def phase(name: str, notes: dict[str, str]) -> Iterator[None]:
    """Print progress and remember the load average seen during a phase."""
    before = load()
    print(f"  {name}... ({before})", file=sys.stderr, flush=True)
    t0 = time.monotonic()
    yield
    notes[name] = f"{before} -> {load()}, {time.monotonic() - t0:.0f} s"


def interleaved(drivers: list[Driver], n: int, fn: Callable[[Driver], Any]) -> list[list[Any]]:
    """``fn`` n times per driver, alternating which goes first."""
    out: list[list[Any]] = [[] for _ in drivers]
    for i in range(n):
        order = list(enumerate(drivers))
        if i % 2:
            order.reverse()
        for k, d in order:
            out[k].append(fn(d))
    return out


def lifecycle_rows(table: Table, label: str, ours: list[dict[str, float]], theirs: list[dict[str, float]], note: str):
    for step in ("runp", "create", "start", "stop", "rm", "stopp", "rmp"):
        o = [s[step] for s in ours]
        t = [s[step] for s in theirs]
        table.raw[f"{label} {step}"] = {"crio-py": o, "containerd": t}
        table.add(f"{label} {step} p50", "ms", statistics.median(o) * 1000, statistics.median(t) * 1000)
    table.add_samples(f"{label} cycle", [s["cycle"] for s in ours], [s["cycle"] for s in theirs], note)


def measure(ours: Driver, theirs: Driver, sizes: Sizes, table: Table, notes: dict[str, str]) -> None:
    drivers = [ours, theirs]
    with phase("warm-up", notes):
        for d in drivers:
            d.pull(f"{d.r.registry}/{BUSYBOX}")
        interleaved(drivers, 2, Driver.lifecycle)
    idle = [d.memory() for d in drivers]
    table.add(
        "idle daemon RSS",
        "MiB",
        idle[0]["daemon_rss"],
        idle[1]["daemon_rss"],
        f"{idle[0]['daemon_procs']} vs {idle[1]['daemon_procs']} processes",
    )
    table.add("idle daemon PSS", "MiB", idle[0]["daemon_pss"], idle[1]["daemon_pss"])

    with phase("lifecycle quiet", notes):
        quiet = interleaved(drivers, sizes.cycles, Driver.lifecycle)
    lifecycle_rows(table, "lifecycle", quiet[0], quiet[1], notes["lifecycle quiet"])

    hog = Hog()
    with phase("lifecycle loaded", notes):
        hog.start()
        try:
            loaded = interleaved(drivers, sizes.loaded_cycles, Driver.lifecycle)
        finally:
            hog.stop()
    table.add_samples(
        "loaded cycle",
        [s["cycle"] for s in loaded[0]],
        [s["cycle"] for s in loaded[1]],
        f"{os.cpu_count()} CPU hogs; {notes['lifecycle loaded']}",
    )

    with phase(f"{sizes.burst} pods at once", notes):
        bursts: list[list[float]] = [[], []]
        for i in range(sizes.burst_rounds):
            for k in (0, 1) if i % 2 == 0 else (1, 0):
                bursts[k].append(drivers[k].burst(sizes.burst))
                drivers[k].remove_all()
    table.raw["burst"] = {"crio-py": bursts[0], "containerd": bursts[1]}
    table.add(
        f"{sizes.burst} pods+containers at once",
        "ms",
        statistics.median(bursts[0]) * 1000,
        statistics.median(bursts[1]) * 1000,
        notes[f"{sizes.burst} pods at once"],
    )

    with phase("memory, exec, list/status", notes):
        running: list[list[tuple[str, str]]] = [[], []]
        for target in (sizes.pods_low, sizes.pods_high):
            for k, d in enumerate(drivers):
                while len(running[k]) < target:
                    running[k].append(d.running_pod())
            mem = [d.memory() for d in drivers]
            table.raw[f"memory {target} pods"] = {"crio-py": mem[0], "containerd": mem[1]}
            for key, name in (
                ("total_pss", "daemon+helpers PSS"),
                ("total_rss", "daemon+helpers RSS"),
                ("daemon_pss", "daemon PSS"),
                ("per_pod_helper_pss", "per-pod helper PSS"),
                ("per_pod_helper_rss", "per-pod helper RSS"),
            ):
                table.add(
                    f"{name}, {target} pods",
                    "MiB",
                    mem[0][key],
                    mem[1][key],
                    f"{mem[0]['helper_procs']} vs {mem[1]['helper_procs']} helpers" if key == "total_pss" else "",
                )
        execs = interleaved(drivers, sizes.execs, lambda d: d.exec_sync(running[drivers.index(d)][0][1]))
        table.add_samples("ExecSync true", execs[0], execs[1])
        calls = [d.calls(*running[k][-1]) for k, d in enumerate(drivers)]
        for name in calls[0]:

            def timed(d: Driver, name: str = name) -> float:
                fn = calls[drivers.index(d)][name]
                t0 = time.perf_counter()
                fn()
                return time.perf_counter() - t0

            samples = interleaved(drivers, sizes.calls, timed)
            table.raw[f"{name} ({sizes.pods_high} pods)"] = {"crio-py": samples[0], "containerd": samples[1]}
            table.add(
                f"{name} ({sizes.pods_high} pods) p50",
                "ms",
                statistics.median(samples[0]) * 1000,
                statistics.median(samples[1]) * 1000,
            )
        for d in drivers:
            d.remove_all()

    streaming_rows(drivers, sizes, table, notes)

    with phase("pulls", notes):
        pulls: dict[str, list[list[float]]] = {"cold": [[], []], "warm": [[], []]}
        for i in range(sizes.pulls):
            for k in (0, 1) if i % 2 == 0 else (1, 0):
                d = drivers[k]
                image = f"{d.r.registry}/{PULLED}"
                with contextlib.suppress(grpc.RpcError):
                    d.remove_image(image)
                pulls["cold"][k].append(d.pull(image))
                pulls["warm"][k].append(d.pull(image))
    for kind in ("cold", "warm"):
        table.raw[f"pull {kind}"] = {"crio-py": pulls[kind][0], "containerd": pulls[kind][1]}
        table.add(
            f"pull {kind} p50",
            "ms",
            statistics.median(pulls[kind][0]) * 1000,
            statistics.median(pulls[kind][1]) * 1000,
            f"{sizes.pull_layers} x {sizes.pull_layer_mb:g} MB" if kind == "cold" else "",
        )


def streaming_rows(drivers: list[Driver], sizes: Sizes, table: Table, notes: dict[str, str]) -> None:
    """Exec of true over SPDY and WebSocket (next to ExecSync); port-forward next to a direct connection."""
    with phase("streaming", notes):
        pods = [d.streaming_pod() for d in drivers]
        for transport in ("spdy", "websocket"):
            samples = interleaved(
                drivers, sizes.execs, lambda d, t=transport: exec_round_trip(d.r.rt, pods[drivers.index(d)][1], t)
            )
            note = "the RPC, the upgrade, the streams, the status"
            table.add_samples(f"Exec true over {transport}", samples[0], samples[1], note)
        size = sizes.forward_mib * 2**20

        def forwarded(d: Driver) -> float:
            request = pb.PortForwardRequest(pod_sandbox_id=pods[drivers.index(d)][0])
            return size / forward_echo_seconds(d.r.rt.PortForward(request).url, ECHO_PORT, size) / 2**20

        def direct(d: Driver) -> float:
            ip = pods[drivers.index(d)][2]
            return size / direct_echo_seconds(lambda: socket.create_connection((ip, ECHO_PORT)), size) / 2**20

        note = f"echo of {sizes.forward_mib} MiB (SPDY client in Python), best of 3"
        for name, fn in (("port-forward", forwarded), ("direct to the pod IP", direct)):
            rates = interleaved(drivers, 3, fn)
            table.raw[name] = {"crio-py": rates[0], "containerd": rates[1]}
            table.add(name, "MiB/s", max(rates[0]), max(rates[1]), note)
        for d in drivers:
            d.remove_all()


def publish_images(registry: Registry, sizes: Sizes) -> None:
    """busybox, the pause image (catatonit) and the image to pull, in the loopback registry."""
    push_image(registry, BUSYBOX.split(":")[0], "1", [busybox_layer()])
    tar, config = build_pause_layer()
    # Cmd emptied: push_image's default ["sh"] would become arguments of catatonit.
    push_image(registry, "pause", "3.10", [Layer(tar, LAYER_TAR)], {**config["config"], "Cmd": []})
    size = int(sizes.pull_layer_mb * 1024 * 1024)
    layers = [Layer(tar_of_entries({f"data/layer{i}.bin": os.urandom(size)})) for i in range(sizes.pull_layers)]
    push_image(registry, PULLED.split(":")[0], "1", layers)


def ensure_containerd() -> None:
    """Debian's containerd, installed when missing (the bench's one extra package)."""
    if shutil.which("containerd"):
        return
    print("installing Debian's containerd", file=sys.stderr)
    subprocess.run(
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", "containerd"],
        check=True,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
    )


def versions() -> dict[str, str]:
    def out(*argv: str) -> str:
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout.strip().splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            return "?"

    return {
        "containerd": out("containerd", "--version"),
        "runc": out("runc", "--version"),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "cpus": str(os.cpu_count()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: every figure, few samples")
    parser.add_argument("--json", type=Path, help="also write every figure and sample to this file")
    parser.add_argument("--keep", action="store_true", help="leave the runtimes running on failure (debugging)")
    opts = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root (namespaces, cgroups, mounts, iptables)", file=sys.stderr)
        return 2
    ensure_containerd()
    sizes = QUICK if opts.quick else FULL
    tag = f"{random.randrange(1 << 24):06x}"
    work = Path(tempfile.mkdtemp(prefix="crio-py-compare-"))
    third = random.randrange(64, 250)
    forward = Path("/proc/sys/net/ipv4/ip_forward").read_text()
    # containerd puts its shims' sockets under /run/containerd/s whatever its config says.
    shim_dir_existed = Path("/run/containerd").exists()
    registry = Registry(workdir=work / "registry")
    runtimes: list[Runtime] = []
    table = Table()
    notes: dict[str, str] = {}
    try:
        print(f"bench in {work}", file=sys.stderr)
        registry.workdir.mkdir()
        registry.start()
        publish_images(registry, sizes)
        runtimes = [
            CrioPy(
                "crio-py", work / "crio-py", f"cmpo{tag}", f"10.236.{third}.0/24", f"/cmp-crio-py-{tag}", registry.host
            ),
            Containerd(
                "containerd",
                work / "containerd",
                f"cmpc{tag}",
                f"10.236.{third + 1}.0/24",
                f"/cmp-containerd-{tag}",
                registry.host,
            ),
        ]
        for r in runtimes:
            r.work.mkdir(parents=True, exist_ok=True)
            r.start()
        measure(Driver(runtimes[0]), Driver(runtimes[1]), sizes, table, notes)
    except BaseException:
        if opts.keep:
            print(f"kept: {work}; pids {[r.proc.pid for r in runtimes if r.proc]}", file=sys.stderr)
            os._exit(1)
        raise
    finally:
        for r in runtimes:
            with contextlib.suppress(Exception):
                if r.channel is not None:
                    Driver(r).remove_all()
            r.stop()
            kill_cgroup_processes_and_remove(r.cgroup_parent)
            subprocess.run(["ip", "link", "del", r.bridge], capture_output=True)
        registry.stop()
        Path("/proc/sys/net/ipv4/ip_forward").write_text(forward)
        iptables.remove_if_unused("nat", "CRIOPY-HOSTPORT-DNAT", ["CRIOPY-HOSTPORT-SETMARK", "CRIOPY-HOSTPORT-MASQ"])
        cleanup_workdir(work)
        if not shim_dir_existed:
            with contextlib.suppress(OSError):
                os.rmdir("/run/containerd/s")
                os.rmdir("/run/containerd")

    info = versions()
    print(
        f"crio-py ({ROOT}) vs {info['containerd']}; {info['runc']}; {info['cpus']} CPUs; "
        f"{'quick' if opts.quick else 'full'} run; ratio = crio-py / containerd"
    )
    print(table.render())
    print("load per phase: " + "; ".join(f"{k}: {v}" for k, v in notes.items()))
    if opts.json:
        opts.json.write_text(
            json.dumps(
                {
                    "machine": info,
                    "sizes": sizes.__dict__,
                    "phases": notes,
                    "rows": table.rows,
                    "samples": table.raw,
                    # What the run made (and removed): for a smoke test to check nothing is left.
                    "made": {
                        "work": str(work),
                        "bridges": [r.bridge for r in runtimes],
                        "cgroup_parents": [r.cgroup_parent for r in runtimes],
                    },
                },
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
