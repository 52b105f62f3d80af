"""Small OCI images built from files on this machine, pushed to a test registry.

``busybox``: Debian's dynamic busybox plus the host's libc, with /etc/passwd and /etc/group that
tests resolve users against. Other builders add a layer with whiteouts, a zstd layer, a USER, or
an index with an arm64 entry.
"""

from __future__ import annotations

import gzip
import io
import json
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zstandard

from tests.support.busybox_rootfs import busybox_rootfs
from tests.support.registry import (
    LAYER_GZIP,
    LAYER_TAR,
    LAYER_ZSTD,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_MANIFEST,
    Registry,
    digest,
)

PASSWD = (
    "root:x:0:0:root:/root:/bin/sh\n"
    "app:x:1000:1000:app:/home/app:/bin/sh\n"
    "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
)
GROUP = "root:x:0:\napp:x:1000:\nwheel:x:10:app\naudio:x:29:app\nnogroup:x:65534:\n"


@dataclass(frozen=True)
class Layer:
    tar: bytes  # uncompressed
    media_type: str = LAYER_GZIP

    @property
    def blob(self) -> bytes:
        if self.media_type == LAYER_GZIP:
            return gzip.compress(self.tar, compresslevel=1, mtime=0)
        if self.media_type == LAYER_ZSTD:
            return zstandard.ZstdCompressor().compress(self.tar)
        return self.tar


def tar_of_dir(root: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(root.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(root)), recursive=False)
    return buf.getvalue()


def tar_of_entries(entries: dict[str, bytes | None]) -> bytes:
    """A layer from {path: content}; None makes a directory."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, content in entries.items():
            info = tarfile.TarInfo(name)
            if content is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size, info.mode = len(content), 0o644
                tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def busybox_layer() -> Layer:
    with tempfile.TemporaryDirectory() as tmp:
        root = busybox_rootfs(Path(tmp) / "rootfs")
        (root / "etc" / "passwd").write_text(PASSWD)
        (root / "etc" / "group").write_text(GROUP)
        (root / "home" / "app").mkdir(parents=True, exist_ok=True)
        return Layer(tar_of_dir(root))


def image_parts(
    layers: list[Layer], config: dict[str, Any] | None = None, arch: str = "amd64"
) -> tuple[dict[str, Any], dict[str, bytes], str]:
    """An OCI image as a registry holds it: (manifest, blobs by digest, image id)."""
    image_config = {
        "architecture": arch,
        "os": "linux",
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["sh"],
                   **(config or {})},
        "rootfs": {"type": "layers", "diff_ids": [digest(layer.tar) for layer in layers]},
    }
    config_raw = json.dumps(image_config).encode()
    blobs = {digest(config_raw): config_raw}
    descriptors = []
    for layer in layers:
        blob = layer.blob
        blobs[digest(blob)] = blob
        descriptors.append({"mediaType": layer.media_type, "digest": digest(blob), "size": len(blob)})
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": digest(config_raw), "size": len(config_raw)},
        "layers": descriptors,
    }
    return manifest, blobs, digest(config_raw)


def push_image(
    registry: Registry, repo: str, tag: str, layers: list[Layer], config: dict[str, Any] | None = None,
    arch: str = "amd64",
) -> tuple[str, str]:
    """Push layers + config as an OCI image; returns (manifest digest, image id)."""
    manifest, blobs, image_id = image_parts(layers, config, arch)
    for blob in blobs.values():
        registry.push_blob(repo, blob)
    return registry.push_manifest(repo, tag, manifest), image_id


def push_index(registry: Registry, repo: str, tag: str, entries: list[tuple[str, str]]) -> str:
    """An OCI index of already-pushed manifests: [(manifest digest, arch)]."""
    manifests = []
    for dgst, arch in entries:
        manifests.append({"mediaType": OCI_MANIFEST, "digest": dgst, "size": len(_fetch_manifest(registry, repo, dgst)),
                          "platform": {"os": "linux", "architecture": arch}})
    return registry.push_manifest(repo, tag, {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests})


def _fetch_manifest(registry: Registry, repo: str, dgst: str) -> bytes:
    with registry.client() as c:
        resp = c.get(f"/v2/{repo}/manifests/{dgst}", headers={"Accept": OCI_MANIFEST})
        resp.raise_for_status()
        return resp.content


def umoci_layout(layout: Path, tag: str, steps: list[Callable[[Path], None]], user: str = "") -> None:
    """An OCI layout built by umoci: one layer per step, each step editing the rootfs in place.

    What a step deletes becomes umoci's own whiteouts; every layer starts with umoci's ``./`` entry.
    """
    image = f"{layout}:{tag}"
    bundle = layout.with_name(layout.name + "-bundle")
    subprocess.run(["umoci", "init", "--layout", str(layout)], check=True, capture_output=True)
    subprocess.run(["umoci", "new", "--image", image], check=True, capture_output=True)
    subprocess.run(["umoci", "unpack", "--image", image, str(bundle)], check=True, capture_output=True)
    try:
        for step in steps:
            step(bundle / "rootfs")
            subprocess.run(["umoci", "repack", "--refresh-bundle", "--image", image, str(bundle)], check=True,
                           capture_output=True)
    finally:
        shutil.rmtree(bundle, ignore_errors=True)
    if user:
        subprocess.run(["umoci", "config", "--image", image, "--config.user", user], check=True, capture_output=True)


def skopeo_push(layout: Path, tag: str, registry: Registry, repo: str, docker_format: bool = False) -> None:
    """Copy an OCI layout's image to the test registry with skopeo, as OCI or as Docker schema 2."""
    args = ["skopeo", "copy", "--quiet", "--dest-tls-verify=false"]
    if registry.htpasswd:
        args.append("--dest-creds=" + ":".join(registry.htpasswd))
    if docker_format:
        args.append("--format=v2s2")
    subprocess.run([*args, f"oci:{layout}:{tag}", f"docker://{registry.host}/{repo}:{tag}"], check=True,
                   capture_output=True)


__all__ = [
    "LAYER_TAR", "LAYER_ZSTD", "Layer", "busybox_layer", "image_parts", "push_image", "push_index", "skopeo_push",
    "tar_of_entries", "umoci_layout",
]
