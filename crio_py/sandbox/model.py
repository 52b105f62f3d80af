"""A pod sandbox as the daemon remembers it, and its on-disk record."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from crio_py.cri import api_pb2 as pb
from crio_py.state import TRANSIENT, MessageRecord

# Lifecycle of a record. "creating" is written before the first side effect, so that a crash
# half-way through RunPodSandbox is found and undone at the next start.
CREATING = "creating"
READY = "ready"
NOTREADY = "notready"
REMOVED = "removed"  # in memory only: the record is gone; later events about the pod are ignored

# The transitions SandboxManager.transition() allows (same phase: fields change, e.g. the network).
LEGAL = {
    CREATING: {CREATING, READY, REMOVED},
    READY: {READY, NOTREADY},
    NOTREADY: {NOTREADY, REMOVED},
    REMOVED: set(),
}


@dataclass
class Sandbox(MessageRecord):
    """One pod sandbox; ``config`` is the RunPodSandbox request's PodSandboxConfig."""

    id: str
    name: str  # the reserved name: k8s_<name>_<namespace>_<uid>_<attempt>
    config: pb.PodSandboxConfig
    runtime_handler: str
    created_at_ns: int
    phase: str = CREATING
    netns_path: str = ""
    ips: list[str] = field(default_factory=list)
    cgroup_parent: str = ""
    pid: int = 0
    pid_start: int = 0  # the pause process's start time (proc.start_time): pid + start = identity
    boot_id: str = ""  # the boot the pod was created in (after a reboot it is NOTREADY)
    shm_path: str = ""
    pod_dir: str = ""
    rootfs: str = ""
    bundle: str = ""
    network_attached: bool = False
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False, metadata=TRANSIENT)
    # Notified (under ``lock``) at every transition.
    changed: threading.Condition = field(init=False, repr=False, compare=False, metadata=TRANSIENT)

    def __post_init__(self) -> None:
        self.changed = threading.Condition(self.lock)

    @property
    def namespace_options(self) -> pb.NamespaceOption:
        return self.config.linux.security_context.namespace_options

    @property
    def host_network(self) -> bool:
        return self.namespace_options.network == pb.NODE


def reserved_name(meta: pb.PodSandboxMetadata) -> str:
    """The unique name of a pod, as kubelet's reservations (and CRI-O) spell it."""
    return f"k8s_{meta.name}_{meta.namespace}_{meta.uid}_{meta.attempt}"
