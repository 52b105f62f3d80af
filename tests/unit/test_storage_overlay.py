"""Overlay mounts of layer directories: writable, read-only, deep (options beyond a page)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from crio_py.storage.overlay import mount_overlay, unmount

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root")


@pytest.fixture
def target(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "rootfs"
    try:
        yield path
    finally:
        unmount(path)


def layer(root: Path, name: str, files: dict[str, str]) -> Path:
    diff = root / name / "diff"
    diff.mkdir(parents=True)
    for rel, text in files.items():
        (diff / rel).write_text(text)
    return diff


def test_writable_mount_top_layer_wins_and_writes_go_up(tmp_path: Path, target: Path) -> None:
    lower = layer(tmp_path, "l0", {"a": "base", "b": "base"})
    top = layer(tmp_path, "l1", {"a": "top"})
    mount_overlay([top, lower], tmp_path / "upper", tmp_path / "work", target)
    assert (target / "a").read_text() == "top" and (target / "b").read_text() == "base"
    (target / "c").write_text("new")
    assert (tmp_path / "upper" / "c").read_text() == "new"
    assert not (top / "c").exists()


def test_readonly_single_layer_mounts_without_work_dir(tmp_path: Path, target: Path) -> None:
    only = layer(tmp_path, "l0", {"a": "only"})
    mount_overlay([only], tmp_path / "upper", tmp_path / "work", target, readonly=True)
    assert (target / "a").read_text() == "only"
    with pytest.raises(OSError):
        (target / "b").write_text("x")
    assert not (tmp_path / "work").exists()


def test_many_long_lowerdirs_mount_through_relative_paths(tmp_path: Path, target: Path) -> None:
    # 120 layers whose absolute paths alone are far beyond a page of mount options.
    deep = tmp_path / ("x" * 100)
    lowers = [layer(deep, f"{i:03d}", {f"f{i}": str(i)}) for i in range(120)]
    assert sum(len(str(p)) + 1 for p in lowers) > os.sysconf("SC_PAGE_SIZE")
    cwd = os.getcwd()
    mount_overlay(list(reversed(lowers)), tmp_path / "upper", tmp_path / "work", target)
    assert os.getcwd() == cwd
    assert (target / "f0").read_text() == "0" and (target / "f119").read_text() == "119"


def test_unmount_is_idempotent(tmp_path: Path, target: Path) -> None:
    mount_overlay([layer(tmp_path, "l0", {"a": "x"})], tmp_path / "upper", tmp_path / "work", target)
    unmount(target)
    unmount(target)
    unmount(tmp_path / "never-mounted")
    assert not (target / "a").exists()
