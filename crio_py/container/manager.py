"""Containers: create, start, stop, remove, status, exec, resources, log reopen.

CreateContainer: validate -> pod READY -> reserve the name -> record "creating" -> image ->
rootfs overlay -> OCI spec joining the pause container's namespaces -> monitor + runtime create
-> record "created". The monitor owns the container's stdio and records its exit; this module
reads that exit lazily (on status and list) so nothing blocks on a container.
"""

from __future__ import annotations

import logging
import shutil
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

from crio_py import cgroups, metrics, spec, trace
from crio_py.config import Config
from crio_py.container.model import CREATED, CREATING, EXITED, RUNNING, UNKNOWN, Container, reserved_name
from crio_py.cri import api_pb2 as pb
from crio_py.errors import DeadlineExceeded, FailedPrecondition, Internal, InvalidArgument, NotFound
from crio_py.image import ImageManager
from crio_py.monitor import MONITOR_GONE_REASON, MonitorClient, MonitorError
from crio_py.oci import ExecResult, OCIRuntime
from crio_py.proc import process_alive
from crio_py.sandbox import Sandbox, SandboxManager
from crio_py.sandbox.log_dir import container_log_path, pod_log_directory
from crio_py.spec.limits import linux_resources
from crio_py.spec.mounts import check_mount_propagation
from crio_py.state import IdIndex, NameRegistry, RecordStore, new_id
from crio_py.storage import mounts, overlay
from crio_py.undo import UndoStack

log = logging.getLogger(__name__)
KIND = "containers"
# After SIGKILL a process is gone within milliseconds unless stuck in the kernel (D state).
KILL_WAIT = 10.0


