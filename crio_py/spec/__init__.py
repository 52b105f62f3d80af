"""OCI runtime spec (config.json) generation for pods and containers.

The domain gathers what a spec needs into a :class:`ContainerSpecContext` or
:class:`SandboxSpecContext`; generation reads the container rootfs (users, groups) and host
devices but changes nothing. Host-side preparation that must happen first, such as creating
missing bind-mount sources and checking that propagating mounts can propagate, are separate
calls (:func:`ensure_host_paths`, then :func:`check_mount_propagation`).
"""

from crio_py.spec.bundle import read_spec, write_spec
from crio_py.spec.container import ContainerSpecContext, container_spec
from crio_py.spec.mounts import check_mount_propagation, ensure_host_paths
from crio_py.spec.sandbox import SandboxSpecContext, sandbox_spec
from crio_py.spec.user import ResolvedUser, resolve_user

__all__ = [
    "ContainerSpecContext",
    "ResolvedUser",
    "SandboxSpecContext",
    "check_mount_propagation",
    "container_spec",
    "ensure_host_paths",
    "read_spec",
    "resolve_user",
    "sandbox_spec",
    "write_spec",
]
