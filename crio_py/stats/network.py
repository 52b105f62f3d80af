"""Per-interface traffic of a network namespace, read through a process inside it.

``/proc/<pid>/net/dev`` shows the interfaces of the namespace ``pid`` lives in, so the pause
process gives the pod's without entering the namespace.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class InterfaceUsage:
    name: str
    rx_bytes: int
    rx_errors: int
    tx_bytes: int
    tx_errors: int
    rx_packets: int = 0
    rx_dropped: int = 0
    tx_packets: int = 0
    tx_dropped: int = 0


def parse_net_dev(text: str) -> list[InterfaceUsage]:
    """The interfaces of a ``/proc/net/dev`` text, loopback left out (cAdvisor does the same)."""
    out = []
    for line in text.splitlines()[2:]:
        name, sep, counters = line.partition(":")
        name = name.strip()
        fields = counters.split()
        if not sep or name == "lo" or len(fields) < 12:
            continue
        # receive: bytes packets errs drop fifo frame compressed multicast; transmit: bytes packets errs ...
        rx_bytes, rx_packets, rx_errors, rx_dropped = (int(f) for f in fields[0:4])
        tx_bytes, tx_packets, tx_errors, tx_dropped = (int(f) for f in fields[8:12])
        out.append(InterfaceUsage(
            name, rx_bytes, rx_errors, tx_bytes, tx_errors, rx_packets, rx_dropped, tx_packets, tx_dropped
        ))
    return out


def namespace_interfaces(pid: int) -> list[InterfaceUsage] | None:
    """The interfaces of the network namespace of ``pid``; None when the process is gone."""
    try:
        with open(f"/proc/{pid}/net/dev") as f:
            return parse_net_dev(f.read())
    except (OSError, ValueError):
        return None
