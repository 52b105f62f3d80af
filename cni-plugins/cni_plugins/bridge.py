"""The bridge plugin: a Linux bridge on the host, a veth pair into the container's netns.

Behaviour follows the reference bridge plugin (containernetworking/plugins v1.1.x): the same
bridge defaults, host veth names (``veth`` + 8 hex digits), gateway handling, and the same
``ipMasq`` chain names and comments, so either implementation's DEL cleans up the other's ADD.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from cni_plugins import iptables, netns
from cni_plugins.invoke import delegate_add, delegate_command
from cni_plugins.skel import CmdArgs, Plugin
from cni_plugins.spec import (
    DNS,
    ERR_INTERNAL,
    ERR_INVALID_CONFIG,
    ERR_UNSUPPORTED_FIELD,
    CNIError,
    Interface,
    IPConfig,
    Result,
    Route,
    parse_cni_args,
)

EEXIST, ENODEV = 17, 19
IFF_PROMISC = 0x100
# How long a new bridge port may take to come up (the reference polls for up to 2.55 s).
PORT_UP_TIMEOUT = 2.6


@dataclass
class BridgeConf:
    """The bridge plugin's keys of the network config."""

    name: str
    bridge: str
    is_gateway: bool
    is_default_gateway: bool
    force_address: bool
    ip_masq: bool
    mtu: int
    hairpin: bool
    promisc: bool
    ipam_type: str
    dns: DNS
    mac: str

    @classmethod
    def load(cls, args: CmdArgs) -> BridgeConf:
        """Parse and check the config, taking the MAC from CNI_ARGS, args or runtimeConfig."""
        c = args.conf
        if int(c.get("vlan") or 0):
            raise CNIError(ERR_UNSUPPORTED_FIELD, "vlan is not supported by this bridge plugin")
        if c.get("macspoofchk"):
            raise CNIError(ERR_UNSUPPORTED_FIELD, "macspoofchk is not supported by this bridge plugin")
        mac = parse_cni_args(
            args.args, ("MAC", "IP", "K8S_POD_NAMESPACE", "K8S_POD_NAME", "K8S_POD_INFRA_CONTAINER_ID", "K8S_POD_UID")
        ).get("MAC", "")
        mac = str(((c.get("args") or {}).get("cni") or {}).get("mac") or mac)
        mac = str((c.get("runtimeConfig") or {}).get("mac") or mac)
        conf = cls(
            name=args.name,
            bridge=str(c.get("bridge") or "cni0"),
            is_gateway=bool(c.get("isGateway") or c.get("isDefaultGateway")),
            is_default_gateway=bool(c.get("isDefaultGateway")),
            force_address=bool(c.get("forceAddress")),
            ip_masq=bool(c.get("ipMasq")),
            mtu=int(c.get("mtu") or 0),
            hairpin=bool(c.get("hairpinMode")),
            promisc=bool(c.get("promiscMode")),
            ipam_type=str((c.get("ipam") or {}).get("type") or ""),
            dns=DNS.from_obj(c.get("dns")),
            mac=mac,
        )
        if conf.hairpin and conf.promisc:
            raise CNIError(ERR_INVALID_CONFIG, "cannot set hairpin mode and promiscuous mode at the same time.")
        if len(conf.bridge) > 15:
            raise CNIError(ERR_INVALID_CONFIG, f"bridge name {conf.bridge!r} is too long")
        return conf


def masq_chain(network: str, container_id: str) -> str:
    """The reference's per-attachment ipMasq chain name (CNI- + sha512 prefix)."""
    return ("CNI-" + hashlib.sha512((network + container_id).encode()).hexdigest())[:28]


def masq_comment(network: str, container_id: str) -> str:
    """The reference's rule comment, ``name: "<net>" id: "<cid>"``."""
    return f'name: "{network}" id: "{container_id}"'


