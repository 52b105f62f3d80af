"""What the streaming server asks of the rest of the daemon, and the requests its tokens stand for.

The server speaks the protocols; the daemon (``crio_py.server.streaming``) implements ``Backend``
with the runtime, the monitors and the pods' network namespaces. Every method blocks: the server
calls them on its worker threads.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class AttachRequest:
    container_id: str
    tty: bool = False
    stdin: bool = False
    stdout: bool = True
    stderr: bool = True


@dataclass(frozen=True)
class ExecRequest(AttachRequest):
    cmd: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class PortForwardRequest:
    pod_id: str
    ports: list[int] = field(default_factory=list)


Request = ExecRequest | AttachRequest | PortForwardRequest


class ExecProcess(Protocol):
    """A started exec: its pid (for its exit) and its stdio descriptors (the terminal's master with a tty)."""

    pid: int
    stdin: int | None
    stdout: int | None
    stderr: int | None

    def resize(self, width: int, height: int) -> None: ...

    def close_stdin(self) -> None: ...

    def kill(self) -> None: ...

    def wait(self) -> int: ...

    def close(self) -> None: ...


class Backend(Protocol):
    def exec(self, request: ExecRequest, size: tuple[int, int] | None) -> ExecProcess:
        """Start the command (with a terminal of ``size`` (width, height) if asked); CrioError if it cannot."""
        ...

    def attach(self, container_id: str) -> socket.socket:
        """A connection to the container's attach socket (SOCK_SEQPACKET, see conmon.attach)."""
        ...

    def resize(self, container_id: str, width: int, height: int) -> None:
        """Resize the terminal of an attached container."""
        ...

    def port_socket(self, pod_id: str) -> socket.socket:
        """An unconnected TCP socket in the pod's network namespace (the host's for host-network pods)."""
        ...
