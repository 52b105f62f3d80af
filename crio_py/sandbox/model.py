"""A pod sandbox as the daemon remembers it, and its on-disk record."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

from crio_py.cri import api_pb2 as pb
from crio_py.errors import FailedPrecondition
from crio_py.proc import same_process
from crio_py.state import TRANSIENT, MessageRecord

# Lifecycle of a record. "creating" is written before the first side effect, so that a crash
# half-way through RunPodSandbox is found and undone at the next start.
CREATING = "creating"
READY = "ready"
NOTREADY = "notready"
# A removal a step of which failed (CNI DEL, busy mount or cgroup): the record stays, and the
# removal is retried by the next RemovePodSandbox and at start-up.
REMOVING = "removing"
REMOVED = "removed"  # in memory only: the record is gone; later events about the pod are ignored

# The transitions SandboxManager.transition() allows (same phase: fields change, e.g. the network).
LEGAL = {
    CREATING: {CREATING, READY, REMOVING, REMOVED},
    READY: {READY, NOTREADY},
    NOTREADY: {NOTREADY, REMOVING, REMOVED},
    REMOVING: {REMOVING, REMOVED},
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
    # The part of cgroup_parent this pod made (cgroupfs): removed with the pod when nothing else uses it.
    cgroup_parent_created: str = ""
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

    def ready(self) -> bool:
        """READY while the pause process lives. The phase follows its exit event; its identity
        (pid + start time) is checked too, so that a recycled pid never makes a dead pod ready."""
        return self.phase == READY and same_process(self.pid, self.pid_start)

    def files(self) -> dict[str, str]:
        """Container path -> host file of what every container of the pod bind-mounts."""
        files = {f"/etc/{name}": str(Path(self.pod_dir) / name) for name in ("hostname", "hosts", "resolv.conf")}
        files["/dev/shm"] = self.shm_path or "/dev/shm"  # the host's when the pod shares the host IPC
        return files

    def namespace_paths(self) -> dict[str, str]:
        """Paths of the namespaces a container of this pod joins (net, ipc, uts, pid when shared)."""
        if not self.ready():
            raise FailedPrecondition(f"pod sandbox {self.id} is not ready")
        ns = self.namespace_options
        paths = {}
        if not self.host_network:
            paths["net"] = self.netns_path
            paths["uts"] = f"/proc/{self.pid}/ns/uts"
        if ns.ipc != pb.NODE:
            paths["ipc"] = f"/proc/{self.pid}/ns/ipc"
        if ns.pid != pb.NODE:
            # Joined by containers whose own options say POD (kubelet copies the pod's choice).
            paths["pid"] = f"/proc/{self.pid}/ns/pid"
        return paths


def reserved_name(meta: pb.PodSandboxMetadata) -> str:
    """The unique name of a pod, as kubelet's reservations (and CRI-O) spell it."""
    return f"k8s_{meta.name}_{meta.namespace}_{meta.uid}_{meta.attempt}"
