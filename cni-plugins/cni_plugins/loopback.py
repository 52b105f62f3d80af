"""The loopback plugin: brings ``lo`` up inside the container's network namespace."""

from __future__ import annotations

import ipaddress
import os

from pyroute2 import IPRoute

from cni_plugins import netns
from cni_plugins.skel import CmdArgs, Plugin
from cni_plugins.spec import ERR_INTERNAL, CNIError, Interface, IPConfig, Result


def _in_netns(path: str) -> IPRoute:
    fd = netns.open_netns(path)
    try:
        with netns.entered(fd):
            return IPRoute()
    finally:
        os.close(fd)


class Loopback(Plugin):
    """The loopback plugin (the interface name is always ``lo``, whatever CNI_IFNAME says)."""

    name = "loopback"

    def add(self, args: CmdArgs) -> Result:
        """Set lo up; pass a prevResult through or report lo's addresses."""
        try:
            ipr = _in_netns(args.netns)
        except netns.NetnsMissing:
            raise CNIError(ERR_INTERNAL, f"failed to open netns {args.netns!r}") from None
        with ipr:
            ipr.link("set", index=1, state="up")
            addrs = {4: None, 6: None}
            for a in ipr.get_addr(index=1):
                iface = ipaddress.ip_interface(f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}")
                if not iface.ip.is_loopback:
                    raise CNIError(ERR_INTERNAL, f'loopback interface found with non-loopback address "{iface.ip}"')
                addrs.setdefault(iface.version, None)
                if addrs[iface.version] is None:
                    addrs[iface.version] = iface
        prev = args.prev_result()
        if prev is not None:
            return prev
        result = Result(interfaces=[Interface(name="lo", mac="00:00:00:00:00:00", sandbox=args.netns)])
        for version in (4, 6):
            if addrs[version] is not None:
                result.ips.append(IPConfig(address=str(addrs[version]), interface=0))
        return result

    def delete(self, args: CmdArgs) -> None:
        """Set lo down; a missing netns is success."""
        if not args.netns:
            return
        try:
            ipr = _in_netns(args.netns)
        except netns.NetnsMissing:
            return
        with ipr:
            ipr.link("set", index=1, state="down")

    def check(self, args: CmdArgs) -> None:
        """lo must be up."""
        try:
            ipr = _in_netns(args.netns)
        except netns.NetnsMissing:
            raise CNIError(ERR_INTERNAL, f"failed to open netns {args.netns!r}") from None
        with ipr:
            if not ipr.link("get", index=1)[0]["flags"] & 1:
                raise CNIError(ERR_INTERNAL, "loopback interface is down")


PLUGIN = Loopback()
