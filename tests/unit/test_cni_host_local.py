"""host-local IPAM logic: range defaults and checks, iteration order, the allocation store and locking;
plus the pure parts of bridge, portmap and the iptables helper."""

from __future__ import annotations

import ipaddress
import json
import multiprocessing
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "cni-plugins"))

from cni_plugins import bridge, iptables, portmap
from cni_plugins.host_local import PLUGIN, Range, RangeSet, Store, allocate, load_config
from cni_plugins.skel import CmdArgs, run
from cni_plugins.spec import CNIError, Result

ip = ipaddress.ip_address


def _args(ipam: dict, name: str = "net", cid: str = "c1", cni_args: str = "", **conf: object) -> CmdArgs:
    c = {"cniVersion": "1.0.0", "name": name, "type": "bridge", "ipam": {"type": "host-local", **ipam}, **conf}
    return CmdArgs("ADD", cid, "/x", "eth0", cni_args, "/p", json.dumps(c).encode(), c)


def test_range_defaults_v4_and_v6() -> None:
    r = Range.from_obj({"subnet": "10.1.2.0/24"})
    assert (r.range_start, r.range_end, r.gateway) == (ip("10.1.2.1"), ip("10.1.2.254"), ip("10.1.2.1"))
    r6 = Range.from_obj({"subnet": "fd00::/120"})
    assert (r6.range_start, r6.range_end) == (ip("fd00::1"), ip("fd00::ff"))


@pytest.mark.parametrize(
    ("obj", "msg"),
    [
        ({"subnet": "10.1.2.1/24"}, "host bits set"),
        ({"subnet": "10.1.2.0/31"}, "too small"),
        ({"subnet": "10.1.2.0/24", "rangeStart": "10.1.3.5"}, "RangeStart"),
        ({"subnet": "10.1.2.0/24", "rangeEnd": "10.1.3.5"}, "RangeEnd"),
        ({"subnet": "nonsense"}, "invalid subnet"),
        ({}, "missing subnet"),
    ],
)
def test_range_errors(obj: dict, msg: str) -> None:
    with pytest.raises(CNIError) as e:
        Range.from_obj(obj)
    assert msg in e.value.msg and e.value.code == 7


def test_rangeset_checks() -> None:
    with pytest.raises(CNIError, match="overlap"):
        RangeSet.from_obj([{"subnet": "10.1.0.0/16"}, {"subnet": "10.1.2.0/24"}])
    with pytest.raises(CNIError, match="mixed"):
        RangeSet.from_obj([{"subnet": "10.1.0.0/24"}, {"subnet": "fd00::/64"}])


def test_iteration_skips_gateway_wraps_and_starts_after_last() -> None:
    rs = RangeSet.from_obj([{"subnet": "10.0.0.0/29"}, {"subnet": "10.0.1.0/30", "gateway": "10.0.1.2"}])
    order = [str(a) for _, a in rs.candidates(None)]
    assert order == ["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6", "10.0.1.1"]
    after = [str(a) for _, a in rs.candidates(ip("10.0.0.5"))]
    assert after == ["10.0.0.6", "10.0.1.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5"]
    assert next(str(a) for _, a in rs.candidates(ip("192.168.0.1"))) == "10.0.0.2"


def test_config_sources_are_merged_like_the_reference() -> None:
    args = _args(
        {"subnet": "10.1.0.0/24", "ranges": [[{"subnet": "fd00::/64"}]], "routes": [{"dst": "0.0.0.0/0"}]},
        cni_args="IgnoreUnknown=1;IP=10.1.0.9;K8S_POD_NAME=x",
        runtimeConfig={"ipRanges": [[{"subnet": "10.2.0.0/24"}]]},
    )
    with pytest.raises(CNIError, match="overlap"):
        load_config(_args({"subnet": "10.1.0.0/24", "ranges": [[{"subnet": "10.1.0.0/25"}]]}))
    with pytest.raises(CNIError, match="no IP ranges"):
        load_config(_args({}))
    args.conf["runtimeConfig"] = {}
    cfg = load_config(args)
    assert [str(s.ranges[0].subnet) for s in cfg.range_sets] == ["10.1.0.0/24", "fd00::/64"]
    assert cfg.requested == [ip("10.1.0.9")] and cfg.data_dir == "/var/lib/cni/networks"
    assert cfg.routes[0].dst == "0.0.0.0/0"


