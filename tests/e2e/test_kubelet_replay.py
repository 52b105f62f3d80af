"""kubelet 1.32's own CRI requests, replayed against the daemon: CI guards kubelet compatibility
without running a kubelet.

The data (tests/e2e/data/kubelet-1.32/<pod>.json) was recorded by a proxy between a real
kubelet v1.32.10 (standalone, static pods, cgroupfs driver, default feature gates) and crio-py:
every request concerning one pod, in kubelet's order, with kubelet's status polling reduced to
the calls whose answer changed. ``up`` runs the pod the way kubelet did (sandbox, pulls, creates,
starts, postStart hooks, exec probes, restarts with their attempt numbers); ``down`` is what
kubelet sent once the manifest was removed. Host-specific values are placeholders:

    ${KUBELET_ROOT}   kubelet's --root-dir (etc-hosts, termination-log, emptyDir volumes)
    ${POD_LOGS}       kubelet's podLogsDir
    ${CGROUP_PARENT}  prefix of kubelet's /kubepods/<qos>/pod<uid> cgroups
    ${HOSTDATA}       the directory the hostPath volumes name
    ${IMAGE_ID}       the id the busybox image pull answered
    ${PORT:<n>}       a free host port standing in for the recorded port n

Replaying is literal: the request bodies are what kubelet sent. The replayer only does what
kubelet does beside the CRI calls (create the directories and files it bind-mounts, create log
directories, rename a log before ReopenContainerLog) and waits where kubelet waited: for a
status it observed, or a probe result it got.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.json_format import ParseDict

from crio_py.cri import api_pb2 as pb
from tests.e2e.cni_fixtures import Network, network  # noqa: F401 (the fixture)
from tests.support.daemon import DaemonHandle, free_port
from tests.support.registry import Registry

pytestmark = pytest.mark.e2e

DATA = Path(__file__).parent / "data" / "kubelet-1.32"
CALL_TIMEOUT = 120  # kubelet's runtime-request-timeout is 2 minutes
WAIT = 30.0
IMAGE = "docker.io/library/busybox:latest"
# UNKNOWN: not an answer kubelet saw here; keep waiting for the real one
STATE_ORDER = {"CONTAINER_UNKNOWN": -1, "CONTAINER_CREATED": 0, "CONTAINER_RUNNING": 1, "CONTAINER_EXITED": 2}
PLACEHOLDER = re.compile(r"\$\{(KUBELET_ROOT|POD_LOGS|CGROUP_PARENT|HOSTDATA|IMAGE_ID|PORT:\d+)\}")
IMAGE_RPCS = ("PullImage", "ImageStatus", "RemoveImage", "ListImages", "ImageFsInfo")


@dataclass
class Replay:
    """One recorded pod replayed against a daemon, with the ids and values of this run."""

    daemon: DaemonHandle
    root: Path
    cgroup_parent: str
    values: dict[str, str] = field(default_factory=dict)
    ids: dict[str, str] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    rotated: list[Path] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.values.update(
            KUBELET_ROOT=str(self.root / "kubelet"),
            POD_LOGS=str(self.root / "pods"),
            CGROUP_PARENT=self.cgroup_parent,
            HOSTDATA=str(self.root / "hostdata"),
        )
        (self.root / "hostdata").mkdir(mode=0o777, parents=True, exist_ok=True)
        (self.root / "hostdata").chmod(0o777)

    def value(self, name: str) -> str:
        if name.startswith("PORT:"):
            return str(self.ports.setdefault(name, free_port()))
        return self.values[name]

    def substitute(self, obj: Any) -> Any:
        """Placeholders filled in, recorded ids replaced by this run's."""
        if isinstance(obj, dict):
            return {k: self.substitute(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [self.substitute(v) for v in obj]
        if isinstance(obj, str):
            if obj in self.ids:
                return self.ids[obj]
            whole = PLACEHOLDER.fullmatch(obj)
            if whole and whole.group(1).startswith("PORT:"):
                return int(self.value(whole.group(1)))
            return PLACEHOLDER.sub(lambda m: self.value(m.group(1)), obj)
        return obj

    # ---- what kubelet does beside the CRI call ------------------------------------------------

    def prepare(self, method: str, request: Any) -> None:
        if method == "RunPodSandbox":
            Path(request.config.log_directory).mkdir(parents=True, exist_ok=True)
        elif method == "CreateContainer":
            log_dir = Path(request.sandbox_config.log_directory)
            (log_dir / request.config.log_path).parent.mkdir(parents=True, exist_ok=True)
            kubelet_root = self.values["KUBELET_ROOT"]
            for mount in request.config.mounts:
                host = Path(mount.host_path)
                if not mount.host_path.startswith(kubelet_root) or host.exists():
                    continue
                # kubelet writes etc-hosts and each container's termination-log as files
                if host.name == "etc-hosts" or "/containers/" in mount.host_path:
                    host.parent.mkdir(parents=True, exist_ok=True)
                    host.touch()
                else:
                    # emptyDir: kubelet makes it world-writable (the pod may run as any user)
                    host.mkdir(parents=True)
                    host.chmod(0o777)
        elif method == "ReopenContainerLog":
            # kubelet's log rotation: rename the live file, then ask for a new one
            log = Path(self.status(request.container_id).log_path)
            # kubelet rotates a file once it is over containerLogMaxSize, never an empty one
            wait_for(f"output in {log}", lambda: log.stat().st_size > 0)
            rotated = log.with_name(f"{log.name}.{len(self.rotated)}")
            log.rename(rotated)
            self.rotated.append(rotated)

    # ---- calls ----------------------------------------------------------------------------

    def status(self, container_id: str) -> pb.ContainerStatus:
        return self.daemon.runtime.ContainerStatus(pb.ContainerStatusRequest(container_id=container_id)).status

    def call(self, step: dict[str, Any]) -> Any:
        method = step["method"]
        request = ParseDict(
            self.substitute(step["request"]), getattr(pb, f"{method}Request")(), ignore_unknown_fields=False
        )
        self.prepare(method, request)
        stub = self.daemon.images if method in IMAGE_RPCS else self.daemon.runtime
        expect = step.get("expect", {})
        if method == "ContainerStatus":
            return self.wait_status(request.container_id, expect)
        if method == "ExecSync":
            return self.wait_exec(request, expect)
        try:
            response = getattr(stub, method)(request, timeout=CALL_TIMEOUT)
        except grpc.RpcError as err:
            assert err.code().name == step["code"], (
                f"{method}: {err.code().name} {err.details()} (kubelet saw {step['code']})"
            )
            return None
        assert step["code"] == "OK", f"{method} succeeded; kubelet saw {step['code']}"
        for key in ("pod_sandbox_id", "container_id"):
            recorded = step.get("response", {}).get(key)
            if recorded:
                self.ids[recorded] = getattr(response, key)
        if method == "PullImage":
            self.values["IMAGE_ID"] = response.image_ref
        return response

    def wait_status(self, container_id: str, expect: dict[str, Any]) -> pb.ContainerStatus:
        """Wait until the container reaches the state kubelet saw (or a later one)."""
        want = STATE_ORDER[expect["state"]]
        deadline = time.monotonic() + WAIT
        while True:
            status = self.status(container_id)
            reached = STATE_ORDER[pb.ContainerState.Name(status.state)]
            if reached > want or (reached == want and (want < 2 or status.exit_code == expect["exit_code"])):
                if reached == want == 2:
                    assert status.reason == expect["reason"], status
                return status
            assert time.monotonic() < deadline, f"container never reached {expect}: {status}"
            time.sleep(0.05)

    def wait_exec(self, request: pb.ExecSyncRequest, expect: dict[str, Any]) -> pb.ExecSyncResponse:
        """A probe: retried until it gives kubelet's result (the container may still be starting)."""
        deadline = time.monotonic() + WAIT
        while True:
            response = self.daemon.runtime.ExecSync(request, timeout=CALL_TIMEOUT)
            if response.exit_code == expect["exit_code"]:
                return response
            assert time.monotonic() < deadline, (
                f"probe {list(request.cmd)} never exited {expect['exit_code']}: {response}"
            )
            time.sleep(0.1)

    def run(self, steps: list[dict[str, Any]]) -> None:
        for step in steps:
            self.call(step)

    # ---- looking at the result -----------------------------------------------------------

    def containers(self) -> dict[str, pb.ContainerStatus]:
        """The pod's containers by name (the latest attempt of each)."""
        out: dict[str, pb.ContainerStatus] = {}
        for ctr in self.daemon.runtime.ListContainers(pb.ListContainersRequest()).containers:
            status = self.status(ctr.id)
            seen = out.get(status.metadata.name)
            if seen is None or seen.metadata.attempt < status.metadata.attempt:
                out[status.metadata.name] = status
        return out

    def exec(self, name: str, *argv: str) -> pb.ExecSyncResponse:
        cid = self.containers()[name].id
        return self.daemon.runtime.ExecSync(pb.ExecSyncRequest(container_id=cid, cmd=list(argv), timeout=10))


def load(pod: str) -> dict[str, Any]:
    return json.loads((DATA / f"{pod}.json").read_text())


def fetch(host: str, port: int) -> bytes:
    with socket.create_connection((host, port), timeout=5) as conn:
        conn.sendall(b"GET / HTTP/1.0\r\n\r\n")
        chunks = []
        while chunk := conn.recv(4096):
            chunks.append(chunk)
    return b"".join(chunks).partition(b"\r\n\r\n")[2]


def wait_for(what: str, check: Callable[[], Any]) -> Any:
    deadline = time.monotonic() + WAIT
    while True:
        try:
            result = check()
        except (OSError, AssertionError):
            result = None
        if result:
            return result
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.1)


@pytest.fixture
def replay(
    daemon_handle: DaemonHandle,
    registry: Registry,
    network: Network,  # noqa: F811
    cgroup_parent: str,
    workdir: Path,
) -> Iterator[Replay]:
    """A daemon set up like the node the requests were recorded on: a bridge + portmap CNI
    network and docker.io mirrored to the test registry."""
    conflist = {
        "cniVersion": "1.0.0",
        "name": network.name,
        "plugins": [
            {k: v for k, v in network.bridge_conf().items() if k not in ("cniVersion", "name")} | {"ipMasq": False},
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }
    conf_dir = Path(daemon_handle.config["cni"]["conf_dir"])
    (conf_dir / "10-kubelet.conflist").write_text(json.dumps(conflist))
    daemon_handle.config["cni"]["plugin_dirs"] = ["/usr/lib/cni"]
    daemon_handle.config["registries"]["mirrors"] = {"docker.io": [registry.host]}
    daemon_handle.start()
    replay = Replay(daemon_handle, workdir / "node", cgroup_parent)
    # the node had the image already (imagePullPolicy IfNotPresent): kubelet only asked ImageStatus
    pulled = daemon_handle.images.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=IMAGE)), timeout=CALL_TIMEOUT)
    replay.values["IMAGE_ID"] = pulled.image_ref
    yield replay


