"""CNI chain ADD+DEL latency: crio-py's plugins against the reference plugins (/usr/lib/cni).

Each cycle runs the chain a runtime runs for a pod, every plugin exec'd with CNI_* env and the
config on stdin: ADD loopback, ADD bridge (+ host-local IPAM), ADD portmap; then DEL in reverse
order. Both implementations run in the same process, interleaved cycle by cycle, each on its own
test bridge (cpt-<random>), private subnet, dataDir and netns. Prints p50/p99 per implementation
and the ratio; then checks that no address, veth or per-pod iptables chain is left over.

    python bench/cni_chain.py                 # 50 cycles, service mode
    python bench/cni_chain.py --cycles 500    # the leak check run
    python bench/cni_chain.py --no-service    # our plugins without the service (in-process)
    python bench/cni_chain.py --daemon-path   # as the daemon runs a pod's list (bridge, portmap):
                                              # ours as one service request, the reference exec'd
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "cni-plugins"))

from cni_plugins import install, iptables  # noqa: E402

from crio_py.config import CNIConfig  # noqa: E402
from crio_py.network import CNIManager, PluginService, PodAttachment, create_netns, remove_netns  # noqa: E402

REFERENCE_DIR = "/usr/lib/cni"
CNI_VERSION = "1.0.0"


@dataclass
class Impl:
    """One implementation under test and its private network."""

    label: str
    plugin_dir: str
    bridge: str
    subnet: str
    data_dir: str
    netns: str
    env_extra: dict[str, str] = field(default_factory=dict)
    add_ms: list[float] = field(default_factory=list)
    del_ms: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def run(self, plugin: str, command: str, conf: dict, cid: str, ifname: str) -> bytes:
        """Exec one plugin as a runtime does; raise with its output on failure."""
        env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": cid,
            "CNI_NETNS": f"/run/netns/{self.netns}",
            "CNI_IFNAME": ifname,
            "CNI_PATH": self.plugin_dir,
            **self.env_extra,
        }
        proc = subprocess.run(
            [os.path.join(self.plugin_dir, plugin)], input=json.dumps(conf).encode(), env=env, capture_output=True
        )
        if proc.returncode != 0:
            raise RuntimeError(f"{self.label} {plugin} {command}: {proc.stdout!r} {proc.stderr!r}")
        return proc.stdout

    def confs(self) -> tuple[dict, dict, dict]:
        """(loopback, bridge, portmap) configs as a runtime derives them from one conflist."""
        name = f"{self.bridge}-net"
        lo = {"cniVersion": CNI_VERSION, "name": name, "type": "loopback"}
        br = {
            "cniVersion": CNI_VERSION,
            "name": name,
            "type": "bridge",
            "bridge": self.bridge,
            "isGateway": True,
            "ipMasq": True,
            "hairpinMode": True,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": self.subnet}]],
                "routes": [{"dst": "0.0.0.0/0"}],
                "dataDir": self.data_dir,
            },
        }
        pm = {
            "cniVersion": CNI_VERSION,
            "name": name,
            "type": "portmap",
            "capabilities": {"portMappings": True},
            "runtimeConfig": {
                "portMappings": [{"hostPort": 40000 + random.randrange(20000), "containerPort": 80, "protocol": "tcp"}]
            },
        }
        return lo, br, pm

    def cycle(self, n: int) -> None:
        """One pod: ADD chain then DEL chain, timed separately."""
        cid = f"bench{n:05d}{random.randrange(1 << 30):08x}"
        lo, br, pm = self.confs()
        t0 = time.perf_counter()
        try:
            lo_res = json.loads(self.run("loopback", "ADD", lo, cid, "lo"))
            br_res = json.loads(self.run("bridge", "ADD", br, cid, "eth0"))
            pm_res = json.loads(self.run("portmap", "ADD", {**pm, "prevResult": br_res}, cid, "eth0"))
            t1 = time.perf_counter()
            self.run("portmap", "DEL", {**pm, "prevResult": pm_res}, cid, "eth0")
            self.run("bridge", "DEL", {**br, "prevResult": br_res}, cid, "eth0")
            self.run("loopback", "DEL", {**lo, "prevResult": lo_res}, cid, "lo")
            t2 = time.perf_counter()
        except RuntimeError as e:
            # Another process on the host may change shared iptables chains under a plugin; count
            # the failure, undo the pod as a runtime would, and go on.
            self.failures.append(str(e))
            for plugin, conf, ifname in (("portmap", pm, "eth0"), ("bridge", br, "eth0"), ("loopback", lo, "lo")):
                with contextlib.suppress(RuntimeError):
                    self.run(plugin, "DEL", conf, cid, ifname)
            return
        self.add_ms.append((t1 - t0) * 1000)
        self.del_ms.append((t2 - t1) * 1000)


@dataclass
class DaemonPath:
    """One plugin set run as the daemon runs it: CNIManager setup/teardown of a pod's netns."""

    label: str
    manager: CNIManager
    netns_dir: Path
    add_ms: list[float] = field(default_factory=list)
    del_ms: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def cycle(self, n: int) -> None:
        """One pod: CNI ADD of the list, then DEL, timed separately (netns untimed)."""
        cid = f"bench{n:05d}{random.randrange(1 << 30):08x}"
        netns = create_netns(self.netns_dir, cid)
        att = PodAttachment(cid, f"p{n}", "bench", f"uid-{cid}", str(netns))
        try:
            t0 = time.perf_counter()
            self.manager.setup(att)
            t1 = time.perf_counter()
            self.manager.teardown(att)
            t2 = time.perf_counter()
            self.add_ms.append((t1 - t0) * 1000)
            self.del_ms.append((t2 - t1) * 1000)
        except Exception as e:  # counted and shown: another process may race on shared chains
            self.failures.append(f"{type(e).__name__}: {e}")
            with contextlib.suppress(Exception):
                self.manager.teardown(att)
        finally:
            remove_netns(netns)


