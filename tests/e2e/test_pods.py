"""Pod sandboxes with real runc: the pause container, its namespaces, files, cgroup, lifecycle."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import grpc
import pytest

from crio_py import cgroups
from crio_py.cri import api_pb2 as pb
from crio_py.proc import process_alive
from tests.support.cri import host_mounts_under, ns_inode, nsenter, pod_config
from tests.support.daemon import DaemonHandle
from tests.support.streaming import wait_until

pytestmark = pytest.mark.e2e


def run_pod(daemon: DaemonHandle, config: pb.PodSandboxConfig) -> str:
    return daemon.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=config), timeout=120).pod_sandbox_id


def verbose(daemon: DaemonHandle, pod_id: str) -> tuple[pb.PodSandboxStatus, dict]:
    resp = daemon.runtime.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=pod_id, verbose=True))
    return resp.status, json.loads(resp.info["info"])


def test_pause_container_holds_the_pod_namespaces_files_and_cgroup(daemon: DaemonHandle, cgroup_parent: str) -> None:
    config = pod_config(
        "web",
        cgroup_parent=cgroup_parent,
        hostname="web-0",
        dns=pb.DNSConfig(servers=["10.96.0.10"], searches=["e2e.svc.cluster.local"], options=["ndots:5"]),
        sysctls={"net.ipv4.ip_unprivileged_port_start": "81", "kernel.shm_rmid_forced": "1"},
    )
    pod_id = run_pod(daemon, config)
    status, info = verbose(daemon, pod_id)
    assert status.state == pb.SANDBOX_READY
    assert status.metadata.name == "web" and status.labels["app"] == "web"
    pid = info["pid"]
    assert info["runtimeSpec"]["annotations"]["io.kubernetes.cri.container-type"] == "sandbox"

    # Runs under the pod's cgroup parent.
    memory_dir = cgroups.find_cgroup_dirs(cgroup_parent)
    assert any(str(pid) in p.read_text().split() for d in memory_dir.values() for p in d.rglob("cgroup.procs"))

    # Its network namespace is the pinned netns; ipc and uts are its own, not the host's.
    assert ns_inode(pid, "net") == os.stat(info["netns"]).st_ino
    for kind in ("net", "ipc", "uts"):
        assert ns_inode(pid, kind) != ns_inode(os.getpid(), kind)
    assert nsenter(pid, "-u", "hostname").strip() == "web-0"
    # Loopback only (no CNI config in this test): lo is up.
    assert "state UNKNOWN" in nsenter(pid, "-n", "ip", "link", "show", "lo") or "UP" in nsenter(
        pid, "-n", "ip", "link", "show", "lo"
    )

    # Sysctls applied inside the pod's namespaces, not on the host.
    assert nsenter(pid, "-n", "cat", "/proc/sys/net/ipv4/ip_unprivileged_port_start").strip() == "81"
    assert nsenter(pid, "-i", "cat", "/proc/sys/kernel/shm_rmid_forced").strip() == "1"

    # The shared pod files.
    pod_dir = Path(info["podDir"])
    assert (pod_dir / "hostname").read_text() == "web-0\n"
    resolv = (pod_dir / "resolv.conf").read_text()
    assert "nameserver 10.96.0.10" in resolv and "search e2e.svc.cluster.local" in resolv
    assert "options ndots:5" in resolv
    assert "127.0.0.1\tlocalhost" in (pod_dir / "hosts").read_text()
    shm = [line for line in Path("/proc/self/mounts").read_text().splitlines() if f"{pod_dir}/shm " in line]
    assert shm and "tmpfs" in shm[0] and "size=65536k" in shm[0]


def test_host_network_pod_uses_the_host_namespaces(daemon: DaemonHandle, cgroup_parent: str) -> None:
    pod_id = run_pod(daemon, pod_config(cgroup_parent=cgroup_parent, network=pb.NODE, ipc=pb.NODE, pid=pb.NODE))
    _status, info = verbose(daemon, pod_id)
    pid = info["pid"]
    for kind in ("net", "ipc", "pid"):
        assert ns_inode(pid, kind) == ns_inode(os.getpid(), kind)
    assert info["netns"] == ""


def test_stop_and_remove_are_idempotent_and_leave_nothing(daemon: DaemonHandle, cgroup_parent: str) -> None:
    pod_id = run_pod(daemon, pod_config(cgroup_parent=cgroup_parent))
    _status, info = verbose(daemon, pod_id)
    pid, netns = info["pid"], Path(info["netns"])
    for _ in range(2):
        daemon.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod_id))
    assert daemon.runtime.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=pod_id)).status.state == (
        pb.SANDBOX_NOTREADY
    )
    assert not Path(f"/proc/{pid}").exists()
    for _ in range(2):
        daemon.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod_id))
    # Unknown pods: stop and remove succeed (CRI semantics); status says NOT_FOUND.
    daemon.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id="f" * 64))
    daemon.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id="f" * 64))
    with pytest.raises(grpc.RpcError) as err:
        daemon.runtime.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=pod_id))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert not netns.exists()
    assert host_mounts_under(daemon.workdir) == []
    assert cgroups.find_cgroup_dirs(f"{cgroup_parent}/crio-py-{pod_id}") == {}
    assert daemon.runtime.ListPodSandbox(pb.ListPodSandboxRequest()).items == []


def test_list_filters_and_id_prefixes(daemon: DaemonHandle, cgroup_parent: str) -> None:
    a = run_pod(daemon, pod_config("alpha", cgroup_parent=cgroup_parent))
    b = run_pod(daemon, pod_config("beta", cgroup_parent=cgroup_parent))
    daemon.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=b[:12]))  # a crictl-style prefix

    def ids(f: pb.PodSandboxFilter) -> set[str]:
        return {p.id for p in daemon.runtime.ListPodSandbox(pb.ListPodSandboxRequest(filter=f)).items}

    assert ids(pb.PodSandboxFilter()) == {a, b}
    assert ids(pb.PodSandboxFilter(id=a[:10])) == {a}
    assert ids(pb.PodSandboxFilter(state=pb.PodSandboxStateValue(state=pb.SANDBOX_READY))) == {a}
    assert ids(pb.PodSandboxFilter(state=pb.PodSandboxStateValue(state=pb.SANDBOX_NOTREADY))) == {b}
    assert ids(pb.PodSandboxFilter(label_selector={"app": "beta"})) == {b}


def test_duplicate_name_is_already_exists_until_removed(daemon: DaemonHandle, cgroup_parent: str) -> None:
    config = pod_config("dup", cgroup_parent=cgroup_parent)
    first = run_pod(daemon, config)
    assert run_pod(daemon, config) == first  # the same request again: kubelet's retry
    other = pb.PodSandboxConfig()
    other.CopyFrom(config)
    other.hostname = "another"
    with pytest.raises(grpc.RpcError) as err:
        run_pod(daemon, other)
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert first in err.value.details()
    daemon.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=first))
    daemon.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=first))
    run_pod(daemon, config)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda c: c.metadata.ClearField("uid"), "metadata.uid"),
        (lambda c: setattr(c, "hostname", "Not_A_Label"), "not a valid DNS name"),
        (lambda c: setattr(c, "log_directory", "logs"), "absolute path"),
        (lambda c: c.dns_config.servers.append("300.1.1.1"), "not an IP address"),
        (lambda c: c.port_mappings.append(pb.PortMapping(container_port=99999)), "container_port"),
        (lambda c: c.linux.sysctls.update({"vm.swappiness": "10"}), "vm.swappiness"),
    ],
)
def test_bad_requests_are_invalid_argument_and_create_nothing(
    daemon: DaemonHandle, cgroup_parent: str, mutate: object, message: str
) -> None:
    config = pod_config(cgroup_parent=cgroup_parent)
    mutate(config)  # type: ignore[operator]
    with pytest.raises(grpc.RpcError) as err:
        run_pod(daemon, config)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in err.value.details()
    assert daemon.runtime.ListPodSandbox(pb.ListPodSandboxRequest()).items == []
    assert host_mounts_under(daemon.workdir) == []


def test_unknown_runtime_handler_names_the_known_ones(daemon: DaemonHandle, cgroup_parent: str) -> None:
    with pytest.raises(grpc.RpcError) as err:
        daemon.runtime.RunPodSandbox(
            pb.RunPodSandboxRequest(config=pod_config(cgroup_parent=cgroup_parent), runtime_handler="kata")
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "kata" in err.value.details() and "runc" in err.value.details()


def test_a_failed_run_undoes_every_step_and_frees_the_name(daemon_handle: DaemonHandle, cgroup_parent: str) -> None:
    daemon_handle.config["pause_command"] = "/no/such/pause"
    daemon_handle.start()
    config = pod_config("broken", cgroup_parent=cgroup_parent)
    with pytest.raises(grpc.RpcError) as err:
        run_pod(daemon_handle, config)
    assert err.value.code() == grpc.StatusCode.INTERNAL  # the node's pause_command is broken, not the request
    assert "/no/such/pause" in err.value.details()
    assert daemon_handle.runtime.ListPodSandbox(pb.ListPodSandboxRequest()).items == []
    assert host_mounts_under(daemon_handle.workdir) == []
    run_dir = Path(daemon_handle.config["run_root"])
    assert not any((run_dir / "netns").glob("*")) if (run_dir / "netns").exists() else True
    assert not any((run_dir / "pods").glob("*")) if (run_dir / "pods").exists() else True
    assert not list((Path(daemon_handle.config["root"]) / "state" / "pods").glob("*.json"))
    assert cgroups.find_cgroup_dirs(cgroup_parent) == {} or not any(
        d.name.startswith("crio-py-") for dirs in cgroups.find_cgroup_dirs(cgroup_parent).values()
        for d in dirs.iterdir() if d.is_dir()
    )
    # The name is free again at once: the same request fails the same way, not ALREADY_EXISTS.
    with pytest.raises(grpc.RpcError) as err:
        run_pod(daemon_handle, config)
    assert err.value.code() == grpc.StatusCode.INTERNAL and "/no/such/pause" in err.value.details()
    # And once the node is fixed, the pod runs under that name.
    daemon_handle.stop()
    daemon_handle.config["pause_command"] = ""
    daemon_handle.start()
    run_pod(daemon_handle, config)


def test_restart_keeps_pods_names_and_notices_a_dead_pause(daemon: DaemonHandle, cgroup_parent: str) -> None:
    keep = run_pod(daemon, pod_config("keep", cgroup_parent=cgroup_parent))
    dies = run_pod(daemon, pod_config("dies", cgroup_parent=cgroup_parent))
    _status, info = verbose(daemon, dies)
    daemon.kill()
    os.kill(info["pid"], signal.SIGKILL)
    wait_until(lambda: not process_alive(info["pid"]), 10, "the pause process to die")
    daemon.start()
    states = {p.id: p.state for p in daemon.runtime.ListPodSandbox(pb.ListPodSandboxRequest()).items}
    assert states == {keep: pb.SANDBOX_READY, dies: pb.SANDBOX_NOTREADY}
    # The name is still held after the restart: the same request gets the same pod.
    assert run_pod(daemon, pod_config("keep", cgroup_parent=cgroup_parent)) == keep


def test_a_pod_half_created_when_the_daemon_died_is_undone_at_start(
    daemon: DaemonHandle, cgroup_parent: str
) -> None:
    config = pod_config("crashy", cgroup_parent=cgroup_parent)
    pod_id = run_pod(daemon, config)
    _status, info = verbose(daemon, pod_id)
    daemon.kill()
    # As if the daemon had died inside RunPodSandbox: everything exists, the record says "creating".
    record_path = Path(daemon.config["root"]) / "state" / "pods" / f"{pod_id}.json"
    record = json.loads(record_path.read_text())
    record["phase"] = "creating"
    record_path.write_text(json.dumps(record))
    daemon.start()
    assert daemon.runtime.ListPodSandbox(pb.ListPodSandboxRequest()).items == []
    assert not record_path.exists()
    assert not Path(f"/proc/{info['pid']}").exists()
    assert not Path(info["netns"]).exists()
    assert host_mounts_under(daemon.workdir) == []
    assert not (Path(daemon.config["run_root"]) / "monitors" / pod_id).exists()
    run_pod(daemon, config)  # the name is free again
