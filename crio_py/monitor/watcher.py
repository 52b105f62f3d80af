"""One thread that hears every container exit: pushed by the pod monitors, or seen through a
pidfd when a container's monitor is gone.

The domain gives the watcher three callbacks and gets each exit the moment it happens; nothing
polls. ``on_exit(pod_id, container_id, status)`` for an exit a monitor recorded (the pause
container's id is its pod's), ``on_gone(pod_id)`` when a monitor's connection ends (the monitor
exited or died: the domain decides which, from what it asked for and what is still alive), and
the callback given to :meth:`ExitWatcher.watch_process` when a watched process ends.
Callbacks run on the watcher's thread (or the caller's, for exits recorded before a watch).
"""

from __future__ import annotations

import json
import logging
import os
import selectors
import socket
import threading
from collections.abc import Callable

from crio_py.monitor.client import ExitStatus, MonitorError, PodMonitor, exit_status_from
from crio_py.proc import same_process

log = logging.getLogger(__name__)

ExitCallback = Callable[[str, str, ExitStatus], None]
GoneCallback = Callable[[str], None]


class _Subscribed:
    __slots__ = ("buffer", "pod_id", "sock")

    def __init__(self, pod_id: str, sock: socket.socket, buffer: bytes) -> None:
        self.pod_id = pod_id
        self.sock = sock
        self.buffer = buffer


class ExitWatcher:
    """Exit events of every watched monitor and process, on one thread (``start``/``stop``)."""

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._lock = threading.Lock()
        self._subscribed: dict[str, _Subscribed] = {}
        self._on_exit: ExitCallback = lambda _pod, _ctr, _status: None
        self._on_gone: GoneCallback = lambda _pod: None
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._stopping = False
        self._thread: threading.Thread | None = None

    def start(self, on_exit: ExitCallback, on_gone: GoneCallback) -> None:
        """Deliver events to these callbacks from now on."""
        self._on_exit, self._on_gone = on_exit, on_gone
        self._thread = threading.Thread(target=self._run, name="exit-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and close every subscription (monitors carry on without us)."""
        self._stopping = True
        os.write(self._wake_w, b"x")
        if self._thread is not None:
            self._thread.join(5)
        with self._lock:
            for sub in self._subscribed.values():
                sub.sock.close()
            self._subscribed.clear()

    def watching(self, pod_id: str) -> bool:
        with self._lock:
            return pod_id in self._subscribed

    def watch(self, monitor: PodMonitor) -> None:
        """Hear the exits of ``monitor``'s containers: those recorded already are delivered now,
        in the caller's thread; a monitor that is not running is reported gone at once."""
        if self.watching(monitor.pod_id):
            return
        try:
            _version, features = monitor.version()
            if "subscribe" not in features:
                # An older monitor that outlived a daemon upgrade: it records exits but cannot push
                # them; its processes are watched like those of a monitor that is gone.
                log.warning("monitor cannot push exits (older version)", extra={"pod_id": monitor.pod_id})
                self._on_gone(monitor.pod_id)
                return
            subscription = monitor.subscribe()
        except MonitorError as exc:
            log.info("monitor not running", extra={"pod_id": monitor.pod_id, "error": str(exc)})
            self._on_gone(monitor.pod_id)
            return
        for container_id, status in subscription.exits.items():
            self._on_exit(monitor.pod_id, container_id, status)
        sub = _Subscribed(monitor.pod_id, subscription.sock, b"")
        with self._lock:
            self._subscribed[monitor.pod_id] = sub
        self._feed(sub, subscription.buffer)
        subscription.sock.setblocking(False)
        self._selector.register(subscription.sock, selectors.EVENT_READ, sub)
        log.debug("watching monitor", extra={"pod_id": monitor.pod_id})

    def watch_process(self, pid: int, started: int, callback: Callable[[], None]) -> None:
        """Call ``callback`` once the process ``pid`` (start time ``started``) has exited; at once
        (in the caller's thread) if it already has."""
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            callback()
            return
        if not same_process(pid, started):
            os.close(pidfd)
            callback()
            return
        self._selector.register(pidfd, selectors.EVENT_READ, callback)

    def _run(self) -> None:
        while not self._stopping:
            for key, _events in self._selector.select():
                if key.data is None:
                    continue  # the wake-up pipe: the loop condition says why
                if isinstance(key.data, _Subscribed):
                    self._readable(key.data)
                else:
                    self._selector.unregister(key.fd)
                    os.close(key.fd)
                    self._call(key.data)

    def _readable(self, sub: _Subscribed) -> None:
        try:
            data = sub.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            self._feed(sub, data)
            return
        self._selector.unregister(sub.sock)
        sub.sock.close()
        with self._lock:
            self._subscribed.pop(sub.pod_id, None)
        log.info("monitor connection ended", extra={"pod_id": sub.pod_id})
        self._call(lambda: self._on_gone(sub.pod_id))

    def _feed(self, sub: _Subscribed, data: bytes) -> None:
        sub.buffer += data
        while b"\n" in sub.buffer:
            line, sub.buffer = sub.buffer.split(b"\n", 1)
            try:
                event = json.loads(line)
                if event.get("event") != "exit":
                    continue
                container_id, status = str(event["id"]), exit_status_from(event)
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                log.error("malformed monitor event ignored", extra={"pod_id": sub.pod_id, "error": str(exc)})
                continue
            self._call(lambda c=container_id, s=status: self._on_exit(sub.pod_id, c, s))

    @staticmethod
    def _call(callback: Callable[[], None]) -> None:
        # One failing callback must not end the thread that hears every other exit.
        try:
            callback()
        except Exception:
            log.exception("exit handling failed")
