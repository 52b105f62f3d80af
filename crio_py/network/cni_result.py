"""CNI results: validation per version, conversion to one common form, and the pod's IPs.

The common form is the 1.x shape (``ips`` without the old per-address ``version``); it is what the
rest of crio-py reads. ``render`` turns it back into the shape a given config version expects, for
``prevResult`` and for the on-disk cache.
"""

from __future__ import annotations

import copy
import ipaddress
from typing import Any

from crio_py.network.cni_config import SUPPORTED_VERSIONS, version_at_least

# Fields each version defines; render() drops what an older reader would not know.
_IFACE_FIELDS = ("name", "mac", "mtu", "sandbox", "socketPath", "pciID")
_ROUTE_FIELDS = ("dst", "gw", "mtu", "advmss", "priority", "table", "scope")
_OLD_IFACE_FIELDS = ("name", "mac", "sandbox")
_OLD_ROUTE_FIELDS = ("dst", "gw")


class ResultInvalid(Exception):
    """A plugin printed something that is not a valid result for its version."""


def _ip(value: Any, where: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(value)
    except (TypeError, ValueError) as exc:
        raise ResultInvalid(f"{where}: {value!r} is not an IP address") from exc


def _cidr(value: Any, where: str) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
    if not isinstance(value, str) or "/" not in value:
        raise ResultInvalid(f"{where}: {value!r} is not an address in CIDR form")
    try:
        return ipaddress.ip_interface(value)
    except ValueError as exc:
        raise ResultInvalid(f"{where}: {value!r} is not an address in CIDR form") from exc


def _list_of_dicts(data: dict[str, Any], key: str) -> list[dict[str, Any]]:
    items = data.get(key)
    if items is None:
        return []
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise ResultInvalid(f"{key} must be a list of objects")
    return items


def normalize(data: Any) -> dict[str, Any]:
    """Validate a result of any supported version and return it in the common form."""
    if not isinstance(data, dict):
        raise ResultInvalid("the result must be a JSON object")
    version = data.get("cniVersion")
    if not isinstance(version, str) or version not in SUPPORTED_VERSIONS:
        raise ResultInvalid(f"result cniVersion {version!r} is not supported")
    out = copy.deepcopy(data)
    interfaces = _list_of_dicts(out, "interfaces")
    for i, iface in enumerate(interfaces):
        if not isinstance(iface.get("name"), str) or not iface["name"]:
            raise ResultInvalid(f"interfaces[{i}].name is missing")
    old = not version_at_least(version, "1.0.0")
    for i, ip in enumerate(_list_of_dicts(out, "ips")):
        where = f"ips[{i}]"
        addr = _cidr(ip.get("address"), f"{where}.address")
        if "gateway" in ip and ip["gateway"] not in (None, ""):
            _ip(ip["gateway"], f"{where}.gateway")
        if "interface" in ip and ip["interface"] is not None:
            idx = ip["interface"]
            if isinstance(idx, bool) or not isinstance(idx, int) or not 0 <= idx < len(interfaces):
                raise ResultInvalid(f"{where}.interface {idx!r} is not an index into interfaces")
        fam = ip.pop("version", None)
        if old and fam not in ("4", "6"):
            raise ResultInvalid(f"{where}.version must be \"4\" or \"6\" in a {version} result")
        if fam is not None and fam != str(addr.version):
            raise ResultInvalid(f"{where}.version {fam!r} does not match address {ip['address']}")
    for i, route in enumerate(_list_of_dicts(out, "routes")):
        _cidr(route.get("dst"), f"routes[{i}].dst")
        if route.get("gw") not in (None, ""):
            _ip(route["gw"], f"routes[{i}].gw")
    dns = out.get("dns")
    if dns is not None and not isinstance(dns, dict):
        raise ResultInvalid("dns must be an object")
    return out


def render(common: dict[str, Any], version: str) -> dict[str, Any]:
    """The common-form result in the shape of ``version`` (what a plugin of that version reads)."""
    out = copy.deepcopy(common)
    out["cniVersion"] = version
    new = version_at_least(version, "1.1.0")
    iface_fields = _IFACE_FIELDS if new else _OLD_IFACE_FIELDS
    route_fields = _ROUTE_FIELDS if new else _OLD_ROUTE_FIELDS
    if "interfaces" in out:
        out["interfaces"] = [{k: v for k, v in i.items() if k in iface_fields} for i in out["interfaces"]]
    if "routes" in out:
        out["routes"] = [{k: v for k, v in r.items() if k in route_fields} for r in out["routes"]]
    if not version_at_least(version, "1.0.0"):
        for ip in out.get("ips", []):
            ip["version"] = str(ipaddress.ip_interface(ip["address"]).version)
    return out


def pod_ips(common: dict[str, Any]) -> list[str]:
    """The pod's addresses (no prefix length): the first IPv4 first, then the rest in result order.

    Addresses on host-side interfaces (an interface entry without ``sandbox``) are not the pod's.
    """
    interfaces = common.get("interfaces") or []
    ips: list[str] = []
    for ip in common.get("ips") or []:
        idx = ip.get("interface")
        if idx is not None and not interfaces[idx].get("sandbox"):
            continue
        addr = str(ipaddress.ip_interface(ip["address"]).ip)
        if addr not in ips:
            ips.append(addr)
    v4 = [a for a in ips if ipaddress.ip_address(a).version == 4]
    if v4:
        ips.remove(v4[0])
        ips.insert(0, v4[0])
    return ips
