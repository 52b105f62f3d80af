"""A real registry (Debian's docker-registry) on 127.0.0.1 for tests, and a small pusher.

Images are pushed over the registry's HTTP API (monolithic blob uploads, then the manifest), so
tests can publish exactly the manifests they need: plain, multi-layer, zstd, indexes.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
import tempfile
import time
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
