"""How the client commands print: crictl's tables, its relative times and sizes, JSON and YAML."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

import yaml
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

# crictl shows ids cut to this many characters unless --no-trunc.
SHORT_ID = 13


def short_id(value: str, no_trunc: bool = False) -> str:
    """An object or image id as crictl prints it (without ``sha256:``, 13 characters)."""
    value = value.removeprefix("sha256:")
    return value if no_trunc else value[:SHORT_ID]


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns padded like crictl's tabwriter (three spaces between), no trailing blanks."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = []
    for row in [header, *rows]:
        cells = [str(c).ljust(w) for c, w in zip(row, widths, strict=True)]
        lines.append("   ".join(cells).rstrip())
    return "\n".join(lines) + "\n"


def human_duration(seconds: float) -> str:
    """docker/go-units HumanDuration, as crictl's CREATED column says it."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    minutes = s // 60
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = int(seconds / 3600 + 0.5)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(seconds / 3600) // 24 // 365} years"


def ago(timestamp_ns: int) -> str:
    """``3 seconds ago`` for a CRI timestamp in nanoseconds."""
    return human_duration(max(0.0, time.time() - timestamp_ns / 1e9)) + " ago"


def human_size(size: int) -> str:
    """docker/go-units HumanSize (decimal units, three significant digits): 1.46MB, 315kB."""
    value = float(size)
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if value < 1000 or unit == "PB":
            return f"{value:.3g}{unit}"
        value /= 1000
    raise AssertionError("unreachable")


def as_data(message: Message) -> dict[str, Any]:
    """A CRI message as crictl's JSON shows it (camelCase names, enum names, zero values too)."""
    return MessageToDict(message, always_print_fields_with_no_presence=True)


def with_info(status: dict[str, Any], info: dict[str, str]) -> dict[str, Any]:
    """crictl's inspect document: the status, then each verbose info key with its JSON decoded."""
    out: dict[str, Any] = {"status": status}
    for key, text in sorted(info.items()):
        try:
            out[key] = json.loads(text)
        except ValueError:
            out[key] = text
    return out


def dump(data: Any, fmt: str) -> str:
    """``data`` as JSON (indented, as crictl) or YAML."""
    if fmt == "yaml":
        return yaml.safe_dump(data, sort_keys=False)
    return json.dumps(data, indent=2) + "\n"
