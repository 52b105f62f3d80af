"""Image references the way users write them, normalised like Docker and CRI-O do.

``busybox`` -> ``docker.io/library/busybox:latest``; ``host:5000/a/b:tag``; ``name@sha256:...``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from crio_py.errors import InvalidArgument

DEFAULT_DOMAIN = "docker.io"
DEFAULT_TAG = "latest"
_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
_DIGEST = re.compile(r"^sha256:[a-f0-9]{64}$")
_DOMAIN = re.compile(
    r"^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9-]+)*(?::[0-9]+)?$"  # host[:port]
    r"|^\[[0-9a-fA-F:]+\](?::[0-9]+)?$"  # [ipv6][:port]
)


@dataclass(frozen=True)
class Reference:
    """A normalised reference: ``domain/path`` plus a tag and/or a digest."""

    domain: str
    path: str
    tag: str = ""
    digest: str = ""

    @property
    def name(self) -> str:
        """``domain/path`` (the repository, fully qualified)."""
        return f"{self.domain}/{self.path}"

    @property
    def object(self) -> str:
        """What to ask the registry for: the digest if pinned, else the tag."""
        return self.digest or self.tag

    def tagged(self) -> str:
        return f"{self.name}:{self.tag}" if self.tag else ""

    def digested(self, digest: str) -> str:
        return f"{self.name}@{digest}"

    def __str__(self) -> str:
        out = self.name
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out


def looks_like_id(text: str) -> bool:
    """Could be a full or short image id (``sha256:<hex>`` or 6+ hex digits, as crictl prints).

    Short hex is also a valid repository name; like Docker, an id match is tried first.
    """
    return bool(re.fullmatch(r"[a-f0-9]{6,64}", text.removeprefix("sha256:")))


def parse(text: str) -> Reference:
    """Parse and normalise ``text``; InvalidArgument naming what is wrong."""
    if not text or text != text.strip():
        raise InvalidArgument(f"image reference {text!r} is empty or has surrounding spaces")
    rest, digest = text, ""
    if "@" in rest:
        rest, digest = rest.split("@", 1)
        if not _DIGEST.match(digest):
            raise InvalidArgument(f"image reference {text!r}: {digest!r} is not a sha256 digest")
    tag = ""
    last = rest.rsplit("/", 1)[-1]
    if ":" in last:
        rest, tag = rest.rsplit(":", 1)
        if not _TAG.match(tag):
            raise InvalidArgument(f"image reference {text!r}: {tag!r} is not a valid tag")
    parts = rest.split("/")
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost" or parts[0].startswith("[")):
        domain, path_parts = parts[0], parts[1:]
        if not _DOMAIN.match(domain):
            raise InvalidArgument(f"image reference {text!r}: {domain!r} is not a registry host")
    else:
        domain, path_parts = DEFAULT_DOMAIN, parts
    if domain == "index.docker.io":
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and len(path_parts) == 1:
        path_parts = ["library", *path_parts]
    for part in path_parts:
        if not _COMPONENT.match(part):
            raise InvalidArgument(
                f"image reference {text!r}: {part!r} is not a valid repository name component (lowercase letters, "
                "digits and separators)"
            )
    if not tag and not digest:
        tag = DEFAULT_TAG
    return Reference(domain=domain, path="/".join(path_parts), tag=tag, digest=digest)
