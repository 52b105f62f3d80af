"""Helpers and fixtures for the CNI plugin tests: private netns, bridges, subnets and data dirs.

Everything a test makes has a unique ``cpt-<random>`` name and a private 10.234.x.0/24 subnet,
and is removed afterwards even when the test fails: namespaces, bridges (and with them veths),
iptables rules and chains of the test's network, allocation files, the plugin service.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

CNI_ROOT = Path(__file__).resolve().parents[2] / "cni-plugins"
if str(CNI_ROOT) not in sys.path:
    sys.path.insert(0, str(CNI_ROOT))

from cni_plugins import install, iptables  # noqa: E402

REFERENCE_DIR = "/usr/lib/cni"
PLUGINS = ("bridge", "host-local", "loopback", "portmap")


def sh(*argv: str, check: bool = True) -> str:
    """Run a command, return stdout."""
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"{argv}: {proc.returncode} {proc.stdout} {proc.stderr}")
    return proc.stdout


def unique(prefix: str = "cpt") -> str:
    """A short unique name (interface names are at most 15 characters)."""
    return f"{prefix}-{random.randrange(1 << 32):08x}"


@dataclass
class Outcome:
    """A plugin exec's exit code and output."""

    rc: int
    stdout: bytes
    stderr: bytes

    def json(self) -> Any:
        """stdout parsed."""
        return json.loads(self.stdout)


def exec_plugin(
    plugin_dir: str,
    plugin: str,
    command: str | None,
    conf: dict[str, Any] | bytes,
    cid: str = "",
    netns: str = "",
    ifname: str = "eth0",
    extra_env: dict[str, str] | None = None,
    cni_path: str | None = None,
) -> Outcome:
    """Exec a plugin exactly as a runtime does: CNI_* environment and the config on stdin."""
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), **(extra_env or {})}
    if command is not None:
        env["CNI_COMMAND"] = command
    if cid:
        env["CNI_CONTAINERID"] = cid
    if netns:
        env["CNI_NETNS"] = netns
    if ifname:
        env["CNI_IFNAME"] = ifname
    env["CNI_PATH"] = cni_path or plugin_dir
    data = conf if isinstance(conf, bytes) else json.dumps(conf).encode()
    proc = subprocess.run([os.path.join(plugin_dir, plugin)], input=data, env=env, capture_output=True, timeout=60)
    return Outcome(proc.returncode, proc.stdout, proc.stderr)


@dataclass
class Network:
    """A test network: bridge, subnet, data dir and the namespaces made for it."""

    name: str
    bridge: str
    subnet: str
    data_dir: str
    namespaces: list[str] = field(default_factory=list)

    @property
    def gateway(self) -> str:
        """The bridge's gateway address (first host of the subnet)."""
        return self.subnet.rsplit(".", 1)[0] + ".1"

    def netns(self) -> str:
        """A fresh named netns (its path) that is deleted with the network."""
        name = unique()
        sh("ip", "netns", "add", name)
        self.namespaces.append(name)
        return f"/run/netns/{name}"

    def bridge_conf(self, version: str = "1.0.0", **extra: Any) -> dict[str, Any]:
        """bridge + host-local config of this network."""
        conf: dict[str, Any] = {
            "cniVersion": version,
            "name": self.name,
            "type": "bridge",
            "bridge": self.bridge,
            "isGateway": True,
            "ipMasq": True,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": self.subnet}]],
                "routes": [{"dst": "0.0.0.0/0"}],
                "dataDir": self.data_dir,
            },
        }
        conf.update(extra)
        return conf

    def allocations(self) -> list[str]:
        """Allocated addresses (files) in the data dir."""
        d = Path(self.data_dir) / self.name
        if not d.is_dir():
            return []
        return sorted(p.name for p in d.iterdir() if p.name != "lock" and not p.name.startswith("last_reserved_ip"))

    def bridge_ports(self) -> list[str]:
        """Interfaces enslaved to the bridge."""
        d = Path(f"/sys/class/net/{self.bridge}/brif")
        return sorted(p.name for p in d.iterdir()) if d.is_dir() else []

    def nat_rules(self) -> list[str]:
        """nat rules that belong to this network (by the plugins' comments or chain names)."""
        text = sh("iptables-save", "-t", "nat")
        return [line for line in text.splitlines() if f'name: \\"{self.name}\\"' in line]


def purge_network_rules(name: str) -> None:
    """Delete every nat rule commented with the network ``name`` and the per-pod chains they lead to."""
    marker = f'name: \\"{name}\\"'

    def build(snap: iptables.Snapshot) -> list[str]:
        mine = [r for r in snap.rules if marker in r]
        targets = {r.rsplit(" -j ", 1)[1].split()[0] for r in mine if " -j " in r}
        targets = {t for t in targets if t.startswith(("CNI-", "CRIOPY-DN-")) and "HOSTPORT" not in t}
        lines = [f"-D {r[3:]}" for r in mine if r.split()[1] not in targets]
        for chain in sorted(targets & snap.chains):
            lines += [f"-F {chain}", f"-X {chain}"]
        return lines

    iptables.apply("nat", build)
    iptables.remove_if_unused("nat", "CRIOPY-HOSTPORT-DNAT", ["CRIOPY-HOSTPORT-SETMARK", "CRIOPY-HOSTPORT-MASQ"])


