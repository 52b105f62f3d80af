"""Pod networking with real namespaces and the reference CNI plugins (bridge, host-local, portmap).

Each test gets its own bridge (pre-created with the gateway address, so the bridge plugin need not
turn on the host's ip_forward), its own 10.235.x.0/24 subnet, IPAM dir, conf dir and cache dir;
everything, iptables rules included, is removed afterwards even when a test fails.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import os
import random
import shlex
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from crio_py.config import CNIConfig
from crio_py.errors import CrioError
from crio_py.network import (
    CNIManager,
    PodAttachment,
    PortMapping,
    create_netns,
    remove_netns,
    set_loopback_up,
)
from crio_py.network.netns import is_netns, run_in_netns
from tests.support.iptables import remove_unused_hostport_chains

pytestmark = pytest.mark.e2e

REFERENCE_PLUGINS = "/usr/lib/cni"
def sh(*args: str, check: bool = True) -> str:
    return subprocess.run(args, check=check, capture_output=True, text=True).stdout


def nat_rules() -> list[str]:
    return sh("iptables", "-t", "nat", "-S").splitlines()


def free_subnet() -> str:
    used = sh("ip", "-4", "route", "show", "table", "all")
    for _ in range(200):
        third = random.randint(100, 250)
        if f"10.235.{third}." not in used:
            return f"10.235.{third}"
    raise RuntimeError("no free 10.235.x.0/24 subnet")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _checksum(data: bytes) -> int:
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    return ~(total + (total >> 16)) & 0xFFFF


def ping(netns: Path, dst: str, timeout: float = 1.0) -> bool:
    """One ICMP echo from inside ``netns`` (the ping binary is not a test dependency)."""

    def echo() -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as s:
            ident = os.getpid() & 0xFFFF
            header = struct.pack("!BBHHH", 8, 0, 0, ident, 1) + b"crio-py!"
            packet = header[:2] + struct.pack("!H", _checksum(header)) + header[4:]
            s.sendto(packet, (dst, 0))
            deadline = time.monotonic() + timeout
            while (left := deadline - time.monotonic()) > 0:
                s.settimeout(left)
                try:
                    data, (src, _) = s.recvfrom(1024)
                except TimeoutError:
                    return False
                ihl = (data[0] & 0x0F) * 4
                kind, _, _, rid, _ = struct.unpack("!BBHHH", data[ihl : ihl + 8])
                if src == dst and kind == 0 and rid == ident:
                    return True
            return False

    return run_in_netns(netns, echo)


class NetEnv:
    """One test's network world, and the cleanup of all of it."""

    def __init__(self) -> None:
        self.tag = uuid.uuid4().hex[:8]
        self.root = Path(tempfile.mkdtemp(prefix="crio-py-net-"))
        self.bridge = f"crpy{self.tag}"
        self.prefix = free_subnet()
        self.conf = self.root / "conf"
        self.ipam = self.root / "ipam"
        self.cache = self.root / "cache"
        self.nsdir = self.root / "netns"
        self.bin = self.root / "bin"
        for d in (self.conf, self.bin):
            d.mkdir()
        self.netns: list[Path] = []
        self.attachments: list[PodAttachment] = []

    def start(self) -> None:
        """Create the bridge with the gateway address (cleanup() undoes even a half-done start)."""
        # A fixed MAC: otherwise the bridge takes its lowest port's, and bridge's CHECK sees it change.
        mac = "02:" + ":".join(self.tag[i : i + 2] for i in range(0, 8, 2)) + ":01"
        sh("ip", "link", "add", self.bridge, "address", mac, "type", "bridge")
        sh("ip", "addr", "add", f"{self.prefix}.1/24", "dev", self.bridge)
        sh("ip", "link", "set", self.bridge, "up")

    def plugins(self, *, portmap: bool = True, extra: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
        bridge = {
            "type": "bridge",
            "bridge": self.bridge,
            "isGateway": False,
            "ipMasq": False,
            "ipam": {
                "type": "host-local",
                "dataDir": str(self.ipam),
                "ranges": [[{"subnet": f"{self.prefix}.0/24", "gateway": f"{self.prefix}.1"}]],
            },
        }
        out = [bridge, *(extra or [])]
        if portmap:
            out.append({"type": "portmap", "capabilities": {"portMappings": True}, "snat": True})
        return out

    def write_conf(self, plugins: list[dict[str, Any]]) -> None:
        data = {"cniVersion": "1.0.0", "name": f"crpy-e2e-{self.tag}", "plugins": plugins}
        tmp = self.conf / ".tmp"
        tmp.write_text(json.dumps(data))
        tmp.rename(self.conf / "10-e2e.conflist")

    def config(self) -> CNIConfig:
        return CNIConfig(
            conf_dir=str(self.conf),
            plugin_dirs=[str(self.bin), REFERENCE_PLUGINS],
            cache_dir=str(self.cache),
            plugin_timeout=20,
        )

    def manager(self) -> CNIManager:
        return CNIManager(self.config())

    def pod(self, name: str, ports: tuple[PortMapping, ...] = ()) -> PodAttachment:
        pod_id = f"{self.tag}{name}" + "0" * (16 - len(self.tag + name))
        netns = create_netns(self.nsdir, pod_id)
        self.netns.append(netns)
        att = PodAttachment(pod_id, name, "e2e", f"uid-{name}", str(netns), ports)
        self.attachments.append(att)
        return att

    def allocations(self) -> list[str]:
        """host-local's reservation files (one per allocated IP, named after it)."""
        net_dirs = list(self.ipam.iterdir()) if self.ipam.exists() else []
        return sorted(p.name for d in net_dirs for p in d.iterdir() if _is_ip(p.name))

    def veths(self) -> list[str]:
        return [line.split()[1].rstrip(":").split("@")[0] for line in
                sh("ip", "-o", "link", "show", "master", self.bridge, check=False).splitlines()]

    def rules_for(self, att: PodAttachment) -> list[str]:
        return [r for r in nat_rules() if att.pod_id in r]

    def cleanup(self) -> None:
        mgr = CNIManager(self.config())
        for att in self.attachments:
            with contextlib.suppress(CrioError):
                mgr.teardown(att)
        for rule in nat_rules():
            # Whatever a failed teardown left: portmap's per-pod rules name the pod id in a comment.
            if rule.startswith("-A ") and any(a.pod_id in rule for a in self.attachments):
                subprocess.run(["iptables", "-t", "nat", *_delete_args(rule)], check=False, capture_output=True)
        network = f"crpy-e2e-{self.tag}"
        for att in self.attachments:
            # portmap's per-pod chain, named as its utils.FormatChainName does.
            chain = ("CNI-DN-" + hashlib.sha512((network + att.pod_id).encode()).hexdigest())[:28]
            subprocess.run(["iptables", "-t", "nat", "-F", chain], check=False, capture_output=True)
            subprocess.run(["iptables", "-t", "nat", "-X", chain], check=False, capture_output=True)
        for netns in self.netns:
            remove_netns(netns)
        subprocess.run(["ip", "link", "del", self.bridge], check=False, capture_output=True)
        remove_unused_hostport_chains()
        if self.nsdir.exists():
            subprocess.run(["umount", str(self.nsdir)], check=False, capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _delete_args(rule: str) -> list[str]:
    return ["-D", *shlex.split(rule)[1:]]


@pytest.fixture
def net() -> Iterator[NetEnv]:
    forward = Path("/proc/sys/net/ipv4/ip_forward").read_text()
    env = NetEnv()
    try:
        env.start()
        yield env
    finally:
        env.cleanup()
        assert Path("/proc/sys/net/ipv4/ip_forward").read_text() == forward, "the host's ip_forward changed"


def test_netns_create_loopback_remove() -> None:
    root = Path(tempfile.mkdtemp(prefix="crio-py-ns-"))
    own = os.readlink("/proc/thread-self/ns/net")
    try:
        started = time.monotonic()
        path = create_netns(root, "pod-a")
        assert time.monotonic() - started < 0.5
        assert is_netns(path)
        assert os.readlink("/proc/thread-self/ns/net") == own
        assert "LOOPBACK,UP" not in sh("nsenter", f"--net={path}", "ip", "-br", "link", "show", "lo")
        set_loopback_up(path)
        assert "LOOPBACK,UP" in sh("nsenter", f"--net={path}", "ip", "-br", "link", "show", "lo")
        assert os.readlink("/proc/thread-self/ns/net") == own
        with pytest.raises(CrioError, match="already exists"):
            create_netns(root, "pod-a")
        remove_netns(path)
        remove_netns(path)
        assert not path.exists()
        assert str(path) not in Path("/proc/self/mountinfo").read_text()
    finally:
        remove_netns(root / "pod-a")
        subprocess.run(["umount", str(root)], check=False, capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def test_two_pods_get_distinct_ips_and_reach_each_other(net: NetEnv) -> None:
    net.write_conf(net.plugins())
    mgr = net.manager()
    assert mgr.status().ready
    a, b = net.pod("a"), net.pod("b")
    ra, rb = mgr.setup(a), mgr.setup(b)
    assert ra.ips != rb.ips
    assert all(ip.startswith(f"{net.prefix}.") for ip in ra.ips + rb.ips)
    assert ra.network == f"crpy-e2e-{net.tag}" and ra.interface == "eth0"
    assert ping(Path(a.netns_path), rb.ips[0])
    assert ping(Path(b.netns_path), ra.ips[0])
    assert mgr.cached_result(a.pod_id) == ra


def test_host_port_reaches_a_server_in_the_pod(net: NetEnv) -> None:
    net.write_conf(net.plugins())
    host_port = free_port()
    pod = net.pod("web", (PortMapping("tcp", 8080, host_port),))
    net.manager().setup(pod)

    def listen() -> socket.socket:
        s = socket.socket()
        s.bind(("0.0.0.0", 8080))
        s.listen(1)
        return s

    server = run_in_netns(Path(pod.netns_path), listen)

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            conn.sendall(b"hello from the pod")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with socket.create_connection(("127.0.0.1", host_port), timeout=5) as client:
            client.settimeout(5)
            assert client.recv(100) == b"hello from the pod"
    finally:
        server.close()
        thread.join(timeout=5)


def test_teardown_leaves_nothing(net: NetEnv) -> None:
    net.write_conf(net.plugins())
    pod = net.pod("gone", (PortMapping("tcp", 80, free_port()),))
    mgr = net.manager()
    mgr.setup(pod)
    assert net.allocations() and net.veths() and net.rules_for(pod)
    mgr.teardown(pod)
    assert net.allocations() == []
    assert net.veths() == []
    assert net.rules_for(pod) == []
    assert mgr.cached_result(pod.pod_id) is None
    mgr.teardown(pod)


def test_teardown_after_restart_uses_only_the_cache(net: NetEnv) -> None:
    net.write_conf(net.plugins())
    pod = net.pod("restart", (PortMapping("tcp", 80, free_port()),))
    result = net.manager().setup(pod)
    # The daemon restarts and the network config has been removed meanwhile.
    (net.conf / "10-e2e.conflist").unlink()
    fresh = net.manager()
    assert not fresh.status().ready
    assert fresh.cached_result(pod.pod_id) == result
    fresh.teardown(pod)
    assert net.allocations() == [] and net.veths() == [] and net.rules_for(pod) == []


def test_teardown_without_netns_still_releases_the_ip(net: NetEnv) -> None:
    net.write_conf(net.plugins())
    pod = net.pod("nons")
    net.manager().setup(pod)
    remove_netns(Path(pod.netns_path))
    net.manager().teardown(pod)
    assert net.allocations() == []
    # The kernel destroys an unpinned namespace (and so the veth pair) asynchronously.
    deadline = time.monotonic() + 10
    while net.veths() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert net.veths() == []


def test_failing_plugin_mid_chain_rolls_back(net: NetEnv) -> None:
    failing = net.bin / "crpy-fail"
    failing.write_text(
        "#!/bin/sh\n"
        'if [ "$CNI_COMMAND" = ADD ]; then\n'
        '  echo \'{"cniVersion": "1.0.0", "code": 999, "msg": "refusing on purpose"}\'; exit 1\n'
        "fi\n"
        'if [ "$CNI_COMMAND" = VERSION ]; then echo \'{"cniVersion": "1.0.0", "supportedVersions": ["1.0.0"]}\'; fi\n'
    )
    failing.chmod(0o755)
    net.write_conf(net.plugins(extra=[{"type": "crpy-fail"}]))
    pod = net.pod("fail", (PortMapping("tcp", 80, free_port()),))
    with pytest.raises(CrioError, match="refusing on purpose"):
        net.manager().setup(pod)
    assert net.allocations() == []
    assert net.veths() == []
    assert net.rules_for(pod) == []
    assert not (net.cache / "results").exists() or list((net.cache / "results").iterdir()) == []


def test_config_dropped_in_later_makes_the_network_ready(net: NetEnv) -> None:
    mgr = net.manager()
    status = mgr.status()
    assert not status.ready and status.reason == "NetworkPluginNotReady" and str(net.conf) in status.message
    net.write_conf(net.plugins())
    assert mgr.status().ready
    pod = net.pod("late")
    assert mgr.setup(pod).ips


def test_check_and_gc_release_what_is_not_listed(net: NetEnv) -> None:
    # portmap 1.1.1's CHECK insists on IPv6 chains, so this network leaves it out.
    net.write_conf(net.plugins(portmap=False))
    mgr = net.manager()
    keep, leak = net.pod("keep"), net.pod("leak")
    rk, rl = mgr.setup(keep), mgr.setup(leak)
    mgr.check(keep)
    assert net.allocations() == sorted([rk.ips[0], rl.ips[0]])
    net.manager().gc([keep])
    assert net.allocations() == [rk.ips[0]]
    assert len(net.veths()) == 1
    assert net.manager().cached_result(leak.pod_id) is None
    assert net.manager().cached_result(keep.pod_id) == rk
