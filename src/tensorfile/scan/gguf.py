"""GGUF (llama.cpp's model format): a bounded read of the header, metadata and tensor list.

Layout (version 2 and 3; llama.cpp refuses version 1): ``GGUF``, a u32
version, u64 tensor count, u64 key/value count, then each key/value (a
string key, a u32 value type, the value), then each tensor's name, u32
dimension count (at most 4), u64 dimensions, u32 type and u64 data offset.
Strings are a u64 length and UTF-8 bytes; arrays a u32 item type, a u64
count and the items. A file whose version reads byte-swapped is big-endian.

Nothing in a GGUF file is code except its chat templates
(``tokenizer.chat_template`` and ``tokenizer.chat_template.<name>``): Jinja
that llama.cpp-based servers render, checked by :mod:`._jinja`. Every
length and count is checked against the bytes left before anything is read,
counts are capped (:class:`FormatLimits`), and only keys and templates are
decoded: other strings and arrays are stepped over.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from tensorfile._io.sources import unpack_from
from tensorfile._report import StreamReport, Verdict
from tensorfile.errors import MalformedModelError, ScanLimitError
from tensorfile.scan._base import Buf, FormatLimits, mapped, part
from tensorfile.scan._jinja import check_template

MAGIC: Final = b"GGUF"
_VERSIONS: Final = (2, 3)
#: Value types: fixed sizes, then STRING (8) and ARRAY (9).
_FIXED: Final = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_STRING, _ARRAY = 8, 9
#: llama.cpp's GGML_MAX_DIMS.
_MAX_DIMS: Final = 4
_TEMPLATE_KEY: Final = "tokenizer.chat_template"


class GgufAssessor:
    """GGUF files, recognised by their magic bytes."""

    format = "gguf"

    def detect(self, head: bytes, name: str) -> bool:
        return head.startswith(MAGIC)

    def assess(self, path: Path, limits: FormatLimits) -> list[StreamReport]:
        with mapped(path) as buf:
            return read_gguf(buf, limits)


def read_gguf(buf: Buf, limits: FormatLimits) -> list[StreamReport]:
    """The parts of a GGUF file: its metadata, then one per chat template.

    A break after a template was read still reports the template (with the
    break as an ``error`` part), so a payload before a truncation is named."""
    reader = _Reader(buf, limits)
    parts: list[StreamReport] = []
    try:
        reader.read(parts)
    except (MalformedModelError, ScanLimitError) as exc:
        parts.append(StreamReport("metadata", reader.pos, Verdict.ERROR, error=str(exc)))
    return parts


class _Reader:
    def __init__(self, buf: Buf, limits: FormatLimits) -> None:
        self.buf = buf
        self.end = len(buf)
        self.limits = limits
        self.pos = 0
        self.order = "<"

    def read(self, parts: list[StreamReport]) -> None:
        buf = self.buf
        if self.end < 24 or buf[:4] != MAGIC:
            raise MalformedModelError("GGUF: shorter than its 24-byte header or no GGUF magic")
        (version,) = unpack_from("<I", buf, 4)
        if version not in _VERSIONS:
            if unpack_from(">I", buf, 4)[0] in _VERSIONS:
                self.order = ">"
            else:
                raise MalformedModelError(f"GGUF: version {version} (llama.cpp reads 2 and 3)")
        n_tensors, n_kv = unpack_from(self.order + "QQ", buf, 8)
        self.pos = 24
        if n_kv > self.limits.max_kv:
            raise ScanLimitError(f"GGUF: {n_kv:,} metadata entries (the limit is "
                                 f"{self.limits.max_kv:,})")
        if n_tensors > self.limits.max_tensors:
            raise ScanLimitError(f"GGUF: {n_tensors:,} tensors (the limit is "
                                 f"{self.limits.max_tensors:,})")
        for _ in range(n_kv):
            key = self.string(self.limits.max_name, "a metadata key")
            (vtype,) = self.unpack("I", 4, f"the type of {key!r}")
            if key == _TEMPLATE_KEY or key.startswith(_TEMPLATE_KEY + "."):
                at = self.pos
                if vtype != _STRING:
                    raise MalformedModelError(f"GGUF: {key} is not a string (type {vtype})")
                template = self.string(self.limits.max_template, key)
                parts.append(part(key, check_template(template, key), offset=at))
            else:
                self.skip_value(vtype, key, 0)
        for i in range(n_tensors):
            self.tensor(i)
        parts.insert(0, part("metadata", []))

    def need(self, n: int, what: str) -> None:
        if n > self.end - self.pos:
            raise MalformedModelError(f"GGUF: {what} at byte {self.pos} needs {n:,} bytes; the "
                                      f"file has {self.end - self.pos:,} left")

    def unpack(self, fmt: str, size: int, what: str) -> tuple[int, ...]:
        self.need(size, what)
        values = unpack_from(self.order + fmt, self.buf, self.pos)
        self.pos += size
        return values

    def length(self, what: str) -> int:
        (n,) = self.unpack("Q", 8, f"the length of {what}")
        self.need(n, what)
        return int(n)

    def string(self, cap: int, what: str) -> str:
        n = self.length(what)
        if n > cap:
            raise ScanLimitError(f"GGUF: {what} at byte {self.pos} is {n:,} bytes (the limit "
                                 f"is {cap:,})")
        raw = self.buf[self.pos:self.pos + n]
        self.pos += n
        try:
            return bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedModelError(f"GGUF: {what} at byte {self.pos - n} is not UTF-8") from None

    def skip_value(self, vtype: int, key: str, depth: int) -> None:
        size = _FIXED.get(vtype)
        if size is not None:
            self.need(size, f"the value of {key!r}")
            self.pos += size
        elif vtype == _STRING:
            n = self.length(f"the value of {key!r}")
            self.pos += n
        elif vtype == _ARRAY:
            if depth >= self.limits.max_array_depth:
                raise ScanLimitError(f"GGUF: arrays in {key!r} nest deeper than "
                                     f"{self.limits.max_array_depth}")
            itype, count = self.unpack("IQ", 12, f"the array header of {key!r}")
            if count > self.limits.max_array:
                raise ScanLimitError(f"GGUF: array {key!r} has {count:,} items (the limit is "
                                     f"{self.limits.max_array:,})")
            isize = _FIXED.get(itype)
            if isize is not None:  # fixed-size items: one bound check, one step
                self.need(count * isize, f"the items of {key!r}")
                self.pos += count * isize
                return
            if itype not in (_STRING, _ARRAY):
                raise MalformedModelError(f"GGUF: array {key!r} has items of unknown type {itype}")
            # Each item takes at least 8 bytes: a count past the file ends here.
            self.need(count * 8, f"the items of {key!r}")
            for _ in range(count):
                self.skip_value(itype, key, depth + 1)
        else:
            raise MalformedModelError(f"GGUF: {key!r} has unknown value type {vtype}")

    def tensor(self, i: int) -> None:
        name = self.string(self.limits.max_name, f"the name of tensor {i}")
        (n_dims,) = self.unpack("I", 4, f"the dimension count of tensor {name!r}")
        if n_dims > _MAX_DIMS:
            raise MalformedModelError(f"GGUF: tensor {name!r} has {n_dims} dimensions "
                                      f"(llama.cpp reads at most {_MAX_DIMS})")
        self.unpack("Q" * n_dims, 8 * n_dims, f"the shape of tensor {name!r}")
        _, offset = self.unpack("IQ", 12, f"the type and offset of tensor {name!r}")
        if offset > self.end:
            raise MalformedModelError(f"GGUF: tensor {name!r} starts at data offset {offset:,}, "
                                      f"past the end of the {self.end:,}-byte file")

