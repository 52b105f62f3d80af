"""``crio-py exec`` over the streaming server: the URL Exec returns, spoken as a WebSocket with
Kubernetes' channel protocol (v5.channel.k8s.io, else v4), as ``kubectl exec`` does.

Each binary message starts with its channel: 0 stdin, 1 stdout, 2 stderr, 3 the final status
(JSON), 4 terminal size; v5 adds ``[255, 0]``: stdin is at its end. With a terminal the local one
goes raw for the session and window changes are sent as sizes.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import shutil
import signal
import socket
import ssl
import sys
import termios
import tty
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, BytesMessage, CloseConnection, Ping, RejectConnection, TextMessage
from wsproto.events import Request as WSRequest

PROTOCOLS = ["v5.channel.k8s.io", "v4.channel.k8s.io"]
STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255
READ_SIZE = 64 * 1024


class StreamError(Exception):
    """The streaming connection failed (not the command: its exit code is returned)."""


def exit_code_of(status: dict[str, Any]) -> int:
    """The exit code in a remotecommand status ({"status": "Success"} or a NonZeroExitCode cause)."""
    if status.get("status") == "Success":
        return 0
    for cause in (status.get("details") or {}).get("causes") or []:
        if cause.get("reason") == "ExitCode":
            return int(cause.get("message", 1))
    raise StreamError(status.get("message") or "the command failed")


class _Socket:
    """A WebSocket client on a blocking socket: whole messages in, frames out."""

    def __init__(self, url: str, timeout: float):
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            sock = socket.create_connection((parts.hostname, port), timeout=timeout)
        except OSError as exc:
            raise StreamError(f"cannot connect to the streaming server {parts.netloc}: {exc}") from None
        if parts.scheme == "https":
            ctx = ssl.create_default_context()
            ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE  # a loopback URL with a one-time token
            sock = ctx.wrap_socket(sock, server_hostname=parts.hostname)
        self.sock = sock
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.protocol = ""
        self._partial = b""
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        self._send(WSRequest(host=parts.netloc, target=target, subprotocols=PROTOCOLS))
        while not self.protocol:
            try:
                events = list(self._events())
            except (EOFError, OSError) as exc:
                raise StreamError(f"the streaming server {parts.netloc} closed the connection: {exc}") from None
            for event in events:
                if isinstance(event, AcceptConnection):
                    self.protocol = event.subprotocol or PROTOCOLS[-1]
                elif isinstance(event, RejectConnection):
                    raise StreamError(f"the streaming server refused the exec (HTTP {event.status_code})")
        sock.settimeout(None)

    def _send(self, event: Any) -> None:
        self.sock.sendall(self.ws.send(event))

    def send(self, channel: int, data: bytes) -> None:
        self._send(BytesMessage(data=bytes([channel]) + data))

    def _events(self) -> Iterator[Any]:
        data = self.sock.recv(READ_SIZE)
        if not data:
            raise EOFError
        self.ws.receive_data(data)
        yield from self.ws.events()

    def messages(self) -> Iterator[bytes | None]:
        """Whole binary messages of one read; None when the server closed."""
        try:
            events = list(self._events())
        except (EOFError, ConnectionError):
            yield None
            return
        for event in events:
            if isinstance(event, BytesMessage | TextMessage):
                chunk = event.data if isinstance(event.data, bytes) else event.data.encode()
                self._partial += chunk
                if event.message_finished:
                    message, self._partial = self._partial, b""
                    yield message
            elif isinstance(event, Ping):
                self._send(event.response())
            elif isinstance(event, CloseConnection):
                with contextlib.suppress(Exception):
                    self._send(event.response())
                yield None

    def close(self) -> None:
        self.sock.close()


@contextlib.contextmanager
def _raw_terminal(active: bool) -> Iterator[None]:
    if not active:
        yield
        return
    saved = termios.tcgetattr(sys.stdin.fileno())
    tty.setraw(sys.stdin.fileno())
    try:
        yield
    finally:
        termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, saved)


def _size() -> bytes:
    cols, lines = shutil.get_terminal_size()
    return json.dumps({"Width": cols, "Height": lines}).encode()


def run_exec(url: str, *, stdin: bool, tty_: bool, timeout: float = 30.0) -> int:
    """Run the exec session at ``url``, relaying this process's stdio; the command's exit code."""
    conn = _Socket(url, timeout)
    local_tty = tty_ and stdin and os.isatty(sys.stdin.fileno())
    out, err = sys.stdout.buffer, sys.stderr.buffer
    sel = selectors.DefaultSelector()
    sel.register(conn.sock, selectors.EVENT_READ, "ws")
    if stdin:
        sel.register(sys.stdin.fileno(), selectors.EVENT_READ, "stdin")
    wake_r, wake_w = os.pipe()
    sel.register(wake_r, selectors.EVENT_READ, "resize")
    old_winch = None
    if tty_:
        conn.send(RESIZE, _size())
        if local_tty:
            old_winch = signal.signal(signal.SIGWINCH, lambda *_: os.write(wake_w, b"."))
    status: dict[str, Any] | None = None
    try:
        with _raw_terminal(local_tty):
            while status is None:
                for key, _ in sel.select():
                    if key.data == "stdin":
                        data = os.read(sys.stdin.fileno(), READ_SIZE)
                        if data:
                            conn.send(STDIN, data)
                            continue
                        sel.unregister(sys.stdin.fileno())
                        if conn.protocol.startswith("v5."):
                            conn.send(CLOSE, bytes([STDIN]))
                    elif key.data == "resize":
                        os.read(wake_r, 64)
                        conn.send(RESIZE, _size())
                    else:
                        for message in conn.messages():
                            if message is None:
                                status = status or {"status": "Failure", "message": "the server closed the session"}
                                break
                            if not message:
                                continue
                            channel, payload = message[0], message[1:]
                            if channel == STDOUT:
                                out.write(payload)
                                out.flush()
                            elif channel == STDERR:
                                err.write(payload)
                                err.flush()
                            elif channel == ERROR:
                                status = json.loads(payload or b"{}") or {"status": "Success"}
    finally:
        if old_winch is not None:
            signal.signal(signal.SIGWINCH, old_winch)
        os.close(wake_r)
        os.close(wake_w)
        sel.close()
        conn.close()
    return exit_code_of(status)
