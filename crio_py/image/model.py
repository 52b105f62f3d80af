"""An image as the daemon remembers it, and its on-disk record."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple


@dataclass
class ImageRecord:
    """A pulled (or locally built) image. ``id`` is the digest of its config."""

    id: str
    repo_tags: list[str] = field(default_factory=list)
    repo_digests: list[str] = field(default_factory=list)
    size: int = 0
    uid: int | None = None
    username: str = ""
    pinned: bool = False
    annotations: dict[str, str] = field(default_factory=dict)
    chain_ids: list[str] = field(default_factory=list)  # bottom layer first
    created_at_ns: int = 0
    stop_signal: str = ""  # the config's StopSignal ("" when it names none)

    def to_record(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_record(cls, data: dict[str, Any]) -> ImageRecord:
        return cls(**data)


@dataclass(frozen=True)
class AuthConfig:
    """Credentials from a PullImage request."""

    username: str = ""
    password: str = ""
    auth: str = ""  # base64 "user:password"
    identity_token: str = ""
    registry_token: str = ""


@dataclass(frozen=True)
class DirUsage:
    """Bytes and inodes under one directory of the store, as ImageFsInfo reports a filesystem."""

    mountpoint: str
    used_bytes: int
    inodes_used: int


class FsUsage(NamedTuple):
    """What ImageFsInfo reports: the image layers and the containers' writable layers."""

    images: DirUsage
    containers: DirUsage


def user_of(config: dict[str, Any]) -> tuple[int | None, str]:
    """(uid, username) from the image config's ``User``: a number gives a uid, a name a username."""
    user = ((config.get("config") or {}).get("User") or "").split(":")[0]
    if not user:
        return None, ""
    if user.isdigit():
        return int(user), ""
    return None, user
