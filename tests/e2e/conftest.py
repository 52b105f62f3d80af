"""Fixtures for end-to-end tests: a real daemon in a temp directory, a real registry on
127.0.0.1 with test images, and cleanup of everything they made."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from crio_py.cri import api_pb2 as pb
from tests.support.cri import kill_cgroup_processes_and_remove, pod_config, remove_everything, unique
from tests.support.daemon import DaemonHandle, cleanup_workdir, new_daemon
from tests.support.oci_images import busybox_layer, push_image
from tests.support.pods import Pod
from tests.support.registry import Registry

BUSYBOX_REPO = "library/busybox"


@pytest.fixture(scope="session")
def registry() -> Iterator[Registry]:
    """A docker-registry on 127.0.0.1 holding a busybox image (for the whole session)."""
    reg = Registry().start()
    try:
        push_image(reg, BUSYBOX_REPO, "latest", [busybox_layer()])
        yield reg
    finally:
        reg.stop()


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="crio-py-e2e-"))
    try:
        yield path
    finally:
        cleanup_workdir(path)


@pytest.fixture
def cgroup_parent() -> Iterator[str]:
    """A cgroupfs parent of the test's own; whatever is left under it is killed and removed."""
    parent = "/" + unique("crio-py-e2e")
    try:
        yield parent
    finally:
        kill_cgroup_processes_and_remove(parent)


@pytest.fixture
def daemon_handle(workdir: Path, cgroup_parent: str, registry: Registry) -> Iterator[DaemonHandle]:
    """A configured daemon that the test starts itself (to change its config first)."""
    handle = new_daemon(workdir)
    handle.config["registries"]["insecure"].append(registry.host)
    try:
        yield handle
    finally:
        remove_everything(handle)
        handle.stop()


@pytest.fixture
def daemon(daemon_handle: DaemonHandle) -> DaemonHandle:
    """A started daemon."""
    daemon_handle.start()
    return daemon_handle


@pytest.fixture
def busybox(daemon: DaemonHandle, registry: Registry) -> str:
    """A busybox image reference, pulled into the daemon."""
    ref = f"{registry.host}/{BUSYBOX_REPO}:latest"
    daemon.images.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=ref)), timeout=120)
    return ref


@pytest.fixture
def pod(daemon: DaemonHandle, busybox: str, cgroup_parent: str, tmp_path: Path) -> Pod:
    """A ready pod (busybox pulled) whose container logs go to a temp log directory."""
    return Pod(daemon, busybox, pod_config(cgroup_parent=cgroup_parent, log_directory=str(tmp_path / "logs")))
