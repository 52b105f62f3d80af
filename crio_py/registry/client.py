"""A registry client for the OCI distribution spec (Docker registry v2), on httpx.

It resolves manifests (following indexes to the host's platform), and hands out blobs as
streams that verify their digest and size as they are read. Authentication: bearer tokens
from the registry's ``WWW-Authenticate`` challenge (anonymous or with credentials) and basic
auth.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import platform
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from crio_py.errors import CrioError, Internal, NotFound, PermissionDenied, Unauthenticated, Unavailable
from crio_py.registry.reference import Reference

log = logging.getLogger(__name__)

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
ACCEPT = ", ".join((*MANIFEST_TYPES, *INDEX_TYPES))
_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le", "s390x": "s390x"}
HOST_PLATFORM = ("linux", _ARCH.get(platform.machine(), platform.machine()))
# armv7l -> v7; arm64 is always v8 (an index may say so or not); amd64 images name no variant.
HOST_VARIANT = {"arm64": "v8", "arm": "v" + platform.machine()[4:5]}.get(HOST_PLATFORM[1], "")
# Manifests and configs are small; a registry answering with more is not to be believed (the
# limits containers/image uses too), and a bigger one would only cost memory.
MAX_MANIFEST = 4 * 1024 * 1024
MAX_CONFIG = 8 * 1024 * 1024
# Docker Hub's API lives on another host than its name.
_API_HOST = {"docker.io": "registry-1.docker.io"}


@dataclass(frozen=True)
class Credentials:
    """What a bearer or basic challenge is answered with: a user and password, an OAuth2 refresh
    token (``identity_token``, exchanged for an access token) or a ready bearer token."""

    username: str = ""
    password: str = ""
    identity_token: str = ""
    registry_token: str = ""


@dataclass(frozen=True)
class Endpoint:
    """Where to reach a repository: base URL of a registry (mirror or upstream)."""

    base_url: str
    is_mirror: bool = False


def is_insecure(host: str, insecure: list[str]) -> bool:
    """Whether ``host`` (``name[:port]``) is listed as insecure, with its port or without."""
    name = host.partition("]")[0] + "]" if host.startswith("[") else host.rpartition(":")[0] or host
    return host in insecure or name in insecure


def endpoints_for(ref: Reference, mirrors: dict[str, list[str]], insecure: list[str]) -> list[Endpoint]:
    """Mirrors of the reference's host in order, then the host itself."""
    out = []
    for mirror in mirrors.get(ref.domain, []):
        url = mirror if "://" in mirror else f"{'http' if is_insecure(mirror, insecure) else 'https'}://{mirror}"
        out.append(Endpoint(url.rstrip("/"), is_mirror=True))
    host = _API_HOST.get(ref.domain, ref.domain)
    scheme = "http" if is_insecure(ref.domain, insecure) or is_insecure(host, insecure) else "https"
    out.append(Endpoint(f"{scheme}://{host}"))
    return out


def _digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _status_error(resp: httpx.Response, what: str) -> CrioError:
    code = resp.status_code
    detail = ""
    try:
        errors = resp.json().get("errors") or []
        detail = "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors if isinstance(e, dict))
    except (ValueError, AttributeError):
        detail = resp.text[:200]
    msg = f"{what}: HTTP {code}{' (' + detail + ')' if detail else ''}"
    if code == 401:
        return Unauthenticated(msg)
    if code == 403:
        return PermissionDenied(msg)
    if code == 404:
        return NotFound(msg)
    if code >= 500 or code == 429:
        return Unavailable(msg)
    return Internal(msg)


