"""One gRPC connection to the daemon's CRI socket, with errors turned into messages for people."""

from __future__ import annotations

from typing import Any

import grpc

from crio_py.cri import api_pb2_grpc


class ClientError(Exception):
    """A call that failed, said as ``CODE: what the daemon said``."""


class Connection:
    """The RuntimeService and ImageService of the daemon listening on ``socket_path``."""

    def __init__(self, socket_path: str, timeout: float | None):
        self.socket_path = socket_path
        self.timeout = timeout
        self._channel = grpc.insecure_channel(f"unix://{socket_path}")
        self._runtime = api_pb2_grpc.RuntimeServiceStub(self._channel)
        self._images = api_pb2_grpc.ImageServiceStub(self._channel)

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self._channel.close()

    def runtime(self, rpc: str, request: Any, timeout: float | None = -1.0) -> Any:
        """Call RuntimeService ``rpc``; ``timeout`` -1 means the connection's, None no deadline."""
        return self._call(self._runtime, rpc, request, timeout)

    def image(self, rpc: str, request: Any, timeout: float | None = -1.0) -> Any:
        """Call ImageService ``rpc`` (same ``timeout`` rule)."""
        return self._call(self._images, rpc, request, timeout)

    def _call(self, stub: Any, rpc: str, request: Any, timeout: float | None) -> Any:
        try:
            return getattr(stub, rpc)(request, timeout=self.timeout if timeout == -1.0 else timeout)
        except grpc.RpcError as exc:
            code: grpc.StatusCode = exc.code()  # type: ignore[attr-defined]
            details: str = exc.details() or ""  # type: ignore[attr-defined]
            if code == grpc.StatusCode.UNAVAILABLE and "connect" in details.lower():
                raise ClientError(
                    f"cannot reach the daemon on unix://{self.socket_path} ({details}); is it running? "
                    "(`crio-py status`, `--listen` for another socket)"
                ) from None
            raise ClientError(f"{code.name}: {details}") from None
