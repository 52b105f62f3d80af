"""PodLifecycle: pod-wide operations over the sandbox and container managers."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from google.protobuf.message import Message

from crio_py.container import Container, ContainerManager
from crio_py.container.model import reserved_name as container_name
from crio_py.cri import api_pb2 as pb
from crio_py.errors import AlreadyExists, CrioError, FailedPrecondition
from crio_py.lifecycle.creations import Creations
from crio_py.lifecycle.rwlock import RWLock
from crio_py.monitor import ExitStatus, MonitorClient
from crio_py.oci import RuntimeRegistry
from crio_py.proc import boot_id
from crio_py.sandbox import Sandbox, SandboxManager
from crio_py.sandbox.model import READY, REMOVING
from crio_py.sandbox.model import reserved_name as sandbox_name

log = logging.getLogger(__name__)

# How long StopPodSandbox gives each container after its stop signal (they get it all at once).
POD_STOP_TIMEOUT = 10
T = TypeVar("T")
Made = TypeVar("Made", Sandbox, Container)


class PodLifecycle:
    """Runs, stops and removes pods with their containers; creates containers under the pod lock."""

    def __init__(
        self,
        sandboxes: SandboxManager,
        containers: ContainerManager,
        monitors: MonitorClient,
        runtimes: RuntimeRegistry,
    ) -> None:
        self.sandboxes = sandboxes
        self.containers = containers
        self.runtimes = runtimes
        self._monitors = monitors
        self._locks: dict[str, RWLock] = {}
        self._pod_creations: Creations[Sandbox] = Creations("pod sandbox")
        self._container_creations: Creations[Container] = Creations("container")
        self._locks_guard = threading.Lock()

    # ---- start-up and exits --------------------------------------------------------------

    def restore(self) -> None:
        """After both managers read their records: watch every pod's monitor again (exits while
        the daemon was down arrive, a dead monitor is noticed), let the runtime say which created
        containers really run, and finish pod removals a failed step interrupted."""
        this_boot = boot_id()
        for pod in self.sandboxes.list():
            if pod.boot_id in (this_boot, ""):
                self._monitors.watch(pod.id)
        self.containers.finish_interrupted_starts()
        for pod in self.sandboxes.list():
            if pod.phase == REMOVING:
                try:
                    self.remove_pod(pod)
                except CrioError as exc:
                    log.error("unfinished pod removal failed again", extra={"pod_id": pod.id, "error": exc.message})

    def on_exit(self, pod_id: str, container_id: str, status: ExitStatus) -> None:
        """An exit a monitor pushed: the pod's own id is its pause container."""
        if container_id == pod_id:
            self.sandboxes.on_pause_exit(pod_id)
        else:
            self.containers.on_exit(pod_id, container_id, status)

    def on_monitor_gone(self, pod_id: str) -> None:
        """A pod's monitor went away: both managers settle what it can no longer tell."""
        self.sandboxes.on_monitor_gone(pod_id)
        self.containers.on_monitor_gone(pod_id)

    # ---- pods ------------------------------------------------------------------------------

    def run_pod(self, config: pb.PodSandboxConfig, runtime_handler: str, timeout: float | None = None) -> Sandbox:
        """RunPodSandbox; a retry (same name) gets the pod of the first request, waiting up to
        ``timeout`` seconds for it while it is being made."""
        name = sandbox_name(config.metadata)

        def existing() -> Sandbox | None:
            holder = self.sandboxes.names.holder(name)
            pod = self.sandboxes.find_exact(holder) if holder else None
            return _same_request(pod, config, "pod sandbox", name)

        return self._pod_creations.run(name, existing, lambda: self.sandboxes.run(config, runtime_handler), timeout)

    def stop_pod(self, pod: Sandbox, timeout: int = POD_STOP_TIMEOUT) -> None:
        """StopPodSandbox: every container at once (N that ignore their stop signal cost one
        timeout, not N), then the pause container, then CNI DEL. Idempotent."""
        with self._lock(pod.id).exclusive():
            self._each(self.containers.in_pod(pod.id), lambda c: self.containers.stop(c, timeout))
            self.sandboxes.stop(pod)
        log.info("pod sandbox and its containers stopped", extra={"pod_id": pod.id})

    def remove_pod(self, pod: Sandbox) -> None:
        """RemovePodSandbox: every container removed (in parallel), then the pod."""
        with self._lock(pod.id).exclusive():
            self._each(self.containers.in_pod(pod.id), self.containers.remove)
            self.sandboxes.remove(pod)
        with self._locks_guard:
            self._locks.pop(pod.id, None)

    # ---- containers ----------------------------------------------------------------------

    def create_container(self, pod_id: str, config: pb.ContainerConfig, timeout: float | None = None) -> Container:
        """CreateContainer, holding the pod's lock shared: a pod being stopped or removed waits
        for the creation to finish (and then takes the container down with it), and a creation
        that comes after finds the pod not ready. A retry (same name) gets the container of the
        first request, waiting up to ``timeout`` seconds for it while it is being made."""
        pod = self.sandboxes.get(pod_id)
        name = container_name(config.metadata, pod.config.metadata)

        def existing() -> Container | None:
            holder = self.containers.names.holder(name)
            ctr = self.containers.find_exact(holder) if holder else None
            return _same_request(ctr, config, "container", name)

        def create() -> Container:
            with self._lock(pod.id).shared():
                if pod.phase != READY:
                    raise FailedPrecondition(f"pod sandbox {pod.id} is {pod.phase}: cannot create containers in it")
                return self.containers.create(pod, config)

        return self._container_creations.run(name, existing, create, timeout)

    # ---- helpers ---------------------------------------------------------------------------

    def _lock(self, pod_id: str) -> RWLock:
        with self._locks_guard:
            return self._locks.setdefault(pod_id, RWLock())

    @staticmethod
    def _each(items: Iterable[T], action: Callable[[T], object]) -> None:
        """``action`` on every item at once; the first failure is raised once all have finished."""
        items = list(items)
        if len(items) <= 1:
            for item in items:
                action(item)
            return
        with ThreadPoolExecutor(max_workers=len(items), thread_name_prefix="pod-op") as pool:
            futures = [pool.submit(action, item) for item in items]
        errors = [f.exception() for f in futures if f.exception() is not None]
        if errors:
            raise errors[0]  # type: ignore[misc]


def _same_request(found: Made | None, config: Message, what: str, name: str) -> Made | None:
    """``found`` if it was made from the same config (a retry), None if nothing was found;
    AlreadyExists naming it if another config holds the name."""
    if found is None or found.config == config:
        return found
    raise AlreadyExists(f"{what} name {name!r} is reserved for {found.id} made from another config")
