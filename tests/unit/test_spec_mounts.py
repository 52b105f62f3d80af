"""Mount helpers: creating missing bind sources, merging and ordering mounts."""

from __future__ import annotations

from pathlib import Path

import pytest

from crio_py.cri import api_pb2 as pb
from crio_py.errors import InvalidArgument
from crio_py.spec import ensure_host_paths
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
