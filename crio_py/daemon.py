"""The daemon's lifecycle in one place: lock, build the parts, serve, reload on SIGHUP, stop.

``Daemon.serve()`` reads top to bottom like the lifecycle: acquire the socket lock (a second
daemon on the same socket refuses to start), build the domain from the state on disk, start the
gRPC and metrics servers, wait for signals, shut down gracefully. Containers are left running:
their monitors own them.
"""

from __future__ import annotations

import dataclasses
import fcntl
import logging
import os
import signal
import threading
from pathlib import Path
from typing import Any

from crio_py import config as config_mod
from crio_py import log as log_mod
from crio_py import metrics, trace
from crio_py.config import Config, ConfigSources
from crio_py.container import ContainerManager
from crio_py.events import EventBus
from crio_py.image import ImageManager
from crio_py.lifecycle import PodLifecycle
from crio_py.monitor import ExitWatcher, MonitorClient
from crio_py.network import CNIManager, PluginService
from crio_py.oci import RuntimeRegistry
from crio_py.sandbox import SandboxManager
from crio_py.server.grpc_server import CRIServer
from crio_py.server.image_service import ImageService
from crio_py.server.runtime_service import RuntimeService
from crio_py.server.stats import containers_by_state, pods_by_state, writable_layers
from crio_py.server.streaming import StreamingBackend
from crio_py.server.validation import RequestValidator
from crio_py.state import RecordStore
from crio_py.stats import StatsCollector
from crio_py.streaming import StreamingServer

log = logging.getLogger(__name__)


class AlreadyRunning(Exception):
    """Another daemon holds the socket lock."""


