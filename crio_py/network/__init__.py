"""Pod networking: CNI plugin invocation per the CNI spec, and pinned network namespaces.

A mechanism layer: it takes plain dataclasses and knows nothing of gRPC or of pods beyond them.
"""

from crio_py.network.manager import CNIManager
from crio_py.network.model import AttachmentResult, NetworkStatus, PodAttachment, PortMapping
from crio_py.network.netns import create_netns, remove_netns, set_loopback_up
from crio_py.network.plugin_service import PluginService

__all__ = [
    "AttachmentResult",
    "CNIManager",
    "NetworkStatus",
    "PluginService",
    "PodAttachment",
    "PortMapping",
    "create_netns",
    "remove_netns",
    "set_loopback_up",
]
