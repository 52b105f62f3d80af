"""The registry client on its own: platform choice, endpoints, status mapping, redirects, blob checks."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from crio_py.errors import Internal, NotFound, PermissionDenied, Unauthenticated, Unavailable
from crio_py.registry.client import (
    BlobReader,
    Credentials,
    Endpoint,
    RegistrySession,
    choose_platform,
    endpoints_for,
)
from crio_py.registry.reference import parse


def index(*platforms: dict[str, str]) -> dict[str, Any]:
    return {"manifests": [{"digest": f"sha256:{i}", "platform": p} for i, p in enumerate(platforms)]}


AMD64 = {"os": "linux", "architecture": "amd64"}
ARM64 = {"os": "linux", "architecture": "arm64"}
ATTESTATION = {"os": "unknown", "architecture": "unknown"}


def test_platform_choice_by_os_architecture_and_variant() -> None:
    assert choose_platform(index(ATTESTATION, ARM64, AMD64), ("linux", "amd64"), "")["digest"] == "sha256:2"
    assert choose_platform(index({**AMD64, "variant": "v1"}), ("linux", "amd64"), "")["digest"] == "sha256:0"
    # arm64 is v8 whether the index says so or not.
    assert choose_platform(index(AMD64, {**ARM64, "variant": "v8"}), ("linux", "arm64"), "v8")["digest"] == "sha256:1"
    assert choose_platform(index(AMD64, ARM64), ("linux", "arm64"), "v8")["digest"] == "sha256:1"
    # arm v7: its own variant first, then an older one.
    arm = [{"os": "linux", "architecture": "arm", "variant": v} for v in ("v6", "v7", "v5")]
    assert choose_platform(index(*arm), ("linux", "arm"), "v7")["digest"] == "sha256:1"
    assert choose_platform(index(arm[0], arm[2]), ("linux", "arm"), "v7")["digest"] == "sha256:0"


def test_no_matching_platform_names_what_the_index_has() -> None:
    with pytest.raises(NotFound) as err:
        choose_platform(index(ATTESTATION, ARM64, {"os": "windows", "architecture": "amd64"}), ("linux", "amd64"), "")
    assert err.value.message == "no image for linux/amd64; the index has: linux/arm64/v8, windows/amd64"
    with pytest.raises(NotFound):
        choose_platform(index({**AMD64, "variant": "v3"}), ("linux", "arm"), "v7")


def test_endpoints_are_mirrors_in_order_then_the_upstream() -> None:
    mirrors = {"registry.k8s.io": ["127.0.0.1:5000", "https://mirror.example:8443/", "http://plain.example"],
               "docker.io": ["hub-mirror.example"]}
    insecure = ["127.0.0.1:5000", "localhost:5001"]
    assert endpoints_for(parse("registry.k8s.io/pause:3.10"), mirrors, insecure) == [
        Endpoint("http://127.0.0.1:5000", is_mirror=True),
        Endpoint("https://mirror.example:8443", is_mirror=True),
        Endpoint("http://plain.example", is_mirror=True),
        Endpoint("https://registry.k8s.io"),
    ]
    # Docker Hub's API host; the repository path (library/...) is the session's, kept on mirrors.
    assert endpoints_for(parse("busybox"), mirrors, insecure) == [
        Endpoint("https://hub-mirror.example", is_mirror=True), Endpoint("https://registry-1.docker.io")
    ]
    assert endpoints_for(parse("localhost:5001/app"), {}, insecure) == [Endpoint("http://localhost:5001")]


def session(handler: Any, creds: Credentials | None = None) -> RegistrySession:
    client = httpx.Client(transport=httpx.MockTransport(handler), follow_redirects=True)
    return RegistrySession(client, Endpoint("https://reg.test"), "team/app", creds)


@pytest.mark.parametrize(
    ("status", "error"),
    [(401, Unauthenticated), (403, PermissionDenied), (404, NotFound), (429, Unavailable), (503, Unavailable),
     (400, Internal)],
)
def test_http_statuses_become_errors_with_the_registry_s_words(status: int, error: type[Exception]) -> None:
    body = {"errors": [{"code": "SOMETHING", "message": "the registry's own words"}]}
    with pytest.raises(error) as err:
        session(lambda _r: httpx.Response(status, json=body)).manifest("v1")
    assert "team/app:v1" in str(err.value) and "the registry's own words" in str(err.value)


def test_unreachable_registry_is_unavailable() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(Unavailable, match=r"reg\.test"):
        session(refuse).manifest("v1")


def test_blob_redirects_to_storage_without_the_registry_credentials() -> None:
    data = b"layer bytes" * 1000
    dgst = "sha256:" + hashlib.sha256(data).hexdigest()
    seen: dict[str, str | None] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen[request.url.host] = request.headers.get("Authorization")
        if request.url.host == "reg.test":
            if "Authorization" not in request.headers:
                return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="reg"'})
            return httpx.Response(307, headers={"Location": f"https://storage.test/blobs/{dgst}?sig=1"})
        return httpx.Response(200, content=data)

    with session(handler, Credentials("u", "p")).open_blob(dgst, len(data)) as blob:
        assert blob.read() == data
    assert seen["reg.test"] is not None and seen["storage.test"] is None


def chunks_of(data: bytes, size: int = 7) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def test_blob_reader_passes_good_bytes_in_any_read_sizes() -> None:
    data = bytes(range(256)) * 40
    reader = BlobReader(iter(chunks_of(data)), "sha256:" + hashlib.sha256(data).hexdigest(), len(data), "blob x")
    got = bytearray()
    while piece := reader.read(1000):
        got += piece
    assert bytes(got) == data


@pytest.mark.parametrize(
    ("served", "declared", "message"),
    [
        (b"corrupted!", b"original!!", "digest mismatch"),
        (b"short", b"shorter but declared longer", "5 bytes, expected"),
        (b"longer than declared", b"long", "larger than its declared"),
    ],
)
def test_blob_reader_fails_the_read_that_finds_a_bad_blob(served: bytes, declared: bytes, message: str) -> None:
    reader = BlobReader(iter(chunks_of(served, 3)), "sha256:" + hashlib.sha256(declared).hexdigest(),
                        len(declared), "blob x")
    with pytest.raises(Internal, match=message):
        reader.readall()


def test_oversized_manifests_and_configs_are_refused_without_reading_them_whole() -> None:
    served: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        def body() -> Iterator[bytes]:
            for _ in range(1000):
                served.append(1)
                yield b"x" * 65536

        return httpx.Response(200, content=body(), headers={"Content-Type": "application/json"})

    with pytest.raises(Internal, match="larger than"):
        session(handler).manifest("v1")
    assert len(served) < 100  # stopped soon after the limit, not at the end of the 64 MB body
    with pytest.raises(Internal, match="too big for an image config"):
        session(handler).blob_bytes("sha256:" + "0" * 64, 1 << 30)


def bearer_registry(token_service: Any) -> Any:
    """A registry behind a bearer challenge whose token service is ``token_service(request)``."""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.test":
            return token_service(request)
        if request.headers.get("Authorization") != "Bearer good":
            return httpx.Response(401, headers={"WWW-Authenticate":
                                                'Bearer realm="https://auth.test/token",service="reg",scope="s"'})
        return httpx.Response(200, json={"schemaVersion": 2}, headers={"Content-Type": OCI})

    return handler


OCI = "application/vnd.oci.image.manifest.v1+json"


def test_a_registry_token_is_sent_as_it_is_and_an_identity_token_is_exchanged() -> None:
    asked: list[httpx.Request] = []

    def token_service(request: httpx.Request) -> httpx.Response:
        asked.append(request)
        form = dict(httpx.QueryParams(request.content.decode()))
        if request.method == "POST" and form.get("refresh_token") == "refresh-me":
            assert form["grant_type"] == "refresh_token" and form["service"] == "reg" and form["scope"] == "s"
            return httpx.Response(200, json={"access_token": "good"})
        return httpx.Response(401)

    handler = bearer_registry(token_service)
    assert session(handler, Credentials(registry_token="good")).manifest("v1")[0] == OCI
    assert asked == []  # a ready token needs no token service
    assert session(handler, Credentials(identity_token="refresh-me")).manifest("v1")[0] == OCI
    with pytest.raises(Unauthenticated):
        session(handler, Credentials(identity_token="stale")).manifest("v1")
    with pytest.raises(Unauthenticated):
        session(handler, Credentials(registry_token="expired")).manifest("v1")
