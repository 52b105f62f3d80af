"""Mount helpers: creating missing bind sources, merging and ordering mounts."""

from __future__ import annotations

from pathlib import Path

import pytest

from crio_py.cri import api_pb2 as pb
from crio_py.errors import FailedPrecondition, InvalidArgument
from crio_py.spec import check_mount_propagation, ensure_host_paths
from crio_py.spec.mounts import merge_mounts


def test_ensure_host_paths_creates_missing_directories(tmp_path: Path) -> None:
    existing = tmp_path / "exists"
    existing.write_text("a file stays a file")
    mounts = [
        pb.Mount(container_path="/a", host_path=str(existing)),
        pb.Mount(container_path="/b", host_path=str(tmp_path / "new/deep/dir")),
        pb.Mount(container_path="/c", host_path=str(tmp_path / "flat")),
    ]
    created = ensure_host_paths(mounts)
    assert created == [str(tmp_path / "new"), str(tmp_path / "flat")]
    assert (tmp_path / "new/deep/dir").is_dir() and (tmp_path / "flat").is_dir()
    assert existing.read_text() == "a file stays a file"
    assert ensure_host_paths(mounts) == []


def test_ensure_host_paths_refuses_bad_paths(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match=r"must not contain '\.\.'"):
        ensure_host_paths([pb.Mount(container_path="/a", host_path=f"{tmp_path}/../escape")])
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(InvalidArgument, match="cannot create host path"):
        ensure_host_paths([pb.Mount(container_path="/a", host_path=str(blocker / "sub"))])


def test_merge_mounts_later_layer_wins_and_parents_first() -> None:
    first = [{"destination": "/a/b", "source": "1"}, {"destination": "/a", "source": "1"}]
    second = [{"destination": "/a/b", "source": "2"}, {"destination": "/c", "source": "2"}]
    merged = merge_mounts(first, second)
    assert [(m["destination"], m["source"]) for m in merged] == [("/a", "1"), ("/c", "2"), ("/a/b", "2")]


MOUNTINFO = """\
1 0 8:1 / / rw,relatime - ext4 /dev/sda1 rw
2 1 8:2 / /srv rw,relatime shared:5 - ext4 /dev/sda2 rw
3 2 8:3 / /srv/private rw,relatime - ext4 /dev/sda3 rw
4 1 8:4 / /mnt rw,relatime master:7 - ext4 /dev/sda4 rw
"""
BIDIRECTIONAL = pb.MountPropagation.PROPAGATION_BIDIRECTIONAL
HOST_TO_CONTAINER = pb.MountPropagation.PROPAGATION_HOST_TO_CONTAINER


@pytest.mark.parametrize(
    ("host_path", "propagation"),
    [
        ("/srv/data", BIDIRECTIONAL),
        ("/srv", HOST_TO_CONTAINER),
        ("/mnt/x", HOST_TO_CONTAINER),
        ("/anything", pb.MountPropagation.PROPAGATION_PRIVATE),
    ],
)
def test_mount_propagation_possible(host_path: str, propagation: int) -> None:
    mount = pb.Mount(container_path="/d", host_path=host_path, propagation=propagation)  # type: ignore[arg-type]
    check_mount_propagation([mount], MOUNTINFO)


@pytest.mark.parametrize(
    ("host_path", "propagation", "match"),
    [
        ("/srv/private/x", BIDIRECTIONAL, "needs /srv/private/x on a shared mount, but /srv/private is not shared"),
        ("/mnt/x", BIDIRECTIONAL, "but /mnt is not shared"),
        ("/var/x", HOST_TO_CONTAINER, "needs /var/x on a shared or slave mount, but / is private"),
    ],
)
def test_mount_propagation_impossible(host_path: str, propagation: int, match: str) -> None:
    mount = pb.Mount(container_path="/d", host_path=host_path, propagation=propagation)  # type: ignore[arg-type]
    with pytest.raises(FailedPrecondition, match=match):
        check_mount_propagation([mount], MOUNTINFO)