def _link(ipr: IPRoute, name: str) -> Any | None:
    try:
        return ipr.link("get", ifname=name)[0]
    except NetlinkError as e:
        if e.code == ENODEV:
            return None
        raise


def _kind(link: Any) -> str:
    info = link.get_attr("IFLA_LINKINFO")
    return str(info.get_attr("IFLA_INFO_KIND")) if info is not None else ""


def ensure_bridge(ipr: IPRoute, conf: BridgeConf) -> Any:
    """Create the bridge if needed, bring it up; returns its link message."""
    link = _link(ipr, conf.bridge)
    if link is None:
        kwargs: dict[str, Any] = {"ifname": conf.bridge, "kind": "bridge"}
        if conf.mtu:
            kwargs["mtu"] = conf.mtu
        try:
            ipr.link("add", **kwargs)
        except NetlinkError as e:
            if e.code != EEXIST:
                raise CNIError(ERR_INTERNAL, f"could not add {conf.bridge!r}: {e}") from None
        link = _link(ipr, conf.bridge)
    if link is None:
        raise CNIError(ERR_INTERNAL, f"could not lookup {conf.bridge!r}")
    if _kind(link) != "bridge":
        raise CNIError(ERR_INTERNAL, f"{conf.bridge!r} already exists but is not a bridge")
    if conf.promisc and not link["flags"] & IFF_PROMISC:
        ipr.link("set", index=link["index"], flags=IFF_PROMISC, change=IFF_PROMISC)
    netns.write_sysctl(f"net/ipv6/conf/{conf.bridge}/accept_ra", "0")
    if not link["flags"] & 1:
        ipr.link("set", index=link["index"], state="up")
    return link


def _random_veth() -> str:
    return "veth" + os.urandom(4).hex()


def create_veth(ipr: IPRoute, ns_fd: int, ifname: str, conf: BridgeConf) -> str:
    """A veth pair with ``ifname`` inside the netns; returns the host end's name."""
    for _ in range(10):
        host = _random_veth()
        peer: dict[str, Any] = {"ifname": ifname, "net_ns_fd": ns_fd}
        if conf.mtu:
            peer["mtu"] = conf.mtu
        if conf.mac:
            peer["address"] = conf.mac
        kwargs: dict[str, Any] = {"ifname": host, "kind": "veth", "peer": peer}
        if conf.mtu:
            kwargs["mtu"] = conf.mtu
        try:
            ipr.link("add", **kwargs)
            return host
        except NetlinkError as e:
            if e.code != EEXIST:
                raise CNIError(ERR_INTERNAL, f"failed to make veth pair: {e}") from None
            if _link(ipr, host) is None:
                raise CNIError(ERR_INTERNAL, f"container veth name provided ({ifname}) already exists") from None
    raise CNIError(ERR_INTERNAL, "failed to find a unique veth name")


def _wait_port_up(ipr: IPRoute, index: int, name: str) -> None:
    # A bridge port forwards only once the veth is operationally up; poll finely instead of
    # the reference's 50 ms first sleep.
    deadline = time.monotonic() + PORT_UP_TIMEOUT
    delay = 0.0005
    while True:
        state = ipr.link("get", index=index)[0].get_attr("IFLA_OPERSTATE")
        if state == "UP":
            return
        if time.monotonic() > deadline:
            raise CNIError(ERR_INTERNAL, f"bridge port in error state: {state} ({name})")
        time.sleep(delay)
        delay = min(delay * 2, 0.02)