def assert_nothing_left(replay: Replay) -> None:
    assert replay.daemon.runtime.ListContainers(pb.ListContainersRequest()).containers == []
    assert replay.daemon.runtime.ListPodSandbox(pb.ListPodSandboxRequest()).items == []


def line_numbers(path: Path) -> list[int]:
    return [int(m.group(1)) for m in re.finditer(rb" F line (\d+) ", path.read_bytes())]


# ---- the recorded pods -----------------------------------------------------------------------


def test_log_rotation_by_kubelet_loses_nothing(replay: Replay) -> None:
    """logloop: kubelet renames 0.log and calls ReopenContainerLog (containerLogMaxSize 200Ki);
    the lines of the renamed files and the new one follow each other without a gap."""
    data = load("logloop")
    assert [s["method"] for s in data["up"]].count("ReopenContainerLog") >= 2
    replay.run(data["up"])
    live = Path(replay.containers()["log"].log_path)
    wait_for("new lines in the reopened log", lambda: len(line_numbers(live)) > 2)
    per_file = [line_numbers(path) for path in [*replay.rotated, live]]
    assert all(per_file), "every rotated file and the live one hold lines"
    numbers = [n for lines in per_file for n in lines]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))
    replay.run(data["down"])
    assert_nothing_left(replay)


