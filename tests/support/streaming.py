"""Clients of the streaming server for tests: SPDY/3.1 (kubelet's and kubectl's way) and WebSocket channels.

Blocking, with a reader thread each, so a test reads like a script: open streams, write, read until
something arrives or a deadline passes. The SPDY client uses crio_py's frame codec (the real Go
clients are checked separately by hand with crictl); the session logic (stream ids, replies, FIN,
window updates) is its own.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable
from urllib.parse import urlsplit

from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)

from crio_py.cri import api_pb2 as pb
from crio_py.streaming import spdy

TIMEOUT = 30.0


def http_status(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    """Status code and body of a plain request to ``url`` (closing the connection afterwards)."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=TIMEOUT) as sock:
        lines = [f"POST {parts.path} HTTP/1.1", f"Host: {parts.netloc}"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        sock.sendall(("\r\n".join([*lines, "", ""])).encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body.decode(errors="replace")


class _Waitable:
    def __init__(self) -> None:
        self.cond = threading.Condition()

    def wait_for(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        with self.cond:
            if not self.cond.wait_for(predicate, timeout):
                raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


class ClientStream:
    def __init__(self, client: SpdyClient, stream_id: int, headers: dict[str, str]):
        self.client = client
        self.id = stream_id
        self.headers = headers
        self.data = bytearray()
        self.fin = False
        self.reset: int | None = None
        self.replied = False

    def write(self, data: bytes) -> None:
        for i in range(0, len(data), 16384):
            self.client.send(spdy.DataFrame(self.id, data[i : i + 16384]))

    def close(self) -> None:
        self.client.send(spdy.DataFrame(self.id, b"", spdy.FLAG_FIN))

    def read_all(self, timeout: float = TIMEOUT) -> bytes:
        """Everything until the server's FIN (or reset, or the connection's end)."""
        self.client.wait_for(lambda: self.fin or self.reset is not None or self.client.closed, timeout, "FIN")
        return bytes(self.data)

    def wait_for_data(self, predicate: Callable[[bytes], bool], timeout: float = TIMEOUT) -> bytes:
        self.client.wait_for(
            lambda: predicate(bytes(self.data)) or self.fin or self.client.closed,
            timeout,
            f"stream data (have {bytes(self.data)[-200:]!r})",
        )
        return bytes(self.data)


class SpdyClient(_Waitable):
    """A SPDY/3.1 client connection after the HTTP upgrade."""

    def __init__(
        self,
        url: str,
        protocols: list[str],
        flow_control: bool = False,
        websocket: bool = False,
        tls: ssl.SSLContext | None = None,
    ):
        super().__init__()
        parts = urlsplit(url)
        if websocket:  # SPDY tunnelled in WebSocket messages, as client-go's port-forward dialer does
            self.sock = TunnelSocket(url, [f"SPDY/3.1+{p}" for p in protocols])  # type: ignore[assignment]
            self.status, self.response_headers = 101, {}
            self.protocol = self.sock.protocol.removeprefix("SPDY/3.1+")
            self._start(flow_control)
            return
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=TIMEOUT)
        if tls is not None:
            self.sock = tls.wrap_socket(self.sock, server_hostname=parts.hostname)
        request = [
            f"POST {parts.path} HTTP/1.1",
            f"Host: {parts.netloc}",
            "Connection: Upgrade",
            "Upgrade: SPDY/3.1",
            *(f"X-Stream-Protocol-Version: {p}" for p in protocols),
            "",
            "",
        ]
        self.sock.sendall("\r\n".join(request).encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(1)
            if not chunk:
                raise ConnectionError(f"server closed the connection during the upgrade: {head!r}")
            head += chunk
        lines = head.decode().split("\r\n")
        self.status = int(lines[0].split(" ")[1])
        self.response_headers = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:] if x)}
        if self.status != 101:
            raise ConnectionError(f"upgrade refused: {lines[0]}")
        self.protocol = self.response_headers.get("x-stream-protocol-version", "")
        self._start(flow_control)

    def _start(self, flow_control: bool) -> None:
        self.encoder = spdy.Encoder()
        self.decoder = spdy.Decoder()
        self.streams: dict[int, ClientStream] = {}
        self.next_id = 1
        self.closed = False
        self.goaway: spdy.GoAway | None = None
        self.flow_control = flow_control
        self.send_lock = threading.Lock()
        self.frames_seen: list[type] = []
        if flow_control:
            self.send(spdy.Settings({spdy.SETTINGS_INITIAL_WINDOW_SIZE: spdy.DEFAULT_WINDOW}))
        self.thread = threading.Thread(target=self._read_loop, daemon=True)
        self.thread.start()

    def send(self, frame: spdy.Frame) -> None:
        with self.send_lock:
            self.sock.sendall(self.encoder.encode(frame))

    def open(self, headers: dict[str, str], fin: bool = False) -> ClientStream:
        with self.send_lock:
            sid = self.next_id
            self.next_id += 2
            stream = self.streams[sid] = ClientStream(self, sid, headers)
            frame = spdy.SynStream(sid, {k.lower(): [v] for k, v in headers.items()}, spdy.FLAG_FIN if fin else 0)
            self.sock.sendall(self.encoder.encode(frame))
        self.wait_for(lambda: stream.replied or stream.reset is not None, TIMEOUT, f"SYN_REPLY of {sid}")
        return stream

    def _read_loop(self) -> None:
        try:
            while data := self.sock.recv(65536):
                for frame in self.decoder.feed(data):
                    self._dispatch(frame)
        except OSError:
            pass
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    def _dispatch(self, frame: spdy.Frame) -> None:
        with self.cond:
            self.frames_seen.append(type(frame))
            if isinstance(frame, spdy.Ping):
                self.send(frame)
            elif isinstance(frame, spdy.GoAway):
                self.goaway = frame
            elif isinstance(frame, spdy.SynReply):
                self.streams[frame.stream_id].replied = True
            elif isinstance(frame, spdy.RstStream):
                if frame.stream_id in self.streams:
                    self.streams[frame.stream_id].reset = frame.status
            elif isinstance(frame, spdy.DataFrame):
                stream = self.streams[frame.stream_id]
                stream.data += frame.data
                if frame.fin:
                    stream.fin = True
                if self.flow_control and frame.data:
                    self.send(spdy.WindowUpdate(frame.stream_id, len(frame.data)))
                    self.send(spdy.WindowUpdate(0, len(frame.data)))
            self.cond.notify_all()

    def close(self) -> None:
        self.closed = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