def test_allocate_release_and_file_format(tmp_path: Path) -> None:
    cfg = load_config(_args({"subnet": "10.1.0.0/29", "dataDir": str(tmp_path)}))
    store = Store(cfg.data_dir, "net")
    with store.locked():
        a = allocate(store, cfg, "c1", "eth0")
        b = allocate(store, cfg, "c2", "eth0")
    assert [a[0].address, b[0].address] == ["10.1.0.2/29", "10.1.0.3/29"] and a[0].gateway == "10.1.0.1"
    assert (tmp_path / "net" / "10.1.0.2").read_bytes() == b"c1\r\neth0"
    assert (tmp_path / "net" / "last_reserved_ip.0").read_bytes() == b"10.1.0.3"
    with pytest.raises(CNIError, match="duplicate allocation"):
        allocate(store, cfg, "c1", "eth0")
    assert store.release_by_id("c1", "eth0") == 1 and store.release_by_id("c1", "eth0") == 0
    with store.locked():
        c = allocate(store, cfg, "c3", "eth0")
    assert c[0].address == "10.1.0.4/29"  # continues after the last reserved address


def test_exhaustion_and_requested_addresses(tmp_path: Path) -> None:
    cfg = load_config(_args({"subnet": "10.1.0.0/30", "dataDir": str(tmp_path)}))
    store = Store(cfg.data_dir, "net")
    allocate(store, cfg, "c1", "eth0")
    with pytest.raises(CNIError, match="no IP addresses available"):
        allocate(store, cfg, "c2", "eth0")
    cfg = load_config(_args({"subnet": "10.1.1.0/24", "dataDir": str(tmp_path)}, cni_args="IP=10.1.1.1"))
    with pytest.raises(CNIError, match="gateway"):
        allocate(Store(cfg.data_dir, "net"), cfg, "c3", "eth0")
    cfg = load_config(_args({"subnet": "10.1.1.0/24", "dataDir": str(tmp_path)}, cni_args="IP=10.1.1.77"))
    assert allocate(Store(cfg.data_dir, "net"), cfg, "c3", "eth0")[0].address == "10.1.1.77/24"
    cfg = load_config(_args({"subnet": "10.1.1.0/24", "dataDir": str(tmp_path)}, cni_args="IP=10.9.9.9"))
    with pytest.raises(CNIError, match="requested IPs"):
        allocate(Store(cfg.data_dir, "net"), cfg, "c4", "eth0")
    assert not (tmp_path / "net" / "10.1.1.2").exists()  # all or nothing


def test_old_one_line_files_are_released(tmp_path: Path) -> None:
    (tmp_path / "net").mkdir()
    (tmp_path / "net" / "10.1.0.9").write_text("c-old")
    assert Store(str(tmp_path), "net").release_by_id("c-old", "eth0") == 1


def _grab(data_dir: str, n: int, queue: multiprocessing.Queue) -> None:
    args = _args({"subnet": "10.5.0.0/24", "dataDir": data_dir}, cid=f"proc{n}")
    out = run(
        PLUGIN,
        {
            **{
                "CNI_COMMAND": "ADD",
                "CNI_CONTAINERID": f"proc{n}",
                "CNI_NETNS": "/x",
                "CNI_IFNAME": "eth0",
                "CNI_PATH": "/p",
            }
        },
        args.stdin,
    )
    queue.put(json.loads(out.stdout)["ips"][0]["address"])


