"""Filters shared by the List RPCs."""

from __future__ import annotations

from collections.abc import Mapping


def labels_match(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    """CRI label selectors: every selector key must be present with the same value."""
    return all(labels.get(k) == v for k, v in selector.items())