def spdy_exec(
    url: str,
    stdin: bytes | None = None,
    tty: bool = False,
    stderr: bool = True,
    protocol: str = "v4.channel.k8s.io",
    tls: ssl.SSLContext | None = None,
) -> tuple[bytes, bytes, dict[str, object] | bytes]:
    """Run a remote command as client-go does: open the streams, send stdin, collect output and status."""
    client = SpdyClient(url, [protocol], tls=tls)
    try:
        error = client.open({"streamType": "error"})
        streams = {}
        if stdin is not None:
            streams["stdin"] = client.open({"streamType": "stdin"})
        streams["stdout"] = client.open({"streamType": "stdout"})
        if stderr and not tty:
            streams["stderr"] = client.open({"streamType": "stderr"})
        if tty:
            streams["resize"] = client.open({"streamType": "resize"})
        if stdin is not None:
            streams["stdin"].write(stdin)
            streams["stdin"].close()
        out = streams["stdout"].read_all()
        err = streams["stderr"].read_all() if "stderr" in streams else b""
        raw = error.read_all()
        return out, err, (json.loads(raw) if raw and protocol.startswith("v4") else raw)
    finally:
        client.close()


class TunnelSocket:
    """Enough of a socket for SpdyClient, carried in binary WebSocket messages."""

    def __init__(self, url: str, subprotocols: list[str]):
        self.ws = WsClient(url, subprotocols, raw=True)
        if self.ws.rejected is not None:
            raise ConnectionError(f"upgrade refused: {self.ws.rejected}")
        self.protocol = self.ws.protocol or ""

    def sendall(self, data: bytes) -> None:
        self.ws.send_raw(data)

    def recv(self, n: int) -> bytes:
        return self.ws.next_raw()

    def shutdown(self, how: int) -> None:
        self.ws.sock.shutdown(how)

    def setsockopt(self, *args: object) -> None:
        self.ws.sock.setsockopt(*args)  # type: ignore[arg-type]

    def close(self) -> None:
        self.ws.close()


