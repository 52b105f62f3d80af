"""A real registry (Debian's docker-registry) on 127.0.0.1 for tests, and a small pusher.

Images are pushed over the registry's HTTP API (monolithic blob uploads, then the manifest), so
tests can publish exactly the manifests they need: plain, multi-layer, zstd, indexes.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import shutil
import subprocess
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.support.daemon import free_port

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Registry:
    """A docker-registry process serving plain HTTP on 127.0.0.1:<port>."""

    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="crio-py-registry-")))
    port: int = field(default_factory=free_port)
    htpasswd: tuple[str, str] | None = None
    proc: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def start(self) -> Registry:
        config: dict[str, Any] = {
            "version": 0.1,
            "log": {"level": "warn"},
            "storage": {"filesystem": {"rootdirectory": str(self.workdir / "data")}, "delete": {"enabled": True}},
            "http": {"addr": self.host},
        }
        if self.htpasswd:
            user, password = self.htpasswd
            line = subprocess.run(["htpasswd", "-nbB", user, password], capture_output=True, text=True, check=True)
            (self.workdir / "htpasswd").write_text(line.stdout.strip() + "\n")
            config["auth"] = {"htpasswd": {"realm": "crio-py-test", "path": str(self.workdir / "htpasswd")}}
        (self.workdir / "config.yml").write_text(json.dumps(config))
        log = (self.workdir / "registry.log").open("ab")
        self.proc = subprocess.Popen(
            ["docker-registry", "serve", str(self.workdir / "config.yml")], stdout=log, stderr=log
        )
        log.close()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                httpx.get(f"{self.url}/v2/", timeout=1)
                return self
            except httpx.TransportError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"docker-registry did not start: {(self.workdir / 'registry.log').read_text()}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
        shutil.rmtree(self.workdir, ignore_errors=True)

    def client(self) -> httpx.Client:
        headers = {}
        if self.htpasswd:
            headers["Authorization"] = "Basic " + base64.b64encode(":".join(self.htpasswd).encode()).decode()
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)

    def push_blob(self, repo: str, data: bytes) -> str:
        dgst = digest(data)
        with self.client() as c:
            if c.head(f"/v2/{repo}/blobs/{dgst}").status_code == 200:
                return dgst
            start = c.post(f"/v2/{repo}/blobs/uploads/")
            start.raise_for_status()
            location = start.headers["Location"]
            sep = "&" if "?" in location else "?"
            c.put(f"{location}{sep}digest={dgst}", content=data,
                  headers={"Content-Type": "application/octet-stream"}).raise_for_status()
        return dgst

    def push_manifest(self, repo: str, ref: str, manifest: dict[str, Any]) -> str:
        """Push a manifest or index under ``ref`` (a tag); returns its digest."""
        raw = json.dumps(manifest).encode()
        with self.client() as c:
            c.put(f"/v2/{repo}/manifests/{ref}", content=raw,
                  headers={"Content-Type": manifest["mediaType"]}).raise_for_status()
        return digest(raw)


class TokenFront:
    """A registry front on 127.0.0.1 that demands bearer tokens (the distribution token flow).

    ``/v2/...`` without ``Authorization: Bearer <token>`` gets 401 and a
    ``WWW-Authenticate: Bearer realm=.../token`` challenge; ``/token`` hands the token out to
    ``user``:``password`` (basic auth); requests with the token are proxied to ``backend``.

    ``gets`` counts the proxied GETs by path. The answer for the blob ``hold_blob`` (a digest)
    stops half way, sets ``holding`` and waits for ``release``: a pull caught mid-download.
    """

    TOKEN = "t0k3n-for-tests"

    def __init__(self, backend: Registry, user: str, password: str):
        front = self
        self.gets: Counter[str] = Counter()
        self.hold_blob = ""
        self.holding = threading.Event()
        self.release = threading.Event()
        expected_basic = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _send(self, code: int, body: bytes, headers: dict[str, str], hold: bool = False) -> None:
                self.send_response(code)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command == "HEAD":
                    return
                if hold:
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    front.holding.set()
                    front.release.wait(60)
                    body = body[len(body) // 2 :]
                self.wfile.write(body)

            def do_GET(self) -> None:
                if self.path.startswith("/token"):
                    if self.headers.get("Authorization") != expected_basic:
                        self._send(401, b'{"errors":[{"code":"UNAUTHORIZED"}]}', {})
                        return
                    self._send(200, json.dumps({"token": TokenFront.TOKEN}).encode(), {})
                    return
                if self.headers.get("Authorization") != f"Bearer {TokenFront.TOKEN}":
                    challenge = f'Bearer realm="{front.url}/token",service="test",scope="repository:x:pull"'
                    self._send(401, b'{"errors":[{"code":"UNAUTHORIZED"}]}', {"WWW-Authenticate": challenge})
                    return
                if self.command == "GET":
                    front.gets[self.path] += 1
                with backend.client() as c:
                    resp = c.get(self.path, headers={"Accept": self.headers.get("Accept", "*/*")})
                keep = {k: v for k, v in resp.headers.items() if k.lower() in ("content-type", "docker-content-digest")}
                hold = bool(front.hold_blob) and self.path.endswith(f"/blobs/{front.hold_blob}")
                self._send(resp.status_code, resp.content, keep, hold=hold)

            do_HEAD = do_GET

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self._server.server_address[1]}"
        self.url = f"http://{self.host}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.release.set()  # a held answer would keep its handler thread (and shutdown) waiting
        self._server.shutdown()
        self._server.server_close()
