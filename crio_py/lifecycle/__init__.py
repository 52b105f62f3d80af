"""The pod lifecycle orchestrator: what spans a pod sandbox and its containers.

SandboxManager and ContainerManager are peers, each owning its records; this layer, above
both (where CRI-O's server package and containerd's criService sit), holds what involves the
two: stopping and removing a pod (its containers in parallel, then the pause container, then
CNI DEL), a pod-scoped read/write lock (CreateContainer shared, Stop/RemovePodSandbox
exclusive, so that no container is ever published into a pod being taken down), routing the
exits the monitors push, and restore once both have read their records.
"""

from crio_py.lifecycle.pods import POD_STOP_TIMEOUT, PodLifecycle

__all__ = ["POD_STOP_TIMEOUT", "PodLifecycle"]
