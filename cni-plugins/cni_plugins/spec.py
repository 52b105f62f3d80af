"""CNI specification types: versions, errors, results and their JSON forms.

Output is byte-compatible with the reference plugins (Go's ``encoding/json``): results and errors
are indented by four spaces with no trailing newline, ``VERSION`` is compact with a newline, and
``<``, ``>``, ``&`` are escaped as Go does.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field
from typing import Any

SUPPORTED_VERSIONS: tuple[str, ...] = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
CURRENT_VERSION = "1.1.0"

# Error codes of the CNI specification (section "Error").
ERR_INCOMPATIBLE_VERSION = 1
ERR_UNSUPPORTED_FIELD = 2
ERR_UNKNOWN_CONTAINER = 3
ERR_INVALID_ENV = 4
ERR_IO = 5
ERR_DECODING = 6
ERR_INVALID_CONFIG = 7
ERR_TRY_AGAIN = 11
ERR_NOT_AVAILABLE = 50
ERR_LIMITED_CONNECTIVITY = 51
ERR_INTERNAL = 999


class CNIError(Exception):
    """A failure reported to the runtime as the spec's error JSON."""

    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.details = details

    def to_json(self, cni_version: str) -> bytes:
        """The error object as printed on stdout."""
        obj: dict[str, Any] = {"cniVersion": cni_version, "code": self.code, "msg": self.msg}
        if self.details:
            obj["details"] = self.details
        return go_json(obj, indent=True)


def go_json(obj: Any, indent: bool) -> bytes:
    """JSON as Go's encoding/json writes it (MarshalIndent with 4 spaces, or compact)."""
    if indent:
        text = json.dumps(obj, indent=4, ensure_ascii=False)
    else:
        text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    # These characters only occur inside JSON strings, where Go escapes them.
    for char, esc in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(char, esc)
    return text.encode()


def parse_version(version: str) -> tuple[int, int, int]:
    """Split a semantic version "a.b.c" (minor and micro optional), as libcni does."""
    if not version:
        raise ValueError('invalid version "": the version is empty')
    parts = version.split(".")
    if len(parts) > 3:
        raise ValueError(f"invalid version {version!r}: too many parts")
    try:
        nums = [int(p) for p in parts]
    except ValueError:
        raise ValueError(f"invalid version {version!r}") from None
    while len(nums) < 3:
        nums.append(0)
    return nums[0], nums[1], nums[2]


def version_at_least(version: str, minimum: str) -> bool:
    """Whether ``version`` >= ``minimum``."""
    return parse_version(version) >= parse_version(minimum)


def version_info_json(supported: tuple[str, ...] = SUPPORTED_VERSIONS) -> bytes:
    """The VERSION command's answer, compact with a trailing newline as json.Encoder writes it."""
    return go_json({"cniVersion": CURRENT_VERSION, "supportedVersions": list(supported)}, indent=False) + b"\n"


@dataclass
class Interface:
    """One entry of a result's ``interfaces``."""

    name: str
    mac: str = ""
    mtu: int = 0
    sandbox: str = ""
    socket_path: str = ""
    pci_id: str = ""

    def to_obj(self, version: str) -> dict[str, Any]:
        """JSON object for the result version."""
        obj: dict[str, Any] = {"name": self.name}
        if self.mac:
            obj["mac"] = self.mac
        modern = version_at_least(version, "1.1.0")
        if modern and self.mtu:
            obj["mtu"] = self.mtu
        if self.sandbox:
            obj["sandbox"] = self.sandbox
        if modern and self.socket_path:
            obj["socketPath"] = self.socket_path
        if modern and self.pci_id:
            obj["pciID"] = self.pci_id
        return obj

    @classmethod
    def from_obj(cls, obj: dict[str, Any]) -> Interface:
        """Parse an interface object of any supported version."""
        return cls(
            name=str(obj.get("name", "")),
            mac=str(obj.get("mac", "")),
            mtu=int(obj.get("mtu", 0) or 0),
            sandbox=str(obj.get("sandbox", "")),
            socket_path=str(obj.get("socketPath", "")),
            pci_id=str(obj.get("pciID", "")),
        )


@dataclass
class IPConfig:
    """One entry of a result's ``ips``: an address with its prefix length, e.g. 10.1.2.3/24."""

    address: str
    gateway: str | None = None
    interface: int | None = None

    @property
    def iface(self) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
        """The address as an ipaddress interface object."""
        return ipaddress.ip_interface(self.address)

    def to_obj(self, version: str) -> dict[str, Any]:
        """JSON object for the result version (0.3.x/0.4.0 carry "version")."""
        obj: dict[str, Any] = {}
        if not version_at_least(version, "1.0.0"):
            obj["version"] = str(self.iface.version)
        if self.interface is not None:
            obj["interface"] = self.interface
        obj["address"] = self.address
        if self.gateway:
            obj["gateway"] = self.gateway
        return obj

    @classmethod
    def from_obj(cls, obj: dict[str, Any]) -> IPConfig:
        """Parse an IP object of any supported version."""
        try:
            address = str(ipaddress.ip_interface(obj["address"]))
            gateway = str(ipaddress.ip_address(obj["gateway"])) if obj.get("gateway") else None
        except (KeyError, ValueError, TypeError) as e:
            raise CNIError(ERR_DECODING, f"invalid IP configuration {obj!r}: {e}") from None
        iface = obj.get("interface")
        return cls(address=address, gateway=gateway, interface=int(iface) if iface is not None else None)