class WsClient(_Waitable):
    """A WebSocket client of the channel protocols (binary or base64)."""

    def __init__(self, url: str, subprotocols: list[str], raw: bool = False):
        super().__init__()
        parts = urlsplit(url)
        self.raw = raw  # whole messages kept as they are (for tunnelling) instead of split into channels
        self.raw_messages: list[bytes] = []
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=TIMEOUT)
        self.ws = WSConnection(ConnectionType.CLIENT)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        self.sock.sendall(self.ws.send(Request(host=parts.netloc, target=target, subprotocols=subprotocols)))
        self.protocol: str | None = None
        self.rejected: int | None = None
        self.reject_body = b""
        self.channels: dict[int, bytearray] = {}
        self.messages: list[tuple[int, bytes]] = []
        self.closed = False
        self.close_code: int | None = None
        self.send_lock = threading.Lock()
        while self.protocol is None and self.rejected is None:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("server closed during the WebSocket handshake")
            self.ws.receive_data(data)
            for event in self.ws.events():
                if isinstance(event, AcceptConnection):
                    self.protocol = event.subprotocol or ""
                    break  # messages that came with the handshake are left for the reader thread
                if isinstance(event, RejectConnection):
                    self.rejected = event.status_code
                elif isinstance(event, RejectData):
                    self.reject_body += event.data
        self.base64 = "base64" in (self.protocol or "")
        if self.rejected is None:
            self.thread = threading.Thread(target=self._read_loop, daemon=True)
            self.thread.start()

    def _read_loop(self) -> None:
        partial = b""
        try:
            data = b"-"
            while data:
                for event in self.ws.events():
                    if isinstance(event, BytesMessage | TextMessage):
                        raw = event.data if isinstance(event.data, bytes) else event.data.encode()
                        partial += raw
                        if event.message_finished:
                            self._message(partial)
                            partial = b""
                    elif isinstance(event, CloseConnection):
                        self.close_code = event.code
                        with self.send_lock:
                            self.sock.sendall(self.ws.send(event.response()))
                        raise OSError("closed")
                data = self.sock.recv(65536)
                self.ws.receive_data(data or None)
        except OSError:
            pass
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    def next_raw(self, timeout: float = 300) -> bytes:
        """The next whole message (raw mode); b"" once the connection ended."""
        self.wait_for(lambda: bool(self.raw_messages) or self.closed, timeout, "a message")
        with self.cond:
            return self.raw_messages.pop(0) if self.raw_messages else b""

    def _message(self, raw: bytes) -> None:
        if self.raw:
            with self.cond:
                self.raw_messages.append(raw)
                self.cond.notify_all()
            return
        if not raw:
            return
        if self.base64:
            channel, data = raw[0] - ord("0"), base64.b64decode(raw[1:])
        else:
            channel, data = raw[0], raw[1:]
        with self.cond:
            self.channels.setdefault(channel, bytearray()).extend(data)
            self.messages.append((channel, data))
            self.cond.notify_all()

    def send(self, channel: int, data: bytes) -> None:
        if self.base64:
            message: bytes | str = chr(ord("0") + channel) + base64.b64encode(data).decode()
            event = TextMessage(data=message)
        else:
            event = BytesMessage(data=bytes([channel]) + data)  # type: ignore[assignment]
        with self.send_lock:
            self.sock.sendall(self.ws.send(event))

    def send_raw(self, data: bytes) -> None:
        with self.send_lock:
            self.sock.sendall(self.ws.send(BytesMessage(data=data)))

    def channel(self, number: int) -> bytes:
        with self.cond:
            return bytes(self.channels.get(number, b""))

    def wait_closed(self, timeout: float = TIMEOUT) -> None:
        self.wait_for(lambda: self.closed, timeout, "the server to close the connection")

    def wait_channel(self, number: int, predicate: Callable[[bytes], bool], timeout: float = TIMEOUT) -> bytes:
        self.wait_for(lambda: predicate(self.channel(number)) or self.closed, timeout, f"channel {number}")
        return self.channel(number)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


