"""Pod sandboxes: run, stop, remove, status and list, backed by a pause (infra) container.

RunPodSandbox (validated at the server edge): reserve the name -> record "creating" -> pause image -> pod files ->
netns -> CNI ADD -> /etc/hosts with the pod IPs -> pause rootfs -> OCI spec -> monitor + runtime
create -> runtime start -> record "ready". Every step registers its undo, so a failure at any
point leaves nothing behind and frees the name at once.

Every change of a pod's phase goes through ``transition()``: it checks the change is legal,
persists the record, updates memory and wakes waiters. The pause container's exit arrives from
its monitor (``on_pause_exit``), or through a pidfd when the monitor is gone.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

from crio_py import cgroups, faults, network, spec, trace
from crio_py.config import Config
from crio_py.cri import api_pb2 as pb
from crio_py.errors import FailedPrecondition, Internal, InvalidArgument, NotFound
from crio_py.events import ContainerEvent, EventBus, EventKind
from crio_py.image import ImageManager
from crio_py.monitor import CreateRequest, MonitorClient, MonitorError
from crio_py.oci import RuntimeRegistry
from crio_py.proc import boot_id, same_process, start_time, wait_gone
from crio_py.sandbox import pod_files
from crio_py.sandbox.log_dir import owns_log_directory, pod_log_directory
from crio_py.sandbox.model import CREATING, LEGAL, NOTREADY, READY, REMOVED, REMOVING, Sandbox, reserved_name
from crio_py.spec.security import pod_sysctls
from crio_py.state import IdIndex, NameRegistry, RecordStore, check_field_types, new_id
from crio_py.storage import mounts, overlay
from crio_py.undo import UndoStack

log = logging.getLogger(__name__)
KIND = "pods"
# How long the pause process gets to exit on SIGKILL before stop gives up waiting.
PAUSE_EXIT_TIMEOUT = 10.0


class SandboxManager:
    """Owns every pod sandbox: its record, files, netns, network attachment and pause container."""

    def __init__(
        self,
        config: Callable[[], Config],
        store: RecordStore,
        images: ImageManager,
        cni: network.CNIManager,
        monitors: MonitorClient,
        events: EventBus,
        runtimes: RuntimeRegistry,
    ):
        self._config = config
        self._store = store
        self._images = images
        self._cni = cni
        self._monitors = monitors
        self._events = events
        self._pods: dict[str, Sandbox] = {}
        self._lock = threading.Lock()
        self._runtimes = runtimes
        self.ids = IdIndex("pod sandbox")
        self.names = NameRegistry("pod sandbox")
        cfg = config()
        self._run_root = Path(cfg.run_root)
        self._root = Path(cfg.root)

    # ---- start-up ----------------------------------------------------------------------

    def restore(self) -> None:
        """Rebuild memory from the records; undo pods whose creation a crash interrupted.

        A pod recorded in another boot is NOTREADY: a reboot ended its pause process. Exits while
        the daemon was down arrive once the monitors are watched again (see ContainerManager).
        """
        this_boot = boot_id()
        for pod_id, record in self._store.load_all(KIND).items():
            try:
                pod = Sandbox.from_record(record)
                check_field_types(pod)
                if pod.id != pod_id:
                    raise ValueError(f"the record is of pod {pod.id!r}")
                if pod.phase == CREATING:
                    log.warning("undoing a pod whose creation was interrupted", extra={"pod_id": pod_id})
                    # Kept (on disk only) if a step fails: tried again at the next start.
                    self.transition(pod, REMOVED if not self._teardown(pod) else REMOVING)
                    continue
            except Exception as exc:  # whatever a record holds, the daemon starts and serves
                self._store.quarantine(KIND, pod_id, exc)
                continue
            self._pods[pod_id] = pod
            self.ids.add(pod_id)
            # A removal that failed half-way is finished by RemovePodSandbox (its containers go first).
            if pod.phase == READY and pod.boot_id and pod.boot_id != this_boot:
                log.warning("pod sandbox from before a reboot is not ready", extra={"pod_id": pod_id})
                self.transition(pod, NOTREADY)
        self.names.rebuild((p.name, p.id) for p in self._pods.values())
        log.info("pods restored", extra={"count": len(self._pods)})

    # ---- the transition point ----------------------------------------------------------

    def transition(self, pod: Sandbox, phase: str, **changes: object) -> bool:
        """Move ``pod`` to ``phase`` (with field ``changes``): persist, update memory, wake waiters.

        The only writer of pod records. An illegal change (e.g. anything after removal) is
        refused and False returned.
        """
        with pod.lock:
            old = pod.phase
            # The same phase again changes fields only (not after removal).
            if (phase == old == REMOVED) or (phase != old and phase not in LEGAL[old]):
                log.debug("pod transition refused", extra={"pod_id": pod.id, "from": old, "to": phase})
                return False
            if phase == REMOVED:
                self._store.delete(KIND, pod.id)
            else:
                self._store.write(KIND, pod.id, dataclasses.replace(pod, phase=phase, **changes).to_record())
            pod.phase = phase
            for name, value in changes.items():
                setattr(pod, name, value)
            if phase == REMOVED:
                with self._lock:
                    self._pods.pop(pod.id, None)
                self.ids.remove(pod.id)
                self.names.release(pod.name, pod.id)
            elif old == CREATING and phase == READY:
                with self._lock:
                    self._pods[pod.id] = pod
                self.ids.add(pod.id)
            for kind in _pod_events(old, phase):
                self._events.publish(ContainerEvent(kind, pod.id, pod.id, pod))
            pod.changed.notify_all()
        if old != phase:
            log.info(f"pod sandbox {phase}", extra={"pod_id": pod.id, "from": old})
        return True

    def on_pause_exit(self, pod_id: str) -> None:
        """The pause process exited (its monitor said so, or a pidfd): the pod is no longer ready."""
        pod = self.find_exact(pod_id)
        if pod is not None and pod.phase == READY:
            self.transition(pod, NOTREADY)

    def on_monitor_gone(self, pod_id: str) -> None:
        """The pod's monitor went away: hear of the pause's end through a pidfd from now on."""
        pod = self.find_exact(pod_id)
        if pod is None or pod.phase != READY:
            return
        if self._monitors.pod_monitor(pod_id).exit_status(pod_id) is not None:
            self.on_pause_exit(pod_id)
            return
        self._monitors.watcher.watch_process(pod.pid, pod.pid_start, lambda: self.on_pause_exit(pod_id))

    def attachments(self) -> list[network.PodAttachment]:
        """Network attachments of pods that should have one (for CNI GC at start-up)."""
        with self._lock:
            pods = list(self._pods.values())
        return [self._attachment(p) for p in pods if p.network_attached]

    # ---- lookups -----------------------------------------------------------------------

    def get(self, pod_id: str) -> Sandbox:
        """The pod with this id or unique id prefix; NotFound otherwise."""
        full = self.ids.resolve(pod_id)
        with self._lock:
            pod = self._pods.get(full)
        if pod is None:
            raise NotFound(f"pod sandbox {pod_id!r} not found")
        return pod

    def find(self, pod_id: str) -> Sandbox | None:
        full = self.ids.find(pod_id)
        with self._lock:
            return self._pods.get(full) if full else None

    def find_exact(self, pod_id: str) -> Sandbox | None:
        """The pod with exactly this id (no prefix matching: for events)."""
        with self._lock:
            return self._pods.get(pod_id)

    def list(self) -> list[Sandbox]:
        with self._lock:
            return list(self._pods.values())

    def state(self, pod: Sandbox) -> int:
        """SANDBOX_READY while the pause process lives, SANDBOX_NOTREADY from the moment it is gone."""
        return pb.SANDBOX_READY if pod.ready() else pb.SANDBOX_NOTREADY

    def verbose_info(self, pod: Sandbox) -> dict[str, object]:
        """PodSandboxStatus verbose info: what an operator needs to find the pod on the host."""
        return {
            "pid": pod.pid,
            "netns": pod.netns_path,
            "cgroupParent": pod.cgroup_parent,
            "podDir": pod.pod_dir,
            "runtimeHandler": pod.runtime_handler,
            "runtimeSpec": spec.read_spec(Path(pod.bundle)) if pod.bundle else None,
        }

    # ---- run ---------------------------------------------------------------------------

    def run(self, config: pb.PodSandboxConfig, runtime_handler: str) -> Sandbox:
        """Create and start a pod sandbox (``config`` already validated); on any failure undo everything and raise."""
        cfg = self._config()
        if (runtime_handler or cfg.default_runtime) not in cfg.runtimes:
            raise InvalidArgument(
                f"unknown runtime handler {runtime_handler!r}; known: {', '.join(sorted(cfg.runtimes))}"
            )
        ns = config.linux.security_context.namespace_options
        if ns.network != pb.NODE and cfg.cni.require_network:
            network = self._cni.status()
            if not network.ready:
                # Before anything is made: a pod without its network is of no use to anyone.
                raise FailedPrecondition(
                    f"no CNI network is ready in {cfg.cni.conf_dir} ({network.message}): add a network config "
                    "there, or run the pod on the host network"
                )
        pod_sysctls(dict(config.linux.sysctls), cfg.default_sysctls, ns.network == pb.NODE, ns.ipc == pb.NODE)
        pod = Sandbox(
            id=new_id(),
            name=reserved_name(config.metadata),
            config=config,
            runtime_handler=runtime_handler or cfg.default_runtime,
            created_at_ns=time.time_ns(),
            boot_id=boot_id(),
        )
        # Every path the pod will own is decided (and recorded) before anything exists, so that a
        # crash at any later step leaves a "creating" record that says what to clean up.
        pod.cgroup_parent = cgroups.pod_cgroup_parent(cfg.cgroup_manager, config.linux.cgroup_parent)
        if cfg.cgroup_manager == cgroups.CGROUPFS:
            pod.cgroup_parent_created = self._made_by_pods(pod.cgroup_parent)
        pod.pod_dir = str(self._run_root / "pods" / pod.id)
        if ns.ipc != pb.NODE:
            pod.shm_path = str(Path(pod.pod_dir) / "shm")
        if ns.network != pb.NODE:
            pod.netns_path = str(self._run_root / "netns" / pod.id)
        pod.bundle = str(self._root / "containers" / pod.id)
        pod.rootfs = str(Path(pod.bundle) / "rootfs")
        ctx = {"pod_id": pod.id, "pod": f"{config.metadata.namespace}/{config.metadata.name}"}
        trace.owner(pod.id, pod.id)
        trace.mark("name reservation")
        self.names.reserve(pod.name, pod.id)
        with UndoStack("RunPodSandbox", **ctx) as undo:
            undo.push("release name", lambda: self.names.release(pod.name, pod.id))
            self.transition(pod, CREATING)
            undo.push("delete record", lambda: self.transition(pod, REMOVED))
            self._create(pod, cfg, undo)
            trace.mark("record")
            self.transition(pod, READY)
            undo.commit()
        log.info("pod sandbox ready", extra={**ctx, "pid": pod.pid, "ips": pod.ips})
        return pod

    def _made_by_pods(self, parent: str) -> str:
        """The top of what this pod's cgroup parent adds to the host's cgroups, or what an
        earlier pod already added there (so whichever of them goes last removes it)."""
        made = cgroups.first_missing_ancestor(parent)
        for other in self.list():
            top = other.cgroup_parent_created
            if top and (parent == top or parent.startswith(top + "/")) and (not made or len(top) < len(made)):
                made = top
        return made

    def _create(self, pod: Sandbox, cfg: Config, undo: UndoStack) -> None:
        step = trace.mark("pause image")
        try:
            image = self._images.ensure_pause_image()

            step = trace.mark("pod files")
            undo.push("pod files", lambda: shutil.rmtree(pod.pod_dir, ignore_errors=True))
            # Without a hostname the UTS namespace keeps the node's name: the files say the same.
            hostname = pod.config.hostname or os.uname().nodename
            pod_files.write_pod_files(Path(pod.pod_dir), hostname, pod.config.dns_config, [])
            if pod.shm_path:
                mounts.mount_tmpfs(Path(pod.shm_path), cfg.shm_size)
                undo.push("shm", lambda: mounts.unmount(Path(pod.shm_path)))

            if pod.netns_path:
                step = trace.mark("network namespace")
                network.create_netns(Path(pod.netns_path).parent, pod.id)
                undo.push("netns", lambda: network.remove_netns(Path(pod.netns_path)))
                # lo is the runtime's own business (cheaper than exec'ing the loopback plugin).
                network.set_loopback_up(Path(pod.netns_path))
                if self._cni.status().ready:
                    step = trace.mark("CNI ADD")
                    undo.push("CNI DEL", lambda: self._cni.teardown(self._attachment(pod)))
                    result = self._cni.setup(self._attachment(pod))
                    pod.network_attached = True
                    pod.ips = list(result.ips)
                pod_files.write_hosts(Path(pod.pod_dir), hostname, pod.ips)

            step = trace.mark("pause rootfs")
            bundle = Path(pod.bundle)
            bundle.mkdir(parents=True, exist_ok=True, mode=0o700)
            undo.push("bundle", lambda: shutil.rmtree(bundle, ignore_errors=True))
            overlay.mount_overlay(
                self._images.lowerdirs(image.id), bundle / "upper", bundle / "work", bundle / "rootfs"
            )
            undo.push("pause rootfs", lambda: mounts.unmount(bundle / "rootfs"))

            step = trace.mark("pause spec")
            oci_spec = spec.sandbox_spec(
                spec.SandboxSpecContext(
                    sandbox_id=pod.id,
                    config=pod.config,
                    rootfs=Path(pod.rootfs),
                    cgroup_parent=pod.cgroup_parent,
                    settings=cfg,
                    netns_path=pod.netns_path,
                    image_config=self._images.image_config(image.id),
                    pod_files={"/dev/shm": pod.shm_path} if pod.shm_path else {},
                )
            )
            spec.write_spec(bundle, oci_spec)

            step = trace.mark("pause create")
            runtime = self._runtimes.get(pod.runtime_handler)
            undo.push("monitor", lambda: self._stop_monitor(pod.id))
            undo.push("runtime delete", lambda: runtime.delete(pod.id, force=True))
            if pod.cgroup_parent_created:
                undo.push(
                    "cgroup parent",
                    lambda: cgroups.remove_empty_ancestors(pod.cgroup_parent, pod.cgroup_parent_created),
                )
            undo.push("cgroup", lambda: cgroups.remove_cgroup(self._pause_cgroup(pod)))
            request = CreateRequest.for_runtime(runtime.base_argv(), pod.id, bundle, bundle / "pause.log")
            pod.pid = self._monitors.ensure_pod_monitor(pod.id).create_container(request)
            pod.pid_start = start_time(pod.pid)
            step = trace.mark("pause start")
            runtime.start(pod.id)
        except MonitorError as exc:
            raise Internal(f"RunPodSandbox {pod.id}: {step}: {exc}") from exc
        except OSError as exc:
            raise Internal(f"RunPodSandbox {pod.id}: {step}: {exc}") from exc

    def _stop_monitor(self, pod_id: str) -> None:
        """Ask the pod's monitor to exit and delete its directory (exit records included)."""
        monitor = self._monitors.pod_monitor(pod_id)
        pid = monitor.pid()
        if pid and monitor.alive():
            started = start_time(pid)
            monitor.shutdown(force=True)
            wait_gone(pid, started, PAUSE_EXIT_TIMEOUT)
        self._monitors.remove_pod(pod_id)

    def _pause_cgroup(self, pod: Sandbox) -> str:
        return cgroups.container_cgroups_path(
            self._config().cgroup_manager, pod.cgroup_parent, cgroups.CONTAINER_PREFIX, pod.id
        )

    def _attachment(self, pod: Sandbox) -> network.PodAttachment:
        meta = pod.config.metadata
        return network.PodAttachment(
            pod_id=pod.id,
            name=meta.name,
            namespace=meta.namespace,
            uid=meta.uid,
            netns_path=pod.netns_path,
            port_mappings=tuple(
                network.PortMapping(
                    protocol=pb.Protocol.Name(pm.protocol).lower(),
                    container_port=pm.container_port,
                    host_port=pm.host_port,
                    host_ip=pm.host_ip,
                )
                for pm in pod.config.port_mappings
                if pm.host_port
            ),
        )

    # ---- stop / remove -----------------------------------------------------------------

    def stop(self, pod: Sandbox) -> None:
        """Stop the pause container and detach the network; keep the record. Idempotent."""
        with pod.lock:
            if pod.phase == REMOVED:
                return
            if same_process(pod.pid, pod.pid_start):
                self._runtimes.get(pod.runtime_handler).kill(pod.id, 9)
                if not wait_gone(pod.pid, pod.pid_start, PAUSE_EXIT_TIMEOUT):
                    raise Internal(f"StopPodSandbox {pod.id}: the pause process did not exit after SIGKILL")
                faults.point("StopPodSandbox:pause killed")
            # Its exit event may not have arrived yet: the pod is not ready from here on either way.
            if pod.phase == READY:
                self.transition(pod, NOTREADY)
            if pod.network_attached:
                self._cni.teardown(self._attachment(pod))
                faults.point("StopPodSandbox:network detached")
                self.transition(pod, pod.phase, network_attached=False)
        log.info("pod sandbox stopped", extra={"pod_id": pod.id})

    def remove(self, pod: Sandbox) -> None:
        """Stop if needed, then delete everything the pod had: mounts, netns, files, cgroup, record."""
        self.stop(pod)
        with pod.lock:
            if pod.phase == REMOVED:
                return
            failed = self._teardown(pod)
            if failed:
                # Nothing is forgotten while any of its resources might remain.
                self.transition(pod, REMOVING)
                raise Internal(
                    f"RemovePodSandbox {pod.id}: {'; '.join(failed)}; the pod is kept and its removal is "
                    "retried by the next RemovePodSandbox"
                )
            faults.point("RemovePodSandbox:torn down")
            self.transition(pod, REMOVED)
        log.info("pod sandbox removed", extra={"pod_id": pod.id})

    def _teardown(self, pod: Sandbox) -> list[str]:
        """Remove every resource a pod may hold, whatever phase it reached; the failed steps."""
        steps: list[tuple[str, Callable[[], object]]] = [
            ("runtime delete", lambda: self._runtimes.get(pod.runtime_handler).delete(pod.id, force=True)),
            ("monitor", lambda: self._stop_monitor(pod.id)),
        ]
        if pod.network_attached:
            steps.append(("CNI DEL", lambda: self._cni.teardown(self._attachment(pod))))
        if pod.rootfs:
            steps.append(("pause rootfs", lambda: mounts.unmount(Path(pod.rootfs))))
        if pod.bundle:
            steps.append(("bundle", lambda: shutil.rmtree(pod.bundle, ignore_errors=True)))
        if pod.shm_path:
            steps.append(("shm", lambda: mounts.unmount(Path(pod.shm_path))))
        if pod.pod_dir:
            steps.append(("pod files", lambda: shutil.rmtree(pod.pod_dir, ignore_errors=True)))
        if owns_log_directory(pod.config):
            log_dir = pod_log_directory(pod.config, pod.id, self._config().container_log_dir)
            steps.append(("default log directory", lambda: shutil.rmtree(log_dir, ignore_errors=True)))
        if pod.netns_path:
            steps.append(("netns", lambda: network.remove_netns(Path(pod.netns_path))))
        if pod.cgroup_parent:
            steps.append(("cgroup", lambda: cgroups.remove_cgroup(self._pause_cgroup(pod))))
        if pod.cgroup_parent_created:
            steps.append(
                ("cgroup parent", lambda: cgroups.remove_empty_ancestors(pod.cgroup_parent, pod.cgroup_parent_created))
            )
        failed = []
        for step, action in steps:
            try:
                action()
            except Exception as exc:
                failed.append(f"{step}: {exc}")
                log.error("pod teardown step failed", extra={"pod_id": pod.id, "step": step, "error": str(exc)})
        return failed


def _pod_events(old: str, new: str) -> tuple[EventKind, ...]:
    """The CRI events of a pod's transition (about its pause container, as containerd reports)."""
    if old == CREATING and new == READY:
        return (EventKind.CREATED, EventKind.STARTED)
    if old == READY and new == NOTREADY:
        return (EventKind.STOPPED,)
    if old != CREATING and new == REMOVED:
        return (EventKind.DELETED,)
    return ()
