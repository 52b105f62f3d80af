"""The OCI bundle's config.json on disk."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from crio_py.state import write_atomic

CONFIG_NAME = "config.json"


def write_spec(bundle: Path, spec: dict[str, Any]) -> None:
    """Write the runtime spec into ``bundle`` (atomically: a runtime never reads half a file).

    Not fsynced: the runtime reads it right away, and after a power loss the container it
    describes is gone anyway (a spec lost with it only leaves verbose status without it)."""
    write_atomic(bundle / CONFIG_NAME, json.dumps(spec, indent=1).encode(), mode=0o600, durable=False)


def read_spec(bundle: Path) -> dict[str, Any] | None:
    """The bundle's runtime spec, or None when it is gone."""
    try:
        return json.loads((bundle / CONFIG_NAME).read_text())
    except (FileNotFoundError, ValueError):
        return None
