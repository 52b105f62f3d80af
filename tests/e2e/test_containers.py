"""Containers with real runc and the real monitor: output, users, namespaces, limits, lifecycle."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import grpc
import pytest

from crio_py import cgroups
from crio_py.cri import api_pb2 as pb
from crio_py.proc import process_alive
from tests.support.cri import host_mounts_under, ns_inode, pod_config
from tests.support.daemon import DaemonHandle
from tests.support.pods import Pod
from tests.support.streaming import wait_until

pytestmark = pytest.mark.e2e
def test_output_reaches_the_cri_log_and_exit_codes_are_recorded(pod: Pod) -> None:
    ok = pod.run("hello", "sh", "-c", "echo hello from busybox; echo oops >&2")
    status = pod.wait_exit(ok)
    assert (status.exit_code, status.reason) == (0, "Completed")
    lines = pod.log_lines(ok)
    assert ("stdout", "F", "hello from busybox") in lines
    assert ("stderr", "F", "oops") in lines
    assert status.started_at >= status.created_at > 0 and status.finished_at >= status.started_at
    failed = pod.wait_exit(pod.run("fail", "sh", "-c", "exit 3"))
    assert (failed.exit_code, failed.reason) == (3, "Error")


def test_user_resolution_from_the_image_passwd(pod: Pod) -> None:
    as_root = pod.output(pod.run("root", "id"))
    assert as_root.startswith("uid=0(root) gid=0(root)")
    by_uid = pod.output(pod.run("byuid", "id", security=pb.LinuxContainerSecurityContext(
        run_as_user=pb.Int64Value(value=1234), run_as_group=pb.Int64Value(value=2345),
        supplemental_groups=[3456])))
    assert by_uid.split() == ["uid=1234", "gid=2345", "groups=2345,3456"]
    by_name = pod.output(pod.run("byname", "id", security=pb.LinuxContainerSecurityContext(run_as_username="nobody")))
    assert by_name.startswith("uid=65534(nobody)")
    with pytest.raises(grpc.RpcError) as err:
        pod.create("ghost", "id", security=pb.LinuxContainerSecurityContext(run_as_username="ghost"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "ghost" in err.value.details()


def test_supplementary_groups_merge_and_strict(pod: Pod) -> None:
    # "app" (uid 1000) is in wheel (10) and audio (29) in the image's /etc/group.
    merged = pod.output(pod.run("merge", "id", security=pb.LinuxContainerSecurityContext(
        run_as_username="app", supplemental_groups=[4242])))
    assert merged.split()[:2] == ["uid=1000(app)", "gid=1000(app)"]
    assert set(merged.split("groups=")[1].strip().split(",")) == {"1000(app)", "10(wheel)", "29(audio)", "4242"}
    strict_id = pod.run("strict", "id", security=pb.LinuxContainerSecurityContext(
        run_as_username="app", supplemental_groups=[4242], supplemental_groups_policy=pb.Strict))
    strict = pod.output(strict_id)
    assert set(strict.split("groups=")[1].strip().split(",")) == {"1000(app)", "4242"}
    # ContainerStatus reports the identity the process got (kubelet checks it for the policy).
    user = pod.status(strict_id).user.linux
    assert (user.uid, user.gid, sorted(user.supplemental_groups)) == (1000, 1000, [1000, 4242])


def test_update_container_resources_changes_the_cgroup(pod: Pod) -> None:
    cid = pod.run("resizable", "sleep", "300",
                  resources=pb.LinuxContainerResources(memory_limit_in_bytes=64 * 1024 * 1024))
    info = json.loads(pod.daemon.runtime.ContainerStatus(
        pb.ContainerStatusRequest(container_id=cid, verbose=True)).info["info"])
    dirs = cgroups.find_cgroup_dirs(info["cgroupsPath"])
    limit_file = dirs["memory"] / "memory.limit_in_bytes" if "memory" in dirs else dirs["unified"] / "memory.max"
    assert int(limit_file.read_text()) == 64 * 1024 * 1024
    pod.daemon.runtime.UpdateContainerResources(pb.UpdateContainerResourcesRequest(
        container_id=cid, linux=pb.LinuxContainerResources(memory_limit_in_bytes=128 * 1024 * 1024)))
    assert int(limit_file.read_text()) == 128 * 1024 * 1024
    # ContainerStatus tells the limits in force, also after a daemon restart (the record keeps them).
    assert pod.status(cid).resources.linux.memory_limit_in_bytes == 128 * 1024 * 1024
    pod.daemon.restart()
    assert pod.status(cid).resources.linux.memory_limit_in_bytes == 128 * 1024 * 1024


def test_container_joins_the_pause_namespaces(pod: Pod) -> None:
    cid = pod.run("sleeper", "sleep", "300")
    pid = pod.pid(cid)
    for kind in ("net", "ipc", "uts"):
        assert ns_inode(pid, kind) == ns_inode(pod.pause_pid, kind)
    assert ns_inode(pid, "pid") != ns_inode(pod.pause_pid, "pid")  # pid CONTAINER in this pod
    assert pod.exec(cid, "cat", "/etc/hostname").stdout.decode().strip() == pod.config.hostname


def test_shared_pid_namespace_when_the_pod_asks(daemon: DaemonHandle, busybox: str, cgroup_parent: str) -> None:
    pod = Pod(daemon, busybox, pod_config(cgroup_parent=cgroup_parent, pid=pb.POD))
    cid = pod.run("sleeper", "sleep", "300")
    assert ns_inode(pod.pid(cid), "pid") == ns_inode(pod.pause_pid, "pid")


def test_readonly_rootfs_capabilities_and_seccomp(pod: Pod) -> None:
    ro = pod.output(pod.run("ro", "sh", "-c", "touch /x 2>&1; echo rc=$?", security=pb.LinuxContainerSecurityContext(
        readonly_rootfs=True)))
    assert "Read-only file system" in ro and "rc=1" in ro
    caps = pod.output(pod.run("caps", "grep", "CapEff", "/proc/self/status",
                              security=pb.LinuxContainerSecurityContext(
                                  capabilities=pb.Capability(add_capabilities=["NET_ADMIN"],
                                                             drop_capabilities=["ALL"]))))
    assert int(caps.split()[1], 16) == 1 << 12  # CAP_NET_ADMIN only
    blocked = pod.output(pod.run("seccomp", "sh", "-c", "unshare -U true 2>&1; echo rc=$?",
                                 security=pb.LinuxContainerSecurityContext(
                                     seccomp=pb.SecurityProfile(profile_type=pb.SecurityProfile.RuntimeDefault))))
    assert "Operation not permitted" in blocked
    with pytest.raises(grpc.RpcError) as err:
        pod.create("badcap", "true", security=pb.LinuxContainerSecurityContext(
            capabilities=pb.Capability(add_capabilities=["FLY"])))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_memory_limit_and_oom_kill(pod: Pod) -> None:
    limit = 16 * 1024 * 1024
    cid = pod.run("hog", "sh", "-c", "sleep 1; head -c 200000000 /dev/zero | tail",
                  resources=pb.LinuxContainerResources(memory_limit_in_bytes=limit))
    info = json.loads(pod.daemon.runtime.ContainerStatus(
        pb.ContainerStatusRequest(container_id=cid, verbose=True)).info["info"])
    memory = cgroups.find_cgroup_dirs(info["cgroupsPath"])
    if "memory" in memory:
        assert int((memory["memory"] / "memory.limit_in_bytes").read_text()) == limit
    status = pod.wait_exit(cid)
    assert (status.exit_code, status.reason) == (137, "OOMKilled")


def test_exec_sync_output_exit_code_and_timeout(pod: Pod) -> None:
    cid = pod.run("target", "sleep", "300")
    resp = pod.exec(cid, "sh", "-c", "echo out; echo err >&2; exit 7")
    assert (resp.stdout, resp.stderr, resp.exit_code) == (b"out\n", b"err\n", 7)
    start = time.monotonic()
    with pytest.raises(grpc.RpcError) as err:
        pod.exec(cid, "sleep", "60", timeout=1)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - start < 10


def test_stop_kills_a_term_ignoring_process_after_the_timeout(pod: Pod) -> None:
    cid = pod.run("stubborn", "sh", "-c", "trap '' TERM; echo trapped; while true; do sleep 0.1; done")
    log = Path(pod.status(cid).log_path)
    wait_until(lambda: log.exists() and "trapped" in log.read_text(), 10, "the TERM trap")
    start = time.monotonic()
    pod.daemon.runtime.StopContainer(pb.StopContainerRequest(container_id=cid, timeout=2), timeout=60)
    elapsed = time.monotonic() - start
    status = pod.status(cid)
    assert status.state == pb.CONTAINER_EXITED and status.exit_code == 137
    assert 1.5 < elapsed < 15
    # Stop and remove are idempotent; unknown ids succeed.
    pod.daemon.runtime.StopContainer(pb.StopContainerRequest(container_id=cid))
    pod.daemon.runtime.RemoveContainer(pb.RemoveContainerRequest(container_id=cid))
    pod.daemon.runtime.RemoveContainer(pb.RemoveContainerRequest(container_id=cid))
    pod.daemon.runtime.StopContainer(pb.StopContainerRequest(container_id="e" * 64))


def test_bad_requests(pod: Pod, daemon: DaemonHandle) -> None:
    def create_error(**kw: object) -> grpc.RpcError:
        with pytest.raises(grpc.RpcError) as err:
            pod.create("bad", "true", **kw)
        return err.value

    err = create_error(image="127.0.0.1:1/nothing:here")
    assert err.code() == grpc.StatusCode.NOT_FOUND and "nothing:here" in err.details()
    err = create_error(mounts=[pb.Mount(container_path="relative", host_path="/tmp")])
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    err = create_error(security=pb.LinuxContainerSecurityContext(seccomp=pb.SecurityProfile(
        profile_type=pb.SecurityProfile.Localhost, localhost_ref="/no/such/profile.json")))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as unknown_pod:
        daemon.runtime.CreateContainer(pb.CreateContainerRequest(
            pod_sandbox_id="a" * 64, config=pb.ContainerConfig(metadata=pb.ContainerMetadata(name="x"),
                                                              image=pb.ImageSpec(image=pod.image))))
    assert unknown_pod.value.code() == grpc.StatusCode.NOT_FOUND
    first = pod.create("twin", "true")
    assert pod.create("twin", "true") == first  # the same request again: kubelet's retry
    with pytest.raises(grpc.RpcError) as dup:
        pod.create("twin", "false")  # another config under the same name
    assert dup.value.code() == grpc.StatusCode.ALREADY_EXISTS and first in dup.value.details()
    # Failed creates left nothing: only the twin's rootfs (and the pause's) are mounted.
    rootfs_mounts = [m for m in host_mounts_under(daemon.workdir) if m.endswith("/rootfs")]
    assert len(rootfs_mounts) == 2
    daemon.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod.id))
    with pytest.raises(grpc.RpcError) as not_ready:
        pod.create("late", "true")
    assert not_ready.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_list_filters(pod: Pod) -> None:
    running = pod.run("a", "sleep", "300")
    created = pod.create("b", "true")

    def ids(f: pb.ContainerFilter) -> set[str]:
        return {c.id for c in pod.daemon.runtime.ListContainers(pb.ListContainersRequest(filter=f)).containers}

    assert ids(pb.ContainerFilter(pod_sandbox_id=pod.id)) == {running, created}
    assert ids(pb.ContainerFilter(id=running[:8])) == {running}
    assert ids(pb.ContainerFilter(state=pb.ContainerStateValue(state=pb.CONTAINER_CREATED))) == {created}
    assert ids(pb.ContainerFilter(label_selector={"name": "a"})) == {running}


def test_restart_keeps_containers_running_and_notices_exits(pod: Pod) -> None:
    long = pod.run("long", "sleep", "300")
    short = pod.run("short", "sh", "-c", "sleep 2; exit 5")
    long_pid, short_pid = pod.pid(long), pod.pid(short)
    pod.daemon.kill()
    wait_until(lambda: not process_alive(short_pid), 10, "the short one to exit while the daemon is down")
    pod.daemon.start()
    assert pod.status(long).state == pb.CONTAINER_RUNNING
    assert os.path.exists(f"/proc/{long_pid}")
    status = pod.status(short)
    assert (status.state, status.exit_code) == (pb.CONTAINER_EXITED, 5)


def test_host_network_pod_container_without_namespace_options(
    daemon: DaemonHandle, busybox: str, cgroup_parent: str
) -> None:
    # As crictl users write it: the container says nothing about namespaces; the pod's win.
    config = pod_config(cgroup_parent=cgroup_parent, network=pb.NODE)
    pod_id = daemon.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=config)).pod_sandbox_id
    cid = daemon.runtime.CreateContainer(pb.CreateContainerRequest(
        pod_sandbox_id=pod_id, sandbox_config=config,
        config=pb.ContainerConfig(metadata=pb.ContainerMetadata(name="hostnet"), image=pb.ImageSpec(image=busybox),
                                  command=["sleep", "300"]))).container_id
    daemon.runtime.StartContainer(pb.StartContainerRequest(container_id=cid))
    info = daemon.runtime.ContainerStatus(pb.ContainerStatusRequest(container_id=cid, verbose=True)).info
    assert ns_inode(json.loads(info["info"])["pid"], "net") == ns_inode(os.getpid(), "net")


def test_containers_without_log_settings_get_a_default_log_removed_with_the_pod(
    daemon: DaemonHandle, busybox: str, cgroup_parent: str
) -> None:
    # As crictl users write them: neither the pod's log_directory nor the container's log_path.
    config = pod_config(cgroup_parent=cgroup_parent)
    pod_id = daemon.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=config)).pod_sandbox_id
    cid = daemon.runtime.CreateContainer(pb.CreateContainerRequest(
        pod_sandbox_id=pod_id, sandbox_config=config,
        config=pb.ContainerConfig(metadata=pb.ContainerMetadata(name="nolog", attempt=2),
                                  image=pb.ImageSpec(image=busybox), command=["echo", "logged anyway"]))).container_id
    daemon.runtime.StartContainer(pb.StartContainerRequest(container_id=cid))
    pod_logs = Path(daemon.config["container_log_dir"]) / pod_id
    deadline = time.monotonic() + 30
    while (status := daemon.runtime.ContainerStatus(pb.ContainerStatusRequest(container_id=cid)).status).state != \
            pb.CONTAINER_EXITED and time.monotonic() < deadline:
        time.sleep(0.05)
    assert status.log_path == str(pod_logs / "nolog" / "2.log")
    assert "stdout F logged anyway" in (pod_logs / "nolog" / "2.log").read_text()
    daemon.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod_id))
    assert not pod_logs.exists()
