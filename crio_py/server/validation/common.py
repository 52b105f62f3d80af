"""Checks shared by several requests: object names, paths, ids, uids and gids."""

from __future__ import annotations

import re

from crio_py.errors import InvalidArgument
from crio_py.server.validation import limits

# Kubernetes object names (DNS subdomains), in either case as crictl users and critest write them.
# They become parts of reserved names (k8s_<name>_<namespace>_...), log lines and labels: no
# '/', '_', whitespace or '..', which could pose as a path or another name's separator.
_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?")
# RFC 1123 labels joined by dots (node names of hostNetwork pods may be FQDNs).
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


def check_name(value: str, where: str) -> None:
    """A non-empty object name of letters, digits, '-' and '.' starting and ending alphanumeric."""
    if not value:
        raise InvalidArgument(f"{where} must not be empty")
    if len(value) > limits.MAX_NAME or not _NAME.fullmatch(value) or ".." in value:
        raise InvalidArgument(
            f"{where} {value[:80]!r} is not a valid name: at most {limits.MAX_NAME} letters, digits, '-' and '.', "
            "starting and ending with a letter or digit"
        )


def check_dns_name(hostname: str, where: str = "hostname") -> None:
    """Lowercase RFC 1123 labels of 1-63 characters joined by dots."""
    if len(hostname) > limits.MAX_HOSTNAME or not all(_DNS_LABEL.fullmatch(label) for label in hostname.split(".")):
        raise InvalidArgument(
            f"{where} {hostname[:80]!r} is not a valid DNS name (lowercase RFC 1123 labels of 1-63 characters)"
        )


def check_absolute_path(path: str, where: str) -> None:
    """An absolute path of at most PATH_MAX with no '..' component and no over-long component."""
    if not path.startswith("/"):
        raise InvalidArgument(f"{where} {path[:200]!r} must be an absolute path")
    _check_path_parts(path, where)


def check_relative_path(path: str, where: str) -> None:
    """A path that stays below the directory it is relative to: not absolute, no '..' component."""
    if path.startswith("/"):
        raise InvalidArgument(f"{where} {path[:200]!r} must be a relative path")
    _check_path_parts(path, where)


def _check_path_parts(path: str, where: str) -> None:
    if len(path) > limits.MAX_PATH:
        raise InvalidArgument(f"{where} is {len(path)} characters long; a path has at most {limits.MAX_PATH}")
    parts = path.split("/")
    if ".." in parts:
        raise InvalidArgument(f"{where} {path[:200]!r} must not contain '..'")
    if any(len(p) > limits.MAX_PATH_COMPONENT for p in parts):
        raise InvalidArgument(f"{where} has a component longer than {limits.MAX_PATH_COMPONENT} characters")


def check_required(value: str, where: str) -> None:
    """A field the request must set (ids, image names)."""
    if not value:
        raise InvalidArgument(f"{where} must not be empty")


def check_id_value(value: int, where: str) -> None:
    """A uid or gid: 0..2^32-2."""
    if not 0 <= value <= limits.MAX_ID:
        raise InvalidArgument(f"{where} {value} is not a valid uid/gid (0..{limits.MAX_ID})")
