"""What kubelet's Evented PLEG reads from PodSandboxStatus: every container of the pod and when.

With EventedPLEG on, kubelet rebuilds a pod's status from this one response; a pod answered
without its containers looks empty and kubelet starts them again and again.
"""

from __future__ import annotations

import time

import pytest

from crio_py.cri import api_pb2 as pb
from tests.support.cri import pod_config
from tests.support.pods import Pod

pytestmark = pytest.mark.e2e


def test_pod_sandbox_status_lists_the_pods_containers_with_a_timestamp(pod: Pod, cgroup_parent: str) -> None:
    running = pod.run("web", "sleep", "300")
    exited = pod.run("job", "sh", "-c", "exit 3")
    created = pod.create("later", "true")
    other = Pod(pod.daemon, pod.image, pod_config(cgroup_parent=cgroup_parent))
    other.run("elsewhere", "sleep", "300")
    pod.wait_exit(exited)

    before = time.time_ns()
    resp = pod.daemon.runtime.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=pod.id))
    after = time.time_ns()

    assert before <= resp.timestamp <= after
    statuses = {s.id: s for s in resp.containers_statuses}
    assert set(statuses) == {running, exited, created}
    assert statuses[running].state == pb.CONTAINER_RUNNING
    assert statuses[running].metadata.name == "web" and statuses[running].started_at > 0
    assert (statuses[exited].state, statuses[exited].exit_code, statuses[exited].reason) == (
        pb.CONTAINER_EXITED,
        3,
        "Error",
    )
    assert statuses[created].state == pb.CONTAINER_CREATED
    # the same status ContainerStatus gives, field for field
    assert statuses[exited] == pod.status(exited)
    assert statuses[running].log_path == pod.status(running).log_path