def daemon_path(opts: argparse.Namespace, work: Path, tag: str, third: int) -> list[DaemonPath]:
    """Our plugins through the service (one request per list) and the reference exec'd, interleaved."""
    ours_bin = work / "bin"
    install.install(str(ours_bin), sys.executable)
    service = PluginService(work / "svc.sock", work / "svc.log")
    paths = []
    for label, plugin_dir, letter, octet in (
        ("crio-py", str(ours_bin), "o", third),
        ("reference", REFERENCE_DIR, "r", third + 1),
    ):
        conf_dir = work / f"conf-{letter}"
        conf_dir.mkdir()
        conflist = {
            "cniVersion": CNI_VERSION,
            "name": f"cpt-{letter}{tag}-net",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": f"cpt-{letter}{tag}",
                    "isGateway": True,
                    "ipMasq": True,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": f"10.234.{octet}.0/24"}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(work / f"ipam-{letter}"),
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        }
        (conf_dir / "10-bench.conflist").write_text(json.dumps(conflist))
        cfg = CNIConfig(conf_dir=str(conf_dir), plugin_dirs=[plugin_dir], cache_dir=str(work / f"cache-{letter}"))
        manager = CNIManager(cfg, service if letter == "o" else None)
        manager.start_service_if_used()
        paths.append(DaemonPath(label, manager, work / f"netns-{letter}"))
    try:
        for i in range(opts.warmup):
            for p in paths:
                p.cycle(-1 - i)
        for p in paths:
            p.add_ms.clear()
            p.del_ms.clear()
        for n in range(opts.cycles):
            for p in paths if n % 2 else reversed(paths):
                p.cycle(n)
    finally:
        service.stop()
        for letter in ("o", "r"):
            subprocess.run(["ip", "link", "del", f"cpt-{letter}{tag}"], capture_output=True)
    return paths


def pct(values: list[float], p: float) -> float:
    """The p-th percentile (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def leftovers(impl: Impl) -> list[str]:
    """What a full set of DELs failed to remove."""
    problems = []
    net_dir = Path(impl.data_dir) / f"{impl.bridge}-net"
    if net_dir.is_dir():
        ips = [p.name for p in net_dir.iterdir() if p.name != "lock" and not p.name.startswith("last_reserved_ip.")]
        if ips:
            problems.append(f"{impl.label}: allocation files left: {ips[:5]}")
    brif = Path(f"/sys/class/net/{impl.bridge}/brif")
    if brif.is_dir() and any(brif.iterdir()):
        problems.append(f"{impl.label}: ports left on {impl.bridge}: {[p.name for p in brif.iterdir()]}")
    nat = subprocess.run(["iptables-save", "-t", "nat"], capture_output=True, text=True).stdout
    if f'name: \\"{impl.bridge}-net\\"' in nat:
        problems.append(f"{impl.label}: iptables rules left for {impl.bridge}-net")
    return problems


def start_service(sock: str) -> subprocess.Popen[bytes]:
    """Our plugin service on a private socket."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "cni-plugins")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "cni_plugins.service", "--socket", sock], env=env, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 10
    while not os.path.exists(sock):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"service did not start: {proc.stderr.read() if proc.stderr else b''!r}")
        time.sleep(0.02)
    return proc


def report(label: str, values: list[float]) -> str:
    """One line of figures."""
    return f"{label:<22} p50 {statistics.median(values):7.1f} ms   p99 {pct(values, 99):7.1f} ms"