def _ensure_gateway_addr(
    ipr: IPRoute, br_index: int, bridge: str, gw: ipaddress.IPv4Interface | ipaddress.IPv6Interface, force: bool
) -> None:
    family = 2 if gw.version == 4 else 10
    for a in ipr.get_addr(index=br_index, family=family):
        have = ipaddress.ip_interface(f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}")
        if have == gw:
            return
        if gw.version == 4 or gw.ip in have.network or have.ip in gw.network:
            if not force:
                raise CNIError(ERR_INTERNAL, f"{bridge!r} already has an IP address different from {gw}")
            ipr.addr("del", index=br_index, address=str(have.ip), prefixlen=have.network.prefixlen)
    try:
        ipr.addr("add", index=br_index, address=str(gw.ip), prefixlen=gw.network.prefixlen)
    except NetlinkError as e:
        if e.code != EEXIST:
            raise CNIError(ERR_INTERNAL, f"could not add IP address to {bridge!r}: {e}") from None
    # Pin the bridge MAC so it stops following the lowest-numbered port as ports come and go.
    mac = ipr.link("get", index=br_index)[0].get_attr("IFLA_ADDRESS")
    ipr.link("set", index=br_index, address=mac)


def setup_masq(conf: BridgeConf, container_id: str, ips: list[IPConfig]) -> None:
    """The reference's ipMasq rules: pod traffic leaving its subnet is masqueraded."""
    chain, comment = masq_chain(conf.name, container_id), masq_comment(conf.name, container_id)
    for version in (4, 6):
        nets = [ipc.iface for ipc in ips if ipc.iface.version == version]
        if not nets:
            continue
        multicast = "ff00::/8" if version == 6 else "224.0.0.0/4"
        host_len = 128 if version == 6 else 32
        rules = [["-d", str(n.network), "-j", "ACCEPT", "-m", "comment", "--comment", comment] for n in nets]
        rules.append(["!", "-d", multicast, "-j", "MASQUERADE", "-m", "comment", "--comment", comment])
        jumps = [["-s", f"{n.ip}/{host_len}", "-m", "comment", "--comment", comment, "-j", chain] for n in nets]
        body = [iptables.rule_line("-A", chain, r) for r in rules]
        body += [iptables.rule_line("-A", "POSTROUTING", j) for j in jumps]

        def build(snap: iptables.Snapshot, body: list[str] = body) -> list[str]:
            # A repeated ADD: start the chain afresh and replace the jumps.
            return [f":{chain} - [0:0]", *snap.delete_lines(snap.jumps("POSTROUTING", chain)), *body]

        iptables.apply("nat", build, v6=version == 6, first=[f"-N {chain}", *body])


def teardown_masq(conf: BridgeConf, container_id: str, families: set[int]) -> None:
    """Remove the attachment's ipMasq chain and the POSTROUTING rules that lead to it."""
    chain = masq_chain(conf.name, container_id)
    for v6 in [v == 6 for v in sorted(families)]:
        try:
            iptables.apply("nat", lambda snap: iptables.remove_chain(snap, chain, ["POSTROUTING"]), v6=v6)
        except (CNIError, FileNotFoundError):
            if not v6:
                raise


def _configure_container(cipr: IPRoute, index: int, ifname: str, result: Result) -> None:
    v4gw = next((i.gateway for i in result.ips if i.gateway and i.iface.version == 4), None)
    v6gw = next((i.gateway for i in result.ips if i.gateway and i.iface.version == 6), None)
    for ipc in result.ips:
        a = ipc.iface
        try:
            cipr.addr("add", index=index, address=str(a.ip), prefixlen=a.network.prefixlen)
        except NetlinkError as e:
            raise CNIError(ERR_INTERNAL, f"failed to add IP addr {a} to {ifname!r}: {e}") from None
    cipr.link("set", index=index, state="up")
    for r in result.routes:
        dst = ipaddress.ip_network(r.dst, strict=False)
        gw = r.gw or (v4gw if dst.version == 4 else v6gw)
        kwargs: dict[str, Any] = {"dst": str(dst), "oif": index}
        if gw:
            kwargs["gateway"] = gw
        try:
            cipr.route("add", **kwargs)
        except NetlinkError as e:
            raise CNIError(ERR_INTERNAL, f"failed to add route '{dst} via {gw} dev {ifname}': {e}") from None


