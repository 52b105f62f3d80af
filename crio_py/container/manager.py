"""Containers: create, start, stop, remove, status, exec, resources, log reopen.

CreateContainer (validated at the server edge): pod READY -> reserve the name -> record "creating" -> image ->
rootfs overlay -> OCI spec joining the pause container's namespaces -> monitor + runtime create
-> record "created". The monitor owns the container's stdio and records its exit.

Exits are pushed, not polled: the monitor tells the exit watcher the moment it reaps a
container, and ``on_exit`` records it. Every change of a container's phase goes through
``transition()``, which checks it is legal, persists the record, updates memory and wakes
waiters (StopContainer waits there for the exit, with its timeout).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import shutil
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

from crio_py import cgroups, faults, metrics, spec, trace
from crio_py.config import Config
from crio_py.container.model import (
    CREATED,
    CREATING,
    EXITED,
    LEGAL,
    LIVE,
    REMOVED,
    REMOVING,
    RUNNING,
    UNKNOWN,
    Container,
    reserved_name,
)
from crio_py.cri import api_pb2 as pb
from crio_py.errors import CrioError, DeadlineExceeded, FailedPrecondition, Internal, InvalidArgument, NotFound
from crio_py.events import ContainerEvent, EventBus, EventKind
from crio_py.image import ImageManager
from crio_py.monitor import MONITOR_GONE_REASON, CreateRequest, ExitStatus, MonitorClient, MonitorError
from crio_py.oci import ExecResult, OCIRuntime, RuntimeRegistry
from crio_py.oci import errors as oci_errors
from crio_py.proc import boot_id, same_process, start_time, start_time_ns
from crio_py.sandbox.log_dir import container_log_path, pod_log_directory
from crio_py.sandbox.model import Sandbox
from crio_py.spec.limits import linux_resources
from crio_py.spec.mounts import check_mount_propagation
from crio_py.state import IdIndex, NameRegistry, RecordStore, check_field_types, new_id
from crio_py.storage import mounts, overlay
from crio_py.undo import UndoStack

log = logging.getLogger(__name__)
KIND = "containers"
# After SIGKILL a process is gone within milliseconds unless stuck in the kernel (D state).
KILL_WAIT = 10.0
# A waiter for an exit looks at the exit file this often, in case an event was lost (it never
# is while the monitor's connection lives, but a lost one must cost a second, not a hang).
EXIT_SAFETY_NET = 1.0
# How long a failed StartContainer waits for the exit that explains it.
FAILED_START_WAIT = 2.0
REBOOT_REASON = "NodeRebooted"


class ContainerManager:
    """Owns every container's record, rootfs and runtime state.

    A peer of SandboxManager: pods are given to it (``create``) or looked up through ``pods``
    (pod id -> Sandbox or None); what spans both (a pod's stop and removal, exit routing) is
    crio_py.lifecycle's.
    """

    def __init__(
        self,
        config: Callable[[], Config],
        store: RecordStore,
        images: ImageManager,
        monitors: MonitorClient,
        events: EventBus,
        runtimes: RuntimeRegistry,
        pods: Callable[[str], Sandbox | None],
    ):
        self._config = config
        self._store = store
        self._images = images
        self._monitors = monitors
        self._events = events
        self._runtimes = runtimes
        self._pods = pods
        self._containers: dict[str, Container] = {}
        self._image_leases: Counter[str] = Counter()
        self._lock = threading.Lock()
        self.ids = IdIndex("container")
        self.names = NameRegistry("container")
        self._root = Path(config().root)
        images.set_in_use_check(self.image_in_use)

    # ---- start-up ----------------------------------------------------------------------

    def restore(self) -> None:
        """Rebuild memory from the records (after the pods'); undo creations a crash interrupted.

        Containers of another boot are EXITED: a reboot ended them. Once the monitors are
        watched again, ``finish_interrupted_starts`` asks the runtime about the rest.
        """
        this_boot = boot_id()
        for cid, record in self._store.load_all(KIND).items():
            try:
                ctr = Container.from_record(record)
                check_field_types(ctr)
                if ctr.id != cid:
                    raise ValueError(f"the record is of container {ctr.id!r}")
                if ctr.phase == CREATING or self._pods(ctr.pod_id) is None:
                    log.warning("undoing an interrupted or orphaned container", extra={"container_id": cid})
                    # Kept (on disk only) if a step fails: tried again at the next start.
                    self.transition(ctr, REMOVED if not self._teardown(ctr) else REMOVING)
                    continue
            except Exception as exc:  # whatever a record holds, the daemon starts and serves
                self._store.quarantine(KIND, cid, exc)
                continue
            self._containers[cid] = ctr
            self.ids.add(cid)
            if ctr.phase == REMOVING and not self._teardown(ctr):
                log.info("unfinished container removal finished", extra={"container_id": cid})
                self.transition(ctr, REMOVED)
                continue
            if ctr.phase in LIVE and ctr.boot_id and ctr.boot_id != this_boot:
                self.transition(
                    ctr, EXITED, exit_code=255, reason=REBOOT_REASON, finished_at_ns=time.time_ns(),
                    message="the node rebooted while the container existed",
                )  # fmt: skip
        self.names.rebuild((c.name, c.id) for c in self._containers.values())
        log.info("containers restored", extra={"count": len(self._containers)})

    def finish_interrupted_starts(self) -> None:
        """Containers recorded CREATED that the runtime says run: the daemon died during their start."""
        for ctr in self.list():
            if ctr.phase == CREATED:
                self._finish_interrupted_start(ctr)

    def _finish_interrupted_start(self, ctr: Container) -> None:
        try:
            state = self.runtime_of(ctr).state(ctr.id)
        except CrioError as exc:
            log.warning("runtime state unavailable", extra={"container_id": ctr.id, "error": str(exc)})
            return
        if state is not None and state.get("status") in ("running", "paused"):
            started = start_time(ctr.pid)
            log.warning("container started while the daemon went down: running", extra={"container_id": ctr.id})
            self.transition(ctr, RUNNING, started_at_ns=start_time_ns(started) if started else time.time_ns())

    # ---- the transition point ----------------------------------------------------------

    def transition(self, ctr: Container, phase: str, **changes: object) -> bool:
        """Move ``ctr`` to ``phase`` (with field ``changes``): persist, update memory, wake waiters.

        The only writer of container records. An illegal change (an exit after removal, a
        second exit) is refused and False returned; callers that must not be refused check the
        phase first under ``ctr.lock``.
        """
        with ctr.lock:
            old = ctr.phase
            # The same phase again changes fields only (not after removal).
            if (phase == old == REMOVED) or (phase != old and phase not in LEGAL[old]):
                log.debug("container transition refused", extra={"container_id": ctr.id, "from": old, "to": phase})
                return False
            if phase == REMOVED:
                self._store.delete(KIND, ctr.id)
            else:
                self._store.write(KIND, ctr.id, dataclasses.replace(ctr, phase=phase, **changes).to_record())
            ctr.phase = phase
            for name, value in changes.items():
                setattr(ctr, name, value)
            if phase == REMOVED:
                with self._lock:
                    self._containers.pop(ctr.id, None)
                self.ids.remove(ctr.id)
                self.names.release(ctr.name, ctr.id)
            elif old == CREATING and phase == CREATED:
                with self._lock:
                    self._containers[ctr.id] = ctr
                self.ids.add(ctr.id)
            for kind in _container_events(old, phase):
                self._events.publish(ContainerEvent(kind, ctr.id, ctr.pod_id, self._pods(ctr.pod_id)))
            ctr.changed.notify_all()
        if phase in (EXITED, UNKNOWN) and old != phase:
            log.info(
                "container exited",
                extra={"container_id": ctr.id, "pod_id": ctr.pod_id, "exit_code": ctr.exit_code, "reason": ctr.reason},
            )
        elif old != phase:
            log.info(f"container {phase}", extra={"container_id": ctr.id, "pod_id": ctr.pod_id})
        return True

    # ---- exits (from the exit watcher) -------------------------------------------------

    def on_exit(self, pod_id: str, container_id: str, status: ExitStatus) -> None:
        """A monitor reaped ``container_id``; an id nobody knows (any more) is ignored."""
        ctr = self.find_exact(container_id)
        if ctr is not None and ctr.pod_id == pod_id:
            self._record_exit(ctr, status)

    def on_monitor_gone(self, pod_id: str) -> None:
        """The pod's monitor went away (exited or died): settle what it can no longer tell us.

        Exits it recorded are taken from its files; a container still running keeps running,
        flagged (its output is no longer logged), and is watched through a pidfd; one that is
        gone with no record is UNKNOWN.
        """
        monitor = self._monitors.pod_monitor(pod_id)
        for ctr in self.in_pod(pod_id):
            with ctr.lock:
                if ctr.phase not in LIVE:
                    continue
                status = monitor.exit_status(ctr.id)
                if status is not None:
                    self._record_exit(ctr, status)
                    continue
                if not same_process(ctr.pid, ctr.pid_start):
                    self._monitor_lost_exit(ctr)
                    continue
                if ctr.phase == RUNNING:
                    self.transition(
                        ctr, RUNNING, reason=MONITOR_GONE_REASON,
                        message="the container's monitor died: its output is no longer logged",
                    )  # fmt: skip
            self._monitors.watcher.watch_process(ctr.pid, ctr.pid_start, lambda c=ctr: self._monitor_lost_exit(c))

    def _monitor_lost_exit(self, ctr: Container) -> None:
        """A container whose monitor is gone has ended: its exit file if the monitor wrote one, else UNKNOWN."""
        status = self._monitors.pod_monitor(ctr.pod_id).exit_status(ctr.id)
        if status is not None:
            self._record_exit(ctr, status)
            return
        self.transition(
            ctr, UNKNOWN, exit_code=-1, reason=MONITOR_GONE_REASON, finished_at_ns=time.time_ns(),
            message="the container is gone and its monitor recorded no exit",
        )  # fmt: skip

    def _record_exit(self, ctr: Container, status: ExitStatus) -> None:
        with ctr.lock:
            if status.oom_killed:
                reason = "OOMKilled"
            elif ctr.phase == CREATED:
                reason = "ContainerCannotRun"
            else:
                reason = "Completed" if status.exit_code == 0 else "Error"
            recorded = self.transition(
                ctr, EXITED, exit_code=status.exit_code, reason=reason, message="",
                finished_at_ns=status.finished_at_ns or time.time_ns(),
            )  # fmt: skip
        if recorded and reason == "OOMKilled":  # an exit told twice (pushed, then read) counts once
            metrics.CONTAINERS_OOM.inc()

    def _await_exit(self, ctr: Container, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for ``ctr`` to have exited; False if it still runs."""
        deadline = time.monotonic() + timeout
        with ctr.lock:
            while ctr.phase in LIVE:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                if not ctr.changed.wait(min(left, EXIT_SAFETY_NET)):
                    status = self._monitors.pod_monitor(ctr.pod_id).exit_status(ctr.id)
                    if status is not None:
                        log.warning("exit event missing; taken from the exit file", extra={"container_id": ctr.id})
                        self._record_exit(ctr, status)
            return True

    # ---- lookups -----------------------------------------------------------------------

    def get(self, cid: str) -> Container:
        full = self.ids.resolve(cid)
        with self._lock:
            ctr = self._containers.get(full)
        if ctr is None:
            raise NotFound(f"container {cid!r} not found")
        return ctr

    def find(self, cid: str) -> Container | None:
        full = self.ids.find(cid)
        with self._lock:
            return self._containers.get(full) if full else None

    def find_exact(self, cid: str) -> Container | None:
        """The container with exactly this id (no prefix matching: for events)."""
        with self._lock:
            return self._containers.get(cid)

    def list(self) -> list[Container]:
        with self._lock:
            return list(self._containers.values())

    def verbose_info(self, ctr: Container) -> dict[str, object]:
        """ContainerStatus verbose info: pid, runtime, bundle and the OCI spec."""
        return {
            "pid": ctr.pid,
            "sandboxID": ctr.pod_id,
            "runtimeHandler": ctr.runtime_handler,
            "runtime": self.runtime_of(ctr).binary(),
            "bundle": ctr.bundle,
            "cgroupsPath": ctr.cgroups_path,
            "runtimeSpec": spec.read_spec(Path(ctr.bundle)) if ctr.bundle else None,
        }

    def in_pod(self, pod_id: str) -> list[Container]:
        return [c for c in self.list() if c.pod_id == pod_id]

    def image_in_use(self, image_id: str) -> bool:
        """Used by a container, or leased by a creation in flight (RemoveImage must refuse)."""
        with self._lock:
            if self._image_leases[image_id]:
                return True
        return any(c.image_id == image_id for c in self.list())

    @contextlib.contextmanager
    def _image_lease(self, image_id: str) -> Iterator[None]:
        with self._lock:
            self._image_leases[image_id] += 1
        try:
            yield
        finally:
            with self._lock:
                self._image_leases[image_id] -= 1
                if not self._image_leases[image_id]:
                    del self._image_leases[image_id]

    # ---- create ------------------------------------------------------------------------

    def create(self, pod: Sandbox, config: pb.ContainerConfig) -> Container:
        """Create (not start) a container in a ready pod (``config`` already validated); undo everything on failure."""
        if not pod.ready():
            raise FailedPrecondition(f"pod sandbox {pod.id} is not ready: cannot create containers in it")
        trace.mark("image lookup")
        image = self._images.find(config.image.image)
        if image is None:
            raise NotFound(f"image {config.image.image!r} not found: pull it first")
        cfg = self._config()
        ctr = Container(
            id=new_id(),
            name=reserved_name(config.metadata, pod.config.metadata),
            pod_id=pod.id,
            config=config,
            image_id=image.id,
            image_ref=(image.repo_digests[0] if image.repo_digests else image.id),
            image_name=config.image.image,
            created_at_ns=time.time_ns(),
            runtime_handler=pod.runtime_handler,
            boot_id=boot_id(),
        )
        ctr.log_path = str(container_log_path(pod_log_directory(pod.config, pod.id, cfg.container_log_dir), config))
        # Paths decided before the first record, so that a crash mid-create knows what to undo.
        ctr.bundle = str(self._root / "containers" / ctr.id)
        ctr.rootfs = str(Path(ctr.bundle) / "rootfs")
        ctr.cgroups_path = cgroups.container_cgroups_path(
            cfg.cgroup_manager, pod.cgroup_parent, cgroups.CONTAINER_PREFIX, ctr.id
        )
        ctx = {"container_id": ctr.id, "pod_id": pod.id, "container": config.metadata.name}
        trace.owner(ctr.id, pod.id)
        trace.mark("name reservation")
        self.names.reserve(ctr.name, ctr.id)
        with self._image_lease(image.id), UndoStack("CreateContainer", **ctx) as undo:
            undo.push("release name", lambda: self.names.release(ctr.name, ctr.id))
            # Leased, the image can no longer go; it must still be there (RemoveImage may have
            # taken it between the lookup and the lease).
            if self._images.find(image.id) is None:
                raise NotFound(f"image {config.image.image!r} was removed: pull it again")
            self.transition(ctr, CREATING)
            undo.push("delete record", lambda: self.transition(ctr, REMOVED))
            self._create(ctr, pod, cfg, undo)
            trace.mark("record")
            self.transition(ctr, CREATED)
            undo.commit()
        log.debug("container created", extra={**ctx, "pid": ctr.pid})
        return ctr

    def _create(self, ctr: Container, pod: Sandbox, cfg: Config, undo: UndoStack) -> None:
        step = trace.mark("log directory")
        try:
            Path(ctr.log_path).parent.mkdir(parents=True, exist_ok=True)
            step = trace.mark("rootfs")
            bundle = Path(ctr.bundle)
            bundle.mkdir(parents=True, exist_ok=True, mode=0o700)
            undo.push("bundle", lambda: shutil.rmtree(bundle, ignore_errors=True))
            overlay.mount_overlay(
                self._images.lowerdirs(ctr.image_id), bundle / "upper", bundle / "work", bundle / "rootfs"
            )
            undo.push("rootfs", lambda: mounts.unmount(bundle / "rootfs"))

            step = trace.mark("spec")
            image_config = self._images.image_config(ctr.image_id)
            ctr.stop_signal = _stop_signal(ctr.config, image_config)
            for created in spec.ensure_host_paths(ctr.config.mounts):
                undo.push("host path", lambda p=created: shutil.rmtree(p, ignore_errors=True))
            check_mount_propagation(ctr.config.mounts)
            runtime = self.runtime_of(ctr)
            oci_spec = spec.container_spec(
                spec.ContainerSpecContext(
                    container_id=ctr.id,
                    sandbox_id=pod.id,
                    config=ctr.config,
                    sandbox_config=pod.config,
                    image_config=image_config,
                    rootfs=Path(ctr.rootfs),
                    cgroup_parent=pod.cgroup_parent,
                    settings=cfg,
                    namespace_paths=self._namespace_paths(ctr.config, pod),
                    pod_files=pod.files(),
                    recursive_read_only_supported=runtime.supports_recursive_read_only(),
                    annotations={"io.kubernetes.cri.image-name": ctr.image_name},
                )
            )
            spec.write_spec(bundle, oci_spec)
            user = oci_spec["process"]["user"]
            ctr.uid, ctr.gid = user["uid"], user["gid"]
            ctr.additional_gids = list(user.get("additionalGids") or [])

            step = trace.mark("runtime create")
            undo.push("runtime delete", lambda: runtime.delete(ctr.id, force=True))
            undo.push("cgroup", lambda: cgroups.remove_cgroup(ctr.cgroups_path))
            request = CreateRequest.for_runtime(
                runtime.base_argv(), ctr.id, bundle, Path(ctr.log_path),
                tty=ctr.config.tty, stdin=ctr.config.stdin, stdin_once=ctr.config.stdin_once,
                log_size_max=cfg.log_size_max,
            )  # fmt: skip
            ctr.pid = self._monitors.ensure_pod_monitor(pod.id).create_container(request)
            ctr.pid_start = start_time(ctr.pid)
        except MonitorError as exc:
            raise oci_errors.create_error(f"CreateContainer {ctr.id}: {step}: {exc}") from exc
        except OSError as exc:
            raise Internal(f"CreateContainer {ctr.id}: {step}: {exc}") from exc

    def _namespace_paths(self, config: pb.ContainerConfig, pod: Sandbox) -> dict[str, str]:
        """The pod's namespaces to join; for pid TARGET (ephemeral containers) the target's pid ns."""
        paths = pod.namespace_paths()
        ns = config.linux.security_context.namespace_options
        if ns.pid == pb.TARGET:
            target = self.get(ns.target_id)
            if target.pod_id != pod.id or not self._is_running(target):
                raise NotFound(f"target container {ns.target_id!r} is not running in pod {pod.id}")
            paths["pid"] = f"/proc/{target.pid}/ns/pid"
        return paths

    # ---- start / stop ------------------------------------------------------------------

    def start(self, ctr: Container) -> None:
        """Start a created container; FailedPrecondition naming its state otherwise."""
        with ctr.lock:
            if ctr.phase != CREATED:
                raise FailedPrecondition(
                    f"container {ctr.id} is {ctr.phase}: only a created container can be started"
                )
            runtime = self.runtime_of(ctr)
            # Taken before the start: a quick container's recorded exit must not precede it.
            started_at = time.time_ns()
            trace.owner(ctr.id, ctr.pod_id)
            trace.mark("runtime start")
            # The lock is held across the start: the container's exit, if it is quick, is
            # recorded after its start.
            try:
                runtime.start(ctr.id)
            except Internal:
                # The process may be gone already (e.g. exec failed): let its exit say why.
                self._await_exit(ctr, FAILED_START_WAIT)
                raise
            trace.mark("record")
            self.transition(ctr, RUNNING, started_at_ns=started_at)

    def stop(self, ctr: Container, timeout: int) -> None:
        """Stop signal, up to ``timeout`` seconds, then SIGKILL; returns once the exit is recorded.

        Stopping a stopped container is fine.
        """
        if ctr.phase not in LIVE:
            return
        runtime = self.runtime_of(ctr)
        if timeout > 0:
            runtime.kill(ctr.id, _signal_number(ctr.stop_signal))
            faults.point("StopContainer:signalled")
            if self._await_exit(ctr, timeout):
                return
            log.info("container ignored its stop signal; killing", extra={"container_id": ctr.id})
        runtime.kill(ctr.id, signal.SIGKILL, all=True)
        if not self._await_exit(ctr, KILL_WAIT):
            raise Internal(f"container {ctr.id} did not exit after SIGKILL within {KILL_WAIT:.0f}s")

    def remove(self, ctr: Container) -> None:
        """Stop if needed, then delete runtime state, rootfs, bundle and record."""
        self.stop(ctr, 0)
        with ctr.lock:
            if ctr.phase == REMOVED:
                return
            failed = self._teardown(ctr)
            if failed:
                # Nothing is forgotten while any of its resources might remain.
                self.transition(ctr, REMOVING)
                raise Internal(
                    f"RemoveContainer {ctr.id}: {'; '.join(failed)}; the container is kept and its removal "
                    "is retried by the next RemoveContainer and at start-up"
                )
            faults.point("RemoveContainer:torn down")
            self.transition(ctr, REMOVED)
        log.info("container removed", extra={"container_id": ctr.id, "pod_id": ctr.pod_id})

    def _teardown(self, ctr: Container) -> list[str]:
        """Delete everything the container may hold, whatever phase it reached; the failed steps."""
        steps: list[tuple[str, Callable[[], object]]] = [
            ("runtime delete", lambda: self.runtime_of(ctr).delete(ctr.id, force=True)),
        ]
        if ctr.rootfs:
            steps.append(("rootfs", lambda: mounts.unmount(Path(ctr.rootfs))))
        if ctr.bundle:
            steps.append(("bundle", lambda: shutil.rmtree(ctr.bundle, ignore_errors=True)))
        if ctr.cgroups_path:
            steps.append(("cgroup", lambda: cgroups.remove_cgroup(ctr.cgroups_path)))
        failed = []
        for step, action in steps:
            try:
                action()
            except Exception as exc:
                failed.append(f"{step}: {exc}")
                log.error(
                    "container teardown step failed", extra={"container_id": ctr.id, "step": step, "error": str(exc)}
                )
        return failed

    def _is_running(self, ctr: Container) -> bool:
        return ctr.phase == RUNNING

    # ---- exec, resources, logs -----------------------------------------------------------

    def exec_sync(self, ctr: Container, cmd: list[str], timeout: int) -> ExecResult:
        if not cmd:
            raise InvalidArgument("exec command must not be empty")
        if not self._is_running(ctr):
            raise FailedPrecondition(f"container {ctr.id} is not running")
        result = self.runtime_of(ctr).exec_sync(ctr.id, cmd, timeout=float(timeout) if timeout > 0 else None)
        if result.timed_out:
            raise DeadlineExceeded(f"command {cmd[0]!r} in container {ctr.id} timed out after {timeout}s")
        return result

    def update_resources(self, ctr: Container, resources: pb.LinuxContainerResources) -> None:
        if not self._is_running(ctr) and ctr.phase != CREATED:
            raise FailedPrecondition(f"container {ctr.id} is not running")
        self.runtime_of(ctr).update(ctr.id, linux_resources(resources, f"container {ctr.id}", ctr.cgroups_path))
        # ContainerStatus reports the limits in force (kubelet compares them for in-place resize).
        config = pb.ContainerConfig()
        config.CopyFrom(ctr.config)
        config.linux.resources.CopyFrom(resources)
        self.transition(ctr, ctr.phase, config=config)

    def reopen_log(self, ctr: Container) -> None:
        if not self._is_running(ctr):
            raise FailedPrecondition(f"container {ctr.id} is not running: its log cannot be reopened")
        try:
            self._monitors.pod_monitor(ctr.pod_id).reopen_log(ctr.id)
        except MonitorError as exc:
            raise Internal(f"ReopenContainerLog {ctr.id}: {exc}") from exc

    def runtime_of(self, ctr: Container) -> OCIRuntime:
        """The OCI runtime of the container's handler."""
        return self._runtimes.get(ctr.runtime_handler)


def _container_events(old: str, new: str) -> tuple[EventKind, ...]:
    """The CRI events of a container's transition."""
    if old == new:
        return ()
    if new == CREATED:
        return (EventKind.CREATED,)
    if new == RUNNING:
        return (EventKind.STARTED,)
    if new in (EXITED, UNKNOWN) and old in LIVE:
        return (EventKind.STOPPED,)
    if new == REMOVED and old != CREATING:
        return (EventKind.DELETED,)
    return ()


def _stop_signal(config: pb.ContainerConfig, image_config: dict[str, object]) -> str:
    """The request's stop signal, else the image's StopSignal, else SIGTERM."""
    if config.stop_signal != pb.RUNTIME_DEFAULT:
        return pb.Signal.Name(config.stop_signal)
    image = image_config.get("config") or {}
    return str(image.get("StopSignal") or "SIGTERM") if isinstance(image, dict) else "SIGTERM"


def _signal_number(name: str) -> int:
    if not name:
        return signal.SIGTERM
    name = name.upper()
    if name.isdigit():
        return int(name)
    try:
        return int(signal.Signals(name if name.startswith("SIG") else f"SIG{name}"))
    except ValueError:
        return signal.SIGTERM