def ws_exec(
    url: str, stdin: bytes | None = None, protocols: tuple[str, ...] = ("v5.channel.k8s.io",)
) -> tuple[bytes, bytes, dict[str, object] | bytes]:
    """Run a remote command over WebSocket channels: stdout, stderr, and the status (JSON for v4/v5)."""
    client = WsClient(url, list(protocols))
    try:
        if client.rejected is not None:
            raise ConnectionError(f"WebSocket upgrade refused with {client.rejected}: {client.reject_body!r}")
        if stdin is not None:
            client.send(0, stdin)
            client.send_raw(bytes([255, 0]))  # v5: the end of stdin
        client.wait_closed()
        raw = client.channel(3)
        status = json.loads(raw) if raw and (client.protocol or "").startswith(("v4.", "v5.")) else raw
        return client.channel(1), client.channel(2), status
    finally:
        client.close()


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``predicate`` (for conditions outside the clients, like a process being gone)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


# ---- timings for the benches ------------------------------------------------------------------


def exec_round_trip(runtime: object, container_id: str, transport: str) -> float:
    """Seconds for Exec of ``true`` from the RPC to its status, over "spdy" or "websocket"."""
    t0 = time.perf_counter()
    request = pb.ExecRequest(container_id=container_id, cmd=["true"], stdout=True, stderr=True)
    url = runtime.Exec(request, timeout=30).url  # type: ignore[attr-defined]
    if transport == "spdy":
        _, _, status = spdy_exec(url)
    else:  # v5 where the server has it (containerd 1.6 stops at v4)
        _, _, status = ws_exec(url, protocols=("v5.channel.k8s.io", "v4.channel.k8s.io"))
    elapsed = time.perf_counter() - t0
    if not isinstance(status, dict) or status.get("status") != "Success":
        raise RuntimeError(f"exec of true over {transport} ended with {status!r}")
    return elapsed


def _echo(
    send: Callable[[bytes], None], finish: Callable[[], None], receive: Callable[[int], bytes], size: int
) -> None:
    block = os.urandom(256 * 1024)

    def writer() -> None:
        for _ in range(size // len(block)):
            send(block)
        finish()

    thread = threading.Thread(target=writer)
    thread.start()
    got = 0
    while got < size:
        chunk = receive(size - got)
        if not chunk:
            raise ConnectionError(f"echo ended after {got} of {size} bytes")
        got += len(chunk)
    thread.join()


def forward_echo_seconds(url: str, port: int, size: int, websocket: bool = False) -> float:
    """Seconds to send ``size`` bytes to an echo server through port-forward and read them back."""
    client = SpdyClient(url, ["portforward.k8s.io"], websocket=websocket)
    try:
        t0 = time.perf_counter()
        headers = {"port": str(port), "requestID": "0"}
        client.open({"streamType": "error", **headers}).close()
        data = client.open({"streamType": "data", **headers})
        consumed = 0

        def receive(_n: int) -> bytes:
            nonlocal consumed
            data.wait_for_data(lambda d: len(d) > consumed)
            with client.cond:
                chunk = bytes(data.data[consumed:])
                consumed += len(chunk)
            return chunk

        _echo(data.write, data.close, receive, size)
        return time.perf_counter() - t0
    finally:
        client.close()


def direct_echo_seconds(connect: Callable[[], socket.socket], size: int) -> float:
    """The same through a plain TCP connection made by ``connect`` (into the pod, no streaming server)."""
    sock = connect()
    try:
        t0 = time.perf_counter()
        _echo(sock.sendall, lambda: sock.shutdown(socket.SHUT_WR), lambda n: sock.recv(min(n, 1 << 20)), size)
        return time.perf_counter() - t0
    finally:
        sock.close()