class ContainerManager:
    """Owns every container's record, rootfs and runtime state; pods come from SandboxManager."""

    def __init__(
        self,
        config: Callable[[], Config],
        store: RecordStore,
        images: ImageManager,
        sandboxes: SandboxManager,
        monitors: MonitorClient,
    ):
        self._config = config
        self._store = store
        self._images = images
        self._sandboxes = sandboxes
        self._monitors = monitors
        self._containers: dict[str, Container] = {}
        self._lock = threading.Lock()
        self.ids = IdIndex("container")
        self.names = NameRegistry("container")
        self._root = Path(config().root)
        images.set_in_use_check(self.image_in_use)

    # ---- start-up ----------------------------------------------------------------------

    def restore(self) -> None:
        """Rebuild memory from the records; undo creations a crash interrupted; pick up exits."""
        for cid, record in self._store.load_all(KIND).items():
            try:
                ctr = Container.from_record(record)
            except (KeyError, TypeError, ValueError) as exc:
                log.error("unreadable container record skipped", extra={"container_id": cid, "error": str(exc)})
                continue
            if ctr.phase == CREATING or self._sandboxes.find(ctr.pod_id) is None:
                log.warning("undoing an interrupted or orphaned container", extra={"container_id": cid})
                self._teardown(ctr)
                self._store.delete(KIND, cid)
                continue
            self._containers[cid] = ctr
            self.ids.add(cid)
            self.refresh(ctr)
        self.names.rebuild((c.name, c.id) for c in self._containers.values())
        log.info("containers restored", extra={"count": len(self._containers)})

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

    def list(self) -> list[Container]:
        with self._lock:
            return list(self._containers.values())

    def verbose_info(self, ctr: Container) -> dict[str, object]:
        """ContainerStatus verbose info: pid, runtime, bundle and the OCI spec."""
        return {
            "pid": ctr.pid,
            "sandboxID": ctr.pod_id,
            "runtimeHandler": ctr.runtime_handler,
            "runtime": self._runtime(ctr).binary(),
            "bundle": ctr.bundle,
            "cgroupsPath": ctr.cgroups_path,
            "runtimeSpec": spec.read_spec(Path(ctr.bundle)) if ctr.bundle else None,
        }

    def in_pod(self, pod_id: str) -> list[Container]:
        return [c for c in self.list() if c.pod_id == pod_id]

    def image_in_use(self, image_id: str) -> bool:
        return any(c.image_id == image_id for c in self.list())

    # ---- create ------------------------------------------------------------------------

    def create(self, pod_id: str, config: pb.ContainerConfig) -> Container:
        """Create (not start) a container in a ready pod; undo everything on failure."""
        if not config.metadata.name:
            raise InvalidArgument("container metadata.name must not be empty")
        if not config.image.image:
            raise InvalidArgument("container image must not be empty")
        if config.log_path and (config.log_path.startswith("/") or ".." in config.log_path.split("/")):
            raise InvalidArgument(f"log_path {config.log_path!r} must be relative to the pod's log_directory")
        pod = self._sandboxes.get(pod_id)
        if self._sandboxes.state(pod) != pb.SANDBOX_READY:
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
        with UndoStack("CreateContainer", **ctx) as undo:
            undo.push("release name", lambda: self.names.release(ctr.name, ctr.id))
            self._store.write(KIND, ctr.id, ctr.to_record())
            undo.push("delete record", lambda: self._store.delete(KIND, ctr.id))
            self._create(ctr, pod, cfg, undo)
            trace.mark("record")
            ctr.phase = CREATED
            self._store.write(KIND, ctr.id, ctr.to_record())
            undo.commit()
        with self._lock:
            self._containers[ctr.id] = ctr
        self.ids.add(ctr.id)
        log.info("container created", extra={**ctx, "pid": ctr.pid})
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
            runtime = self._sandboxes.runtime(ctr.runtime_handler)
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
                    pod_files=self._sandboxes.pod_files(pod),
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
            ctr.pid = self._sandboxes.create_in_monitor(
                pod.id,
                runtime,
                ctr.id,
                bundle,
                Path(ctr.log_path),
                tty=ctr.config.tty,
                stdin=ctr.config.stdin,
                stdin_once=ctr.config.stdin_once,
                log_size_max=cfg.log_size_max,
            )
        except MonitorError as exc:
            raise Internal(f"CreateContainer {ctr.id}: {step}: {exc}") from exc
        except OSError as exc:
            raise Internal(f"CreateContainer {ctr.id}: {step}: {exc}") from exc

    def _namespace_paths(self, config: pb.ContainerConfig, pod: Sandbox) -> dict[str, str]:
        """The pod's namespaces to join; for pid TARGET (ephemeral containers) the target's pid ns."""
        paths = self._sandboxes.namespace_paths(pod)
        ns = config.linux.security_context.namespace_options
        if ns.pid == pb.TARGET:
            target = self.get(ns.target_id)
            if target.pod_id != pod.id or not self._is_running(target):
                raise NotFound(f"target container {ns.target_id!r} is not running in pod {pod.id}")
            paths["pid"] = f"/proc/{target.pid}/ns/pid"
        return paths

    # ---- start / stop ------------------------------------------------------------------

    def start(self, ctr: Container) -> None:
        with ctr.lock:
            self.refresh(ctr)
            if ctr.phase != CREATED:
                raise FailedPrecondition(f"container {ctr.id} is {ctr.phase}, only a created container can start")
            runtime = self._runtime(ctr)
            # Taken before the start: a quick container's recorded exit must not precede it.
            started_at = time.time_ns()
            trace.owner(ctr.id, ctr.pod_id)
            trace.mark("runtime start")
            try:
                runtime.start(ctr.id)
            except Internal:
                # The process may already be gone (e.g. exec failed): record why, then report.
                self.refresh(ctr)
                raise
            trace.mark("record")
            ctr.started_at_ns = started_at
            ctr.phase = RUNNING
            self._store.write(KIND, ctr.id, ctr.to_record())
        log.info("container started", extra={"container_id": ctr.id, "pod_id": ctr.pod_id})

    def stop(self, ctr: Container, timeout: int) -> None:
        """Stop signal, up to ``timeout`` seconds, then SIGKILL. Stopping a stopped container is fine."""
        with ctr.lock:
            self.refresh(ctr)
            if ctr.phase not in (RUNNING, CREATED, UNKNOWN) or not process_alive(ctr.pid):
                self.refresh(ctr)
                return
            runtime = self._runtime(ctr)
            if timeout > 0:
                sig = _signal_number(ctr.stop_signal)
                runtime.kill(ctr.id, sig)
                if self._wait_exit(ctr, timeout):
                    return
                log.info("container ignored its stop signal; killing", extra={"container_id": ctr.id})
            runtime.kill(ctr.id, signal.SIGKILL, all=True)
            if not self._wait_exit(ctr, KILL_WAIT):
                raise Internal(f"container {ctr.id} did not exit after SIGKILL within {KILL_WAIT:.0f}s")

    def _wait_exit(self, ctr: Container, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            self.refresh(ctr)
            # UNKNOWN: gone, but its monitor died and could not record how.
            if ctr.phase in (EXITED, UNKNOWN):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)

    def remove(self, ctr: Container) -> None:
        """Stop if needed, then delete runtime state, rootfs, bundle and record."""
        self.stop(ctr, 0)
        with ctr.lock:
            self._teardown(ctr)
            self._store.delete(KIND, ctr.id)
            with self._lock:
                self._containers.pop(ctr.id, None)
            self.ids.remove(ctr.id)
            self.names.release(ctr.name, ctr.id)
        log.info("container removed", extra={"container_id": ctr.id, "pod_id": ctr.pod_id})

    def _teardown(self, ctr: Container) -> None:
        steps: list[tuple[str, Callable[[], object]]] = [
            ("runtime delete", lambda: self._runtime(ctr).delete(ctr.id, force=True)),
        ]
        if ctr.rootfs:
            steps.append(("rootfs", lambda: mounts.unmount(Path(ctr.rootfs))))
        if ctr.bundle:
            steps.append(("bundle", lambda: shutil.rmtree(ctr.bundle, ignore_errors=True)))
        if ctr.cgroups_path:
            steps.append(("cgroup", lambda: cgroups.remove_cgroup(ctr.cgroups_path)))
        for step, action in steps:
            try:
                action()
            except Exception as exc:
                log.error(
                    "container teardown step failed", extra={"container_id": ctr.id, "step": step, "error": str(exc)}
                )

    # ---- pods --------------------------------------------------------------------------

    def stop_pod(self, pod: Sandbox, timeout: int = 10) -> None:
        """StopPodSandbox: stop every container of the pod (graceful, then forced), then the pod."""
        for ctr in self.in_pod(pod.id):
            self.stop(ctr, timeout)
        self._sandboxes.stop(pod)

    def remove_pod(self, pod: Sandbox) -> None:
        """RemovePodSandbox: remove every container of the pod, then the pod."""
        for ctr in self.in_pod(pod.id):
            self.remove(ctr)
        self._sandboxes.remove(pod)

    # ---- status ------------------------------------------------------------------------

    def refresh(self, ctr: Container) -> None:
        """Bring the record up to date with the monitor's exit file (the lazy exit pickup)."""
        if ctr.phase not in (RUNNING, CREATED, UNKNOWN):
            return
        monitor = self._monitors.pod_monitor(ctr.pod_id)
        status = monitor.exit_status(ctr.id)
        if status is None:
            if ctr.phase in (RUNNING, CREATED) and not process_alive(ctr.pid) and ctr.pid:
                # Gone without an exit record: the monitor died (or was killed) before it could write one.
                self._record_exit(
                    ctr, -1, MONITOR_GONE_REASON, "the container is gone and its monitor recorded no exit",
                    time.time_ns(), phase=UNKNOWN,
                )
            elif ctr.phase == RUNNING and ctr.reason != MONITOR_GONE_REASON and not process_alive(monitor.pid() or 0):
                # Still running, but nobody logs its output or will record its exit.
                ctr.reason = MONITOR_GONE_REASON
                ctr.message = "the container's monitor died: its output is no longer logged"
                self._store.write(KIND, ctr.id, ctr.to_record())
            return
        if status.oom_killed:
            reason = "OOMKilled"
        elif ctr.phase == CREATED:
            reason = "ContainerCannotRun"
        else:
            reason = "Completed" if status.exit_code == 0 else "Error"
        self._record_exit(ctr, status.exit_code, reason, "", status.finished_at_ns, phase=EXITED)

    def _record_exit(self, ctr: Container, code: int, reason: str, message: str, at_ns: int, phase: str) -> None:
        with ctr.lock:
            if ctr.phase == phase and ctr.finished_at_ns:
                return
            ctr.exit_code, ctr.reason, ctr.message = code, reason, message
            ctr.finished_at_ns = at_ns or time.time_ns()
            ctr.phase = phase
            self._store.write(KIND, ctr.id, ctr.to_record())
        if reason == "OOMKilled":
            metrics.CONTAINERS_OOM.inc()
        log.info("container exited", extra={"container_id": ctr.id, "exit_code": code, "reason": reason})

    def _is_running(self, ctr: Container) -> bool:
        self.refresh(ctr)
        return ctr.phase == RUNNING

    # ---- exec, resources, logs -----------------------------------------------------------

    def exec_sync(self, ctr: Container, cmd: list[str], timeout: int) -> ExecResult:
        if not cmd:
            raise InvalidArgument("exec command must not be empty")
        if not self._is_running(ctr):
            raise FailedPrecondition(f"container {ctr.id} is not running")
        result = self._runtime(ctr).exec_sync(ctr.id, cmd, timeout=float(timeout) if timeout > 0 else None)
        if result.timed_out:
            raise DeadlineExceeded(f"command {cmd[0]!r} in container {ctr.id} timed out after {timeout}s")
        return result

    def update_resources(self, ctr: Container, resources: pb.LinuxContainerResources) -> None:
        if not self._is_running(ctr) and ctr.phase != CREATED:
            raise FailedPrecondition(f"container {ctr.id} is not running")
        self._runtime(ctr).update(ctr.id, linux_resources(resources, f"container {ctr.id}", ctr.cgroups_path))
        with ctr.lock:  # ContainerStatus reports the limits in force (kubelet compares them for in-place resize)
            ctr.config.linux.resources.CopyFrom(resources)
            self._store.write(KIND, ctr.id, ctr.to_record())

    def reopen_log(self, ctr: Container) -> None:
        if not self._is_running(ctr):
            raise FailedPrecondition(f"container {ctr.id} is not running: its log cannot be reopened")
        try:
            self._monitors.pod_monitor(ctr.pod_id).reopen_log(ctr.id)
        except MonitorError as exc:
            raise Internal(f"ReopenContainerLog {ctr.id}: {exc}") from exc

    def _runtime(self, ctr: Container) -> OCIRuntime:
        return self._sandboxes.runtime(ctr.runtime_handler)


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
