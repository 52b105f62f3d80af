"""The streaming server: exec, attach and port-forward sessions over SPDY/3.1 and WebSocket.

A mechanism of its own: it speaks the protocols kubelet, kubectl and crictl speak and reaches the
containers only through a :class:`Backend` the daemon gives it. Modules: ``spdy`` (framing),
``spdy_session`` (streams, flow control), ``websocket`` (wsproto connections, channel protocols,
SPDY tunnelling), ``remotecommand`` (exec and attach), ``portforward``, ``tokens``, ``http`` and
``server`` (routing, limits, lifecycle).
"""

from crio_py.streaming.backend import AttachRequest, Backend, ExecRequest, PortForwardRequest
from crio_py.streaming.server import StreamingServer

__all__ = ["AttachRequest", "Backend", "ExecRequest", "PortForwardRequest", "StreamingServer"]
