"""Builders of CRI requests and host-side probes for end-to-end tests."""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
from pathlib import Path

import grpc

from crio_py import cgroups
from crio_py.cri import api_pb2 as pb
from tests.support.daemon import DaemonHandle


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def pod_config(
    name: str | None = None,
    *,
    cgroup_parent: str = "",
    hostname: str = "",
    log_directory: str = "",
    network: int = pb.POD,
    pid: int = pb.CONTAINER,
    ipc: int = pb.POD,
    sysctls: dict[str, str] | None = None,
    dns: pb.DNSConfig | None = None,
    port_mappings: list[pb.PortMapping] | None = None,
) -> pb.PodSandboxConfig:
    """A pod config as kubelet would send it (names unique per call unless given)."""
    name = name or unique("pod")
    return pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name=name, namespace="e2e", uid=f"uid-{name}", attempt=0),
        hostname=hostname or name,
        log_directory=log_directory,
        dns_config=dns,
        port_mappings=port_mappings or [],
        labels={"app": name, "suite": "e2e"},
        annotations={"note": "made by tests"},
        linux=pb.LinuxPodSandboxConfig(
            cgroup_parent=cgroup_parent,
            sysctls=sysctls or {},
            security_context=pb.LinuxSandboxSecurityContext(
                namespace_options=pb.NamespaceOption(network=network, pid=pid, ipc=ipc)
            ),
        ),
    )


def remove_everything(daemon: DaemonHandle) -> None:
    """Best-effort: stop and remove every container and pod the daemon knows (test teardown)."""
    if daemon.proc is None or daemon.proc.poll() is not None:
        return
    try:
        for ctr in daemon.runtime.ListContainers(pb.ListContainersRequest(), timeout=30).containers:
            daemon.runtime.RemoveContainer(pb.RemoveContainerRequest(container_id=ctr.id), timeout=60)
        for pod in daemon.runtime.ListPodSandbox(pb.ListPodSandboxRequest(), timeout=30).items:
            daemon.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod.id), timeout=60)
            daemon.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod.id), timeout=60)
    except grpc.RpcError:
        pass


def kill_cgroup_processes_and_remove(parent: str) -> None:
    """Kill whatever still runs under a test's cgroup parent, then remove the cgroup tree."""
    for directory in cgroups.find_cgroup_dirs(parent).values():
        for procs in directory.rglob("cgroup.procs"):
            for pid in procs.read_text().split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), 9)
    with contextlib.suppress(Exception):
        cgroups.remove_cgroup(parent)


def ns_inode(pid: int | str, kind: str) -> int:
    """The inode of /proc/<pid>/ns/<kind> (equal inodes: the same namespace)."""
    return os.stat(f"/proc/{pid}/ns/{kind}").st_ino


def nsenter(pid: int, flags: str, *argv: str) -> str:
    """Run a host command inside some namespaces of ``pid`` (flags such as "-n -u")."""
    out = subprocess.run(
        ["nsenter", "-t", str(pid), *flags.split(), "--", *argv], capture_output=True, text=True, timeout=30
    )
    if out.returncode != 0:
        raise AssertionError(f"nsenter {flags} {argv}: {out.stderr}")
    return out.stdout


def host_mounts_under(path: Path) -> list[str]:
    """Mount points below ``path`` in the host's mount table, except the shared netns directory
    itself, which stays mounted for the daemon's lifetime like /run/netns does."""
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4]
        if point.startswith(str(path) + "/") and not point.endswith("/run/netns"):
            points.append(point)
    return points
