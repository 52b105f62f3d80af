"""Pod sandboxes: a pause container holding the pod's namespaces, files and network."""

from crio_py.sandbox.manager import SandboxManager
from crio_py.sandbox.model import Sandbox

__all__ = ["Sandbox", "SandboxManager"]