def _gateways(result: Result, conf: BridgeConf) -> list[ipaddress.IPv4Interface | ipaddress.IPv6Interface]:
    """Fill in gateways and the default route as the reference does; the bridge addresses to set."""
    gws = []
    default_found: set[int] = set()
    for ipc in result.ips:
        ipc.interface = 2
        a = ipc.iface
        if ipc.gateway is None and conf.is_gateway:
            ipc.gateway = str(a.network.network_address + 1)
        if conf.is_default_gateway and a.version not in default_found:
            zero = "0.0.0.0/0" if a.version == 4 else "::/0"
            if not any(r.gw and r.dst == zero for r in result.routes):
                result.routes.append(Route(dst=zero, gw=ipc.gateway))
            default_found.add(a.version)
        if conf.is_gateway and ipc.gateway:
            gws.append(ipaddress.ip_interface(f"{ipc.gateway}/{a.network.prefixlen}"))
    return gws


class _LinkRemover(threading.Thread):
    """Deletes one interface inside a netns from its own thread (setns is per thread)."""

    def __init__(self, ns_fd: int, ifname: str) -> None:
        super().__init__(daemon=True)
        self.ns_fd = ns_fd
        self.ifname = ifname
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with netns.entered(self.ns_fd):
                ipr = IPRoute()
            with ipr:
                ipr.link("del", ifname=self.ifname)
        except NetlinkError as e:
            if e.code != ENODEV:
                self.error = CNIError(ERR_INTERNAL, f"failed to delete {self.ifname}: {e}")
        except BaseException as e:
            self.error = e
        finally:
            os.close(self.ns_fd)


