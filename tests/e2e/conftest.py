"""Fixtures for end-to-end tests: a real daemon in a temp directory, cleaned up afterwards."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cri import kill_cgroup_processes_and_remove, remove_everything, unique
from tests.support.daemon import DaemonHandle, cleanup_workdir, new_daemon


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="crio-py-e2e-"))
    try:
        yield path
    finally:
        cleanup_workdir(path)
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def cgroup_parent() -> Iterator[str]:
    """A cgroupfs parent of the test's own; whatever is left under it is killed and removed."""
    parent = "/" + unique("crio-py-e2e")
    try:
        yield parent
    finally:
        kill_cgroup_processes_and_remove(parent)


@pytest.fixture
def daemon_handle(workdir: Path, cgroup_parent: str) -> Iterator[DaemonHandle]:
    """A configured daemon that the test starts itself (to change its config first)."""
    handle = new_daemon(workdir)
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
