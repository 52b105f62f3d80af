"""Requests that do not even parse: say which field is wrong instead of grpcio's INTERNAL.

protobuf refuses a string field holding invalid UTF-8 (and a malformed encoding) without naming
the field; :func:`undecodable_field` walks the wire format by the descriptor to find it.
"""

from __future__ import annotations

from google.protobuf.descriptor import Descriptor, FieldDescriptor

_MAX_DEPTH = 64


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def undecodable_field(descriptor: Descriptor, data: bytes, path: str = "", depth: int = 0) -> str:
    """The path of the first string field of ``data`` that is not UTF-8, or a description of
    where the encoding itself is broken ("" when neither is found)."""
    pos = 0
    counts: dict[str, int] = {}
    try:
        while pos < len(data):
            key, pos = _varint(data, pos)
            number, wire_type = key >> 3, key & 7
            field = descriptor.fields_by_number.get(number)
            if wire_type == 0:
                _, pos = _varint(data, pos)
                continue
            if wire_type in (1, 5):
                pos += 8 if wire_type == 1 else 4
                continue
            if wire_type != 2:
                return f"{path or 'the request'}: unsupported wire type {wire_type}"
            size, pos = _varint(data, pos)
            chunk, pos = data[pos : pos + size], pos + size
            if len(chunk) != size:
                raise ValueError("truncated field")
            if field is None:
                continue
            where = f"{path}.{field.name}" if path else field.name
            if field.is_repeated:
                counts[where] = counts.get(where, -1) + 1
                where = f"{where}[{counts[where]}]"
            if field.type == FieldDescriptor.TYPE_STRING:
                try:
                    chunk.decode("utf-8")
                except UnicodeDecodeError:
                    return f"{where} is not valid UTF-8"
            elif field.type == FieldDescriptor.TYPE_MESSAGE and depth < _MAX_DEPTH:
                found = undecodable_field(field.message_type, chunk, where, depth + 1)
                if found:
                    return found
    except ValueError as exc:
        return f"{path or 'the request'}: {exc}"
    return ""
