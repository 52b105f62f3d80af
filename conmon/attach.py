"""The attach socket of one container, for ``crictl attach`` (through the daemon's streaming server).

``<pod dir>/<container id>/attach.sock`` is a SOCK_SEQPACKET unix socket, like conmon's:

- client to monitor: each packet is bytes for the container's stdin (dropped if it has none).
  The end of the client's input (``shutdown(SHUT_WR)`` or close) closes the container's stdin
  when the container was created with ``stdin_once``.
- monitor to client: each packet is one tag byte, 2 for stdout or 3 for stderr (a terminal's
  output is stdout), followed by at most MAX_PACKET bytes of output.
- the monitor closes the connection once the container exited and its output was drained.

Output is also logged; attach is a live view. A client that lets more than MAX_QUEUED bytes pile
up is disconnected rather than slowing the container or growing the monitor.
"""

from __future__ import annotations

import _socket
import posix

from conmon.loop import IN, OUT, Loop, accept, attempt, listen_unix

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

ATTACH_SOCKET = "attach.sock"
STDOUT_TAG = b"\x02"
STDERR_TAG = b"\x03"
MAX_PACKET = 32 * 1024
MAX_QUEUED = 1024 * 1024
_HUP = 0x010  # EPOLLHUP


class _Client:
    __slots__ = ("mask", "queue", "queued", "reading", "sock")

    def __init__(self, sock: _socket.socket) -> None:
        self.sock = sock
        self.queue: list[bytes] = []
        self.queued = 0
        self.reading = True
        self.mask = 0


class Attach:
    """Accepts attach clients, feeds their input to ``on_input`` and copies output to them."""

    def __init__(
        self, loop: Loop, dir_fd: int, on_input: Callable[[bytes], None], on_input_end: Callable[[], None]
    ) -> None:
        self._loop = loop
        self._dir_fd = dir_fd
        self._on_input = on_input
        self._on_input_end = on_input_end
        self._clients: dict[int, _Client] = {}
        self._paused = False
        self._listener: _socket.socket | None = listen_unix(_socket.SOCK_SEQPACKET, dir_fd, ATTACH_SOCKET)
        loop.add(self._listener.fileno(), IN, self._accept)

    def _mask(self, client: _Client) -> int:
        return (IN if client.reading and not self._paused else 0) | (OUT if client.queue else 0)

    def _accept(self, _events: int) -> None:
        if self._listener is None:
            return
        sock = accept(self._listener)
        if sock is None:
            return
        client = _Client(sock)
        fd = sock.fileno()
        self._clients[fd] = client
        client.mask = self._mask(client)
        self._loop.add(fd, client.mask, lambda events: self._on_client(fd, events))

    def _on_client(self, fd: int, events: int) -> None:
        client = self._clients[fd]
        if events & OUT and not self._send(client):
            return
        if not events & (IN | _HUP):
            return
        if client.reading:
            try:
                data = client.sock.recv(MAX_PACKET)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if data:
                self._on_input(data)
                return
            client.reading = False
            self._on_input_end()
        if events & _HUP:
            self._drop(client)
        else:
            self._update(client)

    def broadcast(self, tag: bytes, data: bytes) -> None:
        """Send ``data`` (output of the stream ``tag``) to every client."""
        if not self._clients:
            return
        packets = [tag + data[i : i + MAX_PACKET] for i in range(0, len(data), MAX_PACKET)]
        for client in list(self._clients.values()):
            had_queue = bool(client.queue)
            client.queue.extend(packets)
            client.queued += len(data)
            if client.queued > MAX_QUEUED:
                self._drop(client)
            elif not had_queue:
                self._send(client)

    def _send(self, client: _Client) -> bool:
        """Send what is queued for ``client``; False if it was dropped."""
        sent = 0
        try:
            for packet in client.queue:
                client.sock.send(packet)
                sent += 1
                client.queued -= len(packet) - 1
        except BlockingIOError:
            pass
        except OSError:
            self._drop(client)
            return False
        del client.queue[:sent]
        self._update(client)
        return True

    def _update(self, client: _Client) -> None:
        mask = self._mask(client)
        if mask != client.mask:
            client.mask = mask
            self._loop.modify(client.sock.fileno(), mask)

    def pause_input(self, paused: bool) -> None:
        """Stop (or resume) reading client input while the container's stdin is backed up."""
        if paused == self._paused:
            return
        self._paused = paused
        for client in self._clients.values():
            self._update(client)

    def _drop(self, client: _Client) -> None:
        fd = client.sock.fileno()
        self._loop.remove(fd)
        del self._clients[fd]
        client.sock.close()
        if client.reading:
            self._on_input_end()

    def close(self) -> None:
        """Disconnect every client and remove the socket: the container's output has ended."""
        for client in list(self._clients.values()):
            client.reading = False
            self._drop(client)
        if self._listener is not None:
            self._loop.remove(self._listener.fileno())
            self._listener.close()
            self._listener = None
            attempt(posix.unlink, ATTACH_SOCKET, dir_fd=self._dir_fd)
