"""The daemon on its socket: version, status, config, signals, metrics, a second daemon."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from crio_py.cri import api_pb2 as pb
from crio_py.proc import process_alive
from tests.support.daemon import DaemonHandle
from tests.support.streaming import wait_until

pytestmark = pytest.mark.e2e


def test_version_and_status_over_the_socket(daemon: DaemonHandle) -> None:
    version = daemon.runtime.Version(pb.VersionRequest())
    assert (version.runtime_name, version.runtime_api_version) == ("crio-py", "v1")
    status = daemon.runtime.Status(pb.StatusRequest())
    conditions = {c.type: c for c in status.status.conditions}
    assert conditions["RuntimeReady"].status is True
    # The test's CNI conf dir is empty: the network is not ready, and says why.
    assert conditions["NetworkReady"].status is False
    assert conditions["NetworkReady"].reason == "NetworkPluginNotReady"
    assert "cni" in conditions["NetworkReady"].message.lower()
    assert status.info == {}
    handlers = {h.name: h.features for h in status.runtime_handlers}
    assert set(handlers) == {"", "runc"}
    assert handlers["runc"].recursive_read_only_mounts is True  # runc 1.1.5 reports "rro"
    assert daemon.socket.stat().st_mode & 0o777 == 0o660


def test_status_verbose_returns_the_effective_config(daemon: DaemonHandle) -> None:
    info = daemon.runtime.Status(pb.StatusRequest(verbose=True)).info
    cfg = json.loads(info["config"])
    assert cfg["root"] == daemon.config["root"]
    assert cfg["listen"] == str(daemon.socket)
    assert json.loads(info["runtimeRoots"]) == {"runc": daemon.config["runtimes"]["runc"]["root"]}
    assert json.loads(info["daemonLog"]) == str(daemon.log_path)


def test_runtime_config_reports_the_cgroup_driver(daemon: DaemonHandle) -> None:
    resp = daemon.runtime.RuntimeConfig(pb.RuntimeConfigRequest())
    assert resp.linux.cgroup_driver == pb.CGROUPFS


def test_health_service_serves(daemon: DaemonHandle) -> None:
    with grpc.insecure_channel(f"unix://{daemon.socket}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        resp = stub.Check(health_pb2.HealthCheckRequest(service="runtime.v1.RuntimeService"))
    assert resp.status == health_pb2.HealthCheckResponse.SERVING


def test_unfinished_rpcs_answer_unimplemented_naming_the_rpc(daemon: DaemonHandle) -> None:
    with pytest.raises(grpc.RpcError) as err:
        daemon.runtime.CheckpointContainer(pb.CheckpointContainerRequest(container_id="x"))
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "CheckpointContainer" in err.value.details()


def test_many_concurrent_rpcs(daemon: DaemonHandle) -> None:
    def call(_i: int) -> str:
        return daemon.runtime.Version(pb.VersionRequest(), timeout=10).runtime_name

    with ThreadPoolExecutor(96) as pool:
        assert set(pool.map(call, range(400))) == {"crio-py"}


def test_crio_py_status_command(daemon: DaemonHandle) -> None:
    out = subprocess.run(daemon.command("status"), capture_output=True, text=True, check=True).stdout
    assert "runtime: crio-py" in out
    assert "RuntimeReady: true" in out
    assert "NetworkReady: false (NetworkPluginNotReady" in out
    assert f"log:     {daemon.log_path}\n" in out
    root = daemon.config["runtimes"]["runc"]["root"]
    assert f"runtime runc: state in {root} (runc --root {root} list)" in out


def test_a_second_daemon_refuses_to_start(daemon: DaemonHandle) -> None:
    second = subprocess.run(daemon.command("daemon"), capture_output=True, text=True, timeout=30)
    assert second.returncode == 1
    assert "another crio-py" in second.stderr
    assert str(daemon.proc.pid) in second.stderr if daemon.proc else False
    # The first one is untouched.
    assert daemon.runtime.Version(pb.VersionRequest()).runtime_name == "crio-py"


def test_stale_socket_of_a_dead_daemon_is_replaced(daemon: DaemonHandle) -> None:
    daemon.kill()
    assert daemon.socket.exists()  # SIGKILL leaves it behind
    daemon.start()
    assert daemon.runtime.Version(pb.VersionRequest()).runtime_name == "crio-py"


def test_sigterm_stops_cleanly_and_removes_the_socket(daemon: DaemonHandle) -> None:
    log = daemon.log_path
    assert daemon.stop(signal.SIGTERM) == 0, log.read_text()[-3000:]
    assert not daemon.socket.exists()
    assert "crio-py stopped" in daemon.log_text()


def test_invalid_config_refuses_to_start_with_exit_2(daemon_handle: DaemonHandle) -> None:
    daemon_handle.config["log_level"] = "chatty"
    daemon_handle.write_config()
    proc = subprocess.run(daemon_handle.command("daemon"), capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert f"{daemon_handle.config_file}:log_level: must be one of" in proc.stderr


def test_sighup_reloads_the_log_level(daemon_handle: DaemonHandle) -> None:
    daemon_handle.config["log_level"] = "info"
    daemon_handle.start()
    daemon_handle.runtime.Version(pb.VersionRequest())
    assert "rpc=Version" not in daemon_handle.log_text()  # Version is logged at debug only
    daemon_handle.config["log_level"] = "debug"
    daemon_handle.write_config()
    daemon_handle.send_signal(signal.SIGHUP)
    wait_until(lambda: "config reloaded" in daemon_handle.log_text(), 10, "the reload")
    assert "log_level" in daemon_handle.log_text()
    daemon_handle.runtime.Version(pb.VersionRequest())
    # The line is written once the RPC's handler returns, a moment after the client has its answer.
    wait_until(lambda: "rpc=Version" in daemon_handle.log_text(), 10, "Version logged at debug")


def test_metrics_count_the_calls(daemon: DaemonHandle) -> None:
    for _ in range(3):
        daemon.runtime.Version(pb.VersionRequest())
    with pytest.raises(grpc.RpcError):
        daemon.runtime.Attach(pb.AttachRequest(container_id="x", stdout=True))
    url = f"http://127.0.0.1:{daemon.config['metrics']['port']}/metrics"
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    counts = {
        line.split()[0]: float(line.split()[1])
        for line in text.splitlines()
        if line.startswith("crio_py_operations")
    }
    assert counts['crio_py_operations_total{operation="Version"}'] >= 3
    assert counts['crio_py_operations_errors_total{code="NOT_FOUND",operation="Attach"}'] == 1
    assert counts['crio_py_operations_latency_seconds_count{operation="Version"}'] >= 3
    assert "process_resident_memory_bytes" in text


def test_image_rpcs_answer_for_the_local_pause_image(daemon: DaemonHandle) -> None:
    pause = daemon.config["pause_image"]
    # Nothing serves the configured pause image: the daemon builds it from catatonit.
    daemon.images.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=pause)), timeout=60)
    status = daemon.images.ImageStatus(pb.ImageStatusRequest(image=pb.ImageSpec(image=pause), verbose=True))
    assert status.image.repo_tags == [pause] and status.image.pinned
    assert json.loads(status.info["info"])["imageSpec"]["config"]["Entrypoint"] == ["/pause", "-P"]
    listed = daemon.images.ListImages(pb.ListImagesRequest()).images
    assert [i.id for i in listed] == [status.image.id]
    assert daemon.images.ImageStatus(pb.ImageStatusRequest(image=pb.ImageSpec(image="nothere:1"))).image.id == ""
    fs = daemon.images.ImageFsInfo(pb.ImageFsInfoRequest())
    assert fs.image_filesystems[0].used_bytes.value > 0
    assert fs.image_filesystems[0].fs_id.mountpoint.endswith("/layers")


def _service_children(daemon: DaemonHandle) -> list[int]:
    assert daemon.proc is not None
    children = Path(f"/proc/{daemon.proc.pid}/task/{daemon.proc.pid}/children").read_text().split()
    return [int(p) for p in children if b"cni_plugins.service" in Path(f"/proc/{p}/cmdline").read_bytes()]


def test_no_cni_plugin_service_without_a_network_of_ours(daemon: DaemonHandle) -> None:
    # The test's conf dir is empty: nothing would ever ask the service.
    daemon.runtime.Status(pb.StatusRequest())
    assert _service_children(daemon) == []


def test_the_cni_plugin_service_goes_when_the_daemon_dies(daemon_handle: DaemonHandle, workdir: Path) -> None:
    ours = workdir / "cni-bin"
    subprocess.run([sys.executable, "-m", "cni_plugins.install", str(ours)], check=True)
    daemon_handle.config["cni"]["plugin_dirs"] = [str(ours)]
    conflist = {"cniVersion": "1.0.0", "name": "svc", "plugins": [{"type": "loopback"}]}
    (Path(daemon_handle.config["cni"]["conf_dir"]) / "10-svc.conflist").write_text(json.dumps(conflist))
    daemon_handle.start()
    services = _service_children(daemon_handle)
    assert len(services) == 1
    conditions = {c.type: c for c in daemon_handle.runtime.Status(pb.StatusRequest()).status.conditions}
    assert conditions["NetworkReady"].status is True, conditions["NetworkReady"].message
    daemon_handle.kill()
    deadline = time.monotonic() + 15  # it notices its owner is gone within its 5 s poll
    while process_alive(services[0]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not process_alive(services[0])