def test_concurrent_processes_never_share_an_address(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    queue: multiprocessing.Queue = ctx.Queue()
    procs = [ctx.Process(target=_grab, args=(str(tmp_path), n, queue)) for n in range(20)]
    for p in procs:
        p.start()
    got = [queue.get(timeout=30) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    assert len(set(got)) == 20


def test_plugin_gc_and_check(tmp_path: Path) -> None:
    env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "keep", "CNI_NETNS": "/x", "CNI_IFNAME": "eth0", "CNI_PATH": "/p"}
    conf = {
        "cniVersion": "1.1.0",
        "name": "net",
        "ipam": {"type": "host-local", "subnet": "10.6.0.0/24", "dataDir": str(tmp_path)},
    }
    data = json.dumps(conf).encode()
    assert run(PLUGIN, env, data).rc == 0
    assert run(PLUGIN, {**env, "CNI_CONTAINERID": "drop"}, data).rc == 0
    assert run(PLUGIN, {**env, "CNI_COMMAND": "CHECK"}, data).rc == 0
    gc = {**conf, "cni.dev/valid-attachments": [{"containerID": "keep", "ifname": "eth0"}]}
    assert run(PLUGIN, {"CNI_COMMAND": "GC", "CNI_PATH": "/p"}, json.dumps(gc).encode()).rc == 0
    assert sorted(p.name for p in (tmp_path / "net").iterdir()) == ["10.6.0.2", "last_reserved_ip.0", "lock"]
    missing = run(PLUGIN, {**env, "CNI_COMMAND": "CHECK", "CNI_CONTAINERID": "drop"}, data)
    assert missing.rc == 1


def test_reference_chain_names() -> None:
    # Names the reference plugins compute for the same network and container (checked against them).
    assert bridge.masq_chain("cpt-net", "c-cpt-a") == "CNI-47bb609e72b6ea86f3784662"
    assert bridge.masq_comment("n", "c") == 'name: "n" id: "c"'
    assert portmap.dnat_chain("cpt-net", "c-a").startswith("CRIOPY-DN-") and len(portmap.dnat_chain("n", "c")) == 28


def test_portmap_rules() -> None:
    args = _args(
        {},
        runtimeConfig={
            "portMappings": [
                {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
                {"hostPort": 5353, "containerPort": 53, "protocol": "UDP", "hostIP": "127.0.0.1"},
                {"hostPort": 9090, "containerPort": 90, "protocol": "tcp", "hostIP": "::1"},
            ]
        },
    )
    conf = portmap.PortMapConf.load(args)
    prev = Result.from_obj(
        {
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "cni0"}, {"name": "eth0", "sandbox": "/x"}],
            "ips": [{"address": "10.1.0.5/24", "interface": 1}],
        }
    )
    conf.pick_ips(prev, "eth0")
    entries, rules = portmap.dnat_rules(conf, "c1", conf.container_ips[4])
    assert [e[e.index("--destination-ports") + 1] for e in entries] == ["8080,9090", "5353"]
    assert ["-p", "tcp", "--dport", "8080", "-s", "10.1.0.5/24", "-j", "CRIOPY-HOSTPORT-SETMARK"] in rules
    assert ["-p", "tcp", "--dport", "8080", "-j", "DNAT", "--to-destination", "10.1.0.5:80"] in rules
    assert ["-p", "udp", "--dport", "5353", "-d", "127.0.0.1", "-j", "DNAT", "--to-destination", "10.1.0.5:53"] in rules
    assert not [r for r in rules if "9090" in r]  # IPv6 host IP, IPv4 pod
    with pytest.raises(CNIError):
        portmap.PortMapConf.load(_args({}, runtimeConfig={"portMappings": [{"hostPort": 0, "containerPort": 1}]}))
    with pytest.raises(CNIError):
        portmap.PortMapConf.load(_args({}, markMasqBit=40))


def test_iptables_snapshot() -> None:
    snap = iptables.Snapshot.parse(
        "*nat\n:POSTROUTING ACCEPT [0:0]\n:CNI-x - [0:0]\n"
        '-A POSTROUTING -s 10.0.0.2/32 -m comment --comment "name: \\"n\\" id: \\"c\\"" -j CNI-x\n'
        "-A CNI-x -d 10.0.0.0/24 -j ACCEPT\nCOMMIT\n"
    )
    assert snap.chains == {"POSTROUTING", "CNI-x"}
    assert snap.jumps("POSTROUTING", "CNI-x") == [snap.rules[0]]
    assert snap.delete_lines(snap.jumps("POSTROUTING", "CNI-x"))[0].startswith("-D POSTROUTING -s 10.0.0.2/32")
    assert iptables.remove_chain(snap, "CNI-x", ["POSTROUTING"])[-2:] == ["-F CNI-x", "-X CNI-x"]
    assert iptables.rule_line("-A", "C", ["--comment", 'name: "n"', "-j", "X"]) == '-A C --comment "name: \\"n\\"" -j X'
    assert iptables.chain_ops(snap, "CNI-x", fresh=False) == [] and iptables.chain_ops(snap, "N", fresh=False) == [
        "-N N"
    ]