@dataclass
class Route:
    """One route: destination network and optional gateway (plus 1.1 attributes)."""

    dst: str
    gw: str | None = None
    mtu: int = 0
    advmss: int = 0
    priority: int = 0
    table: int | None = None
    scope: int | None = None

    def to_obj(self, version: str) -> dict[str, Any]:
        """JSON object for the result version."""
        obj: dict[str, Any] = {"dst": self.dst}
        if self.gw:
            obj["gw"] = self.gw
        if version_at_least(version, "1.1.0"):
            for key, value in (("mtu", self.mtu), ("advmss", self.advmss), ("priority", self.priority)):
                if value:
                    obj[key] = value
            if self.table is not None:
                obj["table"] = self.table
            if self.scope is not None:
                obj["scope"] = self.scope
        return obj

    @classmethod
    def from_obj(cls, obj: dict[str, Any]) -> Route:
        """Parse a route object (result or IPAM config)."""
        try:
            net = ipaddress.ip_network(obj["dst"], strict=False)
            dst = f"{ipaddress.ip_interface(obj['dst']).ip}/{net.prefixlen}"
            gw = str(ipaddress.ip_address(obj["gw"])) if obj.get("gw") else None
        except (KeyError, ValueError, TypeError) as e:
            raise CNIError(ERR_INVALID_CONFIG, f"invalid route {obj!r}: {e}") from None
        return cls(
            dst=dst,
            gw=gw,
            mtu=int(obj.get("mtu", 0) or 0),
            advmss=int(obj.get("advmss", 0) or 0),
            priority=int(obj.get("priority", 0) or 0),
            table=obj.get("table"),
            scope=obj.get("scope"),
        )


@dataclass
class DNS:
    """The ``dns`` object of a result or network configuration."""

    nameservers: list[str] = field(default_factory=list)
    domain: str = ""
    search: list[str] = field(default_factory=list)
    options: list[str] = field(default_factory=list)

    def to_obj(self) -> dict[str, Any]:
        """JSON object; Go prints it even when empty ("dns": {})."""
        obj: dict[str, Any] = {}
        if self.nameservers:
            obj["nameservers"] = self.nameservers
        if self.domain:
            obj["domain"] = self.domain
        if self.search:
            obj["search"] = self.search
        if self.options:
            obj["options"] = self.options
        return obj

    @classmethod
    def from_obj(cls, obj: Any) -> DNS:
        """Parse a dns object; anything that is not an object is an empty DNS."""
        if not isinstance(obj, dict):
            return cls()
        return cls(
            nameservers=[str(x) for x in obj.get("nameservers") or []],
            domain=str(obj.get("domain") or ""),
            search=[str(x) for x in obj.get("search") or []],
            options=[str(x) for x in obj.get("options") or []],
        )


@dataclass
class Result:
    """A plugin result in the current version; printed in any supported version."""

    cni_version: str = CURRENT_VERSION
    interfaces: list[Interface] = field(default_factory=list)
    ips: list[IPConfig] = field(default_factory=list)
    routes: list[Route] = field(default_factory=list)
    dns: DNS = field(default_factory=DNS)

    def to_obj(self, version: str) -> dict[str, Any]:
        """The result converted to ``version`` (0.3.0 ... 1.1.0)."""
        if version not in SUPPORTED_VERSIONS:
            raise CNIError(ERR_INCOMPATIBLE_VERSION, f"cannot convert result to version {version!r}")
        obj: dict[str, Any] = {"cniVersion": version}
        if self.interfaces:
            obj["interfaces"] = [i.to_obj(version) for i in self.interfaces]
        if self.ips:
            obj["ips"] = [i.to_obj(version) for i in self.ips]
        if self.routes:
            obj["routes"] = [r.to_obj(version) for r in self.routes]
        obj["dns"] = self.dns.to_obj()
        return obj

    def to_json(self, version: str) -> bytes:
        """Result bytes as printed on stdout."""
        return go_json(self.to_obj(version), indent=True)

    @classmethod
    def from_obj(cls, obj: Any, default_version: str = CURRENT_VERSION) -> Result:
        """Parse a result (or prevResult) of any supported version into the current form."""
        if not isinstance(obj, dict):
            raise CNIError(ERR_DECODING, "result is not a JSON object")
        version = str(obj.get("cniVersion") or default_version)
        if version not in SUPPORTED_VERSIONS:
            raise CNIError(ERR_INCOMPATIBLE_VERSION, f"unsupported result version {version!r}")
        return cls(
            cni_version=version,
            interfaces=[Interface.from_obj(i) for i in obj.get("interfaces") or []],
            ips=[IPConfig.from_obj(i) for i in obj.get("ips") or []],
            routes=[Route.from_obj(r) for r in obj.get("routes") or []],
            dns=DNS.from_obj(obj.get("dns")),
        )

    @classmethod
    def from_json(cls, data: bytes, default_version: str = CURRENT_VERSION) -> Result:
        """Parse result bytes (a delegated plugin's stdout)."""
        try:
            obj = json.loads(data)
        except ValueError as e:
            raise CNIError(ERR_DECODING, f"failed to decode result: {e}") from None
        return cls.from_obj(obj, default_version)


def parse_cni_args(raw: str, known: tuple[str, ...]) -> dict[str, str]:
    """Parse CNI_ARGS ("K=V;K2=V2"); unknown keys are errors unless IgnoreUnknown is true."""
    pairs: dict[str, str] = {}
    if not raw:
        return pairs
    for item in raw.split(";"):
        key, sep, value = item.partition("=")
        if not sep:
            raise CNIError(ERR_INVALID_ENV, f"ARGS: invalid pair {item!r}")
        pairs[key] = value
    ignore = pairs.get("IgnoreUnknown", "").lower() in ("1", "true")
    unknown = [k for k in pairs if k not in known and k != "IgnoreUnknown"]
    if unknown and not ignore:
        raise CNIError(ERR_INVALID_ENV, f"ARGS: unknown args {unknown!r}")
    return {k: v for k, v in pairs.items() if k in known}
