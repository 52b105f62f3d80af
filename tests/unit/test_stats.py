"""Stats: cgroup v1 and v2 samples on fake hierarchies, CPU rates, pod totals, network, writable layers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from crio_py import cgroups
from crio_py.cgroups import Hierarchy
from crio_py.stats import CpuRates, InterfaceUsage, StatsCollector, WritableLayers, parse_net_dev
from crio_py.storage.usage import tree_usage

MiB = 1024 * 1024
V2_STAT = """anon 50331648
file 20971520
kernel 1048576
active_file 4194304
inactive_file 16777216
pgfault 1200
pgmajfault 7
"""
V1_STAT = """cache 20971520
rss 50331648
inactive_file 0
total_cache 20971520
total_rss 50331648
total_inactive_file 16777216
total_pgfault 1200
total_pgmajfault 7
"""


def _write(d: Path, files: dict[str, str]) -> None:
    d.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (d / name).write_text(text)


@pytest.fixture
def v2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(cgroups, "hierarchies", lambda: (Hierarchy(str(tmp_path), 2, ()),))
    monkeypatch.setattr(cgroups, "cgroup_version", lambda: 2)
    return tmp_path


@pytest.fixture
def v1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    found = (
        Hierarchy(str(tmp_path / "cpu,cpuacct"), 1, ("cpu", "cpuacct")),
        Hierarchy(str(tmp_path / "memory"), 1, ("memory",)),
        Hierarchy(str(tmp_path / "pids"), 1, ("pids",)),
        Hierarchy(str(tmp_path / "unified"), 2, ()),
    )
    monkeypatch.setattr(cgroups, "hierarchies", lambda: found)
    monkeypatch.setattr(cgroups, "cgroup_version", lambda: 1)
    return tmp_path


def _v2_cgroup(root: Path, path: str, usage_usec: int, limit: str = "max", pids: int = 3) -> None:
    _write(root / path.lstrip("/"), {
        "memory.current": str(80 * MiB), "memory.stat": V2_STAT, "memory.max": limit,
        "cpu.stat": f"usage_usec {usage_usec}\nuser_usec 1\nsystem_usec 2\n", "pids.current": str(pids),
    })


def _v1_cgroup(root: Path, path: str, usage_ns: int, limit: int = (1 << 63) - 4096) -> None:
    rel = path.lstrip("/")
    _write(root / "memory" / rel, {
        "memory.usage_in_bytes": str(80 * MiB), "memory.stat": V1_STAT, "memory.limit_in_bytes": str(limit)})
    _write(root / "cpu,cpuacct" / rel, {"cpuacct.usage": str(usage_ns)})
    _write(root / "pids" / rel, {"pids.current": "2"})


def _collector(layers: dict[str, Path] | None = None) -> StatsCollector:
    return StatsCollector(lambda: layers or {}, lambda: [])


def test_v2_container_memory_is_usage_minus_inactive_file_and_limit_gives_available(v2: Path) -> None:
    _v2_cgroup(v2, "/pods/p1/crio-py-c1", 1_500_000, limit=str(128 * MiB))
    sample = _collector().container("c1", "/pods/p1/crio-py-c1")
    assert sample.cpu is not None and sample.cpu.usage_ns == 1_500_000_000 and sample.cpu.nano_cores is None
    mem = sample.memory
    assert mem is not None
    assert (mem.usage_bytes, mem.working_set_bytes, mem.rss_bytes) == (80 * MiB, 64 * MiB, 48 * MiB)
    assert (mem.page_faults, mem.major_page_faults) == (1200, 7)
    assert mem.available_bytes == 64 * MiB


def test_v2_without_a_limit_has_no_available_bytes(v2: Path) -> None:
    _v2_cgroup(v2, "/pods/p1/crio-py-c1", 1)
    mem = _collector().container("c1", "/pods/p1/crio-py-c1").memory
    assert mem is not None and mem.available_bytes is None


def test_v1_container_reads_cpuacct_and_total_counters(v1: Path) -> None:
    _v1_cgroup(v1, "/pods/p1/crio-py-c1", 7_000_000_000, limit=100 * MiB)
    sample = _collector().container("c1", "/pods/p1/crio-py-c1")
    assert sample.cpu is not None and sample.cpu.usage_ns == 7_000_000_000
    mem = sample.memory
    assert mem is not None
    assert (mem.working_set_bytes, mem.rss_bytes, mem.page_faults) == (64 * MiB, 48 * MiB, 1200)
    assert mem.available_bytes == 36 * MiB
    assert cgroups.process_count("/pods/p1/crio-py-c1") == 2


def test_v1_unlimited_is_no_limit(v1: Path) -> None:
    _v1_cgroup(v1, "/p/c", 1)
    mem = _collector().container("c", "/p/c").memory
    assert mem is not None and mem.available_bytes is None


def test_a_vanished_cgroup_leaves_the_fields_out(v2: Path) -> None:
    sample = _collector().container("gone", "/pods/p1/crio-py-gone")
    assert (sample.cpu, sample.memory) == (None, None)
    pod = _collector().pod("p", ["/pods/nothing"], pause_pid=None)
    assert (pod.cpu, pod.memory, pod.network, pod.process_count) == (None, None, None, None)


def test_pod_totals_add_up_its_containers_when_it_has_no_cgroup_of_its_own(v2: Path) -> None:
    _v2_cgroup(v2, "/shared/crio-py-pause", 1000, limit=str(10 * MiB), pids=1)
    _v2_cgroup(v2, "/shared/crio-py-c1", 2000, limit=str(10 * MiB), pids=4)
    pod = _collector().pod("p", ["/shared/crio-py-pause", "/shared/crio-py-c1", "/shared/crio-py-exited"], None)
    assert pod.cpu is not None and pod.cpu.usage_ns == 3_000_000
    assert pod.memory is not None and pod.memory.working_set_bytes == 128 * MiB
    assert pod.memory.available_bytes is None  # each container's limit says nothing about the sum
    assert pod.process_count == 5


def test_cpu_rate_from_the_previous_sample() -> None:
    rates = CpuRates(min_window_ns=1_000_000_000)
    assert rates.rate("c", 1_000, at_ns=10_000_000_000) is None
    # Half a core over two seconds.
    assert rates.rate("c", 1_000 + 1_000_000_000, at_ns=12_000_000_000) == 500_000_000
    # A sample inside the window keeps the last rate instead of a noisy one.
    assert rates.rate("c", 1_000 + 1_900_000_000, at_ns=12_100_000_000) == 500_000_000
    assert rates.rate("c", 1_000 + 3_000_000_000, at_ns=13_000_000_000) == 2_000_000_000
    # A counter that went backwards is a new cgroup: start over.
    assert rates.rate("c", 5, at_ns=14_000_000_000) is None
    rates.retain(["other"])
    assert rates.rate("c", 10, at_ns=20_000_000_000) is None


def test_parse_net_dev_skips_loopback() -> None:
    text = (
        "Inter-|   Receive                          |  Transmit\n"
        " face |bytes packets errs drop fifo frame compressed multicast|bytes packets errs drop fifo colls ...\n"
        "    lo:     840 10 0 0 0 0 0 0    840 10 0 0 0 0 0 0\n"
        "  eth0:  123456 100 2 3 0 0 0 0  65432 90 1 4 0 0 0 0\n"
    )
    assert parse_net_dev(text) == [InterfaceUsage("eth0", 123456, 2, 65432, 1, 100, 3, 90, 4)]


def test_pod_network_through_a_live_process() -> None:
    pod = _collector().pod("p", [], pause_pid=os.getpid())
    assert pod.network is not None
    assert all(i.name != "lo" for i in pod.network.interfaces)
    assert _collector().pod("p", [], pause_pid=2**22 + 1).network is None  # no such pid


def test_writable_layers_come_from_the_last_sweep(tmp_path: Path) -> None:
    upper = tmp_path / "c1" / "upper"
    (upper / "dir").mkdir(parents=True)
    (upper / "dir" / "data").write_bytes(b"x" * 100_000)
    os.link(upper / "dir" / "data", upper / "hardlink")
    forgotten: list[set[str]] = []
    layers = WritableLayers(lambda: {"c1": upper, "c2": tmp_path / "missing"}, after_sweep=forgotten.append)
    assert layers.get("c1") is None
    layers.sweep()
    usage = layers.get("c1")
    assert usage is not None and usage.inodes == 2 and usage.used_bytes >= 100_000
    assert usage.used_bytes == tree_usage(upper).used_bytes
    missing = layers.get("c2")
    assert missing is not None and (missing.used_bytes, missing.inodes) == (0, 0)
    assert forgotten == [{"c1", "c2"}]


def test_cadvisor_series_carry_one_value_per_label_key(v2: Path) -> None:
    from crio_py.stats import cadvisor

    _v2_cgroup(v2, "/pods/p1", 3_000_000, limit=str(128 * MiB))
    _v2_cgroup(v2, "/pods/p1/crio-py-c1", 2_000_000, limit=str(128 * MiB))
    collector = _collector()
    keys = {d.name: list(d.label_keys) for d in cadvisor.descriptors()}
    assert keys["container_memory_working_set_bytes"] == ["pod", "namespace", "container", "id", "image"]
    pod = collector.pod("p1", ["/pods/p1"], pause_pid=os.getpid())
    series = cadvisor.pod_metrics(["web", "default", "", "p1", ""], pod)
    ctr = collector.container("c1", "/pods/p1/crio-py-c1")
    series += cadvisor.container_metrics(["web", "default", "app", "c1", "busybox"], ctr, pod.at_ns, "/var/lib/x")
    by_name: dict[str, list[int]] = {}
    for m in series:
        assert m.name in keys and len(m.label_values) == len(keys[m.name]), m
        by_name.setdefault(m.name, []).append(m.value.value)
    assert by_name["container_memory_working_set_bytes"] == [64 * MiB, 64 * MiB]
    assert by_name["container_spec_memory_limit_bytes"] == [128 * MiB]
    assert by_name["container_processes"] == [3]
