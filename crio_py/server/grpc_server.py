"""The gRPC server on the CRI unix socket: registration, error mapping, logging, metrics.

Every RPC of RuntimeService and ImageService is registered. A request is parsed (bytes that do not
parse are INVALID_ARGUMENT naming the field) and checked by the validation layer before its
handler runs. A handler object implements the RPCs it knows as ``Name(request, context)``; the
rest answer UNIMPLEMENTED naming the RPC. Handlers raise
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
from typing import Any

import grpc
from google.protobuf.message import DecodeError, Message
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from crio_py import metrics, trace
from crio_py.cri import api_pb2
from crio_py.errors import CrioError, InvalidArgument
from crio_py.server.validation import RequestValidator, limits
from crio_py.server.validation.wire import undecodable_field

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


class _Undecodable:
    """What the deserializer hands on for bytes that are not a valid request (see _parser)."""

    def __init__(self, message: str):
        self.message = message


def _parser(request_class: type[Message]) -> Callable[[bytes], Any]:
    """A request deserializer that never raises: grpcio would answer INTERNAL "Exception
    deserializing request!"; the handler answers INVALID_ARGUMENT naming the field instead."""
    name = request_class.DESCRIPTOR.full_name

    def parse(data: bytes) -> Any:
        try:
            return request_class.FromString(data)
        except DecodeError:
            where = undecodable_field(request_class.DESCRIPTOR, data)
            return _Undecodable(f"the request is not a valid {name}" + (f": {where}" if where else ""))

    return parse


def _checked(name: str, impl: Callable[[Any, Any], Any], validator: RequestValidator) -> Callable[[Any, Any], Any]:
    """``impl`` behind the validation layer: the handler only ever sees a valid request."""

    def call(request: Any, context: Any) -> Any:
        if isinstance(request, _Undecodable):
            raise InvalidArgument(request.message)
        validator.check(name, request)
        return impl(request, context)

    return call


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


def service_handler(service: str, handlers: object, validator: RequestValidator) -> grpc.GenericRpcHandler:
    """Every RPC of ``service`` (from the proto): parsed, validated, then ``handlers``' method,
    wrapped for status mapping, logs and metrics."""
    descriptor = api_pb2.DESCRIPTOR.services_by_name[service]
    methods = {}
    for method in descriptor.methods:
        impl = getattr(handlers, method.name, None) or _unimplemented(service, method.name)
        impl = _checked(method.name, impl, validator)
        parse = _parser(getattr(api_pb2, method.input_type.name))
        serialize = getattr(api_pb2, method.output_type.name).SerializeToString
        if method.server_streaming:
            methods[method.name] = grpc.unary_stream_rpc_method_handler(
                _wrap_stream(service, method.name, impl), request_deserializer=parse, response_serializer=serialize
            )
        else:
            methods[method.name] = grpc.unary_unary_rpc_method_handler(
                _wrap_unary(service, method.name, impl), request_deserializer=parse, response_serializer=serialize
            )
    return grpc.method_handlers_generic_handler(descriptor.full_name, methods)


class CRIServer:
    """The gRPC server bound to the CRI socket."""

    def __init__(
        self,
        socket_path: Path,
        runtime_handlers: object,
        image_handlers: object,
        validator: RequestValidator | None = None,
    ):
        self.socket_path = socket_path
        validator = validator or RequestValidator()
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=MAX_WORKERS, thread_name_prefix="rpc"),
            options=[
                ("grpc.max_receive_message_length", limits.MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", 64 * 1024 * 1024),
            ],
        )
        self._server.add_generic_rpc_handlers(
            (
                service_handler("RuntimeService", runtime_handlers, validator),
                service_handler("ImageService", image_handlers, validator),
            )
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
