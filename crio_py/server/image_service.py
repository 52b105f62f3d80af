"""ImageService handlers (pull, status, list, remove, fs info) over the image domain."""

from __future__ import annotations


class ImageService:
    """Handlers of runtime.v1.ImageService; RPCs not defined here answer UNIMPLEMENTED."""