class RegistrySession:
    """One repository on one endpoint, with its auth state (tokens are per repository scope)."""

    def __init__(self, client: httpx.Client, endpoint: Endpoint, repo: str, creds: Credentials | None):
        self._client = client
        self.endpoint = endpoint
        self.repo = repo
        self._creds = creds
        self._auth_header: str | None = None

    def _url(self, kind: str, ref: str) -> str:
        return f"{self.endpoint.base_url}/v2/{self.repo}/{kind}/{ref}"

    def _request(self, method: str, url: str, *, headers: dict[str, str], stream: bool = False) -> httpx.Response:
        for attempt in range(2):
            hdrs = dict(headers)
            if self._auth_header:
                hdrs["Authorization"] = self._auth_header
            try:
                req = self._client.build_request(method, url, headers=hdrs)
                resp = self._client.send(req, stream=stream, follow_redirects=True)
            except httpx.TimeoutException as exc:
                raise Unavailable(f"{self.endpoint.base_url}: timed out: {exc}") from None
            except httpx.TransportError as exc:
                raise Unavailable(f"{self.endpoint.base_url}: cannot connect: {exc}") from None
            if resp.status_code == 401 and attempt == 0 and self._authenticate(resp):
                resp.close()
                continue
            return resp
        return resp

    def _authenticate(self, resp: httpx.Response) -> bool:
        """Answer a 401 challenge; False when there is nothing more to try."""
        challenge = resp.headers.get("WWW-Authenticate", "")
        scheme, _, params_text = challenge.partition(" ")
        params = dict(re.findall(r'(\w+)="([^"]*)"', params_text))
        if scheme.lower() == "basic":
            if not self._creds or not self._creds.username:
                return False
            raw = f"{self._creds.username}:{self._creds.password}".encode()
            self._auth_header = "Basic " + base64.b64encode(raw).decode()
            return True
        if scheme.lower() != "bearer" or "realm" not in params:
            return False
        creds = self._creds or Credentials()
        if creds.registry_token:
            self._auth_header = f"Bearer {creds.registry_token}"
            return True
        query = {"service": params.get("service", ""), "scope": params.get("scope") or f"repository:{self.repo}:pull"}
        query = {k: v for k, v in query.items() if v}
        try:
            if creds.identity_token:  # the distribution spec's OAuth2 refresh-token grant
                form = {**query, "grant_type": "refresh_token", "refresh_token": creds.identity_token,
                        "client_id": "crio-py"}
                token_resp = self._client.post(params["realm"], data=form)
            else:
                auth = (creds.username, creds.password) if creds.username else None
                token_resp = self._client.get(params["realm"], params=query, auth=auth)
        except httpx.TransportError as exc:
            raise Unavailable(f"token service {params['realm']}: {exc}") from None
        if token_resp.status_code != 200:
            raise _status_error(token_resp, f"token service {params['realm']}")
        body = token_resp.json()
        token = body.get("token") or body.get("access_token")
        if not token:
            raise Unauthenticated(f"token service {params['realm']} returned no token")
        self._auth_header = f"Bearer {token}"
        return True

    def manifest(self, ref: str) -> tuple[str, str, bytes]:
        """(media type, digest, raw bytes) of a manifest or index by tag or digest."""
        url = self._url("manifests", ref)
        what = f"manifest {self.repo}:{ref} on {self.endpoint.base_url}"
        resp = self._request("GET", url, headers={"Accept": ACCEPT}, stream=True)
        try:
            if resp.status_code != 200:
                resp.read()
                raise _status_error(resp, what)
            body = bytearray()
            for chunk in resp.iter_bytes():
                body += chunk
                if len(body) > MAX_MANIFEST:
                    raise Internal(f"{what} is larger than {MAX_MANIFEST} bytes: not a manifest")
        finally:
            resp.close()
        data = bytes(body)
        digest = _digest_of(data)
        if ref.startswith("sha256:") and digest != ref:
            raise Internal(f"manifest {self.repo}@{ref}: digest mismatch (got {digest})")
        media = resp.headers.get("Content-Type", "").split(";")[0].strip()
        if media not in (*INDEX_TYPES, *MANIFEST_TYPES):
            try:
                media = json.loads(data).get("mediaType", media)
            except (ValueError, AttributeError):
                raise Internal(f"{what} is not a JSON object") from None
        return media, digest, data

    def blob_bytes(self, digest: str, size: int) -> bytes:
        """A small blob (a config, at most MAX_CONFIG bytes) in memory, verified."""
        if size > MAX_CONFIG:
            raise Internal(f"blob {digest} of {self.repo} claims {size} bytes: too big for an image config")
        with self.open_blob(digest, size) as blob:
            return blob.readall()

    @contextmanager
    def open_blob(self, digest: str, size: int) -> Iterator[BlobReader]:
        """The blob's body as a file read straight off the connection (see BlobReader)."""
        resp = self._request("GET", self._url("blobs", digest), headers={}, stream=True)
        try:
            if resp.status_code != 200:
                resp.read()
                raise _status_error(resp, f"blob {digest} of {self.repo}")
            yield BlobReader(resp.iter_bytes(), digest, size, f"blob {digest} of {self.repo}")
        finally:
            resp.close()


