"""The long-lived service behind crio-py's own CNI plugins (cni-plugins/), and how we talk to it.

When every plugin of a network list is one of ours, the daemon sends the whole list (ADD, DEL,
CHECK, STATUS, GC) to the service as one request: no process is started per plugin call. Plugin
executables of ours that something else runs (or that share a list with foreign plugins) are
thin launchers handing their call to the same service. Without the service both still work,
only slower: the launchers then do the work themselves.

The service runs as the daemon's child that dies with it (PR_SET_PDEATHSIG), on a socket under
the run root that plugin processes find through ``CRIO_PY_CNI_SOCKET`` in their environment. It
is started only once a network list uses one of our plugins.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
SOCKET_ENV = "CRIO_PY_CNI_SOCKET"
# Our launchers carry this near their top (cni_plugins.install writes it).
MARKER = b"crio-py-cni-plugin"
CHAIN_MAGIC = b"crio-py-cni-chain/1"
MAX_REPLY = 1 << 20
# How long a freshly started service may take to listen before requests fall back.
START_TIMEOUT = 15.0
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def is_our_plugin(path: Path) -> bool:
    """Whether the executable is one of our launchers (served by the service)."""
    try:
        with open(path, "rb") as f:
            return MARKER in f.read(512)
    except OSError:
        return False


@dataclass(frozen=True)
class StepOutcome:
    """One plugin's run inside a chain request: exit code, stdout, stderr."""

    rc: int
    stdout: bytes
    stderr: str


class ServiceLost(Exception):
    """The service took the request and gave no answer (it died, or the request timed out)."""

    def __init__(self, msg: str, timed_out: bool = False):
        super().__init__(msg)
        self.timed_out = timed_out


class PluginService:
    """The service process, started on first need, and chain requests to it; thread-safe."""

    def __init__(self, socket_path: Path, log_path: Path) -> None:
        self.socket_path = socket_path
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._failed = False
        # Our launchers the daemon executes (lists mixing ours with others) find the service here,
        # never another daemon's at the default path; while it is not running they work standalone.
        os.environ[SOCKET_ENV] = str(socket_path)

    def ensure_started(self) -> bool:
        """Start the service unless it runs; False when it cannot (plugins then work standalone)."""
        with self._lock:
            if self._proc is not None and self._proc.poll() is None:
                return True
            if self._failed:
                return False
            if self._proc is not None:
                log.warning("CNI plugin service exited; starting it again", extra={"code": self._proc.returncode})
            try:
                with open(self.log_path, "ab") as out:
                    self._proc = subprocess.Popen(
                        [sys.executable, "-m", "cni_plugins.service", "--socket", str(self.socket_path)],
                        stdin=subprocess.DEVNULL,
                        stdout=out,
                        stderr=out,
                        # The death signal comes when the starting *thread* ends: only the main
                        # thread lives as long as the daemon. Started from another one, the
                        # service still notices its owner gone (it polls its parent pid).
                        preexec_fn=_die_with_parent if threading.current_thread() is threading.main_thread() else None,
                    )
            except OSError as exc:
                self._failed = True
                log.warning("CNI plugin service not started; plugins run standalone", extra={"error": str(exc)})
                return False
            log.info("CNI plugin service started", extra={"pid": self._proc.pid, "socket": str(self.socket_path)})
            return True

    @property
    def pid(self) -> int | None:
        """The service's pid while it runs."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def _connect(self) -> socket.socket | None:
        """A connection to the service, waiting for a fresh one to listen; None when there is none."""
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
            try:
                sock.connect(str(self.socket_path))
                return sock
            except OSError:
                sock.close()
            proc = self._proc
            if proc is None or proc.poll() is not None or time.monotonic() > deadline:
                return None
            time.sleep(0.01)

    def run_list(
        self,
        env: dict[str, str],
        steps: list[tuple[str, dict[str, Any]]],
        chain: bool,
        keep_going: bool,
        timeout: float,
    ) -> list[StepOutcome] | None:
        """Run plugins (type, config) in order in the service, one request for all of them.

        ``chain``: each result becomes the next plugin's prevResult (ADD). ``keep_going``: go on
        past failures (DEL, GC). Returns one outcome per plugin run; None when the service is
        not there to ask (run the executables instead); ServiceLost when it took the request
        and gave no answer (a half-done ADD must not be redone blindly).
        """
        if not self.ensure_started():
            return None
        sock = self._connect()
        if sock is None:
            return None
        request = {
            "env": env,
            "plugins": [{"type": ptype, "config": conf} for ptype, conf in steps],
            "chain": chain,
            "keep_going": keep_going,
        }
        with sock:
            sock.settimeout(timeout)
            try:
                sock.sendall(CHAIN_MAGIC + b"\0" + json.dumps(request).encode())
            except OSError:
                return None
            try:
                reply = sock.recv(MAX_REPLY)
            except TimeoutError:
                raise ServiceLost(f"no answer within {timeout:g}s", timed_out=True) from None
            except OSError as exc:
                raise ServiceLost(f"the plugin service failed during the request: {exc}") from None
        try:
            data = json.loads(reply)
        except ValueError:
            raise ServiceLost(f"the plugin service failed during the request ({reply[:100]!r})") from None
        if "error" in data:
            raise ServiceLost(f"the plugin service refused the request: {data['error']}")
        return [StepOutcome(int(r["rc"]), str(r["stdout"]).encode(), str(r["stderr"])) for r in data["results"]]

    def stop(self) -> None:
        """Stop the service at daemon shutdown (requests it took get a moment to finish)."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
