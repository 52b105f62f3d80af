"""crictl's pod and container config files: JSON or YAML, snake_case or camelCase field names,
enums as numbers (as crictl's Go decoding wants them) or names."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TypeVar

import yaml
from google.protobuf.json_format import ParseDict, ParseError
from google.protobuf.message import Message

M = TypeVar("M", bound=Message)


class ConfigFileError(Exception):
    """A config file that cannot be read or does not describe the message."""


def load_message(path: Path, message_type: type[M]) -> M:
    """Read ``path`` (JSON or YAML) into a ``message_type``; unknown fields are mistakes."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigFileError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except ValueError:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigFileError(f"{path}: neither JSON nor YAML: {exc}".replace("\n", " ")) from None
    if not isinstance(data, dict):
        raise ConfigFileError(f"{path}: expected a mapping of {message_type.DESCRIPTOR.name} fields")
    try:
        return ParseDict(data, message_type())
    except ParseError as exc:
        raise ConfigFileError(f"{path}: not a {message_type.DESCRIPTOR.name}: {exc}") from None
