"""Exec and attach once the client's streams are there, whatever carries them (SPDY or WebSocket).

The end of every session is a status on the error stream, as kubelet sends it: for v4 and later a
``metav1.Status`` in JSON (``Success``, or ``Failure`` with reason ``NonZeroExitCode`` and an
``ExitCode`` cause holding the code), for older versions a plain message on failure only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Protocol

from crio_py.errors import CrioError
from crio_py.streaming import fdio
from crio_py.streaming.backend import AttachRequest, Backend, ExecRequest

log = logging.getLogger(__name__)

# After the process exited, output still in the pipes is sent; a background child holding them
# open must not hold the session.
DRAIN_AFTER_EXIT = 1.0
ATTACH_PACKET = 32 * 1024
STDOUT_TAG, STDERR_TAG = 2, 3
MAX_RESIZE_BUFFER = 4096
# How long a terminal exec waits for the client's first terminal size before starting without it.
FIRST_SIZE_WAIT = 1.0


class InChannel(Protocol):
    async def read(self, n: int = ...) -> bytes: ...


class OutChannel(Protocol):
    async def write(self, data: bytes) -> None: ...

    def close(self) -> None: ...


@dataclass
class Streams:
    """The client's streams of one exec or attach (those it did not ask for are None)."""

    error: OutChannel
    stdin: InChannel | None = None
    stdout: OutChannel | None = None
    stderr: OutChannel | None = None
    resize: InChannel | None = None
    json_status: bool = True

    def close(self) -> None:
        for channel in (self.stdout, self.stderr, self.error):
            if channel is not None:
                channel.close()


def status(exit_code: int | None = None, message: str = "", cmd: list[str] | None = None) -> dict[str, Any]:
    """A metav1.Status: success (exit 0, no message), a non-zero exit code, or an internal error."""
    if message:
        return {"metadata": {}, "status": "Failure", "message": message, "reason": "InternalError", "code": 500}
    if not exit_code:
        return {"metadata": {}, "status": "Success"}
    where = f"error executing command {cmd}, exit code {exit_code}" if cmd else f"exit code {exit_code}"
    return {
        "metadata": {},
        "status": "Failure",
        "message": f"command terminated with non-zero exit code: {where}",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(exit_code)}]},
    }


async def send_status(streams: Streams, st: dict[str, Any]) -> None:
    """Write the status the client waits for and end the error stream (older protocols: text on failure)."""
    with contextlib.suppress(ConnectionError, OSError):
        if streams.json_status:
            await streams.error.write(json.dumps(st, separators=(",", ":")).encode())
        elif st["status"] != "Success":
            await streams.error.write(st["message"].encode())
    streams.close()


async def resizes(channel: InChannel) -> AsyncIterator[tuple[int, int]]:
    """(width, height) of each terminal size the client sends: JSON objects one after another."""
    decoder = json.JSONDecoder()
    buffer = ""
    while True:
        data = await channel.read(4096)
        if not data:
            return
        buffer += data.decode(errors="replace")
        while True:
            buffer = buffer.lstrip()
            if not buffer:
                break
            try:
                obj, end = decoder.raw_decode(buffer)
            except ValueError:
                if len(buffer) > MAX_RESIZE_BUFFER:
                    log.warning("unreadable terminal size from the client: ignored")
                    buffer = ""
                break
            buffer = buffer[end:]
            if isinstance(obj, dict):
                size = {k.lower(): v for k, v in obj.items()}
                width, height = size.get("width"), size.get("height")
                if isinstance(width, int) and isinstance(height, int) and 0 < width < 65536 and 0 < height < 65536:
                    yield width, height


async def _copy_out(fd: int, channel: OutChannel | None) -> None:
    while data := await fdio.read(fd):
        if channel is not None:
            await channel.write(data)


async def _apply_resizes(channel: InChannel, apply: Callable[[int, int], Any]) -> None:
    async for width, height in resizes(channel):
        await apply(width, height)


async def _queue_resizes(channel: InChannel, queue: asyncio.Queue[tuple[int, int]]) -> None:
    async for size in resizes(channel):
        queue.put_nowait(size)


async def _apply_queued(queue: asyncio.Queue[tuple[int, int]], apply: Callable[[int, int], Any]) -> None:
    while True:
        await apply(*await queue.get())