class BlobReader(io.RawIOBase):
    """A blob's bytes as a raw file that checks them: more than ``size`` bytes fails at once;
    reaching the end with another size or digest fails the read that found the end.

    So a consumer that reads to the end (as layer unpacking does before anything becomes
    visible) has verified the blob, without a copy of it on disk.
    """

    def __init__(self, chunks: Iterator[bytes], digest: str, size: int, what: str):
        self._chunks = chunks
        self._pending = memoryview(b"")
        self._digest = digest
        self._size = size
        self._what = what
        self._hasher = hashlib.sha256()
        self._got = 0
        self._verified = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        # Fill the whole buffer when the body allows: callers sniff magic bytes with one peek.
        out = memoryview(buffer).cast("B")
        filled = 0
        while filled < len(out):
            if not self._pending:
                try:
                    chunk = next(self._chunks, None)
                except httpx.TransportError as exc:
                    raise Unavailable(f"{self._what}: the download broke off: {exc}") from None
                if chunk is None:
                    self._verify()
                    break
                self._got += len(chunk)
                if self._got > self._size:
                    raise Internal(f"{self._what}: larger than its declared {self._size} bytes")
                self._hasher.update(chunk)
                self._pending = memoryview(chunk)
            n = min(len(out) - filled, len(self._pending))
            out[filled : filled + n] = self._pending[:n]
            self._pending = self._pending[n:]
            filled += n
        return filled

    def _verify(self) -> None:
        if self._verified:
            return
        if self._got != self._size:
            raise Internal(f"{self._what}: {self._got} bytes, expected {self._size}")
        if "sha256:" + self._hasher.hexdigest() != self._digest:
            raise Internal(f"{self._what}: digest mismatch (content is corrupt)")
        self._verified = True


def _variant(arch: str, variant: str) -> str:
    """The variant as compared: arm64's is v8 whether written or not, amd64's v1 is none."""
    if arch == "arm64" and not variant:
        return "v8"
    if arch == "amd64" and variant == "v1":
        return ""
    return variant


def choose_platform(
    index: dict[str, Any], want: tuple[str, str] = HOST_PLATFORM, variant: str = HOST_VARIANT
) -> dict[str, Any]:
    """The manifest descriptor of an index for our os/architecture/variant; NotFound naming what exists.

    The exact variant wins; for arm, an older variant (v6 on a v7 host) or none does too.
    """
    os_name, arch = want
    host = _variant(arch, variant)
    ranked: list[tuple[int, int, dict[str, Any]]] = []
    available = []
    for position, desc in enumerate(index.get("manifests", [])):
        plat = desc.get("platform") or {}
        if plat.get("os") == "unknown":
            continue  # build attestations ride along in indexes as unknown/unknown
        theirs = _variant(plat.get("architecture", ""), plat.get("variant", ""))
        available.append("/".join(str(p) for p in (plat.get("os"), plat.get("architecture"), theirs) if p))
        if (plat.get("os"), plat.get("architecture")) != want:
            continue
        if theirs == host:
            ranked.append((0, position, desc))
        elif arch == "arm" and (not theirs or theirs < host):
            ranked.append((1 if theirs else 2, position, desc))
    if ranked:
        return min(ranked, key=lambda r: r[:2])[2]
    wanted = "/".join(p for p in (os_name, arch, host) if p)
    raise NotFound(f"no image for {wanted}; the index has: {', '.join(available) or 'nothing'}")


def new_http_client(insecure: bool = False) -> httpx.Client:
    """An HTTP client with sane timeouts; certificate checks off only for insecure hosts."""
    return httpx.Client(timeout=httpx.Timeout(30.0, connect=10.0), verify=not insecure, follow_redirects=True)
