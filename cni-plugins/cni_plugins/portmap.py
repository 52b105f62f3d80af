"""The portmap plugin: hostPort -> podIP:containerPort DNAT for the ``portMappings`` capability.

The rule layout is the reference plugin's with our own chain prefix: a top-level
``CRIOPY-HOSTPORT-DNAT`` chain entered from PREROUTING and OUTPUT for local destinations, one
``CRIOPY-DN-<hash>`` chain per attachment, and (with ``snat``, the default) a mark set on hairpin
and localhost traffic that ``CRIOPY-HOSTPORT-MASQ`` masquerades, with ``route_localnet`` on the
pod's host interface so that 127.0.0.1:hostPort works from the host itself.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import socket
import sys
from dataclasses import dataclass, field

from cni_plugins import iptables, netns
from cni_plugins.skel import CmdArgs, Plugin
from cni_plugins.spec import ERR_INTERNAL, ERR_INVALID_CONFIG, CNIError, Result

TOP_DNAT_CHAIN = "CRIOPY-HOSTPORT-DNAT"
SETMARK_CHAIN = "CRIOPY-HOSTPORT-SETMARK"
MASQ_CHAIN = "CRIOPY-HOSTPORT-MASQ"
DEFAULT_MARK_BIT = 13
MAX_CHAIN_LEN = 28
# iptables' multiport match takes at most 15 ports.
MULTIPORT_MAX = 15


@dataclass
class PortMapping:
    """One entry of runtimeConfig.portMappings."""

    host_port: int
    container_port: int
    protocol: str
    host_ip: str = ""


@dataclass
class PortMapConf:
    """The portmap keys of the network config and the container addresses from prevResult."""

    name: str
    snat: bool
    mark_bit: int
    external_setmark: str | None
    conditions: dict[int, list[str]]
    mappings: list[PortMapping]
    container_ips: dict[int, ipaddress.IPv4Interface | ipaddress.IPv6Interface] = field(default_factory=dict)

    @classmethod
    def load(cls, args: CmdArgs) -> PortMapConf:
        """Parse and check the config."""
        c = args.conf
        mark = c.get("markMasqBit")
        external = c.get("externalSetMarkChain")
        if mark is not None and external is not None:
            raise CNIError(ERR_INVALID_CONFIG, "Cannot specify externalSetMarkChain and markMasqBit")
        mark = DEFAULT_MARK_BIT if mark is None else int(mark)
        if not 0 <= mark <= 31:
            raise CNIError(ERR_INVALID_CONFIG, "MasqMarkBit must be between 0 and 31")
        mappings = []
        for pm in (c.get("runtimeConfig") or {}).get("portMappings") or []:
            entry = PortMapping(
                host_port=int(pm.get("hostPort") or 0),
                container_port=int(pm.get("containerPort") or 0),
                protocol=str(pm.get("protocol") or "tcp").lower(),
                host_ip=str(pm.get("hostIP") or ""),
            )
            if entry.container_port <= 0:
                raise CNIError(ERR_INVALID_CONFIG, f"Invalid container port number: {entry.container_port}")
            if entry.host_port <= 0:
                raise CNIError(ERR_INVALID_CONFIG, f"Invalid host port number: {entry.host_port}")
            mappings.append(entry)
        snat = c.get("snat")
        return cls(
            name=args.name,
            snat=True if snat is None else bool(snat),
            mark_bit=mark,
            external_setmark=str(external) if external is not None else None,
            conditions={4: list(c.get("conditionsV4") or []), 6: list(c.get("conditionsV6") or [])},
            mappings=mappings,
        )

    def pick_ips(self, result: Result, ifname: str) -> None:
        """The first address per family on the sandbox interface ``ifname`` (as the reference picks)."""
        for ipc in result.ips:
            a = ipc.iface
            if a.version in self.container_ips:
                continue
            if ipc.interface is not None and 0 <= ipc.interface < len(result.interfaces):
                iface = result.interfaces[ipc.interface]
                if iface.name != ifname or not iface.sandbox:
                    continue
            self.container_ips[a.version] = a


def dnat_chain(network: str, container_id: str) -> str:
    """The per-attachment DNAT chain name."""
    return ("CRIOPY-DN-" + hashlib.sha512((network + container_id).encode()).hexdigest())[:MAX_CHAIN_LEN]


def _comment(conf: PortMapConf, container_id: str) -> str:
    text = f'dnat name: "{conf.name}" id: "{container_id}"'
    return text if len(text) <= 255 else text[:253] + "..."


def _mark(conf: PortMapConf) -> str:
    value = 1 << conf.mark_bit
    return f"{value:#x}/{value:#x}"


def dnat_rules(
    conf: PortMapConf, container_id: str, addr: ipaddress.IPv4Interface | ipaddress.IPv6Interface
) -> tuple[list[list[str]], list[list[str]]]:
    """(entry rules in the top-level chain, rules of the per-attachment chain) for one family."""
    v6 = addr.version == 6
    comment = _comment(conf, container_id)
    by_proto: dict[str, list[int]] = {}
    for m in conf.mappings:
        by_proto.setdefault(m.protocol, []).append(m.host_port)
    entries = []
    for proto in sorted(by_proto):
        ports = by_proto[proto]
        for i in range(0, len(ports), MULTIPORT_MAX):
            spec = ",".join(str(p) for p in ports[i : i + MULTIPORT_MAX])
            entries.append(
                [
                    "-m",
                    "comment",
                    "--comment",
                    comment,
                    "-m",
                    "multiport",
                    "-p",
                    proto,
                    "--destination-ports",
                    spec,
                    *conf.conditions[addr.version],
                ]
            )
    setmark = conf.external_setmark or SETMARK_CHAIN
    rules = []
    for m in conf.mappings:
        base = ["-p", m.protocol, "--dport", str(m.host_port)]
        if m.host_ip:
            host_ip = ipaddress.ip_address(m.host_ip)
            if (host_ip.version == 6) != v6:
                continue
            if not host_ip.is_unspecified:
                base += ["-d", m.host_ip]
        if conf.snat:
            rules.append([*base, "-s", str(addr), "-j", setmark])
            if not v6:
                rules.append([*base, "-s", "127.0.0.1", "-j", setmark])
        dest = f"[{addr.ip}]:{m.container_port}" if v6 else f"{addr.ip}:{m.container_port}"
        rules.append([*base, "-j", "DNAT", "--to-destination", dest])
    return entries, rules


def _forward(conf: PortMapConf, container_id: str, addr: ipaddress.IPv4Interface | ipaddress.IPv6Interface) -> None:
    chain = dnat_chain(conf.name, container_id)
    entries, rules = dnat_rules(conf, container_id, addr)
    mark = _mark(conf)

    def build(snap: iptables.Snapshot) -> list[str]:
        lines: list[str] = []
        if conf.snat and conf.external_setmark is None:
            # Re-declaring a chain flushes it, and on nf_tables any deletion makes the commit
            # ~10 ms slower: rewrite the shared helper chains only when they are missing or wrong.
            setmark = [
                "-m",
                "comment",
                "--comment",
                "crio-py portfwd masquerade mark",
                "-j",
                "MARK",
                "--set-xmark",
                mark,
            ]
            if not _holds(snap, SETMARK_CHAIN, f"--set-xmark {mark}"):
                lines += iptables.chain_ops(snap, SETMARK_CHAIN, fresh=True)
                lines.append(iptables.rule_line("-A", SETMARK_CHAIN, setmark))
            if not _holds(snap, MASQ_CHAIN, f"--mark {mark} -j MASQUERADE"):
                lines += iptables.chain_ops(snap, MASQ_CHAIN, fresh=True)
                lines.append(iptables.rule_line("-A", MASQ_CHAIN, ["-m", "mark", "--mark", mark, "-j", "MASQUERADE"]))
            if not snap.jumps("POSTROUTING", MASQ_CHAIN):
                lines.append(
                    iptables.rule_line(
                        "-I",
                        "POSTROUTING",
                        ["1", "-m", "comment", "--comment", "crio-py portfwd requiring masquerade", "-j", MASQ_CHAIN],
                    )
                )
        lines += iptables.chain_ops(snap, TOP_DNAT_CHAIN, fresh=False)
        for entry in ("PREROUTING", "OUTPUT"):
            if not snap.jumps(entry, TOP_DNAT_CHAIN):
                lines.append(
                    iptables.rule_line("-A", entry, ["-m", "addrtype", "--dst-type", "LOCAL", "-j", TOP_DNAT_CHAIN])
                )
        lines += iptables.chain_ops(snap, chain, fresh=chain in snap.chains)
        lines += [iptables.rule_line("-A", chain, r) for r in rules]
        lines += snap.delete_lines(snap.jumps(TOP_DNAT_CHAIN, chain))
        lines += [iptables.rule_line("-A", TOP_DNAT_CHAIN, [*e, "-j", chain]) for e in entries]
        return lines

    iptables.apply("nat", build, v6=addr.version == 6)


def _holds(snap: iptables.Snapshot, chain: str, text: str) -> bool:
    rules = snap.rules_of(chain)
    return chain in snap.chains and len(rules) == 1 and text in rules[0]


def _enable_localnet(addr: ipaddress.IPv4Interface | ipaddress.IPv6Interface) -> None:
    # 127.0.0.1:hostPort is DNATed out of the host's pod-facing interface, which the kernel only
    # allows with route_localnet there.
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        try:
            routes = ipr.route("get", dst=str(addr.ip))
        except Exception:
            return
        for r in routes:
            oif = r.get_attr("RTA_OIF")
            if oif is None:
                continue
            name = ipr.link("get", index=oif)[0].get_attr("IFLA_IFNAME")
            netns.write_sysctl(f"net/ipv4/conf/{name}/route_localnet", "1")
            return


def flush_udp_conntrack(ports: set[int], version: int) -> None:
    """Forget UDP conntrack entries to the host ports: they would keep steering packets to an old pod."""
    if not ports:
        return
    from pyroute2 import Conntrack
    from pyroute2.conntrack import NFCTAttrTuple

    family = socket.AF_INET if version == 4 else socket.AF_INET6
    with Conntrack() as ct:
        for port in sorted(ports):
            match = NFCTAttrTuple(family=family, proto=socket.IPPROTO_UDP, dport=port)
            for entry in list(ct.dump_entries(tuple_orig=match)):
                with contextlib.suppress(Exception):
                    ct.delete(entry)


class PortMap(Plugin):
    """The portmap (chained) plugin."""

    name = "portmap"

    def add(self, args: CmdArgs) -> Result:
        """Set up the DNAT rules for each family the pod has an address in; pass prevResult on."""
        conf = PortMapConf.load(args)
        prev = args.prev_result()
        if prev is None:
            raise CNIError(ERR_INTERNAL, "must be called as chained plugin")
        if not conf.mappings:
            return prev
        conf.pick_ips(prev, args.ifname)
        for version, addr in sorted(conf.container_ips.items()):
            if conf.snat and version == 4:
                _enable_localnet(addr)
            _forward(conf, args.container_id, addr)
            try:
                flush_udp_conntrack({m.host_port for m in conf.mappings if m.protocol == "udp"}, version)
            except Exception as e:  # the rules are in place; stale flows are a nuisance, not a failure
                print(f"portmap: failed to flush UDP conntrack entries: {e}", file=sys.stderr)
        return prev

    def delete(self, args: CmdArgs) -> None:
        """Remove the attachment's DNAT chain in both families; nothing there is fine."""
        conf = PortMapConf.load(args)
        if not conf.mappings:
            return
        chain = dnat_chain(conf.name, args.container_id)
        for v6 in [v == 6 for v in sorted(args.families())]:
            try:
                iptables.apply("nat", lambda snap: iptables.remove_chain(snap, chain, [TOP_DNAT_CHAIN]), v6=v6)
            except (CNIError, FileNotFoundError):
                if not v6:
                    raise

    def check(self, args: CmdArgs) -> None:
        """The attachment's chain exists with its rules and is entered from the top-level chain."""
        conf = PortMapConf.load(args)
        prev = args.prev_result()
        if prev is None:
            raise CNIError(ERR_INTERNAL, "Required prevResult missing")
        if not conf.mappings:
            return
        conf.pick_ips(prev, args.ifname)
        chain = dnat_chain(conf.name, args.container_id)
        for version, addr in conf.container_ips.items():
            snap = iptables.save("nat", v6=version == 6)
            _, rules = dnat_rules(conf, args.container_id, addr)
            if chain not in snap.chains:
                raise CNIError(ERR_INTERNAL, f"chain {chain} not found in iptables table nat")
            if len(snap.rules_of(chain)) != len(rules) or not snap.jumps(TOP_DNAT_CHAIN, chain):
                raise CNIError(ERR_INTERNAL, f"rules of chain {chain} do not match the port mappings")


PLUGIN = PortMap()
