"""The little HTTP/1.1 the streaming server needs: read one request head, answer with a status or upgrade."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

MAX_HEAD = 16 * 1024
MAX_HEADERS = 100
REASONS = {
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    503: "Service Unavailable",
}


class HTTPError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


@dataclass
class Request:
    method: str
    target: str
    headers: list[tuple[str, str]] = field(default_factory=list)
    rest: bytes = b""  # bytes that came after the head (the start of the upgraded protocol)

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.target).query)

    def header(self, name: str) -> str:
        """Every value of header ``name`` joined by commas ("" if absent)."""
        lower = name.lower()
        return ", ".join(v for k, v in self.headers if k.lower() == lower)

    def tokens(self, name: str) -> list[str]:
        """The comma-separated items of header ``name``, in order."""
        return [item.strip() for item in self.header(name).split(",") if item.strip()]


async def read_request(reader: asyncio.StreamReader) -> Request:
    """One request head; HTTPError(400) if it is malformed or too large, EOFError if the client left."""
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        if len(buffer) > MAX_HEAD:
            raise HTTPError(400, f"request head larger than {MAX_HEAD} bytes")
        data = await reader.read(4096)
        if not data:
            raise EOFError("client closed the connection before sending a request")
        buffer += data
    head, rest = buffer.split(b"\r\n\r\n", 1)
    try:
        lines = head.decode("latin-1").split("\r\n")
        method, target, version = lines[0].split(" ")
    except ValueError:
        raise HTTPError(400, "malformed request line") from None
    if not version.startswith("HTTP/1.") or not target.startswith("/"):
        raise HTTPError(400, "malformed request line")
    if len(lines) - 1 > MAX_HEADERS:
        raise HTTPError(400, "too many headers")
    headers = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise HTTPError(400, f"malformed header line {line[:50]!r}")
        headers.append((name, value.strip()))
    return Request(method, target, headers, rest)


def response(status: int, message: str, headers: dict[str, str] | None = None) -> bytes:
    """A complete plain-text response that closes the connection."""
    body = (message + "\n").encode()
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}", "Content-Type: text/plain; charset=utf-8"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    lines += [f"Content-Length: {len(body)}", "Connection: close", "", ""]
    return "\r\n".join(lines).encode() + body


def switching_protocols(headers: dict[str, str]) -> bytes:
    lines = ["HTTP/1.1 101 Switching Protocols", "Connection: Upgrade"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return "\r\n".join([*lines, "", ""]).encode()
