"""Checks every request gets, driven by the proto descriptors: sizes, NUL bytes, enum values.

Walks only the fields a request sets, so the cost follows the request's size. Each limit is in
crio_py.server.validation.limits; errors name the field by its path in the request
(``config.envs[3].key``).
"""

from __future__ import annotations

from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from crio_py.errors import InvalidArgument
from crio_py.server.validation import limits

_STRING = FieldDescriptor.TYPE_STRING
_BYTES = FieldDescriptor.TYPE_BYTES
_ENUM = FieldDescriptor.TYPE_ENUM
_MESSAGE = FieldDescriptor.TYPE_MESSAGE

_EXEC_FIELDS = {
    ("runtime.v1.ContainerConfig", "command"),
    ("runtime.v1.ContainerConfig", "args"),
    ("runtime.v1.ExecSyncRequest", "cmd"),
    ("runtime.v1.ExecRequest", "cmd"),
}
_METADATA_MAPS = ("labels", "annotations", "label_selector")
# Limits of one string (or bytes) value, by (message, field); the rest get MAX_STRING.
_STRING_LIMITS: dict[tuple[str, str], int] = {
    **dict.fromkeys(_EXEC_FIELDS, limits.MAX_ARG_BYTES),
    ("runtime.v1.KeyValue", "key"): limits.MAX_ARG_BYTES,
    ("runtime.v1.KeyValue", "value"): limits.MAX_ARG_BYTES,
    **{
        ("runtime.v1.AuthConfig", f): limits.MAX_CREDENTIAL
        for f in ("password", "auth", "identity_token", "registry_token")
    },
}
# Limits of entries of a repeated field or map, by (message, field); the rest get MAX_REPEATED.
_REPEATED_LIMITS: dict[tuple[str, str], int] = {
    **dict.fromkeys(_EXEC_FIELDS, limits.MAX_EXEC_ENTRIES),
    ("runtime.v1.ContainerConfig", "envs"): limits.MAX_EXEC_ENTRIES,
    ("runtime.v1.LinuxSandboxSecurityContext", "supplemental_groups"): limits.MAX_SUPPLEMENTAL_GROUPS,
    ("runtime.v1.LinuxContainerSecurityContext", "supplemental_groups"): limits.MAX_SUPPLEMENTAL_GROUPS,
}


def check_fields(message: Message, path: str = "") -> None:
    """Raise InvalidArgument for the first field of ``message`` (recursively) over a limit."""
    owner = message.DESCRIPTOR.full_name
    for field, value in message.ListFields():
        where = f"{path}.{field.name}" if path else field.name
        key = (owner, field.name)
        if field.type == _MESSAGE and field.message_type.GetOptions().map_entry:
            _check_map(field, value, where)
        elif field.is_repeated:
            limit = _REPEATED_LIMITS.get(key, limits.MAX_REPEATED)
            if len(value) > limit:
                raise InvalidArgument(f"{where} has {len(value)} entries; at most {limit} are allowed")
            for i, item in enumerate(value):
                _check_value(field, item, f"{where}[{i}]", key)
        else:
            _check_value(field, value, where, key)


def _check_value(field: FieldDescriptor, value: Any, where: str, key: tuple[str, str]) -> None:
    if field.type == _MESSAGE:
        check_fields(value, where)
    elif field.type in (_STRING, _BYTES):
        check_string(value, where, _STRING_LIMITS.get(key, limits.MAX_STRING))
    elif field.type == _ENUM and value not in field.enum_type.values_by_number:
        known = ", ".join(v.name for v in field.enum_type.values)
        raise InvalidArgument(f"{where} has unknown value {value} (known: {known})")


def check_string(value: str | bytes, where: str, limit: int = limits.MAX_STRING) -> None:
    """No NUL byte (the kernel's strings end there) and at most ``limit`` characters."""
    if len(value) > limit:
        raise InvalidArgument(f"{where} is {len(value)} characters long; at most {limit} are allowed")
    if ("\0" if isinstance(value, str) else b"\0") in value:
        raise InvalidArgument(f"{where} must not contain a NUL byte")


def _check_map(field: FieldDescriptor, value: Any, where: str) -> None:
    metadata = field.name in _METADATA_MAPS
    limit = limits.MAX_METADATA_ENTRIES if metadata else limits.MAX_REPEATED
    if len(value) > limit:
        raise InvalidArgument(f"{where} has {len(value)} entries; at most {limit} are allowed")
    value_field = field.message_type.fields_by_name["value"]
    total = 0
    for k, v in value.items():
        check_string(k, f"{where} key {k[:64]!r}", limits.MAX_METADATA_KEY if metadata else limits.MAX_STRING)
        entry = f"{where}[{k[:64]!r}]"
        if value_field.type == _MESSAGE:
            check_fields(v, entry)
            continue
        check_string(v, entry, limits.MAX_METADATA_MAP_BYTES if metadata else limits.MAX_STRING)
        total += len(k) + len(v)
    if metadata and total > limits.MAX_METADATA_MAP_BYTES:
        raise InvalidArgument(
            f"{where} hold {total} characters of keys and values; at most {limits.MAX_METADATA_MAP_BYTES} are allowed"
        )
