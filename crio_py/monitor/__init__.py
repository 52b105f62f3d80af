"""Container monitors, daemon side: one monitor process (conmon/) per pod.

The monitor runs the runtime's create, holds each container's stdio, writes its CRI log, serves
attach and records its exit, independently of the daemon: a daemon restart finds it again
through ``<monitors_dir>/<pod_id>/`` (pid file and control socket).

When a monitor died (SIGKILL, OOM) its containers keep running, reparented to init, but their
output is no longer logged and their exit is never recorded: ``exit_status()`` stays None and
``alive()`` is False. The daemon should then report such a container as CONTAINER_UNKNOWN with
reason ``MONITOR_GONE_REASON`` (or RUNNING while the runtime's state says it runs), and leave
the container to StopContainer/RemoveContainer, which work through the runtime directly.
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

__all__ = [
    "DEFAULT_MONITORS_DIR",
    "MONITOR_GONE_REASON",
    "CreateRequest",
    "ExitStatus",
    "MonitorClient",
    "MonitorError",
    "PodMonitor",
    "connect_unix",
]
