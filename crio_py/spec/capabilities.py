"""Linux capabilities of a container: defaults, add/drop (with ``ALL``), privileged."""

from __future__ import annotations

import functools
import logging
from pathlib import Path

from crio_py.errors import InvalidArgument

log = logging.getLogger(__name__)

# In bit order: the position is the capability number.
ALL_CAPABILITIES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER",
    "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
)


def normalize(name: str) -> str:
    """``net_admin``, ``NET_ADMIN`` and ``CAP_NET_ADMIN`` all become ``CAP_NET_ADMIN``; unknown is InvalidArgument."""
    upper = name.strip().upper()
    full = upper if upper.startswith("CAP_") else "CAP_" + upper
    if full not in ALL_CAPABILITIES:
        raise InvalidArgument(f"unknown capability {name!r}")
    return full


def caps_from_mask(mask: int) -> list[str]:
    """The capability names of the bits set in ``mask`` (as in /proc/<pid>/status)."""
    return [name for bit, name in enumerate(ALL_CAPABILITIES) if mask >> bit & 1]


@functools.cache
def available() -> tuple[str, ...]:
    """The daemon's own bounding set: no container can hold a capability outside it."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapBnd:"):
            return tuple(caps_from_mask(int(line.split()[1], 16)))
    return tuple(ALL_CAPABILITIES)


_warned: set[str] = set()


def resolve(default: list[str], add: list[str], drop: list[str], privileged: bool) -> list[str]:
    """The container's capability set, in bit order.

    The order is containerd's and CRI-O's: start from ``default`` (everything when privileged),
    drop ``ALL`` empties the set, add ``ALL`` fills it, then the named adds, then the named drops.
    Capabilities the daemon itself lacks are left out (runc could not grant them and would fail
    the whole container), logged once each.
    """
    every = set(ALL_CAPABILITIES)
    added = {c.upper() for c in add} - {"ALL"}
    dropped = {c.upper() for c in drop} - {"ALL"}
    wanted = every if privileged else {normalize(c) for c in default}
    if not privileged:
        if any(c.upper() == "ALL" for c in drop):
            wanted = set()
        if any(c.upper() == "ALL" for c in add):
            wanted = set(every)
        wanted = (wanted | {normalize(c) for c in added}) - {normalize(c) for c in dropped}
    have = set(available())
    for cap in sorted(wanted - have):
        if cap not in _warned and not privileged:
            _warned.add(cap)
            log.warning(
                "capability %s requested but crio-py does not hold it; left out", cap, extra={"capability": cap}
            )
    return [c for c in ALL_CAPABILITIES if c in wanted and c in have]