def test_pod_with_resources_hooks_and_probes_sharing_localhost(replay: Replay) -> None:
    """duo: burstable limits (with kubelet's hugepage limits), postStart exec hook, exec
    readiness and liveness probes, two containers talking over the pod's localhost."""
    data = load("duo")
    replay.run(data["up"])
    web = replay.containers()["web"]
    assert web.state == pb.CONTAINER_RUNNING
    assert replay.exec("web", "cat", "/tmp/poststart").stdout == b"started\n"
    assert replay.exec("client", "wget", "-qO-", "http://127.0.0.1:8080/").stdout == b"hello-from-web\n"
    assert web.resources.linux.memory_limit_in_bytes == 64 << 20
    # kubelet's pod-level cgroup (cgroupsPerQOS) is the parent: the pod's limits hold every container
    info = replay.daemon.runtime.ContainerStatus(pb.ContainerStatusRequest(container_id=web.id, verbose=True)).info
    pod_cgroup = replay.substitute(load("duo")["up"][0]["request"]["config"]["linux"]["cgroup_parent"])
    assert pod_cgroup.startswith(f"{replay.cgroup_parent}/kubepods/burstable/pod")
    assert json.loads(info["info"])["cgroupsPath"].startswith(pod_cgroup + "/")
    replay.run(data["down"])
    assert_nothing_left(replay)


