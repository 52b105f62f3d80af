"""Plain values the network layer takes and returns; the domain layer builds them from CRI messages."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# CNI names the pod's interface; CRI-O and containerd both use eth0.
DEFAULT_IFNAME = "eth0"
NOT_READY_REASON = "NetworkPluginNotReady"


@dataclass(frozen=True)
class PortMapping:
    """A hostPort: ``protocol`` is "tcp", "udp" or "sctp"."""

    protocol: str
    container_port: int
    host_port: int
    host_ip: str = ""


@dataclass(frozen=True)
class PodAttachment:
    """What CNI needs to know about one pod to attach it to (or detach it from) the network."""

    pod_id: str
    name: str
    namespace: str
    uid: str
    netns_path: str
    port_mappings: tuple[PortMapping, ...] = ()
    bandwidth: dict[str, Any] | None = None
    dns: dict[str, Any] | None = None


@dataclass(frozen=True)
class NetworkStatus:
    """The NetworkReady condition; ``reason`` is "NetworkPluginNotReady" when not ready."""

    ready: bool
    reason: str
    message: str


@dataclass(frozen=True)
class AttachmentResult:
    """The outcome of an ADD: ``ips`` has the primary (first IPv4) first; ``result`` is the CNI result
    in the common (1.x) form."""

    network: str
    interface: str
    ips: list[str]
    result: dict[str, Any]
