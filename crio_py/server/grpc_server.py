"""The gRPC server on the CRI unix socket: registration, error mapping, logging, metrics.

Every RPC of RuntimeService and ImageService is registered. A handler object implements the RPCs
it knows as ``Name(request, context)``; the rest answer UNIMPLEMENTED naming the RPC. Handlers raise
``crio_py.errors`` exceptions; here they become gRPC statuses, and anything else becomes INTERNAL
with the traceback logged, never sent.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from crio_py import metrics, trace
from crio_py.cri import api_pb2, api_pb2_grpc
from crio_py.errors import CrioError

log = logging.getLogger(__name__)

# kubelet polls these constantly; logging them at info would drown everything else.
_QUIET = ("List", "Version", "Status", "ImageStatus", "PodSandboxStatus", "ContainerStatus", "ImageFsInfo")
_QUIET_SUFFIXES = ("Stats", "Status", "Metrics")
# RPCs whose steps are traced (crio_py.trace): where a pod's start-up time goes.
_TRACED = ("RunPodSandbox", "CreateContainer", "StartContainer")
# Request fields that identify the object an RPC acts on, for log lines.
_ID_FIELDS = ("pod_sandbox_id", "container_id")
# Threads serving RPCs: kubelet fans out many calls at once and a slow RunPodSandbox must not
# starve Version/Status/List.
MAX_WORKERS = 128


def _is_quiet(name: str) -> bool:
    return name.startswith(_QUIET) or name.endswith(_QUIET_SUFFIXES)


def _request_ids(request: Any) -> dict[str, str]:
    ids = {}
    for name in _ID_FIELDS:
        value = getattr(request, name, None)
        if isinstance(value, str) and value:
            ids[name] = value
    image = getattr(request, "image", None)
    if image is not None and getattr(image, "image", ""):
        ids["image"] = image.image
    return ids


def _wrap_unary(service: str, name: str, impl: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    operation = name

    def handler(request: Any, context: grpc.ServicerContext) -> Any:
        start = time.perf_counter()
        code, message = "OK", ""
        traced: trace.Trace | None = None
        try:
            if name in _TRACED:
                with trace.operation(name) as traced:
                    return impl(request, context)
            return impl(request, context)
        except CrioError as exc:
            code, message = exc.code, exc.message
        except Exception as exc:
            code = "INTERNAL"
            ids = _request_ids(request)
            where = " ".join(f"{k}={v}" for k, v in ids.items())
            message = f"{name} failed{' for ' + where if where else ''}: {type(exc).__name__}: {exc}"
            log.exception("unexpected error in handler", extra={"rpc": name, **ids})
        finally:
            elapsed = time.perf_counter() - start
            metrics.observe(operation, elapsed, code)
            extra = {"rpc": name, "duration_ms": round(elapsed * 1000, 3), **_request_ids(request)}
            if traced is not None:
                extra["steps_ms"] = traced.phases()
            if code != "OK":
                extra.update(code=code, error=message)
                log.log(logging.INFO if code == "NOT_FOUND" else logging.WARNING, "rpc failed", extra=extra)
            else:
                log.log(logging.DEBUG if _is_quiet(name) else logging.INFO, "rpc done", extra=extra)
        context.abort(getattr(grpc.StatusCode, code), message)

    handler.__name__ = f"{service}.{name}"
    return handler


def _wrap_stream(service: str, name: str, impl: Callable[[Any, Any], Iterator[Any]]) -> Callable[..., Any]:
    def handler(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        start = time.perf_counter()
        code, message = "OK", ""
        try:
            yield from impl(request, context)
        except CrioError as exc:
            code, message = exc.code, exc.message
        except Exception as exc:
            code, message = "INTERNAL", f"{name} failed: {type(exc).__name__}: {exc}"
            log.exception("unexpected error in stream handler", extra={"rpc": name})
        finally:
            metrics.observe(name, time.perf_counter() - start, code)
        if code != "OK":
            context.abort(getattr(grpc.StatusCode, code), message)

    return handler


def _unimplemented(service: str, name: str) -> Callable[[Any, Any], Any]:
    def impl(request: Any, context: Any) -> Any:
        raise _NotYet(f"{service}.{name} is not implemented by crio-py yet")

    return impl


class _NotYet(CrioError):
    code = "UNIMPLEMENTED"


def instrument(service: str, handlers: object) -> SimpleNamespace:
    """Wrap every RPC of ``service`` (from the proto) around ``handlers``' methods."""
    descriptor = api_pb2.DESCRIPTOR.services_by_name[service]
    wrapped = SimpleNamespace()
    for method in descriptor.methods:
        impl = getattr(handlers, method.name, None) or _unimplemented(service, method.name)
        if method.server_streaming:
            setattr(wrapped, method.name, _wrap_stream(service, method.name, impl))
        else:
            setattr(wrapped, method.name, _wrap_unary(service, method.name, impl))
    return wrapped


class CRIServer:
    """The gRPC server bound to the CRI socket."""

    def __init__(self, socket_path: Path, runtime_handlers: object, image_handlers: object):
        self.socket_path = socket_path
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=MAX_WORKERS, thread_name_prefix="rpc"),
            options=[
                ("grpc.max_receive_message_length", 16 * 1024 * 1024),
                ("grpc.max_send_message_length", 64 * 1024 * 1024),
            ],
        )
        api_pb2_grpc.add_RuntimeServiceServicer_to_server(  # type: ignore[no-untyped-call]
            instrument("RuntimeService", runtime_handlers), self._server
        )
        api_pb2_grpc.add_ImageServiceServicer_to_server(  # type: ignore[no-untyped-call]
            instrument("ImageService", image_handlers), self._server
        )
        self._health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)

    def start(self) -> None:
        """Bind the socket (mode 0660) and start serving."""
        self.socket_path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        # A socket left by a dead daemon; the caller holds the lock that proves it is dead.
        self.socket_path.unlink(missing_ok=True)
        old_umask = os.umask(0o117)
        try:
            if self._server.add_insecure_port(f"unix:{self.socket_path}") == 0:
                raise OSError(f"cannot listen on {self.socket_path}")
            self._server.start()
        finally:
            os.umask(old_umask)
        os.chmod(self.socket_path, 0o660)
        for name in ("", "runtime.v1.RuntimeService", "runtime.v1.ImageService"):
            self._health.set(name, health_pb2.HealthCheckResponse.SERVING)

    def stop(self, grace: float) -> None:
        """Refuse new RPCs, let in-flight ones finish for up to ``grace`` seconds, remove the socket."""
        self._health.enter_graceful_shutdown()
        self._server.stop(grace).wait(grace + 1)
        self.socket_path.unlink(missing_ok=True)