def test_container_that_exits_restarts_with_increasing_attempts(replay: Replay) -> None:
    """exiter: exit 3, kubelet removes nothing yet and creates attempt 1, 2... (CrashLoopBackOff)."""
    data = load("exiter")
    creates = [s for s in data["up"] if s["method"] == "CreateContainer"]
    assert [s["request"]["config"]["metadata"].get("attempt", 0) for s in creates] == list(range(len(creates)))
    assert len(creates) >= 2
    replay.run(data["up"])
    latest = replay.containers()["fail"]
    assert latest.metadata.attempt == len(creates) - 1
    assert (
        replay.wait_status(latest.id, {"state": "CONTAINER_EXITED", "exit_code": 3, "reason": "Error"})
    ).exit_code == 3
    assert b"about to fail" in Path(latest.log_path).read_bytes()
    replay.run(data["down"])
    assert_nothing_left(replay)


def test_host_network_pod(replay: Replay) -> None:
    data = load("hostnet")
    replay.run(data["up"])
    port = replay.ports["PORT:18091"]
    assert wait_for("httpd on the host's loopback", lambda: fetch("127.0.0.1", port)) == b"hostnet\n"
    replay.run(data["down"])
    assert_nothing_left(replay)


def test_port_mapping_reaches_the_pod(replay: Replay, network: Network) -> None:  # noqa: F811
    data = load("ports")
    replay.run(data["up"])
    port = replay.ports["PORT:18092"]
    assert wait_for("hostPort to the pod", lambda: fetch(network.gateway, port)) == b"via-hostport\n"
    replay.run(data["down"])
    assert_nothing_left(replay)


def test_volumes_and_a_restricted_security_context(replay: Replay) -> None:
    """volumes: runAsUser/runAsGroup/fsGroup/supplementalGroups, read-only root, all capabilities
    dropped, RuntimeDefault seccomp; an emptyDir and a hostPath bind-mounted read-write and read-only."""
    data = load("volumes")
    replay.run(data["up"])
    written = replay.root / "hostdata" / "id-from-pod"
    ident = wait_for("the pod's id in the hostPath dir", lambda: written.read_text())
    ids = dict(re.findall(r"(\w+)=(\d+)", ident))
    assert (ids["uid"], ids["gid"]) == ("1000", "3000")
    assert {"2000", "3000", "4000"} <= set(re.findall(r"(\d+)", ident.split("groups=")[1]))
    assert replay.exec("writer", "touch", "/rootfs-file").exit_code != 0
    assert replay.exec("writer", "touch", "/ro/x").exit_code != 0
    assert replay.exec("writer", "grep", "CapEff", "/proc/self/status").stdout.split()[1] == b"0000000000000000"
    assert replay.exec("writer", "grep", "Seccomp:", "/proc/self/status").stdout.split()[1] == b"2"
    replay.run(data["down"])
    assert_nothing_left(replay)


def test_graceful_termination_runs_prestop_and_waits_for_the_trap(replay: Replay) -> None:
    data = load("graceful")
    replay.run(data["up"])
    trap = replay.containers()["trap"]
    stops = [s for s in data["down"] if s["method"] == "StopContainer"]
    assert stops and all(int(s["request"]["timeout"]) > 2 for s in stops)
    replay.run(data["down"])
    log = Path(trap.log_path).read_text()
    assert "got TERM" in log and "bye" in log
    assert_nothing_left(replay)


def test_image_filesystem_has_a_capacity_for_kubelets_image_gc(replay: Replay) -> None:
    """kubelet's image GC reads the capacity of ImageFsInfo's mountpoint (through cAdvisor, by
    device): it must be a directory on a real filesystem, else "invalid capacity 0 on image
    filesystem" and no image GC. The containers' one exists before the first container."""
    resp = replay.daemon.images.ImageFsInfo(pb.ImageFsInfoRequest())
    for fs in [*resp.image_filesystems, *resp.container_filesystems]:
        stat = os.statvfs(fs.fs_id.mountpoint)
        assert stat.f_blocks * stat.f_frsize > 0
    assert resp.image_filesystems[0].used_bytes.value > 0  # busybox is pulled
