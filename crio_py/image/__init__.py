"""Images: pulls into the shared layer store, records, names, removal and the pause image."""

from crio_py.image.manager import ImageManager
from crio_py.image.model import AuthConfig, DirUsage, FsUsage, ImageRecord

__all__ = ["AuthConfig", "DirUsage", "FsUsage", "ImageManager", "ImageRecord"]
