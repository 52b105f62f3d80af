"""End-to-end tests of our CNI plugins (cni-plugins/) on real namespaces, bridges and iptables.

Traffic only goes to addresses inside the private test networks and to 127.0.0.1.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.cni_fixtures import (
    REFERENCE_DIR,
    Network,
    Plugins,
    exec_plugin,
    mixed_dir,
    netns_addrs,
    network,
    ping,
    plugin_dir,
    plugins,
    service_socket,
    sh,
    unique,
)

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not os.path.isdir(REFERENCE_DIR), reason="reference CNI plugins not installed"),
]

# Fixtures imported from cni_fixtures are used by name.
__all__ = ["network", "plugin_dir", "plugins", "service_socket"]


def _cid() -> str:
    return f"cpt{random.randrange(1 << 48):012x}"


def _add_pod(p: Plugins, net: Network, **conf_extra: object) -> tuple[str, str, dict]:
    ns, cid = net.netns(), _cid()
    out = p.run("bridge", "ADD", net.bridge_conf(**conf_extra), cid=cid, netns=ns)
    assert out.rc == 0, out
    return ns, cid, out.json()


def _assert_clean(net: Network) -> None:
    assert net.allocations() == []
    assert net.bridge_ports() == []
    assert net.nat_rules() == []


def test_bridge_pods_get_addresses_and_reach_each_other(plugins: Plugins, network: Network) -> None:
    ns1, cid1, res1 = _add_pod(plugins, network)
    ns2, cid2, res2 = _add_pod(plugins, network)
    ip1, ip2 = res1["ips"][0]["address"], res2["ips"][0]["address"]
    assert ip1 != ip2
    assert netns_addrs(ns1) == [ip1] and netns_addrs(ns2) == [ip2]
    assert res1["interfaces"][0]["name"] == network.bridge
    assert res1["interfaces"][2] == {"name": "eth0", "mac": res1["interfaces"][2]["mac"], "sandbox": ns1}
    assert res1["ips"][0]["gateway"] == network.gateway and res1["ips"][0]["interface"] == 2
    assert ping(ns1, ip2.split("/")[0])
    assert ping(ns2, ip1.split("/")[0])
    assert ping(ns1, network.gateway)
    assert len(network.nat_rules()) == 2 * 3  # per pod: POSTROUTING jump, ACCEPT, MASQUERADE

    check = plugins.run("bridge", "CHECK", {**network.bridge_conf(), "prevResult": res1}, cid=cid1, netns=ns1)
    assert check.rc == 0, check
    for ns, cid, res in ((ns1, cid1, res1), (ns2, cid2, res2)):
        out = plugins.run("bridge", "DEL", {**network.bridge_conf(), "prevResult": res}, cid=cid, netns=ns)
        assert out.rc == 0 and out.stdout == b"", out
    _assert_clean(network)


def test_del_is_idempotent_and_survives_a_missing_netns(plugins: Plugins, network: Network) -> None:
    for drop_netns in (False, True):
        ns, cid, _ = _add_pod(plugins, network)
        if drop_netns:
            sh("ip", "netns", "del", os.path.basename(ns))
        for _ in range(2):  # the second time, the interface and the allocation are gone too
            out = plugins.run("bridge", "DEL", network.bridge_conf(), cid=cid, netns=ns)
            assert out.rc == 0, out
        _assert_clean(network)


@pytest.mark.parametrize("version", ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
def test_results_in_every_supported_version(
    plugin_dir: str, service_socket: str, network: Network, version: str
) -> None:
    p = Plugins(plugin_dir, {"CRIO_PY_CNI_SOCKET": service_socket}, "service")
    ns, cid = network.netns(), _cid()
    out = p.run("bridge", "ADD", network.bridge_conf(version=version), cid=cid, netns=ns)
    assert out.rc == 0, out
    res = out.json()
    assert res["cniVersion"] == version
    assert ("version" in res["ips"][0]) == (version < "1.0.0")
    assert out.stdout.startswith(b'{\n    "cniVersion": ') and not out.stdout.endswith(b"\n")
    assert p.run("bridge", "DEL", network.bridge_conf(version=version), cid=cid, netns=ns).rc == 0


def test_loopback_up_and_down(plugins: Plugins, network: Network) -> None:
    ns, cid = network.netns(), _cid()
    conf = {"cniVersion": "1.0.0", "name": network.name, "type": "loopback"}
    out = plugins.run("loopback", "ADD", conf, cid=cid, netns=ns, ifname="lo")
    assert out.rc == 0, out
    assert out.json()["interfaces"] == [{"name": "lo", "mac": "00:00:00:00:00:00", "sandbox": ns}]
    assert out.json()["ips"][0]["address"] == "127.0.0.1/8"
    assert "UP" in _flags(ns, "lo")
    assert plugins.run("loopback", "CHECK", {**conf, "prevResult": out.json()}, cid=cid, netns=ns, ifname="lo").rc == 0
    assert plugins.run("loopback", "DEL", conf, cid=cid, netns=ns, ifname="lo").rc == 0
    assert "UP" not in _flags(ns, "lo")


def _flags(ns: str, ifname: str) -> list[str]:
    flags: list[str] = json.loads(sh("ip", "-n", os.path.basename(ns), "-j", "link", "show", ifname))[0]["flags"]
    return flags


SERVER = r"""
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.listen(8)
print("ready", flush=True)
while True:
    c, _ = s.accept()
    c.sendall(sys.argv[2].encode())
    c.close()
