"""Fixtures for end-to-end tests: a real daemon in a temp directory, cleaned up afterwards."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

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
def daemon_handle(workdir: Path) -> Iterator[DaemonHandle]:
    """A configured daemon that the test starts itself (to change its config first)."""
    handle = new_daemon(workdir)
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture
def daemon(daemon_handle: DaemonHandle) -> DaemonHandle:
    """A started daemon."""
    daemon_handle.start()
    return daemon_handle
