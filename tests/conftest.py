"""Test-wide settings: e2e tests need root (namespaces, mounts, cgroups, runc)."""

from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="e2e tests run as root")
    for item in items:
        if "e2e" in item.keywords:
            item.add_marker(skip)
