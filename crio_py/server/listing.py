"""Filters and chunking shared by the List and Stream RPCs."""

from __future__ import annotations

from collections.abc import Mapping

# Items per message of the Stream* RPCs (kubelet reads them as they come).
STREAM_CHUNK = 100


def labels_match(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    """CRI label selectors: every selector key must be present with the same value."""
    return all(labels.get(k) == v for k, v in selector.items())