"""


def _fetch(host: str, port: int) -> bytes:
    with socket.create_connection((host, port), timeout=3) as c:
        chunks = []
        while chunk := c.recv(4096):
            chunks.append(chunk)
        return b"".join(chunks)


def _hostport_roundtrip(network: Network, run_portmap, run_bridge) -> None:  # type: ignore[no-untyped-def]
    ns, cid = network.netns(), _cid()
    add = run_bridge("ADD", network.bridge_conf(), cid, ns)
    assert add.rc == 0, add
    res = add.json()
    host_port = random.randrange(40000, 60000)
    pm_conf = {
        "cniVersion": "1.0.0",
        "name": network.name,
        "type": "portmap",
        "capabilities": {"portMappings": True},
        "runtimeConfig": {"portMappings": [{"hostPort": host_port, "containerPort": 8080, "protocol": "tcp"}]},
    }
    out = run_portmap("ADD", {**pm_conf, "prevResult": res}, cid, ns)
    assert out.rc == 0, out
    assert out.json() == res
    token = unique("payload")
    server = subprocess.Popen(
        ["ip", "netns", "exec", os.path.basename(ns), sys.executable, "-c", SERVER, "8080", token],
        stdout=subprocess.PIPE,
    )
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == b"ready"
        assert _fetch("127.0.0.1", host_port) == token.encode()
        assert _fetch(network.gateway, host_port) == token.encode()
    finally:
        server.kill()
        server.wait()
    out = run_portmap("DEL", {**pm_conf, "prevResult": res}, cid, ns)
    assert out.rc == 0, out
    assert not [r for r in network.nat_rules() if "dnat name" in r]
    assert run_bridge("DEL", network.bridge_conf(), cid, ns).rc == 0
    _assert_clean(network)


def test_portmap_hostport_from_localhost_and_bridge_ip(plugins: Plugins, network: Network) -> None:
    def run(plugin: str):  # type: ignore[no-untyped-def]
        return lambda cmd, conf, cid, ns: plugins.run(plugin, cmd, conf, cid=cid, netns=ns)

    _hostport_roundtrip(network, run("portmap"), run("bridge"))
    nat = sh("iptables-save", "-t", "nat")
    assert "CRIOPY-DN-" not in nat or network.name not in nat


def test_reference_portmap_on_our_bridge(plugins: Plugins, network: Network) -> None:
    def ours(cmd, conf, cid, ns):  # type: ignore[no-untyped-def]
        return plugins.run("bridge", cmd, conf, cid=cid, netns=ns)

    def theirs(cmd, conf, cid, ns):  # type: ignore[no-untyped-def]
        return exec_plugin(REFERENCE_DIR, "portmap", cmd, conf, cid=cid, netns=ns)

    _hostport_roundtrip(network, theirs, ours)


def test_concurrent_bridge_adds_never_share_an_address(plugins: Plugins, network: Network) -> None:
    pods = [(network.netns(), _cid()) for _ in range(20)]

    def add(pod: tuple[str, str]):  # type: ignore[no-untyped-def]
        return plugins.run("bridge", "ADD", network.bridge_conf(), cid=pod[1], netns=pod[0])

    with concurrent.futures.ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(add, pods))
    assert all(r.rc == 0 for r in results), [r for r in results if r.rc]
    ips = [r.json()["ips"][0]["address"] for r in results]
    assert len(set(ips)) == 20
    assert len(network.allocations()) == 20

    def delete(pod: tuple[str, str]):  # type: ignore[no-untyped-def]
        return plugins.run("bridge", "DEL", network.bridge_conf(), cid=pod[1], netns=pod[0])

    with concurrent.futures.ThreadPoolExecutor(max_workers=20) as pool:
        assert all(r.rc == 0 for r in pool.map(delete, pods))
    _assert_clean(network)


def test_concurrent_host_local_shares_the_store_with_the_reference(plugins: Plugins, network: Network) -> None:
    conf = network.bridge_conf()
    jobs = [(plugins.dir if i % 2 else REFERENCE_DIR, _cid()) for i in range(20)]

    def add(job: tuple[str, str]):  # type: ignore[no-untyped-def]
        return exec_plugin(job[0], "host-local", "ADD", conf, cid=job[1], netns="/x", extra_env=plugins.env)

    with concurrent.futures.ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(add, jobs))
    assert all(r.rc == 0 for r in results), [r for r in results if r.rc]
    ips = {r.json()["ips"][0]["address"].split("/")[0] for r in results}
    assert len(ips) == 20 and set(network.allocations()) == ips
    first = min(ips, key=lambda a: tuple(int(x) for x in a.split(".")))
    owner = (Path(network.data_dir) / network.name / first).read_bytes()
    assert owner.endswith(b"\r\neth0") and owner.split(b"\r\n")[0].decode() in {c for _, c in jobs}
    # Each releases what the other allocated.
    for d, cid in jobs:
        other = REFERENCE_DIR if d == plugins.dir else plugins.dir
        assert exec_plugin(other, "host-local", "DEL", conf, cid=cid, netns="/x", extra_env=plugins.env).rc == 0
    assert network.allocations() == []


@pytest.mark.parametrize(
    "ours", [("bridge",), ("host-local",)], ids=["our-bridge+their-host-local", "their-bridge+our-host-local"]
)
def test_mixed_bridge_and_host_local(plugins: Plugins, network: Network, tmp_path: Path, ours: tuple[str, ...]) -> None:
    d = mixed_dir(tmp_path / "bin", plugins.dir, ours)
    pods = []
    for _ in range(2):
        ns, cid = network.netns(), _cid()
        out = exec_plugin(d, "bridge", "ADD", network.bridge_conf(), cid=cid, netns=ns, extra_env=plugins.env)
        assert out.rc == 0, out
        pods.append((ns, cid, out.json()["ips"][0]["address"].split("/")[0]))
    assert ping(pods[0][0], pods[1][2]) and ping(pods[1][0], network.gateway)
    assert len(network.allocations()) == 2
    for ns, cid, _ in pods:
        assert exec_plugin(d, "bridge", "DEL", network.bridge_conf(), cid=cid, netns=ns, extra_env=plugins.env).rc == 0
    _assert_clean(network)


@pytest.mark.parametrize("direction", ["ours-then-theirs", "theirs-then-ours"])
def test_one_implementation_deletes_what_the_other_added(plugins: Plugins, network: Network, direction: str) -> None:
    ours = (plugins.dir, plugins.dir)
    theirs = (REFERENCE_DIR, REFERENCE_DIR)
    adder, deleter = (ours, theirs) if direction == "ours-then-theirs" else (theirs, ours)
    ns, cid = network.netns(), _cid()
    conf = network.bridge_conf(hairpinMode=True)
    out = exec_plugin(adder[0], "bridge", "ADD", conf, cid=cid, netns=ns, extra_env=plugins.env, cni_path=adder[1])
    assert out.rc == 0, out
    assert len(network.nat_rules()) == 3 and len(network.allocations()) == 1 and len(network.bridge_ports()) == 1
    assert ping(ns, network.gateway)
    out = exec_plugin(deleter[0], "bridge", "DEL", conf, cid=cid, netns=ns, extra_env=plugins.env, cni_path=deleter[1])
    assert out.rc == 0, out
    assert netns_addrs(ns) == []
    _assert_clean(network)


def test_host_local_gc_releases_what_is_not_valid(plugins: Plugins, network: Network) -> None:
    conf = network.bridge_conf(version="1.1.0")
    keep, drop = _cid(), _cid()
    for cid in (keep, drop):
        assert plugins.run("host-local", "ADD", conf, cid=cid, netns="/x").rc == 0
    gc_conf = {**conf, "cni.dev/valid-attachments": [{"containerID": keep, "ifname": "eth0"}]}
    out = plugins.run("host-local", "GC", gc_conf, ifname="")
    assert out.rc == 0, out
    assert len(network.allocations()) == 1
    owner = (Path(network.data_dir) / network.name / network.allocations()[0]).read_bytes()
    assert owner == f"{keep}\r\neth0".encode()
    assert plugins.run("host-local", "STATUS", conf, ifname="").rc == 0
    old = plugins.run("host-local", "GC", network.bridge_conf(version="1.0.0"), ifname="")
    assert old.rc == 1 and old.json()["code"] == 1
    assert plugins.run("host-local", "DEL", conf, cid=keep, netns="/x").rc == 0


ERRORS = [
    ("invalid json", {"CNI_COMMAND": "ADD"}, b"{not json", 6),
    ("unsupported version", {"CNI_COMMAND": "ADD"}, b'{"cniVersion":"0.2.0","name":"n","type":"bridge"}', 1),
    ("unknown version", {"CNI_COMMAND": "DEL"}, b'{"cniVersion":"9.9.9","name":"n","type":"bridge"}', 1),
    ("no cniVersion", {"CNI_COMMAND": "ADD"}, b'{"name":"n","type":"bridge"}', 1),
    ("missing name", {"CNI_COMMAND": "ADD"}, b'{"cniVersion":"1.0.0","type":"bridge"}', 7),
    ("missing command", {}, b'{"cniVersion":"1.0.0","name":"n","type":"bridge"}', 4),
    ("unknown command", {"CNI_COMMAND": "FROB"}, b'{"cniVersion":"1.0.0","name":"n","type":"bridge"}', 4),
    ("CHECK on 0.3.1", {"CNI_COMMAND": "CHECK"}, b'{"cniVersion":"0.3.1","name":"n","type":"bridge"}', 1),
]


@pytest.mark.parametrize(("what", "env", "stdin", "code"), ERRORS, ids=[e[0] for e in ERRORS])
@pytest.mark.parametrize("plugin", ["bridge", "host-local", "loopback", "portmap"])
def test_errors_are_spec_json_with_nonzero_exit(
    plugins: Plugins, what: str, env: dict[str, str], stdin: bytes, code: int, plugin: str
) -> None:
    extra = {**plugins.env, **env}
    out = exec_plugin(plugins.dir, plugin, None, stdin, cid="c1", netns="/nonexistent", extra_env=extra)
    assert out.rc != 0
    err = json.loads(out.stdout)
    assert err["code"] == code, err
    assert set(err) <= {"cniVersion", "code", "msg", "details"} and err["msg"]


def test_missing_container_id_and_bad_ifname(plugins: Plugins) -> None:
    conf = b'{"cniVersion":"1.0.0","name":"n","type":"bridge"}'
    out = exec_plugin(plugins.dir, "bridge", "ADD", conf, netns="/x", extra_env=plugins.env)
    assert out.rc == 1 and out.json()["code"] == 4 and "CNI_CONTAINERID" in out.json()["msg"]
    out = exec_plugin(plugins.dir, "bridge", "ADD", conf, cid="c1", netns="/x", ifname="x" * 16, extra_env=plugins.env)
    assert out.rc == 1 and out.json()["code"] == 4


def test_version_answer_matches_between_modes(plugin_dir: str, service_socket: str, tmp_path: Path) -> None:
    answers = set()
    for sock in (service_socket, str(tmp_path / "none.sock")):
        out = exec_plugin(plugin_dir, "portmap", "VERSION", b"", ifname="", extra_env={"CRIO_PY_CNI_SOCKET": sock})
        assert out.rc == 0
        answers.add(out.stdout)
    assert answers == {b'{"cniVersion":"1.1.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]}\n'}


def test_service_stops_cleanly_and_launchers_fall_back(plugin_dir: str, tmp_path: Path) -> None:
    from tests.e2e.cni_fixtures import running_service

    sock = str(tmp_path / "svc.sock")
    env = {"CRIO_PY_CNI_SOCKET": sock}
    with running_service(sock) as proc:
        assert exec_plugin(plugin_dir, "loopback", "VERSION", b"", ifname="", extra_env=env).rc == 0
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        assert children
    deadline = time.monotonic() + 10  # a loaded machine may take a while to run the exit path
    while os.path.exists(sock) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not os.path.exists(sock)
    for pid in children:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
    assert exec_plugin(plugin_dir, "loopback", "VERSION", b"", ifname="", extra_env=env).rc == 0


def test_udp_conntrack_entries_for_host_ports_are_flushed() -> None:
    from cni_plugins import portmap
    from pyroute2 import Conntrack
    from pyroute2.conntrack import NFCTAttrTuple

    port = random.randrange(40000, 60000)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(b"x", ("127.0.0.1", port))
    match = NFCTAttrTuple(family=socket.AF_INET, proto=socket.IPPROTO_UDP, dport=port)
    with Conntrack() as ct:
        if not list(ct.dump_entries(tuple_orig=match)):
            pytest.skip("no connection tracking for loopback UDP here")
        portmap.flush_udp_conntrack({port}, 4)
        assert list(ct.dump_entries(tuple_orig=match)) == []


def test_the_daemon_s_list_request_chains_results_in_one_long_lived_process(
    plugin_dir: str, network: Network, tmp_path: Path
) -> None:
    from crio_py.network.plugin_service import PluginService

    service = PluginService(tmp_path / "svc.sock", tmp_path / "svc.log")
    portmap = {
        "cniVersion": "1.0.0",
        "name": network.name,
        "type": "portmap",
        "capabilities": {"portMappings": True},
        "runtimeConfig": {"portMappings": [{"hostPort": 40000 + random.randrange(20000), "containerPort": 80}]},
    }

    def env(command: str, cid: str, ns: str) -> dict[str, str]:
        return {"CNI_COMMAND": command, "CNI_CONTAINERID": cid, "CNI_NETNS": ns, "CNI_IFNAME": "eth0",
                "CNI_PATH": plugin_dir, "PATH": os.environ["PATH"]}  # fmt: skip

    def add(ns: str) -> tuple[str, list]:
        cid = _cid()
        steps = [("bridge", network.bridge_conf()), ("portmap", portmap)]
        return cid, service.run_list(env("ADD", cid, ns), steps, chain=True, keep_going=False, timeout=60) or []

    try:
        namespaces = [network.netns() for _ in range(4)]
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            added = list(pool.map(add, namespaces))
        pid = service.pid
        assert pid is not None
        # The service itself served the four lists, each in a thread of its own: no process per call.
        assert Path(f"/proc/{pid}/task/{pid}/children").read_text().split() == []
        ips = set()
        for ns, (_, outcomes) in zip(namespaces, added, strict=True):
            assert [o.rc for o in outcomes] == [0, 0], outcomes
            bridge_result = json.loads(outcomes[0].stdout)
            # portmap got bridge's result as prevResult and passes it on unchanged.
            assert json.loads(outcomes[1].stdout) == bridge_result
            ip = bridge_result["ips"][0]["address"]
            assert netns_addrs(ns) == [ip]
            ips.add(ip)
        assert len(ips) == 4
        assert any(cid in rule for rule in network.nat_rules() for cid, _ in added[:1])

        # A failing plugin ends an ADD list: portmap never runs.
        bad = {**network.bridge_conf(), "ipam": {"type": "no-such-ipam"}}
        cid = _cid()
        failed = service.run_list(env("ADD", cid, network.netns()), [("bridge", bad), ("portmap", portmap)],
                                  chain=True, keep_going=False, timeout=60)  # fmt: skip
        assert failed is not None and len(failed) == 1 and failed[0].rc != 0, (tmp_path / "svc.log").read_text()
        assert "no-such-ipam" in json.loads(failed[0].stdout)["msg"]

        for ns, (cid, outcomes) in zip(namespaces, added, strict=True):
            prev = json.loads(outcomes[1].stdout)
            steps = [
                ("portmap", {**portmap, "prevResult": prev}),
                ("bridge", {**network.bridge_conf(), "prevResult": prev}),
            ]
            deleted = service.run_list(env("DEL", cid, ns), steps, chain=False, keep_going=True, timeout=60)
            assert deleted is not None and [o.rc for o in deleted] == [0, 0], deleted
        _assert_clean(network)
        assert service.pid == pid and Path(f"/proc/{pid}/task/{pid}/children").read_text().split() == []

        # Killed, the service is started again by the next request.
        os.kill(pid, signal.SIGKILL)
        while True:  # until its socket refuses (a request racing the death gets TRY_AGAIN_LATER)
            with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as probe:
                try:
                    probe.connect(str(tmp_path / "svc.sock"))
                except ConnectionRefusedError:
                    break
            time.sleep(0.01)
        version = {"CNI_COMMAND": "VERSION", "CNI_PATH": plugin_dir}
        again = service.run_list(
            version, [("loopback", {"cniVersion": "1.0.0"})], chain=False, keep_going=False, timeout=60
        )
        assert again is not None and again[0].rc == 0 and json.loads(again[0].stdout)["supportedVersions"]
        assert service.pid not in (None, pid)
    finally:
        service.stop()
    assert not (tmp_path / "svc.sock").exists()