async def run_exec(backend: Backend, request: ExecRequest, streams: Streams, executor: Executor) -> None:
    """Run the command with the client's streams; the process is killed if this is cancelled."""
    loop = asyncio.get_running_loop()
    tasks: list[asyncio.Task[None]] = []
    sizes: asyncio.Queue[tuple[int, int]] = asyncio.Queue()
    size = None
    if streams.resize is not None and request.tty:
        tasks.append(asyncio.create_task(_queue_resizes(streams.resize, sizes)))
        # Clients send the terminal's size right after opening their streams: starting with it
        # spares the command a resize before its first line (a shell reading `stty size`).
        with contextlib.suppress(TimeoutError):
            size = await asyncio.wait_for(sizes.get(), FIRST_SIZE_WAIT)
    try:
        proc = await loop.run_in_executor(executor, backend.exec, request, size)
    except CrioError as exc:
        await _cancel(tasks)
        await send_status(streams, status(message=exc.message))
        return
    exited = False
    try:
        for fd in (proc.stdout, proc.stderr):
            if fd is not None:
                fdio.set_nonblocking(fd)
        outputs = [asyncio.create_task(_copy_out(proc.stdout, streams.stdout))] if proc.stdout is not None else []
        if proc.stderr is not None:
            outputs.append(asyncio.create_task(_copy_out(proc.stderr, streams.stderr)))
        tasks.extend(outputs)
        if streams.stdin is not None and proc.stdin is not None:
            tasks.append(asyncio.create_task(_copy_in(streams.stdin, proc, executor)))
        if streams.resize is not None and request.tty:
            resize = lambda w, h: loop.run_in_executor(executor, proc.resize, w, h)  # noqa: E731
            tasks.append(asyncio.create_task(_apply_queued(sizes, resize)))
        await fdio.wait_exit(proc.pid)
        code = await loop.run_in_executor(executor, proc.wait)
        exited = True
        if outputs:
            await asyncio.wait(outputs, timeout=DRAIN_AFTER_EXIT)
        log.info("exec finished", extra={"container_id": request.container_id, "exit_code": code})
        await send_status(streams, status(code, cmd=request.cmd))
    finally:
        await _cancel(tasks)
        if not exited:
            log.info("exec client gone: killing the process", extra={"container_id": request.container_id})
            await loop.run_in_executor(executor, proc.kill)
        proc.close()


async def _cancel(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _copy_in(channel: InChannel, proc: Any, executor: Executor) -> None:
    fdio.set_nonblocking(proc.stdin)
    try:
        while data := await channel.read(fdio.READ_SIZE):
            await fdio.write(proc.stdin, data)
    except (BrokenPipeError, ConnectionError):
        return
    proc.close_stdin()


async def run_attach(backend: Backend, request: AttachRequest, streams: Streams, executor: Executor) -> None:
    """Copy the container's output to the client and its input to the container until either ends."""
    loop = asyncio.get_running_loop()
    try:
        sock = await loop.run_in_executor(executor, backend.attach, request.container_id)
    except CrioError as exc:
        await send_status(streams, status(message=exc.message))
        return
    sock.setblocking(False)
    tasks: list[asyncio.Task[None]] = []
    try:
        if streams.stdin is not None:
            tasks.append(asyncio.create_task(_attach_in(streams.stdin, sock)))
        if streams.resize is not None:
            cid = request.container_id
            tasks.append(
                asyncio.create_task(
                    _apply_resizes(
                        streams.resize, lambda w, h: loop.run_in_executor(executor, _resize, backend, cid, w, h)
                    )
                )
            )
        stderr = streams.stdout if request.tty else streams.stderr
        while packet := await loop.sock_recv(sock, ATTACH_PACKET + 1):
            channel = streams.stdout if packet[0] == STDOUT_TAG else stderr if packet[0] == STDERR_TAG else None
            if channel is not None:
                await channel.write(packet[1:])
        await send_status(streams, status(0))
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        sock.close()


def _resize(backend: Backend, container_id: str, width: int, height: int) -> None:
    try:
        backend.resize(container_id, width, height)
    except CrioError as exc:
        log.warning("attach resize failed", extra={"container_id": container_id, "error": exc.message})


async def _attach_in(channel: InChannel, sock: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    try:
        while data := await channel.read(ATTACH_PACKET):
            for i in range(0, len(data), ATTACH_PACKET):
                await loop.sock_sendall(sock, data[i : i + ATTACH_PACKET])
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        return
