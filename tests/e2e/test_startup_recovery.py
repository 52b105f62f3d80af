"""Nothing read at start-up stops the daemon: bad records, CNI cache entries and exit files are
moved aside with an error log, and the daemon serves (issue 15, finding 0)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from crio_py.cri import api_pb2 as pb
from tests.support.daemon import DaemonHandle

pytestmark = pytest.mark.e2e

NETWORK = {"cniVersion": "1.0.0", "name": "crio-e2e", "plugins": [{"type": "loopback"}]}


def cache_entry(container_id: str, netns: str, namespace: str) -> dict[str, object]:
    return {
        "kind": "cniCacheV1",
        "containerId": container_id,
        "config": base64.b64encode(json.dumps(NETWORK).encode()).decode(),
        "ifName": "eth0",
        "networkName": "crio-e2e",
        "netns": netns,
        "cniArgs": [["K8S_POD_NAMESPACE", namespace], ["K8S_POD_NAME", "web"]],
        "capabilityArgs": {},
    }


def test_hostile_leftovers_are_moved_aside_and_the_daemon_serves(daemon_handle: DaemonHandle) -> None:
    daemon = daemon_handle
    daemon.start()
    daemon.stop()
    state = Path(daemon.config["root"]) / "state"
    results = Path(daemon.config["cni"]["cache_dir"]) / "results"
    results.mkdir(parents=True, exist_ok=True)
    pod_id, ctr_id, image_id = "a" * 64, "b" * 64, "c" * 64
    (state / "pods" / f"{pod_id}.json").write_text(json.dumps({"id": 5, "config": ""}))
    (state / "containers" / f"{ctr_id}.json").write_text(json.dumps({"id": ctr_id, "config": "!!not base64"}))
    (state / "images" / f"{image_id}.json").write_text(json.dumps({"id": f"sha256:{image_id}", "chain_ids": [1]}))
    # The audit's entry: a NUL in K8S_POD_NAMESPACE (and here in the netns path too).
    (results / f"crio-e2e-{'d' * 64}-eth0").write_text(json.dumps(cache_entry("d" * 64, "", "de\u0000fault")))
    (results / f"crio-e2e-{'e' * 64}-eth0").write_text(json.dumps(cache_entry("e" * 64, "/run/x\u0000y", "ns")))
    (results / "crio-e2e-junk-eth0").write_text("{")

    daemon.start()

    assert daemon.runtime.Version(pb.VersionRequest()).runtime_name == "crio-py"
    assert list(daemon.runtime.ListPodSandbox(pb.ListPodSandboxRequest()).items) == []
    assert list(daemon.runtime.ListContainers(pb.ListContainersRequest()).containers) == []
    assert all(i.id != f"sha256:{image_id}" for i in daemon.images.ListImages(pb.ListImagesRequest()).images)
    for kind, record_id in (("pods", pod_id), ("containers", ctr_id), ("images", image_id)):
        assert not (state / kind / f"{record_id}.json").exists()
        assert [p.name.split(".")[0] for p in (state / kind / "corrupt").iterdir()] == [record_id]
    assert sorted(p.name for p in results.iterdir()) == []
    log = daemon.log_text()
    assert "corrupt state record moved aside" in log
    assert "bad CNI cache entry moved aside" in log or "stale CNI attachment released" in log
    assert "Traceback" not in log