class SocketLock:
    """An flock beside the socket, held for the daemon's lifetime (released by the kernel on death)."""

    def __init__(self, socket_path: Path):
        self.path = socket_path.with_name(socket_path.name + ".lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise AlreadyRunning(
                f"another crio-py (pid {holder}) is serving {self.path.name[:-5]} in {self.path.parent}; "
                "stop it first or use another --listen socket"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class Daemon:
    """Owns the configuration, the domain objects and the servers for one daemon process."""

    def __init__(self, config: Config, sources: ConfigSources):
        self.config = config
        self.sources = sources
        self._stop = threading.Event()
        self._reload = threading.Event()
        self._wake = threading.Event()
        self.metrics_port: int | None = None

    def serve(self) -> int:
        """Run until SIGTERM/SIGINT; return the process exit code."""
        lock = SocketLock(Path(self.config.listen))
        lock.acquire()
        try:
            # Before the sockets answer: a stop asked for during start-up is honoured once it is done.
            self._install_signal_handlers()
            self._startup()
            log.info(
                "crio-py serving",
                extra={"socket": self.config.listen, "root": self.config.root, "pid": os.getpid()},
            )
            self._main_loop()
            self._shutdown()
        finally:
            lock.release()
        return 0

    def _startup(self) -> None:
        cfg = self.config
        for path, mode in ((cfg.root, 0o711), (cfg.run_root, 0o755)):
            Path(path).mkdir(parents=True, exist_ok=True, mode=mode)
        config = self.current_config
        store = RecordStore(Path(cfg.root))
        self.cni_service: PluginService | None = None
        if cfg.cni.plugin_service:
            run_root = Path(cfg.run_root)
            self.cni_service = PluginService(run_root / "cni-plugins.sock", run_root / "cni-plugins.log")
        self.network = CNIManager(cfg.cni, self.cni_service)
        self.network.start_service_if_used()
        self.images = ImageManager(config, store)
        self.exit_watcher = ExitWatcher()
        monitors = MonitorClient(Path(cfg.run_root) / "monitors", watcher=self.exit_watcher)
        self.events = EventBus()
        runtimes = RuntimeRegistry(config)
        self.sandboxes = SandboxManager(config, store, self.images, self.network, monitors, self.events, runtimes)
        self.containers = ContainerManager(
            config, store, self.images, monitors, self.events, runtimes, self.sandboxes.find_exact
        )
        self.lifecycle = PodLifecycle(self.sandboxes, self.containers, monitors, runtimes)
        self.sandboxes.restore()
        self.containers.restore()
        self.exit_watcher.start(self.lifecycle.on_exit, self.lifecycle.on_monitor_gone)
        self.lifecycle.restore()
        try:
            self.network.gc(self.sandboxes.attachments())
        except Exception:  # best effort: what a bad cache entry holds must not keep the node down
            log.exception("CNI garbage collection at start-up failed; serving anyway")
        containers, sandboxes = self.containers, self.sandboxes
        self.stats = StatsCollector(lambda: writable_layers(containers), lambda: [p.id for p in sandboxes.list()])
        self.stats.start()
        trace.keep_traces(Path(cfg.run_root) / "traces")
        metrics.set_state_sources(lambda: containers_by_state(containers), lambda: pods_by_state(sandboxes))
        # Before the RPCs: Exec/Attach/PortForward answer with URLs on its port.
        self.streaming = StreamingServer(StreamingBackend(self.containers, self.sandboxes, monitors), cfg.streaming)
        self.streaming.start()
        runtime = RuntimeService(
            config, self.network.status, self.lifecycle, self.stats, self.events, self.streaming
        )
        validator = RequestValidator(lambda: self.current_config().cgroup_manager)
        self.server = CRIServer(Path(cfg.listen), runtime, ImageService(self.images), validator)
        self.server.start()
        if cfg.metrics.enabled:
            self.metrics_port = metrics.serve(cfg.metrics.address, cfg.metrics.port)

    def current_config(self) -> Config:
        """The running configuration (a SIGHUP may have replaced its live keys)."""
        return self.config

    def _install_signal_handlers(self) -> None:
        def on_stop(signum: int, _frame: Any) -> None:
            if self._stop.is_set():
                log.warning("second stop signal: exiting at once")
                os._exit(1)
            log.info("stop requested", extra={"signal": signal.Signals(signum).name})
            self._stop.set()
            self._wake.set()

        def on_hup(_signum: int, _frame: Any) -> None:
            self._reload.set()
            self._wake.set()

        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        signal.signal(signal.SIGHUP, on_hup)

    def _main_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait()
            self._wake.clear()
            if self._reload.is_set():
                self._reload.clear()
                self.reload()

    def reload(self) -> None:
        """Re-read the configuration; apply what can change live, log the rest."""
        try:
            new = self.sources.load()
        except config_mod.ConfigError as exc:
            log.error("config reload refused; keeping the running config", extra={"problems": exc.problems})
            return
        live, restart = config_mod.reload_changes(self.config, new)
        if restart:
            log.warning("config changes need a restart to take effect", extra={"keys": restart})
        if not live:
            log.info("config reloaded: nothing live changed")
            return
        # Only live keys move into the running config; the rest keeps what the daemon started with.
        self.config = _with_live(self.config, new)
        if "log_level" in live:
            log_mod.set_level(self.config.log_level)
        log.info("config reloaded", extra={"changed": live})

    def _shutdown(self) -> None:
        grace = float(self.config.shutdown_grace)
        log.info("shutting down: finishing in-flight RPCs", extra={"grace_seconds": grace})
        # Event streams never finish by themselves: end them first, cleanly.
        self.events.close()
        self.server.stop(grace)
        self.stats.stop()
        log.info("RPCs finished; ending streaming sessions")
        self.streaming.stop(grace)
        self.exit_watcher.stop()
        log.info("stopping the CNI plugin service")
        if self.cni_service is not None:
            self.cni_service.stop()
        log.info("crio-py stopped; containers keep running under their monitors")


def _with_live(old: Config, new: Config) -> Config:
    return dataclasses.replace(old, **{k: getattr(new, k) for k in config_mod.RELOADABLE})
