"""Container monitors, daemon side: one monitor process (conmon/) per pod.

The monitor runs the runtime's create, holds each container's stdio, writes its CRI log, serves
attach and records its exit, independently of the daemon: a daemon restart finds it again
through ``<monitors_dir>/<pod_id>/`` (pid file and control socket).

Exits are pushed: the daemon subscribes to every monitor (``ExitWatcher``) and hears each exit
the moment it is reaped; exit files stay for a daemon that was down.

When a monitor died (SIGKILL, OOM) its containers keep running, reparented to init, but their
output is no longer logged and their exit is never recorded. The watcher reports the monitor
gone the moment its connection ends; the daemon then watches its processes through pidfds and
reports a container that ends as CONTAINER_UNKNOWN with reason ``MONITOR_GONE_REASON`` (RUNNING
with that reason while it runs), leaving it to StopContainer/RemoveContainer, which work through
the runtime directly.
"""

from crio_py.monitor.client import (
    DEFAULT_MONITORS_DIR,
    MONITOR_GONE_REASON,
    CreateRequest,
    ExitStatus,
    MonitorClient,
    MonitorError,
    PodMonitor,
    connect_unix,
)
from crio_py.monitor.watcher import ExitWatcher

__all__ = [
    "DEFAULT_MONITORS_DIR",
    "MONITOR_GONE_REASON",
    "CreateRequest",
    "ExitStatus",
    "ExitWatcher",
    "MonitorClient",
    "MonitorError",
    "PodMonitor",
    "connect_unix",
]
