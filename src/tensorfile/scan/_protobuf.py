"""A bounded reader of the protobuf wire format (ONNX models, TensorFlow SavedModels).

Only the wire layer: a message is a sequence of (field number, wire type,
value) with varints, fixed 32/64-bit values and length-delimited payloads.
Every length is checked against the enclosing message before it is used,
nested messages are read by the caller with a depth it counts, and a shared
:class:`Budget` caps the fields one file may make the reader visit, so time
stays proportional to the file with a small cap. Groups (wire types 3 and 4,
deprecated and never written by ONNX or TensorFlow) are refused. Nothing
here needs the ``protobuf`` or ``onnx`` packages.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

from tensorfile.errors import MalformedModelError, ScanLimitError
from tensorfile.scan._base import Buf

VARINT, FIXED64, LEN, FIXED32 = 0, 1, 2, 5


class Field(NamedTuple):
    """One field: for ``LEN`` its payload is ``buf[start:end]``; otherwise ``value``."""

    number: int
    wire: int
    value: int
    start: int
    end: int


class Budget:
    """Fields left to visit in one file (shared by every message read from it)."""

    __slots__ = ("left",)

    def __init__(self, fields: int) -> None:
        self.left = fields

    def spend(self) -> None:
        self.left -= 1
        if self.left < 0:
            raise ScanLimitError("protobuf: more fields than the scanner's limit for one file")


def varint(buf: Buf, pos: int, end: int) -> tuple[int, int]:
    """The varint at ``pos`` (at most 10 bytes, within ``end``) and where it ends."""
    result = shift = 0
    for i in range(pos, min(pos + 10, end)):
        byte = buf[i]
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result & 0xFFFF_FFFF_FFFF_FFFF, i + 1
        shift += 7
    raise MalformedModelError(f"protobuf: unterminated varint at byte {pos}")


def fields(buf: Buf, start: int, end: int, budget: Budget) -> Iterator[Field]:
    """The fields of the message at ``buf[start:end]``, in order."""
    pos = start
    while pos < end:
        budget.spend()
        key, pos = varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if number == 0 or number > 0x1FFF_FFFF:
            raise MalformedModelError(f"protobuf: invalid field number {number} at byte {pos}")
        if wire == VARINT:
            value, pos = varint(buf, pos, end)
            yield Field(number, wire, value, pos, pos)
        elif wire in (FIXED64, FIXED32):
            size = 8 if wire == FIXED64 else 4
            if pos + size > end:
                raise MalformedModelError(f"protobuf: field {number} runs past its message "
                                          f"at byte {pos}")
            value = int.from_bytes(buf[pos:pos + size], "little")
            yield Field(number, wire, value, pos, pos + size)
            pos += size
        elif wire == LEN:
            length, pos = varint(buf, pos, end)
            if length > end - pos:
                raise MalformedModelError(
                    f"protobuf: field {number} declares {length:,} bytes at byte {pos} but its "
                    f"message has {end - pos:,} left")
            yield Field(number, wire, 0, pos, pos + length)
            pos += length
        else:
            raise MalformedModelError(f"protobuf: wire type {wire} (field {number}) at byte "
                                      f"{pos} is not one ONNX or TensorFlow writes")


def text(buf: Buf, f: Field, what: str) -> str:
    """A ``string`` field as UTF-8 (``what`` names it in the error)."""
    if f.wire != LEN:
        raise MalformedModelError(f"protobuf: {what} at byte {f.start} is not a string")
    try:
        return bytes(buf[f.start:f.end]).decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedModelError(f"protobuf: {what} at byte {f.start} is not UTF-8") from None


def message(f: Field, what: str) -> tuple[int, int]:
    """The bounds of a nested message field (refusing another wire type)."""
    if f.wire != LEN:
        raise MalformedModelError(f"protobuf: {what} at byte {f.start} is not a message")
    return f.start, f.end


def prefix_fields(head: bytes, limit: int = 64) -> list[Field]:
    """The top-level fields that ``head`` (a file's first bytes) holds whole or starts.

    For :meth:`detect`: a field whose payload runs past ``head`` is kept
    (its bounds clipped) and ends the list; anything malformed gives ``[]``."""
    found: list[Field] = []
    pos, end = 0, len(head)
    try:
        while pos < end and len(found) < limit:
            key, pos = varint(head, pos, end)
            number, wire = key >> 3, key & 7
            if number == 0 or wire not in (VARINT, FIXED64, LEN, FIXED32):
                return []
            if wire == VARINT:
                value, pos = varint(head, pos, end)
                found.append(Field(number, wire, value, pos, pos))
            elif wire == LEN:
                length, pos = varint(head, pos, end)
                found.append(Field(number, wire, 0, pos, min(pos + length, end)))
                if pos + length > end:
                    break
                pos += length
            else:
                size = 8 if wire == FIXED64 else 4
                found.append(Field(number, wire, 0, pos, pos + size))
                pos += size
    except MalformedModelError:
        return found
    return found
