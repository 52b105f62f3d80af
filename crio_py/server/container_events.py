"""GetContainerEvents: the lifecycle events of containers and pod sandboxes, as a stream.

Each event carries the pod sandbox status and the statuses of the pod's containers at the time
it is sent, as kubelet's Evented PLEG consumes them. A client that falls behind is dropped
(RESOURCE_EXHAUSTED: subscribe again and relist); daemon shutdown ends every stream cleanly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from crio_py.container import ContainerManager
from crio_py.cri import api_pb2 as pb
from crio_py.errors import ResourceExhausted
from crio_py.events import ContainerEvent, EventBus
from crio_py.sandbox import Sandbox, SandboxManager
from crio_py.server.container import container_status


class ContainerEventHandlers:
    events: EventBus
    sandboxes: SandboxManager
    containers: ContainerManager

    _pod_status: Callable[[Sandbox], pb.PodSandboxStatus]  # from PodSandboxHandlers

    def GetContainerEvents(self, request: pb.GetEventsRequest, context: Any) -> Iterator[Any]:
        subscription = self.events.subscribe()
        context.add_callback(subscription.close)  # the client went away
        # Headers now: a client waiting for them knows it misses no event from here on.
        context.send_initial_metadata(())
        for event in subscription:
            yield self._event_response(event)
        if subscription.dropped:
            raise ResourceExhausted(
                f"container events stream dropped: the client fell {self.events.queue_size} events behind"
            )

    def _event_response(self, event: ContainerEvent) -> pb.ContainerEventResponse:
        pod = event.pod if isinstance(event.pod, Sandbox) else None
        return pb.ContainerEventResponse(
            container_id=event.object_id,
            container_event_type=pb.ContainerEventType.Value(event.kind.value),
            created_at=event.at_ns,
            pod_sandbox_status=self._pod_status(pod) if pod is not None else pb.PodSandboxStatus(id=event.pod_id),
            containers_statuses=[container_status(c) for c in self.containers.in_pod(event.pod_id)],
        )
