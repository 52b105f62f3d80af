"""host-local IPAM: addresses from configured ranges, one file per allocated IP.

The on-disk format and locking are the reference plugin's, so both implementations can share a
``dataDir``: ``<dataDir>/<network>/<ip>`` holds ``<container id>\\r\\n<ifname>``,
``last_reserved_ip.<rangeset index>`` the last address handed out, and every change happens
under ``flock`` on ``<dataDir>/<network>/lock``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import ipaddress
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from cni_plugins.skel import CmdArgs, Plugin
from cni_plugins.spec import (
    DNS,
    ERR_INTERNAL,
    ERR_INVALID_CONFIG,
    ERR_NOT_AVAILABLE,
    CNIError,
    IPConfig,
    Result,
    Route,
    parse_cni_args,
)

DEFAULT_DATA_DIR = "/var/lib/cni/networks"
LAST_IP_PREFIX = "last_reserved_ip."
LINE_BREAK = "\r\n"

IPAddr = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNet = ipaddress.IPv4Network | ipaddress.IPv6Network


def _ip(value: Any, what: str) -> IPAddr:
    try:
        return ipaddress.ip_address(str(value))
    except ValueError:
        raise CNIError(ERR_INVALID_CONFIG, f"invalid {what} {value!r}") from None


@dataclass
class Range:
    """One address range: a subnet, the inclusive start/end to allocate from and its gateway."""

    subnet: IPNet
    range_start: IPAddr
    range_end: IPAddr
    gateway: IPAddr | None

    @classmethod
    def from_obj(cls, obj: Any) -> Range:
        """Parse and canonicalise a range object, defaulting start, end and gateway."""
        if not isinstance(obj, dict) or not obj.get("subnet"):
            raise CNIError(ERR_INVALID_CONFIG, f"invalid range {obj!r}: missing subnet")
        try:
            subnet = ipaddress.ip_network(str(obj["subnet"]), strict=False)
        except ValueError:
            raise CNIError(ERR_INVALID_CONFIG, f"invalid subnet {obj['subnet']!r}") from None
        if subnet.prefixlen > subnet.max_prefixlen - 2:
            raise CNIError(ERR_INVALID_CONFIG, f"Network {subnet} too small to allocate from")
        given = ipaddress.ip_interface(str(obj["subnet"])).ip
        if given != subnet.network_address:
            raise CNIError(
                ERR_INVALID_CONFIG,
                f"Network has host bits set. For a subnet mask of length {subnet.prefixlen} "
                f"the network address is {subnet.network_address}",
            )
        first = subnet.network_address + 1
        # The reference keeps the IPv4 broadcast address out and uses the last IPv6 address.
        last = subnet.broadcast_address - 1 if subnet.version == 4 else subnet.broadcast_address
        gateway = _ip(obj["gateway"], "gateway") if obj.get("gateway") else first
        start = _ip(obj["rangeStart"], "rangeStart") if obj.get("rangeStart") else first
        end = _ip(obj["rangeEnd"], "rangeEnd") if obj.get("rangeEnd") else last
        if start not in subnet:
            raise CNIError(ERR_INVALID_CONFIG, f"RangeStart {start} not in network {subnet}")
        if end not in subnet:
            raise CNIError(ERR_INVALID_CONFIG, f"RangeEnd {end} not in network {subnet}")
        return cls(subnet, start, end, gateway)

    def contains(self, addr: IPAddr) -> bool:
        """Whether ``addr`` is allocatable from this range."""
        return (
            addr.version == self.subnet.version and addr in self.subnet and self.range_start <= addr <= self.range_end
        )

    def overlaps(self, other: Range) -> bool:
        """Whether two ranges share an address."""
        if self.subnet.version != other.subnet.version:
            return False
        return (
            self.contains(other.range_start)
            or self.contains(other.range_end)
            or other.contains(self.range_start)
            or other.contains(self.range_end)
        )

    def __str__(self) -> str:
        return f"{self.range_start}-{self.range_end}"


@dataclass
class RangeSet:
    """Ranges of one address family; one address is allocated per range set."""

    ranges: list[Range]

    @classmethod
    def from_obj(cls, obj: Any) -> RangeSet:
        """Parse a list of range objects."""
        if not isinstance(obj, list) or not obj:
            raise CNIError(ERR_INVALID_CONFIG, "empty range set")
        ranges = [Range.from_obj(r) for r in obj]
        if len({r.subnet.version for r in ranges}) > 1:
            raise CNIError(ERR_INVALID_CONFIG, "mixed address families")
        for i, r1 in enumerate(ranges):
            for r2 in ranges[i + 1 :]:
                if r1.overlaps(r2):
                    raise CNIError(ERR_INVALID_CONFIG, f"subnets {r1} and {r2} overlap")
        return cls(ranges)

    def range_for(self, addr: IPAddr) -> Range | None:
        """The range that holds ``addr``."""
        for r in self.ranges:
            if r.contains(addr):
                return r
        return None

    def overlaps(self, other: RangeSet) -> bool:
        """Whether any range of the two sets overlap."""
        return any(r1.overlaps(r2) for r1 in self.ranges for r2 in other.ranges)

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.ranges)

    def candidates(self, last: IPAddr | None) -> Iterator[tuple[Range, IPAddr]]:
        """Every allocatable address once, starting after ``last`` as the reference iterates."""
        idx, cur = 0, None
        if last is not None:
            for i, r in enumerate(self.ranges):
                if r.contains(last):
                    idx, cur = i, last
                    break
        start: IPAddr | None = None
        while True:
            r = self.ranges[idx]
            if cur is None:
                cur = r.range_start
            elif cur == r.range_end:
                idx = (idx + 1) % len(self.ranges)
                r = self.ranges[idx]
                cur = r.range_start
            else:
                cur = cur + 1
            if start is None:
                start = cur
            elif cur == start:
                return
            if cur != r.gateway:
                yield r, cur


@dataclass
class IPAMConfig:
    """The ``ipam`` section plus the requested addresses from args and capabilities."""

    name: str
    range_sets: list[RangeSet]
    routes: list[Route] = field(default_factory=list)
    data_dir: str = DEFAULT_DATA_DIR
    resolv_conf: str = ""
    requested: list[IPAddr] = field(default_factory=list)


def load_config(args: CmdArgs) -> IPAMConfig:
    """Parse the network config the way the reference host-local does."""
    conf = args.conf
    ipam = conf.get("ipam")
    if not isinstance(ipam, dict):
        raise CNIError(ERR_INVALID_CONFIG, "IPAM config missing 'ipam' key")
    requested: list[IPAddr] = []
    env_ip = parse_cni_args(
        args.args, ("IP", "K8S_POD_NAMESPACE", "K8S_POD_NAME", "K8S_POD_INFRA_CONTAINER_ID", "K8S_POD_UID", "MAC")
    ).get("IP")
    if env_ip:
        requested.append(_ip(env_ip, "IP in CNI_ARGS"))
    cni_args = (conf.get("args") or {}).get("cni") or {}
    runtime = conf.get("runtimeConfig") or {}
    for value in [*(cni_args.get("ips") or []), *(runtime.get("ips") or [])]:
        requested.append(_ip(str(value).split("/")[0], "requested IP"))
    raw_sets: list[Any] = list(runtime.get("ipRanges") or [])
    if ipam.get("subnet"):
        raw_sets.append([{k: ipam.get(k) for k in ("subnet", "rangeStart", "rangeEnd", "gateway")}])
    raw_sets.extend(ipam.get("ranges") or [])
    if not raw_sets:
        raise CNIError(ERR_INVALID_CONFIG, "no IP ranges specified")
    sets: list[RangeSet] = []
    for i, raw in enumerate(raw_sets):
        try:
            sets.append(RangeSet.from_obj(raw))
        except CNIError as e:
            raise CNIError(ERR_INVALID_CONFIG, f"invalid range set {i}: {e.msg}") from None
    for i, s1 in enumerate(sets):
        for j, s2 in enumerate(sets[i + 1 :]):
            if s1.overlaps(s2):
                raise CNIError(ERR_INVALID_CONFIG, f"range set {i} overlaps with {i + j + 1}")
    return IPAMConfig(
        name=args.name,
        range_sets=sets,
        routes=[Route.from_obj(r) for r in ipam.get("routes") or []],
        data_dir=str(ipam.get("dataDir") or DEFAULT_DATA_DIR),
        resolv_conf=str(ipam.get("resolvConf") or ""),
        requested=requested,
    )


def parse_resolv_conf(path: str) -> DNS:
    """The DNS settings of a resolv.conf file."""
    dns = DNS()
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise CNIError(ERR_INVALID_CONFIG, f"cannot read resolvConf {path}: {e}") from None
    for line in lines:
        fields = line.split("#")[0].split()
        if len(fields) < 2:
            continue
        key, values = fields[0], fields[1:]
        if key == "nameserver":
            dns.nameservers.append(values[0])
        elif key == "domain":
            dns.domain = values[0]
        elif key == "search":
            dns.search = values
        elif key == "options":
            dns.options.extend(values)
    return dns


class Store:
    """Allocation files of one network, locked with flock like the reference's disk backend."""

    def __init__(self, data_dir: str, network: str) -> None:
        self.dir = os.path.join(data_dir, network)
        os.makedirs(self.dir, mode=0o755, exist_ok=True)
        self._lock_fd = -1

    @contextlib.contextmanager
    def locked(self) -> Iterator[Store]:
        """Hold the network's lock (shared with the reference plugin) for the block."""
        fd = os.open(os.path.join(self.dir, "lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield self
        finally:
            os.close(fd)

    def reserve(self, cid: str, ifname: str, addr: IPAddr, range_id: int) -> bool:
        """Claim ``addr``; False when another attachment holds it."""
        path = os.path.join(self.dir, str(addr))
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        except FileExistsError:
            return False
        try:
            os.write(fd, (cid.strip() + LINE_BREAK + ifname).encode())
        except OSError:
            os.close(fd)
            os.unlink(path)
            raise
        os.close(fd)
        with open(os.path.join(self.dir, LAST_IP_PREFIX + str(range_id)), "w") as f:
            f.write(str(addr))
        return True

    def last_reserved(self, range_id: int) -> IPAddr | None:
        """The address last handed out from range set ``range_id``."""
        try:
            with open(os.path.join(self.dir, LAST_IP_PREFIX + str(range_id))) as f:
                return ipaddress.ip_address(f.read().strip())
        except (OSError, ValueError):
            return None

    def entries(self) -> Iterator[tuple[str, str]]:
        """(file name, stripped content) of every allocation file."""
        with os.scandir(self.dir) as it:
            for entry in it:
                if entry.name == "lock" or entry.name.startswith(LAST_IP_PREFIX) or not entry.is_file():
                    continue
                try:
                    with open(entry.path, "rb") as f:
                        yield entry.name, f.read().decode(errors="replace").strip()
                except OSError:
                    continue

    def get_by_id(self, cid: str, ifname: str) -> list[IPAddr]:
        """Addresses held by the attachment (or by the container in the old one-line format)."""
        match, old = cid.strip() + LINE_BREAK + ifname, cid.strip()
        found = []
        for name, content in self.entries():
            if content in (match, old):
                with contextlib.suppress(ValueError):
                    found.append(ipaddress.ip_address(name))
        return found

    def release_by_id(self, cid: str, ifname: str) -> int:
        """Release the attachment's addresses; returns how many files went."""
        match = cid.strip() + LINE_BREAK + ifname
        released = self._release_matching(match)
        if not released:
            released = self._release_matching(cid.strip())
        return released

    def _release_matching(self, match: str) -> int:
        count = 0
        for name, content in list(self.entries()):
            if content == match:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(self.dir, name))
                    count += 1
        return count

    def release(self, name: str) -> None:
        """Remove one allocation file."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(self.dir, name))


def allocate(store: Store, cfg: IPAMConfig, cid: str, ifname: str) -> list[IPConfig]:
    """Reserve one address per range set (the requested one where given); all or nothing."""
    requested = list(cfg.requested)
    got: list[IPConfig] = []
    held = store.get_by_id(cid, ifname)
    try:
        for idx, rset in enumerate(cfg.range_sets):
            want = next((a for a in requested if rset.range_for(a) is not None), None)
            if want is not None:
                requested.remove(want)
                r = rset.range_for(want)
                assert r is not None
                if want == r.gateway:
                    raise CNIError(ERR_INTERNAL, f"requested ip {want} is subnet's gateway")
                if not store.reserve(cid, ifname, want, idx):
                    raise CNIError(ERR_INTERNAL, f"requested IP address {want} is not available in range set {rset}")
                got.append(_ipconfig(r, want))
                continue
            for addr in held:
                if rset.range_for(addr) is not None:
                    raise CNIError(
                        ERR_INTERNAL, f"{addr} has been allocated to {cid}, duplicate allocation is not allowed"
                    )
            for r, addr in rset.candidates(store.last_reserved(idx)):
                if store.reserve(cid, ifname, addr, idx):
                    got.append(_ipconfig(r, addr))
                    break
            else:
                raise CNIError(
                    ERR_INTERNAL, f"failed to allocate for range {idx}: no IP addresses available in range set: {rset}"
                )
        if requested:
            raise CNIError(ERR_INTERNAL, "failed to allocate all requested IPs: " + " ".join(str(a) for a in requested))
    except BaseException:
        for ipc in got:
            store.release(str(ipc.iface.ip))
        raise
    return got


def _ipconfig(r: Range, addr: IPAddr) -> IPConfig:
    return IPConfig(address=f"{addr}/{r.subnet.prefixlen}", gateway=str(r.gateway) if r.gateway else None)


class HostLocal(Plugin):
    """The host-local IPAM plugin."""

    name = "host-local"

    def add(self, args: CmdArgs) -> Result:
        """Allocate addresses for the attachment."""
        cfg = load_config(args)
        result = Result()
        if cfg.resolv_conf:
            result.dns = parse_resolv_conf(cfg.resolv_conf)
        store = Store(cfg.data_dir, cfg.name)
        with store.locked():
            result.ips = allocate(store, cfg, args.container_id, args.ifname)
        result.routes = cfg.routes
        return result

    def delete(self, args: CmdArgs) -> None:
        """Release the attachment's addresses; nothing held is fine."""
        cfg = load_config(args)
        store = Store(cfg.data_dir, cfg.name)
        with store.locked():
            store.release_by_id(args.container_id, args.ifname)

    def check(self, args: CmdArgs) -> None:
        """Fail unless the attachment holds an address."""
        cfg = load_config(args)
        store = Store(cfg.data_dir, cfg.name)
        with store.locked():
            if not store.get_by_id(args.container_id, args.ifname):
                raise CNIError(
                    ERR_INTERNAL, f"host-local: Failed to find address added by container {args.container_id}"
                )

    def status(self, args: CmdArgs) -> None:
        """Ready when the allocation directory is writable."""
        cfg = load_config(args)
        try:
            store = Store(cfg.data_dir, cfg.name)
            if not os.access(store.dir, os.W_OK):
                raise OSError(errno.EACCES, "not writable")
        except OSError as e:
            raise CNIError(ERR_NOT_AVAILABLE, f"host-local: data directory unusable: {e}") from None

    def gc(self, args: CmdArgs) -> None:
        """Release every allocation not listed in cni.dev/valid-attachments."""
        cfg = load_config(args)
        valid = args.conf.get("cni.dev/valid-attachments") or []
        keep_pairs = {f"{str(v.get('containerID', '')).strip()}{LINE_BREAK}{v.get('ifname', '')}" for v in valid}
        keep_ids = {str(v.get("containerID", "")).strip() for v in valid}
        store = Store(cfg.data_dir, cfg.name)
        with store.locked():
            for name, content in list(store.entries()):
                if content in keep_pairs or (LINE_BREAK not in content and content in keep_ids):
                    continue
                store.release(name)


PLUGIN = HostLocal()
