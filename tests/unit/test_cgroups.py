"""Cgroups: version detection, driver paths, cleanup and stats, on fake hierarchies in a temp dir."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from crio_py import cgroups
from crio_py.cgroups import Hierarchy, controllers
from crio_py.errors import Internal, InvalidArgument

HYBRID = """\
22 1 0:20 / /sys rw,nosuid - sysfs sysfs rw
31 22 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:9 - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd,release_agent=/x
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
"""
UNIFIED = """\
22 1 0:20 / /sys rw,nosuid - sysfs sysfs rw
30 22 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate
"""


def test_parse_hybrid_mountinfo() -> None:
    assert cgroups.parse_mountinfo(HYBRID) == [
        Hierarchy("/sys/fs/cgroup/cpu,cpuacct", 1, ("cpu", "cpuacct")),
        Hierarchy("/sys/fs/cgroup/memory", 1, ("memory",)),
        Hierarchy("/sys/fs/cgroup/systemd", 1, ("name=systemd",)),
        Hierarchy("/sys/fs/cgroup/unified", 2, ()),
    ]
    assert cgroups.version_of(cgroups.parse_mountinfo(HYBRID)) == 1


def test_unified_is_version_2() -> None:
    assert cgroups.version_of(cgroups.parse_mountinfo(UNIFIED)) == 2


def test_this_host_has_a_version() -> None:
    assert cgroups.cgroup_version() in (1, 2)


@pytest.mark.parametrize(
    ("driver", "requested", "expected"),
    [
        ("cgroupfs", "", "/crio-py"),
        ("cgroupfs", "/kubepods/burstable/pod12/", "/kubepods/burstable/pod12"),
        ("systemd", "", "crio_py.slice"),
        ("systemd", "kubepods-burstable-pod12.slice", "kubepods-burstable-pod12.slice"),
    ],
)
def test_pod_cgroup_parent(driver: str, requested: str, expected: str) -> None:
    assert cgroups.pod_cgroup_parent(driver, requested) == expected


@pytest.mark.parametrize(
    ("driver", "requested", "match"),
    [
        ("cgroupfs", "kubepods.slice", "configured for systemd"),
        ("cgroupfs", "/kubepods/../etc", "without '..'"),
        ("systemd", "/kubepods/pod1", "configured for cgroupfs"),
        ("systemd", "kubepods", "slice name"),
        ("cgroupv3", "", "unknown cgroup driver"),
    ],
)
def test_pod_cgroup_parent_mismatch(driver: str, requested: str, match: str) -> None:
    with pytest.raises(InvalidArgument, match=match):
        cgroups.pod_cgroup_parent(driver, requested)


def test_container_cgroups_path() -> None:
    assert cgroups.container_cgroups_path("cgroupfs", "/kubepods/pod1", "crio-py", "abc") == (
        "/kubepods/pod1/crio-py-abc"
    )
    assert cgroups.container_cgroups_path("cgroupfs", "", "crio-py", "abc") == "/crio-py/crio-py-abc"
    assert cgroups.container_cgroups_path("systemd", "kubepods-pod1.slice", "crio-py", "abc") == (
        "kubepods-pod1.slice:crio-py:abc"
    )


def test_systemd_paths_on_disk() -> None:
    assert cgroups.systemd_slice_path("kubepods-besteffort-pod1.slice") == (
        "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice"
    )
    assert cgroups.systemd_slice_path("-.slice") == "/"
    assert cgroups.fs_path("kubepods-pod1.slice:crio-py:abc") == "/kubepods.slice/kubepods-pod1.slice/crio-py-abc.scope"
    assert cgroups.fs_path("crio_py.slice") == "/crio_py.slice"
    assert cgroups.fs_path("/crio-py/crio-py-abc/") == "/crio-py/crio-py-abc"


@pytest.fixture
def fake_v1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """cpu,cpuacct and memory hierarchies made of plain directories (rmdir works on them alike)."""
    found = (
        Hierarchy(str(tmp_path / "cpu,cpuacct"), 1, ("cpu", "cpuacct")),
        Hierarchy(str(tmp_path / "memory"), 1, ("memory",)),
    )
    for h in found:
        Path(h.mountpoint).mkdir()
    monkeypatch.setattr(cgroups, "hierarchies", lambda: found)
    return tmp_path


def test_remove_cgroup_leaf_first_everywhere_and_idempotent(fake_v1: Path) -> None:
    for top in ("cpu,cpuacct", "memory"):
        (fake_v1 / top / "pods/pod1/crio-py-a").mkdir(parents=True)
        (fake_v1 / top / "pods/pod1/crio-py-b").mkdir(parents=True)
    dirs = cgroups.find_cgroup_dirs("/pods/pod1")
    assert dirs == {
        "cpu": fake_v1 / "cpu,cpuacct/pods/pod1",
        "cpuacct": fake_v1 / "cpu,cpuacct/pods/pod1",
        "memory": fake_v1 / "memory/pods/pod1",
    }
    cgroups.remove_cgroup("/pods/pod1")
    assert not (fake_v1 / "memory/pods/pod1").exists()
    assert (fake_v1 / "memory/pods").is_dir()
    assert cgroups.find_cgroup_dirs("/pods/pod1") == {}
    cgroups.remove_cgroup("/pods/pod1")


def test_remove_cgroup_retries_while_busy(fake_v1: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (fake_v1 / "memory/pod").mkdir()
    failures = [errno.EBUSY, errno.EBUSY]
    real_rmdir = os.rmdir

    def rmdir(path: str) -> None:
        if failures:
            raise OSError(failures.pop(), "Device or resource busy")
        real_rmdir(path)

    monkeypatch.setattr(cgroups.os, "rmdir", rmdir)
    cgroups.remove_cgroup("/pod")
    assert not (fake_v1 / "memory/pod").exists()


def test_remove_cgroup_gives_up_naming_the_directory(fake_v1: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (fake_v1 / "memory/pod").mkdir()
    monkeypatch.setattr(cgroups, "_REMOVE_RETRY_SECONDS", 0.1)

    def rmdir(path: str) -> None:
        raise OSError(errno.EBUSY, "Device or resource busy")

    monkeypatch.setattr(cgroups.os, "rmdir", rmdir)
    with pytest.raises(Internal, match=r"cannot remove cgroup .*pod.*processes still in it"):
        cgroups.remove_cgroup("/pod")


def test_remove_root_refused() -> None:
    with pytest.raises(InvalidArgument):
        cgroups.remove_cgroup("/")


def test_stats_v1(fake_v1: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cgroups, "cgroup_version", lambda: 1)
    mem = fake_v1 / "memory/pod"
    mem.mkdir()
    (mem / "memory.usage_in_bytes").write_text("1000\n")
    (mem / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    (mem / "memory.stat").write_text("total_inactive_file 300\ntotal_rss 500\ntotal_pgfault 7\ntotal_pgmajfault 2\n")
    cpu = fake_v1 / "cpu,cpuacct/pod"
    cpu.mkdir()
    (cpu / "cpuacct.usage").write_text("123456\n")
    assert cgroups.memory_stats("/pod") == cgroups.MemoryStats(1000, 700, 500, None, 7, 2)
    assert cgroups.cpu_stats("/pod") == cgroups.CpuStats(123456)
    assert cgroups.memory_stats("/gone") is None
    assert cgroups.cpu_stats("/gone") is None


def test_stats_v2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cgroups, "hierarchies", lambda: (Hierarchy(str(tmp_path), 2, ()),))
    monkeypatch.setattr(cgroups, "cgroup_version", lambda: 2)
    d = tmp_path / "pod"
    d.mkdir()
    (d / "memory.current").write_text("2000\n")
    (d / "memory.max").write_text("4096\n")
    (d / "memory.stat").write_text("anon 800\ninactive_file 500\npgfault 3\npgmajfault 1\n")
    (d / "cpu.stat").write_text("usage_usec 42\nuser_usec 40\n")
    assert cgroups.memory_stats("/pod") == cgroups.MemoryStats(2000, 1500, 800, 4096, 3, 1)
    assert cgroups.cpu_stats("/pod") == cgroups.CpuStats(42000)
    (d / "memory.max").write_text("max\n")
    assert cgroups.memory_stats("/pod").limit_bytes is None  # type: ignore[union-attr]


# --- controllers and huge page sizes --------------------------------------------------------------


@pytest.mark.parametrize(("kib", "name"), [(2048, "2MB"), (1048576, "1GB"), (64, "64KB"), (32768, "32MB")])
def test_page_size_names_match_kubelet(kib: int, name: str) -> None:
    assert controllers.page_size_name(kib) == name


def test_hugepage_sizes_read_from_sysfs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for d in ("hugepages-2048kB", "hugepages-1048576kB"):
        (tmp_path / d).mkdir()
    monkeypatch.setattr(controllers, "_HUGEPAGES", str(tmp_path))
    controllers.hugepage_sizes.cache_clear()
    try:
        assert controllers.hugepage_sizes() == {"2MB", "1GB"}
        monkeypatch.setattr(controllers, "_HUGEPAGES", str(tmp_path / "absent"))
        controllers.hugepage_sizes.cache_clear()
        assert controllers.hugepage_sizes() == frozenset()
    finally:
        controllers.hugepage_sizes.cache_clear()


def test_v1_controllers_are_the_mounted_ones(fake_v1: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(controllers, "hierarchies", cgroups.hierarchies)
    monkeypatch.setattr(controllers, "cgroup_version", lambda: 1)
    assert controllers.available_controllers("/kubepods/pod1/crio-py-a") == {"cpu", "cpuacct", "memory"}


def test_v2_controllers_come_from_the_nearest_existing_parent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "kubepods.slice/kubepods-pod1.slice").mkdir(parents=True)
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory hugetlb pids rdma misc\n")
    (tmp_path / "kubepods.slice/cgroup.controllers").write_text("cpu memory pids\n")
    monkeypatch.setattr(controllers, "hierarchies", lambda: (Hierarchy(str(tmp_path), 2, ()),))
    monkeypatch.setattr(controllers, "cgroup_version", lambda: 2)
    # the container's scope and the pod slice do not have the file: kubepods.slice decides
    assert controllers.available_controllers("kubepods-pod1.slice:crio-py:abc") == {"cpu", "memory", "pids"}
    assert "hugetlb" in controllers.available_controllers("/other/crio-py-x")
