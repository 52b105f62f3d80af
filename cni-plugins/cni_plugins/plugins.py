"""Plugin name -> implementation, imported on first use."""

from __future__ import annotations

import importlib

from cni_plugins.skel import Plugin

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
