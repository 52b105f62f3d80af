"""A container as the daemon remembers it, and its on-disk record."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from crio_py.cri import api_pb2 as pb
from crio_py.state import TRANSIENT, MessageRecord

CREATING = "creating"  # written before the first side effect; undone at start-up if found
CREATED = "created"
RUNNING = "running"
EXITED = "exited"
UNKNOWN = "unknown"  # gone, but its monitor died first: nobody could record how it ended
# A removal a step of which failed (busy mount or cgroup, runc delete): the record stays, and
# the removal is retried by the next RemoveContainer and at start-up.
REMOVING = "removing"
REMOVED = "removed"  # in memory only: the record is gone; later events about it are ignored

# The transitions ContainerManager.transition() allows (same phase: fields change).
LEGAL = {
    CREATING: {CREATING, CREATED, REMOVING, REMOVED},
    CREATED: {RUNNING, EXITED, UNKNOWN, REMOVING, REMOVED},
    RUNNING: {RUNNING, EXITED, UNKNOWN},
    UNKNOWN: {EXITED, REMOVING, REMOVED},
    EXITED: {REMOVING, REMOVED},
    REMOVING: {REMOVING, REMOVED},
    REMOVED: set(),
}
# Phases in which the container's process may still run.
LIVE = (CREATED, RUNNING)

CRI_STATE = {
    CREATED: pb.CONTAINER_CREATED,
    RUNNING: pb.CONTAINER_RUNNING,
    EXITED: pb.CONTAINER_EXITED,
    UNKNOWN: pb.CONTAINER_UNKNOWN,
    REMOVING: pb.CONTAINER_EXITED,
}


@dataclass
class Container(MessageRecord):
    """One container; ``config`` is the CreateContainer request's ContainerConfig."""

    id: str
    name: str  # reserved name: k8s_<container>_<pod>_<namespace>_<uid>_<attempt>
    pod_id: str
    config: pb.ContainerConfig
    image_id: str
    image_ref: str  # a repo digest of the image, as kubelet expects in image_ref
    image_name: str  # what the request asked for
    created_at_ns: int
    runtime_handler: str
    phase: str = CREATING
    started_at_ns: int = 0
    finished_at_ns: int = 0
    exit_code: int = 0
    reason: str = ""
    message: str = ""
    pid: int = 0
    pid_start: int = 0  # the process's start time (proc.start_time): pid + start = identity
    boot_id: str = ""  # the boot the container was created in
    log_path: str = ""
    bundle: str = ""
    rootfs: str = ""
    cgroups_path: str = ""
    stop_signal: str = ""
    # The identity the process runs as, resolved against the image at create (for the status).
    uid: int = 0
    gid: int = 0
    additional_gids: list[int] = field(default_factory=list)
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False, metadata=TRANSIENT)
    # Notified (under ``lock``) at every transition: Stop waits on it for the exit.
    changed: threading.Condition = field(init=False, repr=False, compare=False, metadata=TRANSIENT)

    def __post_init__(self) -> None:
        self.changed = threading.Condition(self.lock)


def reserved_name(meta: pb.ContainerMetadata, pod_meta: pb.PodSandboxMetadata) -> str:
    """The unique name of a container, as CRI-O spells it."""
    return f"k8s_{meta.name}_{pod_meta.name}_{pod_meta.namespace}_{pod_meta.uid}_{meta.attempt}"
