"""OCI runtime spec (config.json) generation for pods and containers.

The domain gathers what a spec needs into a :class:`ContainerSpecContext` or
:class:`SandboxSpecContext`; generation reads the container rootfs (users, groups) and host
devices but changes nothing. Host-side preparation that must happen first, such as creating
missing bind-mount sources, is a separate call (:func:`ensure_host_paths`).
"""

from crio_py.spec.container import ContainerSpecContext, container_spec
from crio_py.spec.mounts import ensure_host_paths
from crio_py.spec.sandbox import SandboxSpecContext, sandbox_spec
from crio_py.spec.user import ResolvedUser, resolve_user

__all__ = [
    "ContainerSpecContext",
    "ResolvedUser",
    "SandboxSpecContext",
    "container_spec",
    "ensure_host_paths",
    "resolve_user",
    "sandbox_spec",
]
