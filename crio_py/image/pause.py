"""A pause image built on this machine from Debian's static catatonit (``-P`` is its pause mode).

Used when the configured pause image cannot be pulled, so that pods work with no registry.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any

from crio_py.errors import FailedPrecondition

CATATONIT = Path("/usr/bin/catatonit")
# The upstream pause image runs as this user too.
PAUSE_USER = "65535:65535"


def _add_dir(tar: tarfile.TarFile, name: str) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, 0o755
    tar.addfile(info)


def build_pause_layer(catatonit: Path = CATATONIT) -> tuple[bytes, dict[str, Any]]:
    """(uncompressed layer tar, image config) of a pause image whose /pause is catatonit."""
    try:
        binary = catatonit.read_bytes()
    except OSError as exc:
        raise FailedPrecondition(
            f"cannot build the local pause image: {catatonit}: {exc.strerror}; install Debian's catatonit"
        ) from None
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in ("dev", "proc", "sys", "etc"):
            _add_dir(tar, name)
        info = tarfile.TarInfo("pause")
        info.size, info.mode = len(binary), 0o755
        tar.addfile(info, io.BytesIO(binary))
    layer = buf.getvalue()
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Entrypoint": ["/pause", "-P"], "User": PAUSE_USER, "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created_by": f"crio-py: local pause image from {catatonit}"}],
    }
    return layer, config


def config_digest(config: dict[str, Any]) -> tuple[bytes, str]:
    raw = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    return raw, "sha256:" + hashlib.sha256(raw).hexdigest()
