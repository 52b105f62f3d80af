"""Plugin name -> implementation, imported on first use."""

from __future__ import annotations

import importlib

from cni_plugins.skel import Plugin, run

MODULES = {
    "bridge": "cni_plugins.bridge",
    "host-local": "cni_plugins.host_local",
    "loopback": "cni_plugins.loopback",
    "portmap": "cni_plugins.portmap",
}


def get(name: str) -> Plugin:
    """The plugin called ``name``; KeyError for an unknown one."""
    plugin: Plugin = importlib.import_module(MODULES[name]).PLUGIN
    return plugin


def preload() -> None:
    """Import every plugin (and with them pyroute2), as the long-lived service does once."""
    for name in MODULES:
        get(name)


def warm_up() -> None:
    """Exercise the common code paths once, so that their first use in a request is not slow.

    In a freshly forked worker the first netlink round trip costs ~4 ms more than later ones:
    pyroute2 and asyncio touch hundreds of copy-on-write pages. Workers do this while idle.
    """
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        ipr.link("get", index=1)
        ipr.get_addr(index=1)
    for name in MODULES:
        run(get(name), {"CNI_COMMAND": "VERSION"}, b"")