@pytest.fixture
def network() -> Iterator[Network]:
    """A private test network, torn down completely afterwards."""
    work = tempfile.mkdtemp(prefix="cpt-net-")
    tag = unique()
    net = Network(
        name=f"{tag}-net",
        bridge=tag,
        subnet=f"10.234.{random.randrange(2, 250)}.0/24",
        data_dir=os.path.join(work, "ipam"),
    )
    forward = Path("/proc/sys/net/ipv4/ip_forward").read_text()
    reference_chains = "CNI-HOSTPORT-DNAT" in iptables.save("nat").chains
    try:
        yield net
    finally:
        for ns in net.namespaces:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["ip", "link", "del", net.bridge], capture_output=True)
        purge_network_rules(net.name)
        if not reference_chains:
            # The reference portmap leaves its shared chains behind; drop them if we caused them.
            iptables.remove_if_unused("nat", "CNI-HOSTPORT-DNAT", ["CNI-HOSTPORT-SETMARK", "CNI-HOSTPORT-MASQ"])
        Path("/proc/sys/net/ipv4/ip_forward").write_text(forward)
        shutil.rmtree(work, ignore_errors=True)


@dataclass
class Plugins:
    """Our plugin executables and how to reach them (service or in-process)."""

    dir: str
    env: dict[str, str]
    mode: str

    def run(self, plugin: str, command: str | None, conf: dict[str, Any] | bytes, **kw: Any) -> Outcome:
        """Exec one of our plugins."""
        extra = {**self.env, **kw.pop("extra_env", {})}
        return exec_plugin(self.dir, plugin, command, conf, extra_env=extra, **kw)


@contextlib.contextmanager
def running_service(sock: str) -> Iterator[subprocess.Popen[bytes]]:
    """Our plugin service on a private socket, stopped (by its pid) afterwards."""
    env = {**os.environ, "PYTHONPATH": str(CNI_ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "cni_plugins.service", "--socket", sock, "--workers", "4"],
        env=env,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 20
        while not os.path.exists(sock):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"service did not start: {proc.stderr.read() if proc.stderr else b''!r}")
            time.sleep(0.02)
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


@pytest.fixture(scope="module")
def plugin_dir() -> Iterator[str]:
    """A plugin directory holding our launchers."""
    d = tempfile.mkdtemp(prefix="cpt-bin-")
    try:
        install.install(d, sys.executable)
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def service_socket() -> Iterator[str]:
    """A running plugin service (module-wide); its socket path."""
    d = tempfile.mkdtemp(prefix="cpt-svc-")
    sock = os.path.join(d, "cni-plugins.sock")
    try:
        with running_service(sock):
            yield sock
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(params=["service", "fallback"])
def plugins(request: pytest.FixtureRequest, plugin_dir: str, tmp_path: Path) -> Plugins:
    """Our plugins, once through the service and once in-process (no service listening)."""
    lock = str(tmp_path / "iptables.lock")
    if request.param == "service":
        sock = request.getfixturevalue("service_socket")
    else:
        sock = str(tmp_path / "no-service.sock")
    return Plugins(plugin_dir, {"CRIO_PY_CNI_SOCKET": sock, "CRIO_PY_CNI_IPTABLES_LOCK": lock}, request.param)


def mixed_dir(base: Path, ours: str, mine: tuple[str, ...]) -> str:
    """A plugin dir with our executables for ``mine`` and the reference ones for the rest."""
    base.mkdir(parents=True, exist_ok=True)
    for name in PLUGINS:
        src = os.path.join(ours, name) if name in mine else os.path.join(REFERENCE_DIR, name)
        os.symlink(src, base / name)
    return str(base)


ICMP_ECHO = r"""
import os, socket, struct, sys
def csum(b):
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xFFFF); s += s >> 16
    return ~s & 0xFFFF
ident = os.getpid() & 0xFFFF
pkt = struct.pack("!BBHHH", 8, 0, 0, ident, 1) + b"cpt-ping"
pkt = pkt[:2] + struct.pack("!H", csum(pkt)) + pkt[4:]
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
s.settimeout(1.0)
s.sendto(pkt, (sys.argv[1], 0))
while True:
    data, addr = s.recvfrom(2048)
    hl = (data[0] & 0x0F) * 4
    if addr[0] == sys.argv[1] and data[hl] == 0 and struct.unpack("!H", data[hl + 4 : hl + 6])[0] == ident:
        sys.exit(0)
"""


def ping(netns_path: str, ip: str) -> bool:
    """One ICMP echo from inside the netns to ``ip`` (ping(8), or a raw socket without it)."""
    ns = os.path.basename(netns_path)
    if shutil.which("ping"):
        argv = ["ip", "netns", "exec", ns, "ping", "-c1", "-W1", ip]
    else:
        argv = ["ip", "netns", "exec", ns, sys.executable, "-c", ICMP_ECHO, ip]
    return subprocess.run(argv, capture_output=True, timeout=10).returncode == 0


def netns_addrs(netns_path: str, ifname: str = "eth0") -> list[str]:
    """IPv4 addresses (with prefix) on an interface inside the netns."""
    out = sh("ip", "-n", os.path.basename(netns_path), "-j", "addr", "show", "dev", ifname, check=False)
    if not out.strip():
        return []
    return [f"{a['local']}/{a['prefixlen']}" for i in json.loads(out) for a in i["addr_info"] if a["family"] == "inet"]
