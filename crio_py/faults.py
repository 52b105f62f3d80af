"""Fault points: named places inside the RPCs where a test makes the daemon SIGKILL itself.

A test starts the daemon with ``CRIO_PY_FAULT_POINT=<name>``; the variable is read once, at
import, so a production daemon (which never sets it) pays one string comparison per point. The
daemon dies as a power cut or an OOM kill would leave it, in the middle of the named step,
and the test checks what the restarted daemon makes of it.

Names are ``<RPC>:<step>``. The steps of RunPodSandbox, CreateContainer and StartContainer are
their start-up trace phases and spans (crio_py.trace calls :func:`point` on entering each);
the other RPCs call :func:`point` themselves. :data:`POINTS` lists every one a test iterates
(``StopPodSandbox:network detached`` and each ``RunPodSandbox:CNI <plugin>`` exist too, with a
network configured).
"""

from __future__ import annotations

import os
import signal

ENV = "CRIO_PY_FAULT_POINT"
_ARMED = os.environ.get(ENV, "")

POINTS = (
    "RunPodSandbox:name reservation",
    "RunPodSandbox:pause image",
    "RunPodSandbox:pod files",
    "RunPodSandbox:network namespace",
    "RunPodSandbox:pause rootfs",
    "RunPodSandbox:pause spec",
    "RunPodSandbox:pause create",
    "RunPodSandbox:monitor start",
    "RunPodSandbox:pause start",
    "RunPodSandbox:record",
    "CreateContainer:image lookup",
    "CreateContainer:name reservation",
    "CreateContainer:log directory",
    "CreateContainer:rootfs",
    "CreateContainer:spec",
    "CreateContainer:runtime create",
    "CreateContainer:record",
    "StartContainer:runtime start",
    "StartContainer:record",
    "StopContainer:signalled",
    "StopPodSandbox:pause killed",
    "RemovePodSandbox:torn down",
    "RemoveContainer:torn down",
    "PullImage:layers stored",
    "ImageGC:layer removed",
)


def point(name: str) -> None:
    """SIGKILL this process if ``name`` is the armed fault point (never in production)."""
    if _ARMED and name == _ARMED:
        os.kill(os.getpid(), signal.SIGKILL)
