"""Which uid, gid and groups a container's process runs as.

Names are looked up in the container's own ``/etc/passwd`` and ``/etc/group`` (never the host's,
and following symlinks as if the rootfs were ``/``, so a hostile image cannot point the lookup
at a host file).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from crio_py.cri import api_pb2
from crio_py.errors import InvalidArgument

_MAX_ID = 2**32 - 2
_MAX_SYMLINKS = 40

SecurityContext = api_pb2.LinuxContainerSecurityContext | api_pb2.LinuxSandboxSecurityContext


@dataclass(frozen=True)
class ResolvedUser:
    """The process identity; ``additional_gids`` starts with ``gid`` (see :func:`resolve_user`)."""

    uid: int
    gid: int
    additional_gids: tuple[int, ...]
    username: str


@dataclass(frozen=True)
class _Passwd:
    name: str
    uid: int
    gid: int


@dataclass(frozen=True)
class _Group:
    name: str
    gid: int
    members: tuple[str, ...]


def rootfs_path(rootfs: Path, path: str) -> Path:
    """``path`` inside ``rootfs``, resolving symlinks relative to the rootfs, never leaving it."""
    pending = [p for p in path.split("/") if p]
    resolved: list[str] = []
    links = 0
    while pending:
        part = pending.pop(0)
        if part == ".":
            continue
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = rootfs.joinpath(*resolved, part)
        if candidate.is_symlink():
            links += 1
            if links > _MAX_SYMLINKS:
                raise InvalidArgument(f"too many symlinks resolving {path!r} in the container rootfs")
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            pending = [p for p in target.split("/") if p] + pending
            continue
        resolved.append(part)
    return rootfs.joinpath(*resolved)


def _lines(rootfs: Path, path: str) -> list[list[str]]:
    try:
        text = rootfs_path(rootfs, path).read_text(errors="replace")
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return []
    return [line.split(":") for line in text.splitlines() if line and not line.startswith("#")]


def _passwd(rootfs: Path) -> list[_Passwd]:
    out = []
    for f in _lines(rootfs, "/etc/passwd"):
        if len(f) >= 4 and f[2].isdigit() and f[3].isdigit():
            out.append(_Passwd(f[0], int(f[2]), int(f[3])))
    return out


def _groups(rootfs: Path) -> list[_Group]:
    out = []
    for f in _lines(rootfs, "/etc/group"):
        if len(f) >= 3 and f[2].isdigit():
            members = tuple(m.strip() for m in f[3].split(",") if m.strip()) if len(f) > 3 else ()
            out.append(_Group(f[0], int(f[2]), members))
    return out


def _numeric(value: str, what: str) -> int | None:
    if not value.isdigit():
        return None
    number = int(value)
    if number > _MAX_ID:
        raise InvalidArgument(f"{what} {value} is out of range")
    return number


def resolve_user(rootfs: Path, security_context: SecurityContext | None, image_user: str) -> ResolvedUser:
    """Resolve the process identity the way kubelet users expect.

    The user comes from ``run_as_user``, else ``run_as_username``, else the image's ``User``
    (``name``, ``uid``, ``uid:gid``, ``name:group``, ``uid:group``). The primary gid is the
    image's group when it names one, else the passwd entry's gid, else 0; ``run_as_group``
    overrides it. Supplementary groups: the primary gid first (so it stays a member even after
    ``setgroups``), then the user's memberships in the image's ``/etc/group`` (policy Merge, the
    default; Strict skips them), then ``supplemental_groups``. Names the image does not know are
    InvalidArgument.
    """
    sc = security_context
    run_as_username = getattr(sc, "run_as_username", "") if sc is not None else ""
    group_part = ""
    if sc is not None and sc.HasField("run_as_user"):
        if sc.run_as_user.value < 0:
            raise InvalidArgument(f"run_as_user {sc.run_as_user.value} must not be negative")
        user_part = str(sc.run_as_user.value)
    elif run_as_username:
        user_part = run_as_username
    else:
        user_part, _, group_part = image_user.partition(":")

    passwd = _passwd(rootfs)
    uid = _numeric(user_part, "uid") if user_part else 0
    if uid is None:
        entry = next((p for p in passwd if p.name == user_part), None)
        if entry is None:
            raise InvalidArgument(f"user {user_part!r} is not in the image's /etc/passwd")
        uid = entry.uid
    else:
        entry = next((p for p in passwd if p.uid == uid), None)
    gid = entry.gid if entry else 0

    groups = _groups(rootfs)
    if group_part:
        number = _numeric(group_part, "gid")
        if number is None:
            group = next((g for g in groups if g.name == group_part), None)
            if group is None:
                raise InvalidArgument(f"group {group_part!r} is not in the image's /etc/group")
            number = group.gid
        gid = number
    if sc is not None and sc.HasField("run_as_group"):
        if sc.run_as_group.value < 0:
            raise InvalidArgument(f"run_as_group {sc.run_as_group.value} must not be negative")
        gid = sc.run_as_group.value

    username = entry.name if entry else ""
    gids = [gid]
    strict = sc is not None and sc.supplemental_groups_policy == api_pb2.SupplementalGroupsPolicy.Strict
    if username and not strict:
        gids += [g.gid for g in groups if username in g.members]
    if sc is not None:
        gids += list(sc.supplemental_groups)
    return ResolvedUser(uid=uid, gid=gid, additional_gids=tuple(dict.fromkeys(gids)), username=username)
