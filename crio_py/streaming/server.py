"""The streaming HTTP server: one-time URLs of Exec/Attach/PortForward upgraded to SPDY/3.1 or WebSocket.

Routes ``/exec/<token>``, ``/attach/<token>``, ``/portforward/<token>`` (GET or POST, like kubelet's
server). A token works once and expires (``streaming.token_ttl``); anything else is 404. The
server runs its own asyncio loop on a thread; calls into the daemon (starting runc, connecting to a
monitor or into a pod's network namespace) go to a small thread pool.

Limits: ``max_connections`` open connections (more get 503), ``max_sessions`` exec/attach sessions at
once (more get 503), ``idle_timeout`` seconds without traffic ends a connection, and a client has
``stream_creation_timeout`` seconds to open its streams. Stopping the server ends every session:
exec'd processes are killed, never left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import ssl
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from crio_py.config import StreamingConfig
from crio_py.streaming import portforward, remotecommand
from crio_py.streaming.backend import AttachRequest, Backend, ExecRequest, PortForwardRequest, Request
from crio_py.streaming.http import HTTPError, read_request, response, switching_protocols
from crio_py.streaming.http import Request as HTTPRequest
from crio_py.streaming.remotecommand import Streams
from crio_py.streaming.spdy_session import SpdySession, SpdyStream
from crio_py.streaming.tokens import TokenCache
from crio_py.streaming.transport import StreamTransport
from crio_py.streaming.websocket import ChannelConnection, HandshakeError, TunnelTransport, WebSocket

log = logging.getLogger(__name__)

# The remote-command versions kubelet's server speaks over SPDY, in its order of preference.
SPDY_REMOTECOMMAND = ("v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io", "channel.k8s.io")
SPDY_PORTFORWARD = ("portforward.k8s.io",)
WS_REMOTECOMMAND = (
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v4.base64.channel.k8s.io",
    "channel.k8s.io",
    "base64.channel.k8s.io",
    "",
)
WS_PORTFORWARD_TUNNEL = ("SPDY/3.1+portforward.k8s.io", "v2.portforward.k8s.io")
WS_PORTFORWARD_CHANNELS = (
    "v4.channel.k8s.io",
    "v4.base64.channel.k8s.io",
    "channel.k8s.io",
    "base64.channel.k8s.io",
    "",
)
HEAD_TIMEOUT = 10.0
KINDS = {"exec": ExecRequest, "attach": AttachRequest, "portforward": PortForwardRequest}
STDIN, STDOUT, STDERR, ERROR, RESIZE = range(5)


class StreamingServer:
    """Serves the URLs Exec, Attach and PortForward return, on its own thread."""

    def __init__(self, backend: Backend, config: StreamingConfig):
        self.backend = backend
        self.config = config
        self.tokens = TokenCache(float(config.token_ttl))
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[Any]] = set()
        self._sessions = 0
        self._executor = ThreadPoolExecutor(max_workers=16, thread_name_prefix="streaming")
        self._ssl = _ssl_context(config)

    # ---- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Bind ``address:port`` and serve; raise OSError if the address cannot be bound."""
        ready = threading.Event()
        failure: list[BaseException] = []

        def main() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._listen())
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=main, name="streaming-server", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            raise failure[0]
        log.info("streaming server listening", extra={"url": self.base_url()})

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, self.config.address, self.config.port, ssl=self._ssl, limit=64 * 1024
        )
        self.port = self._server.sockets[0].getsockname()[1]

    def stop(self, grace: float = 5.0) -> None:
        """Stop listening, end every connection (killing exec'd processes), stop the thread."""
        loop = self._loop
        if loop is None or self._thread is None:
            return
        future = asyncio.run_coroutine_threadsafe(self._shutdown(grace), loop)
        with contextlib.suppress(Exception):
            future.result(grace + 10)
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(grace + 10)
        self._executor.shutdown(wait=False, cancel_futures=True)
        log.info("streaming server stopped")

    async def _shutdown(self, grace: float) -> None:
        if self._server is not None:
            self._server.close()
        tasks = list(self._connections)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=grace)

    # ---- URLs -----------------------------------------------------------------------------

    def base_url(self) -> str:
        host = self.config.address
        with contextlib.suppress(ValueError):
            ip = ipaddress.ip_address(host)
            if ip.is_unspecified:  # a wildcard bind: name an address of this host that answers
                host = "127.0.0.1" if ip.version == 4 else "::1"
            if ip.version == 6:
                host = f"[{host}]"
        return f"{'https' if self._ssl else 'http'}://{host}:{self.port}"

    def url(self, request: Request) -> str:
        """A one-time URL for ``request``."""
        kind = next(k for k, cls in KINDS.items() if type(request) is cls)
        return f"{self.base_url()}/{kind}/{self.tokens.insert(request)}"

    # ---- connections ----------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._connections) >= self.config.max_connections:
            writer.write(response(503, f"too many streaming connections (max {self.config.max_connections})"))
            await _close(writer)
            return
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        peer = writer.get_extra_info("peername")
        try:
            request = await asyncio.wait_for(read_request(reader), HEAD_TIMEOUT)
            await self._route(request, reader, writer)
        except HTTPError as exc:
            log.info("streaming request refused", extra={"status": exc.status, "error": exc.message, "peer": peer})
            writer.write(response(exc.status, exc.message, exc.headers))
        except (TimeoutError, EOFError, ConnectionError, OSError, HandshakeError):
            pass
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("streaming connection failed", extra={"peer": peer})
        finally:
            self._connections.discard(task)
            await _close(writer)

    async def _route(self, request: HTTPRequest, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        parts = request.path.strip("/").split("/")
        if len(parts) != 2 or parts[0] not in KINDS:
            raise HTTPError(404, f"no such path {request.path!r}")
        if request.method not in ("GET", "POST"):
            raise HTTPError(405, f"method {request.method} is not allowed", {"Allow": "GET, POST"})
        kind, token = parts
        item = self.tokens.consume(token)
        if item is None or type(item) is not KINDS[kind]:
            raise HTTPError(404, "unknown or expired token: ask the runtime for a new URL")
        upgrade = [u.lower() for u in request.tokens("Upgrade")]
        websocket = "websocket" in upgrade
        if not websocket and "spdy/3.1" not in upgrade:
            raise HTTPError(400, "streaming needs a connection upgraded to SPDY/3.1 or websocket")
        interactive = not isinstance(item, PortForwardRequest)
        if interactive and self._sessions >= self.config.max_sessions:
            raise HTTPError(503, f"too many exec/attach sessions (max {self.config.max_sessions})")
        self._sessions += interactive
        try:
            log.info(
                "streaming session",
                extra={"kind": kind, "transport": "websocket" if websocket else "spdy", **_ids(item)},
            )
            if websocket:
                await self._websocket(item, request, reader, writer)
            else:
                await self._spdy(item, request, reader, writer)
        finally:
            self._sessions -= interactive

    # ---- SPDY -----------------------------------------------------------------------------

    async def _spdy(
        self, item: Request, request: HTTPRequest, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        supported = SPDY_PORTFORWARD if isinstance(item, PortForwardRequest) else SPDY_REMOTECOMMAND
        offered = request.tokens("X-Stream-Protocol-Version")
        if not offered:
            raise HTTPError(400, "unable to upgrade: header X-Stream-Protocol-Version is missing")
        protocol = next((p for p in offered if p in supported), None)
        if protocol is None:
            raise HTTPError(
                403,
                f"unable to upgrade: unable to negotiate protocol: client supports {offered}, server supports "
                f"{list(supported)}",
                {"X-Accepted-Stream-Protocol-Versions": ", ".join(supported)},
            )
        writer.write(switching_protocols({"Upgrade": "SPDY/3.1", "X-Stream-Protocol-Version": protocol}))
        transport = StreamTransport(reader, writer, request.rest)
        if isinstance(item, PortForwardRequest):
            forward = portforward.SpdyPortForward(
                self.backend, item.pod_id, self._executor, self.config.stream_creation_timeout
            )
            session = SpdySession(transport, forward.on_stream, self._idle())
            try:
                await session.run()
            finally:
                forward.close()
            return
        incoming: asyncio.Queue[SpdyStream] = asyncio.Queue()
        session = SpdySession(transport, incoming.put_nowait, self._idle())
        runner = asyncio.create_task(session.run())
        try:
            streams = await self._spdy_streams(item, protocol, incoming, runner)
            if streams is not None:
                await self._run_session(item, streams, runner)
                await session.close()
        finally:
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)

    async def _spdy_streams(
        self,
        item: ExecRequest | AttachRequest,
        protocol: str,
        incoming: asyncio.Queue[SpdyStream],
        runner: asyncio.Task[None],
    ) -> Streams | None:
        """The streams the client opens (by their ``streamType``), once every expected one is there."""
        expected = {"error"}
        expected |= {name for name, wanted in (("stdin", item.stdin), ("stdout", item.stdout)) if wanted}
        if item.stderr and not item.tty:
            expected.add("stderr")
        if item.tty and protocol in ("v3.channel.k8s.io", "v4.channel.k8s.io"):
            expected.add("resize")
        got: dict[str, SpdyStream] = {}
        deadline = asyncio.get_running_loop().time() + self.config.stream_creation_timeout
        while not expected <= got.keys():
            getter = asyncio.create_task(incoming.get())
            timeout = deadline - asyncio.get_running_loop().time()
            done, _ = await asyncio.wait({getter, runner}, timeout=max(timeout, 0), return_when="FIRST_COMPLETED")
            if getter not in done:
                getter.cancel()
                if runner not in done:
                    log.warning(
                        "client did not open its streams in time",
                        extra={"expected": sorted(expected), "got": sorted(got), **_ids(item)},
                    )
                return None
            stream = getter.result()
            kind = stream.headers.get("streamtype", "")
            if kind not in ("error", "stdin", "stdout", "stderr", "resize") or kind in got:
                log.warning("unexpected stream refused", extra={"stream_type": kind})
                stream.reset()
                continue
            got[kind] = stream
        return Streams(
            error=got["error"],
            stdin=got.get("stdin"),
            stdout=got.get("stdout"),
            stderr=got.get("stderr"),
            resize=got.get("resize"),
            json_status=protocol == "v4.channel.k8s.io",
        )

    async def _run_session(
        self, item: ExecRequest | AttachRequest, streams: Streams, connection: asyncio.Task[Any]
    ) -> None:
        """Run the exec or attach; if the connection ends first, cancel it (which kills an exec'd process)."""
        if isinstance(item, ExecRequest):
            work = asyncio.create_task(remotecommand.run_exec(self.backend, item, streams, self._executor))
        else:
            work = asyncio.create_task(remotecommand.run_attach(self.backend, item, streams, self._executor))
        try:
            await asyncio.wait({work, connection}, return_when="FIRST_COMPLETED")
        finally:
            if not work.done():
                work.cancel()
            await asyncio.gather(work, return_exceptions=True)

    # ---- WebSocket ------------------------------------------------------------------------

    async def _websocket(
        self, item: Request, request: HTTPRequest, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if isinstance(item, PortForwardRequest):
            choose = {p: "tunnel" for p in WS_PORTFORWARD_TUNNEL} | {p: "channels" for p in WS_PORTFORWARD_CHANNELS}
        else:
            choose = {p: "channels" for p in WS_REMOTECOMMAND}
        ws = await WebSocket.accept(reader, writer, request, choose)
        if isinstance(item, PortForwardRequest):
            if choose[ws.protocol] == "tunnel":
                forward = portforward.SpdyPortForward(
                    self.backend, item.pod_id, self._executor, self.config.stream_creation_timeout
                )
                try:
                    await SpdySession(TunnelTransport(ws), forward.on_stream, self._idle()).run()
                finally:
                    forward.close()
                return
            await self._websocket_port_forward(item, request, ws)
            return
        conn = ChannelConnection(ws, [STDIN, RESIZE], self._idle())
        streams = Streams(
            error=conn.writer(ERROR),
            stdin=conn.readers[STDIN] if item.stdin else None,
            stdout=conn.writer(STDOUT) if item.stdout else None,
            stderr=conn.writer(STDERR) if item.stderr and not item.tty else None,
            resize=conn.readers[RESIZE] if item.tty else None,
            json_status=ws.protocol.startswith(("v4.", "v5.")),
        )
        # As kubelet: an empty message on the lowest writable channel says the session is up.
        await conn.send(STDOUT if item.stdout else STDERR if streams.stderr else ERROR, b"")
        runner = asyncio.create_task(conn.run())
        try:
            await self._run_session(item, streams, runner)
            await ws.close()
        finally:
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)

    async def _websocket_port_forward(self, item: PortForwardRequest, request: HTTPRequest, ws: WebSocket) -> None:
        try:
            ports = [portforward.parse_port(p) for p in request.query.get("port", [])] or list(item.ports)
        except ValueError as exc:
            await ws.close(1008, str(exc))
            return
        if not ports:
            await ws.close(1008, "at least one port must be given (?port=N)")
            return
        conn = ChannelConnection(ws, [2 * i for i in range(len(ports))], self._idle())
        runner = asyncio.create_task(conn.run())
        work = asyncio.create_task(
            portforward.websocket_port_forward(conn, self.backend, item.pod_id, ports, self._executor)
        )
        try:
            await asyncio.wait({work, runner}, return_when="FIRST_COMPLETED")
            if work.done():
                await ws.close()
        finally:
            for task in (work, runner):
                task.cancel()
            await asyncio.gather(work, runner, return_exceptions=True)

    def _idle(self) -> float | None:
        return float(self.config.idle_timeout) if self.config.idle_timeout > 0 else None


def _ids(item: Request) -> dict[str, str]:
    return {"pod_id": item.pod_id} if isinstance(item, PortForwardRequest) else {"container_id": item.container_id}


async def _close(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(Exception):
        if not writer.is_closing():
            await asyncio.wait_for(writer.drain(), 2)
        writer.close()


def _ssl_context(config: StreamingConfig) -> ssl.SSLContext | None:
    if not config.tls_cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(config.tls_cert, config.tls_key or None)
    if config.tls_ca:
        context.load_verify_locations(config.tls_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context
