"""Start the real crio-py daemon for end-to-end tests: temp root, temp socket, gRPC stubs."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import yaml

from crio_py.cri import api_pb2 as pb
from crio_py.cri import api_pb2_grpc

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class DaemonHandle:
    """One daemon process and the stubs that talk to it."""

    workdir: Path
    config: dict[str, Any]
    extra_args: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    channel: grpc.Channel | None = None

    @property
    def socket(self) -> Path:
        return Path(self.config["listen"])

    @property
    def log_path(self) -> Path:
        return self.workdir / "daemon.log"

    @property
    def config_file(self) -> Path:
        return self.workdir / "crio-py.yaml"

    def write_config(self) -> None:
        self.config_file.write_text(yaml.safe_dump(self.config))

    def command(self, *args: str) -> list[str]:
        """The crio-py command line for this daemon's config."""
        return [
            sys.executable, "-m", "crio_py", "--config", str(self.config_file),
            "--config-dir", str(self.workdir / "crio-py.d"), *args,
        ]

    def start(self, timeout: float = 20) -> None:
        """Start the daemon and wait until Version answers."""
        self.write_config()
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.command("daemon", *self.extra_args), stdout=log, stderr=log, cwd=REPO,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited with {self.proc.returncode}:\n{self.log_text()}")
            if self.socket.exists():
                try:
                    self.runtime.Version(pb.VersionRequest(), timeout=1)
                    return
                except grpc.RpcError:
                    pass
            time.sleep(0.05)
        raise RuntimeError(f"daemon did not answer within {timeout}s:\n{self.log_text()}")

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _channel(self) -> grpc.Channel:
        if self.channel is None:
            self.channel = grpc.insecure_channel(f"unix://{self.socket}")
        return self.channel

    @property
    def runtime(self) -> api_pb2_grpc.RuntimeServiceStub:
        return api_pb2_grpc.RuntimeServiceStub(self._channel())

    @property
    def images(self) -> api_pb2_grpc.ImageServiceStub:
        return api_pb2_grpc.ImageServiceStub(self._channel())

    def send_signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        """Stop the daemon (SIGTERM, then SIGKILL after ``timeout``); return its exit code."""
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code = self.proc.returncode
        self.proc = None
        return code

    def kill(self) -> None:
        """SIGKILL the daemon, as a crash would."""
        self.stop(signal.SIGKILL)

    def restart(self) -> None:
        self.stop()
        self.start()


def daemon_config(workdir: Path) -> dict[str, Any]:
    """A config that keeps everything of the daemon under ``workdir``."""
    (workdir / "crio-py.d").mkdir(parents=True, exist_ok=True)
    (workdir / "cni").mkdir(exist_ok=True)
    return {
        "root": str(workdir / "root"),
        "run_root": str(workdir / "run"),
        "listen": str(workdir / "run" / "crio-py.sock"),
        "log_level": "debug",
        "container_log_dir": str(workdir / "logs"),
        "runtimes": {"runc": {"path": "runc", "root": str(workdir / "run" / "runc"), "type": "oci"}},
        # Pods without a CNI network (only lo) are enough for most tests.
        "cni": {"conf_dir": str(workdir / "cni"), "cache_dir": str(workdir / "cni-cache"), "require_network": False},
        "metrics": {"enabled": True, "address": "127.0.0.1", "port": free_port()},
        # Nothing listens there: the daemon builds its pause image locally, as on an offline node.
        "pause_image": "127.0.0.1:1/pause:3.10",
        "registries": {"insecure": ["127.0.0.1:1"]},
    }


def new_daemon(workdir: Path) -> DaemonHandle:
    """A daemon handle (not started) with its own directories under ``workdir``."""
    return DaemonHandle(workdir=workdir, config=daemon_config(workdir))


def kill_monitors_under(workdir: Path) -> None:
    """SIGKILL the pod monitors a test daemon started for pods under ``workdir``.

    A monitor outlives its daemon by design; a test that killed its daemon, or failed before its
    pods were removed, would otherwise leave monitors serving a directory about to be deleted.
    """
    prefix = str(workdir) + "/"
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if b"--pod-dir" in argv[:-1] and argv[argv.index(b"--pod-dir") + 1].decode(errors="replace").startswith(prefix):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry), signal.SIGKILL)


def cleanup_workdir(workdir: Path) -> None:
    """Kill the monitors of ``workdir``'s pods, unmount what is left under it (deepest first), delete it."""
    kill_monitors_under(workdir)
    mounts = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4]
            if point.startswith(str(workdir) + "/"):
                mounts.append(point)
    for point in sorted(mounts, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)
    os.sync()
    shutil.rmtree(workdir, ignore_errors=True)