class Bridge(Plugin):
    """The bridge plugin."""

    name = "bridge"

    def add(self, args: CmdArgs) -> Result:
        """Attach the container to the bridge and configure the IPAM addresses inside it."""
        conf = BridgeConf.load(args)
        with IPRoute() as ipr:
            br = ensure_bridge(ipr, conf)
            try:
                ns_fd = netns.open_netns(args.netns)
            except netns.NetnsMissing:
                raise CNIError(ERR_INTERNAL, f"failed to open netns {args.netns!r}: no such file") from None
            host_veth = ""
            try:
                try:
                    host_veth = create_veth(ipr, ns_fd, args.ifname, conf)
                    with netns.entered(ns_fd):
                        cipr = IPRoute()
                        netns.write_sysctl(f"net/ipv6/conf/{args.ifname}/accept_dad", "0")
                        netns.write_sysctl(f"net/ipv4/conf/{args.ifname}/arp_notify", "1")
                finally:
                    os.close(ns_fd)
                try:
                    return self._attach(args, conf, ipr, cipr, br, host_veth)
                finally:
                    cipr.close()
            except BaseException:
                if host_veth:
                    with contextlib.suppress(NetlinkError):
                        ipr.link("del", ifname=host_veth)
                raise

    def _attach(self, args: CmdArgs, conf: BridgeConf, ipr: IPRoute, cipr: IPRoute, br: Any, host_veth: str) -> Result:
        host = ipr.link("get", ifname=host_veth)[0]
        ipr.link("set", index=host["index"], master=br["index"], state="up")
        if conf.hairpin:
            with open(f"/sys/class/net/{host_veth}/brport/hairpin_mode", "w") as f:
                f.write("1")
        cont = cipr.link("get", ifname=args.ifname)[0]
        result = Result(
            interfaces=[
                Interface(name=conf.bridge, mac=str(br.get_attr("IFLA_ADDRESS"))),
                Interface(name=host_veth, mac=str(host.get_attr("IFLA_ADDRESS"))),
                Interface(name=args.ifname, mac=str(cont.get_attr("IFLA_ADDRESS")), sandbox=args.netns),
            ]
        )
        if not conf.ipam_type:
            cipr.link("set", index=cont["index"], state="up")
            result.dns = conf.dns
            return result
        ipam = delegate_add(conf.ipam_type, args)
        try:
            result.ips, result.routes = ipam.ips, ipam.routes
            if not result.ips:
                raise CNIError(ERR_INTERNAL, "IPAM plugin returned missing IP config")
            gws = _gateways(result, conf)
            _configure_container(cipr, cont["index"], args.ifname, result)
            _wait_port_up(ipr, host["index"], host_veth)
            for gw in gws:
                _ensure_gateway_addr(ipr, br["index"], conf.bridge, gw, conf.force_address)
            for version in {gw.version for gw in gws}:
                netns.write_sysctl("net/ipv4/ip_forward" if version == 4 else "net/ipv6/conf/all/forwarding", "1")
            if conf.ip_masq:
                setup_masq(conf, args.container_id, result.ips)
        except BaseException:
            with contextlib.suppress(Exception):
                delegate_command(conf.ipam_type, "DEL", args)
            raise
        br_now = ipr.link("get", index=br["index"])[0]
        result.interfaces[0].mac = str(br_now.get_attr("IFLA_ADDRESS"))
        result.dns = conf.dns
        return result

    def delete(self, args: CmdArgs) -> None:
        """Remove the container's interface, release IPAM, drop ipMasq rules; all idempotent."""
        conf = BridgeConf.load(args)
        remover = None
        if args.netns:
            try:
                remover = _LinkRemover(netns.open_netns(args.netns), args.ifname)
            except netns.NetnsMissing:
                pass
            else:
                # Unregistering a veth takes the kernel tens of milliseconds; let it overlap
                # with the IPAM release and the iptables commit.
                remover.start()
        try:
            if conf.ipam_type:
                delegate_command(conf.ipam_type, "DEL", args)
                if conf.ip_masq:
                    teardown_masq(conf, args.container_id, args.families())
        finally:
            if remover is not None:
                remover.join()
        if remover is not None and remover.error is not None:
            raise remover.error

    def check(self, args: CmdArgs) -> None:
        """The container interface exists with the prevResult's addresses and the IPAM agrees."""
        conf = BridgeConf.load(args)
        prev = args.prev_result()
        if prev is None:
            raise CNIError(ERR_INTERNAL, "Required prevResult missing")
        if conf.ipam_type:
            delegate_command(conf.ipam_type, "CHECK", args)
        with IPRoute() as ipr:
            br = _link(ipr, conf.bridge)
            if br is None or _kind(br) != "bridge":
                raise CNIError(ERR_INTERNAL, f"Interface {conf.bridge} does not have link type of bridge")
        try:
            ns_fd = netns.open_netns(args.netns)
        except netns.NetnsMissing:
            raise CNIError(ERR_INTERNAL, f"failed to open netns {args.netns!r}") from None
        try:
            with netns.entered(ns_fd):
                cipr = IPRoute()
        finally:
            os.close(ns_fd)
        try:
            link = _link(cipr, args.ifname)
            if link is None:
                raise CNIError(ERR_INTERNAL, f"Interface name {args.ifname} not found")
            have = {f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}" for a in cipr.get_addr(index=link["index"])}
            for ipc in prev.ips:
                if ipc.address not in have:
                    raise CNIError(ERR_INTERNAL, f"Failed to find IP address {ipc.address} on {args.ifname}")
        finally:
            cipr.close()

    def status(self, args: CmdArgs) -> None:
        """Ready when the IPAM plugin is."""
        conf = BridgeConf.load(args)
        if conf.ipam_type:
            delegate_command(conf.ipam_type, "STATUS", args)

    def gc(self, args: CmdArgs) -> None:
        """Pass GC on to the IPAM plugin."""
        conf = BridgeConf.load(args)
        if conf.ipam_type:
            delegate_command(conf.ipam_type, "GC", args)


PLUGIN = Bridge()