def main() -> int:
    """Run the benchmark; exit 1 on leaks or a ratio over --max-ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--no-service", action="store_true", help="our plugins without the service")
    parser.add_argument("--ours-only", action="store_true", help="skip the reference plugins")
    parser.add_argument("--daemon-path", action="store_true", help="lists as the daemon runs them (CNIManager)")
    parser.add_argument("--max-ratio", type=float, default=0.0, help="fail when ours/reference p50 exceeds this")
    opts = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root", file=sys.stderr)
        return 2

    tag = f"{random.randrange(1 << 24):06x}"
    work = Path(tempfile.mkdtemp(prefix="cpt-bench-"))
    third = random.randrange(64, 250)
    if opts.daemon_path:
        forward = Path("/proc/sys/net/ipv4/ip_forward").read_text()
        try:
            paths = daemon_path(opts, work, tag, third)
        finally:
            Path("/proc/sys/net/ipv4/ip_forward").write_text(forward)
            shutil.rmtree(work, ignore_errors=True)
        print(f"CNI list bridge/host-local + portmap as the daemon runs it (no port mappings), {opts.cycles} cycles")
        for p in paths:
            print(report(f"{p.label} ADD", p.add_ms))
            print(report(f"{p.label} DEL", p.del_ms))
            print(report(f"{p.label} ADD+DEL", [a + d for a, d in zip(p.add_ms, p.del_ms, strict=True)]))
            if p.failures:
                print(f"{p.label}: {len(p.failures)} failed cycles, first: {p.failures[0][:300]}")
        totals = [statistics.median([a + d for a, d in zip(p.add_ms, p.del_ms, strict=True)]) for p in paths]
        print(f"ratio crio-py/reference (ADD+DEL p50): {totals[0] / totals[1]:.2f}x")
        return 0
    ours = Impl(
        "crio-py",
        str(work / "bin"),
        f"cpt-o{tag}",
        f"10.234.{third}.0/24",
        str(work / "ipam-o"),
        f"cpt-o{tag}",
        {"CRIO_PY_CNI_SOCKET": str(work / "svc.sock"), "CRIO_PY_CNI_IPTABLES_LOCK": str(work / "ipt.lock")},
    )
    ref = Impl(
        "reference", REFERENCE_DIR, f"cpt-r{tag}", f"10.234.{third + 1}.0/24", str(work / "ipam-r"), f"cpt-r{tag}"
    )
    impls = [ours] if opts.ours_only else [ours, ref]
    install.install(ours.plugin_dir, sys.executable)
    forward = Path("/proc/sys/net/ipv4/ip_forward").read_text()
    service = None
    problems: list[str] = []
    try:
        if not opts.no_service:
            service = start_service(ours.env_extra["CRIO_PY_CNI_SOCKET"])
        for impl in impls:
            subprocess.run(["ip", "netns", "add", impl.netns], check=True)
        for i in range(opts.warmup):
            for impl in impls:
                impl.cycle(-1 - i)
        for impl in impls:
            impl.add_ms.clear()
            impl.del_ms.clear()
        for n in range(opts.cycles):
            for impl in impls if n % 2 else reversed(impls):
                impl.cycle(n)
        for impl in impls:
            problems += leftovers(impl)
    finally:
        if service is not None:
            service.send_signal(signal.SIGTERM)
            service.wait(timeout=10)
        for impl in impls:
            subprocess.run(["ip", "netns", "del", impl.netns], capture_output=True)
            subprocess.run(["ip", "link", "del", impl.bridge], capture_output=True)
        Path("/proc/sys/net/ipv4/ip_forward").write_text(forward)
        # The reference's shared CNI-HOSTPORT-* chains are left alone: other users may share them.
        iptables.remove_if_unused("nat", "CRIOPY-HOSTPORT-DNAT", ["CRIOPY-HOSTPORT-SETMARK", "CRIOPY-HOSTPORT-MASQ"])
        shutil.rmtree(work, ignore_errors=True)

    mode = "in-process (no service)" if opts.no_service else "service"
    print(f"CNI chain loopback + bridge/host-local + portmap, {opts.cycles} cycles, crio-py in {mode} mode")
    for impl in impls:
        total = [a + d for a, d in zip(impl.add_ms, impl.del_ms, strict=True)]
        print(report(f"{impl.label} ADD", impl.add_ms))
        print(report(f"{impl.label} DEL", impl.del_ms))
        print(report(f"{impl.label} ADD+DEL", total))
        if impl.failures:
            print(f"{impl.label}: {len(impl.failures)} failed cycles, first: {impl.failures[0][:300]}")
    ratio = 0.0
    if not opts.ours_only:
        ours_total = statistics.median([a + d for a, d in zip(ours.add_ms, ours.del_ms, strict=True)])
        ref_total = statistics.median([a + d for a, d in zip(ref.add_ms, ref.del_ms, strict=True)])
        ratio = ours_total / ref_total
        print(f"ratio crio-py/reference (ADD+DEL p50): {ratio:.2f}x")
    print("leaks: " + ("; ".join(problems) if problems else "none (dataDir empty, no veth, no per-pod chains)"))
    if problems or (opts.max_ratio and ratio > opts.max_ratio):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
