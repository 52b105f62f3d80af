"""Containers: the workloads of a pod, run by the OCI runtime under a monitor."""

from crio_py.container.manager import ContainerManager
from crio_py.container.model import Container

__all__ = ["Container", "ContainerManager"]
