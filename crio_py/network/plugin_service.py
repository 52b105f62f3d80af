"""The long-lived service behind crio-py's own CNI plugins (cni-plugins/).

Our plugin executables are thin launchers that hand each request to this service, which has
pyroute2 and the plugins imported already; without it they do the work themselves, only slower.
The daemon runs it as a child that dies with the daemon (PR_SET_PDEATHSIG), on a socket under
the run root that plugin processes find through ``CRIO_PY_CNI_SOCKET`` in their environment.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

log = logging.getLogger(__name__)
SOCKET_ENV = "CRIO_PY_CNI_SOCKET"
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def start_plugin_service(socket_path: Path, log_path: Path) -> subprocess.Popen[bytes] | None:
    """Start the plugin service; None (plugins fall back to in-process work) when it cannot start."""
    os.environ[SOCKET_ENV] = str(socket_path)  # inherited by every plugin the daemon executes
    try:
        with open(log_path, "ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "cni_plugins.service", "--socket", str(socket_path)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                preexec_fn=_die_with_parent,
            )
    except OSError as exc:
        log.warning("CNI plugin service not started; plugins run standalone", extra={"error": str(exc)})
        return None
    log.info("CNI plugin service started", extra={"pid": proc.pid, "socket": str(socket_path)})
    return proc


def stop_plugin_service(proc: subprocess.Popen[bytes] | None) -> None:
    """Stop the service at daemon shutdown (in-flight plugin calls finish in their workers, which
    outlive it: the daemon's shutdown must not wait on them)."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(2)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
