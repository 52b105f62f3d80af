from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from crio_py.cri import api_pb2 as pb
from crio_py.cri import api_pb2_grpc
from crio_py.errors import NotFound
from crio_py.server.grpc_server import CRIServer


class Handlers:
    def Version(self, request: Any, context: Any) -> pb.VersionResponse:
        return pb.VersionResponse(runtime_name="test")

    def ContainerStatus(self, request: pb.ContainerStatusRequest, context: Any) -> Any:
        raise NotFound(f"container {request.container_id!r} not found")

    def RemoveContainer(self, request: pb.RemoveContainerRequest, context: Any) -> Any:
        raise RuntimeError("disk on fire\nTraceback (most recent call last)")


@pytest.fixture
def stub(tmp_path: Path) -> Iterator[api_pb2_grpc.RuntimeServiceStub]:
    server = CRIServer(tmp_path / "s.sock", Handlers(), object())
    server.start()
    channel = grpc.insecure_channel(f"unix://{tmp_path / 's.sock'}")
    try:
        yield api_pb2_grpc.RuntimeServiceStub(channel)
    finally:
        channel.close()
        server.stop(1)


def test_socket_is_0660_and_removed_on_stop(tmp_path: Path) -> None:
    server = CRIServer(tmp_path / "s.sock", Handlers(), object())
    server.start()
    assert (tmp_path / "s.sock").stat().st_mode & 0o777 == 0o660
    server.stop(1)
    assert not (tmp_path / "s.sock").exists()


def test_domain_errors_become_their_status(stub: api_pb2_grpc.RuntimeServiceStub) -> None:
    assert stub.Version(pb.VersionRequest()).runtime_name == "test"
    with pytest.raises(grpc.RpcError) as err:
        stub.ContainerStatus(pb.ContainerStatusRequest(container_id="abc"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert err.value.details() == "container 'abc' not found"


def test_unexpected_errors_are_internal_with_the_object_and_no_traceback(
    stub: api_pb2_grpc.RuntimeServiceStub, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(grpc.RpcError) as err:
        stub.RemoveContainer(pb.RemoveContainerRequest(container_id="c0ffee"))
    assert err.value.code() == grpc.StatusCode.INTERNAL
    assert "RemoveContainer failed for container_id=c0ffee" in err.value.details()
    assert "File " not in err.value.details()
    assert "Traceback" in caplog.text  # logged, not sent


def test_every_rpc_is_registered_and_unimplemented_ones_say_so(stub: api_pb2_grpc.RuntimeServiceStub) -> None:
    with pytest.raises(grpc.RpcError) as err:
        stub.Attach(pb.AttachRequest(container_id="x"))
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "RuntimeService.Attach is not implemented" in err.value.details()
