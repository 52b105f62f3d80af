"""GetContainerEvents with real containers: every lifecycle step, in order, on two streams at
once (an exit nobody polled included), with the pod and container statuses; daemon shutdown
ends the streams cleanly."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import grpc
import pytest

from crio_py.cri import api_pb2 as pb
from crio_py.cri import api_pb2_grpc
from tests.support.cri import pod_config
from tests.support.daemon import DaemonHandle
from tests.support.pods import Pod

pytestmark = pytest.mark.e2e
CREATED, STARTED, STOPPED, DELETED = (
    pb.CONTAINER_CREATED_EVENT,
    pb.CONTAINER_STARTED_EVENT,
    pb.CONTAINER_STOPPED_EVENT,
    pb.CONTAINER_DELETED_EVENT,
)


class Stream:
    """A GetContainerEvents stream read into a list by a thread of its own."""

    def __init__(self, daemon: DaemonHandle) -> None:
        self.events: list[pb.ContainerEventResponse] = []
        self.error: grpc.RpcError | None = None
        self.ended = threading.Event()
        # A channel of its own: the daemon handle closes its channel when it stops the daemon.
        self._channel = grpc.insecure_channel(f"unix://{daemon.socket}")
        stub = api_pb2_grpc.RuntimeServiceStub(self._channel)
        self._call: Iterator[pb.ContainerEventResponse] = stub.GetContainerEvents(pb.GetEventsRequest())
        self._changed = threading.Condition()
        # The daemon sends the headers once the subscription is in place: no event is missed after.
        self._call.initial_metadata()  # type: ignore[attr-defined]
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for event in self._call:
                with self._changed:
                    self.events.append(event)
                    self._changed.notify_all()
        except grpc.RpcError as exc:
            self.error = exc
        finally:
            self.ended.set()

    def of(self, object_id: str) -> list[pb.ContainerEventResponse]:
        return [e for e in self.events if e.container_id == object_id]

    def wait(self, object_id: str, kind: int, timeout: float = 20) -> pb.ContainerEventResponse:
        def kinds() -> list[int]:
            return [e.container_event_type for e in self.of(object_id)]

        with self._changed:
            ok = self._changed.wait_for(lambda: kind in kinds(), timeout)
        assert ok, f"no {pb.ContainerEventType.Name(kind)} for {object_id}: {kinds()}"
        return next(e for e in self.of(object_id) if e.container_event_type == kind)

    def cancel(self) -> None:
        self._call.cancel()  # type: ignore[attr-defined]
        self._channel.close()


def test_two_subscribers_get_every_step_in_order(pod: Pod) -> None:
    streams = [Stream(pod.daemon), Stream(pod.daemon)]
    cid = pod.run("exits", "sh", "-c", "exit 4")  # nobody polls its status
    pod.daemon.runtime.RemoveContainer(pb.RemoveContainerRequest(container_id=pod.wait_exit(cid).id))
    for stream in streams:
        stopped = stream.wait(cid, STOPPED)
        stream.wait(cid, DELETED)
        assert [e.container_event_type for e in stream.of(cid)] == [CREATED, STARTED, STOPPED, DELETED]
        assert stopped.pod_sandbox_status.id == pod.id
        assert stopped.pod_sandbox_status.metadata.name == pod.config.metadata.name
        assert stopped.pod_sandbox_status.state == pb.SANDBOX_READY
        mine = [s for s in stopped.containers_statuses if s.id == cid]
        assert mine and (mine[0].state, mine[0].exit_code) == (pb.CONTAINER_EXITED, 4)
        created_at = [e.created_at for e in stream.of(cid)]
        assert created_at == sorted(created_at) and created_at[0] > 0
        stream.cancel()


def test_pod_steps_are_events_of_its_sandbox_id(daemon: DaemonHandle, busybox: str, cgroup_parent: str) -> None:
    stream = Stream(daemon)
    first = Pod(daemon, busybox, pod_config(cgroup_parent=cgroup_parent))
    stream.wait(first.id, STARTED)
    daemon.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=first.id))
    daemon.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=first.id))
    deleted = stream.wait(first.id, DELETED)
    assert [e.container_event_type for e in stream.of(first.id)] == [CREATED, STARTED, STOPPED, DELETED]
    assert deleted.pod_sandbox_status.metadata.uid == first.config.metadata.uid
    stream.cancel()


def test_daemon_shutdown_ends_the_streams_cleanly(pod: Pod) -> None:
    stream = Stream(pod.daemon)
    started = time.monotonic()
    assert pod.daemon.stop() == 0
    assert stream.ended.wait(10)
    assert stream.error is None
    stream.cancel()
    # It did not hold the shutdown for the RPC grace period (10 s).
    assert time.monotonic() - started < 8
