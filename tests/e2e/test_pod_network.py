"""Pods on a CNI bridge network through the daemon: reachability, hostPort, teardown, restart."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from crio_py.cri import api_pb2 as pb
from tests.support.cri import nsenter, pod_config, unique
from tests.support.daemon import DaemonHandle, free_port
from tests.support.iptables import remove_unused_hostport_chains

pytestmark = pytest.mark.e2e
REFERENCE_PLUGINS = "/usr/lib/cni"


@pytest.fixture(params=["reference-plugins", "crio-py-plugins"])
def network(request: pytest.FixtureRequest, daemon_handle: DaemonHandle, workdir: Path) -> Iterator[dict[str, str]]:
    """A bridge + host-local + portmap network of the test's own (made by the reference plugins
    or by ours, behind the daemon's plugin service), with its cleanup."""
    bridge = unique("cpe")[:15]
    subnet_octet = 100 + int.from_bytes(os.urandom(1)) % 100
    net = {
        "bridge": bridge,
        "gateway": f"10.236.{subnet_octet}.1",
        "subnet": f"10.236.{subnet_octet}.0/24",
        "data_dir": str(workdir / "ipam"),
    }
    conflist = {
        "cniVersion": "1.0.0",
        "name": "crio-py-e2e",
        "plugins": [
            {
                "type": "bridge",
                "bridge": bridge,
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": net["subnet"], "gateway": net["gateway"]}]],
                    "dataDir": net["data_dir"],
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }
    conf_dir = Path(daemon_handle.config["cni"]["conf_dir"])
    (conf_dir / "10-e2e.conflist").write_text(json.dumps(conflist))
    if request.param == "reference-plugins":
        daemon_handle.config["cni"]["plugin_dirs"] = [REFERENCE_PLUGINS]
    else:
        ours = workdir / "cni-bin"
        subprocess.run([sys.executable, "-m", "cni_plugins.install", str(ours)], check=True)
        daemon_handle.config["cni"]["plugin_dirs"] = [str(ours)]
    forward = Path("/proc/sys/net/ipv4/ip_forward").read_text()
    try:
        yield net
    finally:
        subprocess.run(["ip", "link", "del", bridge], capture_output=True)
        remove_unused_hostport_chains()
        Path("/proc/sys/net/ipv4/ip_forward").write_text(forward)


def pod_info(daemon: DaemonHandle, pod_id: str) -> tuple[pb.PodSandboxStatus, dict]:
    resp = daemon.runtime.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=pod_id, verbose=True))
    return resp.status, json.loads(resp.info["info"])


def tcp_server_in(pid: int, port: int, reply: bytes) -> subprocess.Popen[bytes]:
    """A one-shot TCP server in the network namespace of ``pid``."""
    code = (
        "import socket;s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);"
        f"s.bind(('0.0.0.0',{port}));s.listen(5);print('up',flush=True)\n"
        f"while True:\n c,_=s.accept();c.sendall({reply!r});c.close()"
    )
    proc = subprocess.Popen(["nsenter", "-t", str(pid), "-n", "python3", "-c", code], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline() == b"up\n"
    return proc


def fetch(host: str, port: int) -> bytes:
    with socket.create_connection((host, port), timeout=5) as conn:
        return conn.recv(100)


def test_two_pods_reach_each_other_the_bridge_and_a_host_port(
    daemon_handle: DaemonHandle, network: dict[str, str], cgroup_parent: str
) -> None:
    daemon_handle.start()
    status = daemon_handle.runtime.Status(pb.StatusRequest()).status
    assert {c.type: c.status for c in status.conditions}["NetworkReady"] is True
    host_port = free_port()
    a = daemon_handle.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=pod_config(
        cgroup_parent=cgroup_parent,
        port_mappings=[pb.PortMapping(protocol=pb.TCP, container_port=8080, host_port=host_port)],
    ))).pod_sandbox_id
    b = daemon_handle.runtime.RunPodSandbox(pb.RunPodSandboxRequest(
        config=pod_config(cgroup_parent=cgroup_parent))).pod_sandbox_id
    status_a, info_a = pod_info(daemon_handle, a)
    status_b, info_b = pod_info(daemon_handle, b)
    ip_a, ip_b = status_a.network.ip, status_b.network.ip
    assert ip_a.startswith(network["subnet"].rsplit(".", 2)[0]) and ip_a != ip_b
    assert f"{ip_a}\t" in (Path(info_a["podDir"]) / "hosts").read_text()

    server = tcp_server_in(info_a["pid"], 8080, b"hello from pod a")
    try:
        # Pod to pod, pod to the bridge (host side), host port to pod.
        assert nsenter(info_b["pid"], "-n", "python3", "-c",
                       f"import socket;print(socket.create_connection(('{ip_a}',8080),5).recv(100).decode())"
                       ).strip() == "hello from pod a"
        with socket.create_server((network["gateway"], 0)) as host_server:
            port = host_server.getsockname()[1]
            client = subprocess.Popen(
                ["nsenter", "-t", str(info_b["pid"]), "-n", "python3", "-c",
                 "import socket;"
                 f"print(socket.create_connection(('{network['gateway']}',{port}),5).recv(100).decode())"],
                stdout=subprocess.PIPE, text=True,
            )
            host_server.settimeout(10)
            conn, _ = host_server.accept()
            conn.sendall(b"hello from the host")
            conn.close()
            assert client.communicate(timeout=10)[0].strip() == "hello from the host"
        assert fetch(network["gateway"], host_port) == b"hello from pod a"
        assert fetch("127.0.0.1", host_port) == b"hello from pod a"
    finally:
        server.kill()
        server.wait()

    for pod in (a, b):
        daemon_handle.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod))
        daemon_handle.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod))
    # Nothing left: no veth on the bridge, no allocated IP, no hostport rule.
    links = subprocess.run(["ip", "-o", "link", "show", "master", network["bridge"]], capture_output=True, text=True)
    assert links.stdout.strip() == ""
    allocated = [p.name for p in Path(network["data_dir"]).rglob("*") if p.name[0].isdigit()]
    assert allocated == []
    rules = subprocess.run(["iptables-save", "-t", "nat"], capture_output=True, text=True).stdout
    assert f"--dport {host_port}" not in rules and ip_a not in rules


def test_restart_then_stop_tears_the_network_down_from_the_cache(
    daemon_handle: DaemonHandle, network: dict[str, str], cgroup_parent: str
) -> None:
    daemon_handle.start()
    pod = daemon_handle.runtime.RunPodSandbox(pb.RunPodSandboxRequest(
        config=pod_config(cgroup_parent=cgroup_parent))).pod_sandbox_id
    ip = pod_info(daemon_handle, pod)[0].network.ip
    daemon_handle.kill()
    # The config is gone: only the cached attachment can tell how to tear down.
    for conf in Path(daemon_handle.config["cni"]["conf_dir"]).iterdir():
        conf.unlink()
    daemon_handle.start()
    assert pod_info(daemon_handle, pod)[0].network.ip == ip  # IPs survive the restart
    daemon_handle.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod))
    # StopPodSandbox returns after the CNI DEL: the IP is released and the veth gone already.
    assert not list(Path(network["data_dir"]).rglob(ip))
    links = subprocess.run(["ip", "-o", "link", "show", "master", network["bridge"]], capture_output=True, text=True)
    assert links.stdout.strip() == ""
