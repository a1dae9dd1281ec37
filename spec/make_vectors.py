"""Regenerate the safetensors conformance vectors in ``spec/vectors/``.

    python spec/make_vectors.py [OUTDIR]      # default: spec/vectors next to this script

It needs safetensors 0.8.0 (the test extra), which it runs on every vector.

Each vector is a small file, ``NNN-short-name.safetensors``, valid or invalid,
and ``expected.json`` records for each one what a conforming reader must do
(spec/FORMAT.md is the prose version of the same rules):

* valid: ``{"valid": true, "tensors": {name: {"dtype", "shape",
  "data_offsets", "sha256"}}, "metadata": {...} | null, "canonical": bool}``
  where ``sha256`` is the digest of the tensor's raw bytes and ``canonical``
  says the file is exactly what the canonical writer produces for those tensors;
* invalid: ``{"valid": false, "error": kind}`` where ``kind`` is the
  ``FormatError.kind`` tensorfile raises (see src/tensorfile/errors.py).

Every entry also has ``"reference": "accept" | "reject"``: what safetensors
0.8.0 does with the file, found by running it (``safetensors.deserialize`` and
``safetensors.safe_open`` must agree, or this script stops). Where that differs
from ``valid`` the two readers disagree; spec/FORMAT.md lists and justifies
every such vector.

A vector's number is its position in the list below: add new vectors at the
end, so that the numbers FORMAT.md and bug reports cite stay stable.

The expected outcomes are written down here from the rules, not computed by
tensorfile: the vectors are an oracle for the implementation, so nothing in
this script imports it. For the same reason the dtype table and the canonical
layout below are a second, deliberately independent statement of what
``tensorfile._format`` implements. The output depends only on this file, so
regenerating it reproduces the committed vectors byte for byte (a test checks).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

U64_MAX = 2**64 - 1
REFERENCE_VERSION = "0.8.0"
MAX_HEADER = 100_000_000

#: (name, bits) in the order of the reference's ``Dtype`` enum; the canonical
#: writer puts higher positions (wider types) first.
DTYPES: tuple[tuple[str, int], ...] = (
    ("BOOL", 8),
    ("F4", 4),
    ("F6_E2M3", 6),
    ("F6_E3M2", 6),
    ("U8", 8),
    ("I8", 8),
    ("F8_E5M2", 8),
    ("F8_E4M3", 8),
    ("F8_E8M0", 8),
    ("F8_E4M3FNUZ", 8),
    ("F8_E5M2FNUZ", 8),
    ("I16", 16),
    ("U16", 16),
    ("F16", 16),
    ("BF16", 16),
    ("I32", 32),
    ("U32", 32),
    ("F32", 32),
    ("C64", 64),
    ("F64", 64),
    ("I64", 64),
    ("U64", 64),
)
BITS = dict(DTYPES)
RANK = {name: i for i, (name, _) in enumerate(DTYPES)}


# ---------------------------------------------------------------------------
# Building files
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Tensor:
    name: str
    dtype: str
    shape: tuple[int, ...]
    data: bytes


def payload(label: str, n: int) -> bytes:
    """Deterministic, name-dependent bytes (so swapped tensors are noticed)."""
    return hashlib.shake_256(b"tensorfile-vector:" + label.encode("utf-8")).digest(n)


def tensor(name: str, dtype: str, shape: tuple[int, ...] | list[int]) -> Tensor:
    bits = math.prod(shape) * BITS[dtype]
    assert bits % 8 == 0, (name, dtype, shape)
    data = payload(f"{name}/{dtype}/{list(shape)}", bits // 8)
    if dtype == "BOOL":
        data = bytes(b & 1 for b in data)
    return Tensor(name, dtype, tuple(shape), data)


def prefix(n: int) -> bytes:
    return struct.pack("<Q", n)


def raw(header: str | bytes, data: bytes = b"", declared: int | None = None) -> bytes:
    """A file from literal header text: the length prefix is ``len(header)`` unless declared."""
    if isinstance(header, str):
        header = header.encode("utf-8")
    return prefix(len(header) if declared is None else declared) + header + data


def entry(dtype: str = '"F32"', shape: str = "[1]", offsets: str = "[0,4]", extra: str = "") -> str:
    """One tensor entry as JSON text; every part is literal so it can be malformed."""
    return f'{{"dtype":{dtype},"shape":{shape},"data_offsets":{offsets}{extra}}}'


def obj(*items: tuple[str, str]) -> str:
    """A JSON object from (literal key text, literal value text) pairs."""
    return "{" + ",".join(f"{k}:{v}" for k, v in items) + "}"


ONE_F32 = ('"a"', entry())  # a 4-byte F32 tensor "a" at [0, 4]
FOUR = b"\x00\x00\x80\x3f"  # 1.0f, the data of ONE_F32


@dataclass
class Layout:
    """Tensors laid out like the canonical writer does, with hooks to bend the text."""

    tensors: list[Tensor]
    metadata: dict[str, str] | None = None
    has_metadata: bool = False  # write "__metadata__" even when metadata is None
    #: Turns the header dict into JSON text (default: the canonical compact form).
    render: Callable[[dict[str, Any]], str] | None = None
    pad: bool = True
    #: Extra keys per tensor entry (unknown fields).
    extra: dict[str, dict[str, Any]] = field(default_factory=dict)

    def build(self) -> tuple[bytes, dict[str, Any]]:
        order = sorted(self.tensors, key=lambda t: (-RANK[t.dtype], t.name))
        doc: dict[str, Any] = {}
        if self.metadata is not None:
            doc["__metadata__"] = dict(sorted(self.metadata.items()))
        elif self.has_metadata:
            doc["__metadata__"] = None
        pos = 0
        expected: dict[str, Any] = {}
        for t in order:
            end = pos + len(t.data)
            doc[t.name] = {"dtype": t.dtype, "shape": list(t.shape), "data_offsets": [pos, end]}
            doc[t.name].update(self.extra.get(t.name, {}))
            expected[t.name] = {
                "dtype": t.dtype,
                "shape": list(t.shape),
                "data_offsets": [pos, end],
                "sha256": hashlib.sha256(t.data).hexdigest(),
            }
            pos = end
        text = (self.render or compact)(doc).encode("utf-8")
        if self.pad:
            text += b" " * (-len(text) % 8)
        content = prefix(len(text)) + text + b"".join(t.data for t in order)
        return content, expected

    @property
    def canonical(self) -> bool:
        return self.render is None and self.pad and not self.extra and not self.has_metadata


def compact(doc: dict[str, Any]) -> str:
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"))


# ---------------------------------------------------------------------------
# The vectors
# ---------------------------------------------------------------------------


@dataclass
class Vector:
    name: str
    description: str
    content: bytes = b""
    error: str | None = None  # the FormatError.kind; None for a valid file
    layout: Layout | None = None


VECTORS: list[Vector] = []


def valid(name: str, description: str, layout: Layout) -> None:
    VECTORS.append(Vector(name, description, layout=layout))


def invalid(name: str, description: str, error: str, content: bytes) -> None:
    VECTORS.append(Vector(name, description, content, error))


def mixed() -> list[Tensor]:
    return [
        tensor("embed.weight", "BF16", (4, 3)),
        tensor("norm.bias", "F32", (3,)),
        tensor("lm_head.weight", "F16", (3, 4)),
        tensor("step", "I64", ()),
        tensor("mask", "BOOL", (5,)),
    ]


def deep(n: int) -> str:
    return "[" * n + "]" * n


# -- valid: the basics -------------------------------------------------------
valid("empty-object", 'header "{}" with no padding: no tensors, no metadata', Layout([], pad=False))
valid("empty-object-padded", 'header "{}" padded with spaces to 8 bytes (the canonical empty file)', Layout([]))
valid("metadata-only", "metadata and no tensors", Layout([], {"format": "pt", "author": "tensorfile"}))
valid("metadata-null", '"__metadata__": null means no metadata', Layout([tensor("a", "F32", (2,))], has_metadata=True))
valid("metadata-empty", '"__metadata__": {} is an empty mapping', Layout([tensor("a", "U8", (3,))], {}))
valid("metadata-unicode", "metadata keys and values in several scripts, with escapes",
      Layout([tensor("x", "I8", (2,))], {"名前": "値", "ключ": "значение", "emoji": "🙂", "quote": '"\\\n\t'}))
valid("single-f32", "one F32 tensor of shape [2, 3]", Layout([tensor("weight", "F32", (2, 3))]))
valid("mixed-dtypes", "five tensors of different dtypes in canonical order (widest first, then name)",
      Layout(mixed(), {"format": "pt"}))

# -- valid: every dtype --------------------------------------------------------
_DTYPE_SHAPES = {"F4": (2, 4), "F6_E2M3": (4,), "F6_E3M2": (2, 4)}
for _dt, _bits in DTYPES:
    _shape = _DTYPE_SHAPES.get(_dt, (2, 3))
    valid(f"dtype-{_dt.lower().replace('_', '-')}",
          f"one {_dt} tensor ({_bits} bits per element) of shape {list(_shape)}",
          Layout([tensor("t", _dt, _shape)]))
valid("dtype-all-in-one", "every dtype in one file, in canonical order",
      Layout([tensor(f"t.{d.lower()}", d, _DTYPE_SHAPES.get(d, (2,))) for d, _ in DTYPES]))
valid("f4-odd-last-dim", "F4 [2, 3]: 6 elements fill 3 whole bytes although the last dimension is odd",
      Layout([tensor("q", "F4", (2, 3))]))
valid("f6-whole-bytes", "F6_E3M2 [8]: 8 six-bit elements fill 6 bytes", Layout([tensor("q", "F6_E3M2", (8,))]))
valid("bool-any-byte", "BOOL bytes other than 0 and 1 are not checked by the format",
      Layout([Tensor("b", "BOOL", (3,), b"\x02\x7f\xff")]))

# -- valid: shapes --------------------------------------------------------------
valid("scalar-0d", "shape [] is a scalar holding one element", Layout([tensor("s", "F64", ())]))
valid("scalar-0d-u8", "a one-byte scalar", Layout([tensor("s", "U8", ())]))
valid("empty-tensor", "shape [0]: zero elements, zero bytes", Layout([tensor("e", "F32", (0,))]))
valid("empty-tensors-same-offset",
      "several empty tensors share one offset between non-empty ones",
      Layout([tensor("a", "F32", (2,)), tensor("b0", "F32", (0,)), tensor("b1", "F32", (3, 0)),
              tensor("b2", "F32", (0, 0, 7)), tensor("c", "F32", (1,))]))
valid("empty-tensor-at-end", "an empty tensor whose offsets equal the end of the buffer",
      Layout([tensor("a", "U16", (2,)), tensor("z", "U8", (0,))]))
valid("only-empty-tensors", "tensors but no data bytes at all", Layout([tensor("a", "I32", (0,)), tensor("b", "F4", (0, 5))]))
valid("empty-huge-dims", "a zero dimension makes the product 0 even beside a u64-max dimension",
      Layout([tensor("z", "F64", (0, U64_MAX))]))
valid("large-rank", "rank 64 (shape of 63 ones and a 2)", Layout([tensor("r", "F32", (1,) * 63 + (2,))]))
valid("rank-1000", "rank 1000: no limit on the number of dimensions", Layout([tensor("r", "U8", (1,) * 1000)]))

# -- valid: header text -----------------------------------------------------------
valid("whitespace-around", "JSON whitespace (space, tab, CR, LF) before and after the object",
      Layout([tensor("a", "F32", (2,))], render=lambda d: " \t\r\n" + compact(d) + "\n\t\r "))
valid("whitespace-inside", "indented JSON with newlines and tabs between tokens",
      Layout([tensor("a", "F32", (2,)), tensor("b", "U8", (1,))], {"k": "v"},
             render=lambda d: json.dumps(d, indent="\t", separators=(" , ", " : "))))
valid("unpadded-odd-length", "a header length that is not a multiple of 8 (data unaligned)",
      Layout([tensor("a", "F64", (1,))], pad=False))
valid("metadata-last", '"__metadata__" after the tensors', Layout(
    [tensor("a", "F32", (1,))], {"k": "v"},
    render=lambda d: compact({**{k: v for k, v in d.items() if k != "__metadata__"}, "__metadata__": d["__metadata__"]})))
valid("offset-order-differs", "tensors listed in the header in a different order from their data",
      Layout([tensor("a", "F32", (2,)), tensor("b", "F32", (1,)), tensor("c", "F32", (3,))],
             render=lambda d: compact(dict(reversed(list(d.items()))))))
valid("ascii-escaped", "the whole header written with \\u escapes for every non-ASCII character",
      Layout([tensor("é", "F32", (1,)), tensor("😀", "U8", (2,))], {"ü": "ß"},
             render=lambda d: json.dumps(d, separators=(",", ":"))))
valid("escaped-dtype", 'dtype written as "\\u0046\\u0033\\u0032" (escapes for "F32")',
      Layout([tensor("a", "F32", (1,))], render=lambda d: compact(d).replace('"F32"', '"\\u0046\\u0033\\u0032"')))
valid("unicode-names", "tensor names in several scripts, an astral character, and a zero-width joiner",
      Layout([tensor(n, "F16", (1,)) for n in ("слой.0", "層.1", "طبقة.2", "🦀.weight", "a\u200db", "ﬁ")]))
valid("odd-names", "an empty name, spaces, quotes, backslash, slash, NUL and control characters",
      Layout([tensor(n, "U8", (1,)) for n in ("", " ", '"', "\\", "/", "a\x00b", "\x1f", "\x7f")]))
valid("metadata-lookalike-names", 'names that resemble "__metadata__" but are tensors',
      Layout([tensor(n, "U8", (1,)) for n in ("__METADATA__", "__metadata", "__metadata__ ", "_metadata_")]))
valid("unknown-fields", "unknown fields in a tensor entry are ignored (nested values, -0, 1e-400 included)",
      Layout([tensor("a", "F32", (1,)), tensor("b", "F32", (1,))],
             render=lambda d: compact(d).replace(
                 '"data_offsets":[0,4]}',
                 '"data_offsets":[0,4],"quant":{"scheme":"q4","groups":[1,2.5,-0,1e-400,null,true]},"note":""}')))
valid("nesting-at-limit", "an unknown field nested to 127 levels in all (the reference's limit)",
      Layout([tensor("a", "F32", (1,))], render=lambda d: compact(d)[:-2] + ',"x":' + deep(125) + "}}"))
valid("reference-writer-output", "exactly what safetensors 0.8.0 writes for these tensors and one metadata key",
      Layout([tensor("w", "F32", (2, 2)), tensor("b", "F32", (2,)), tensor("i", "I64", (1,)),
              tensor("h", "BF16", (3,)), tensor("f", "F4", (4,))], {"format": "pt"}))

# -- invalid: the length prefix and the file size ---------------------------------------
invalid("empty-file", "a 0-byte file", "truncated", b"")
invalid("short-prefix", "5 bytes: shorter than the length prefix", "truncated", b"\x02\x00\x00\x00\x00")
invalid("prefix-only-zero", "exactly 8 bytes declaring an empty header (empty JSON text)", "invalid_header", prefix(0))
invalid("prefix-only", "exactly 8 bytes declaring a 2-byte header that is not there", "truncated", prefix(2))
invalid("header-truncated", "the header is cut off half way", "truncated",
        raw(obj(ONE_F32))[:40])
invalid("header-declared-at-limit", "N = 100,000,000 (the largest allowed) but the file is tiny", "truncated",
        raw("{}", declared=MAX_HEADER))
invalid("header-declared-over-limit", "N = 100,000,001: over the limit", "header_too_large",
        raw("{}", declared=MAX_HEADER + 1))
invalid("header-declared-2p63", "N = 2**63", "header_too_large", raw("{}", declared=2**63))
invalid("header-declared-u64-max", "N = 2**64 - 1 (8 + N wraps around in 64 bits)", "header_too_large",
        raw("{}", declared=U64_MAX))
invalid("header-declared-u64-max-minus-7", "N = 2**64 - 8: 8 + N is exactly 2**64", "header_too_large",
        raw("{}", declared=U64_MAX - 7))
invalid("header-declared-past-end", "N is 1 more than the bytes that follow", "truncated",
        raw("{}", declared=3))

# -- invalid: the data buffer --------------------------------------------------------------
invalid("data-truncated", "the last tensor is 1 byte short", "truncated", raw(obj(ONE_F32), FOUR[:3]))
invalid("data-missing", "the header declares 4 bytes of data and the file ends after the header", "truncated",
        raw(obj(ONE_F32)))
invalid("data-huge-declared", "a U8 tensor of 2**60 bytes in a tiny file (checked before any allocation)",
        "truncated", raw(obj(('"a"', entry('"U8"', f"[{2**60}]", f"[0,{2**60}]"))), b"\x00"))
invalid("trailing-bytes", "one byte after the last tensor", "invalid_offsets", raw(obj(ONE_F32), FOUR + b"\x00"))
invalid("trailing-bytes-no-tensors", '"{}" followed by one byte', "invalid_offsets", raw("{}", b"\x00"))

# -- invalid: offsets ---------------------------------------------------------------------------
invalid("offsets-gap-at-start", "the only tensor begins at 4", "invalid_offsets",
        raw(obj(('"a"', entry(offsets="[4,8]"))), bytes(8)))
invalid("offsets-gap-between", "4 unused bytes between two tensors", "invalid_offsets",
        raw(obj(ONE_F32, ('"b"', entry(offsets="[8,12]"))), bytes(12)))
invalid("offsets-overlap", "the second tensor begins inside the first", "invalid_offsets",
        raw(obj(('"a"', entry(shape="[2]", offsets="[0,8]")), ('"b"', entry(shape="[2]", offsets="[4,12]"))), bytes(12)))
invalid("offsets-same-range", "two tensors claim the same 4 bytes", "invalid_offsets",
        raw(obj(ONE_F32, ('"b"', entry())), FOUR))
invalid("offsets-reversed", "data_offsets [4, 0]: end before begin", "invalid_offsets",
        raw(obj(('"a"', entry(offsets="[4,0]"))), FOUR))
invalid("offsets-size-mismatch", "offsets span 8 bytes for a 4-byte tensor", "invalid_offsets",
        raw(obj(('"a"', entry(offsets="[0,8]"))), bytes(8)))
invalid("offsets-empty-past-end", "an empty tensor at an offset past the end of the data", "invalid_offsets",
        raw(obj(ONE_F32, ('"z"', entry(shape="[0]", offsets="[8,8]"))), FOUR))
invalid("offsets-empty-in-gap", "an empty tensor cannot fill a gap", "invalid_offsets",
        raw(obj(ONE_F32, ('"z"', entry(shape="[0]", offsets="[6,6]")), ('"b"', entry(offsets="[8,12]"))), bytes(12)))
for _label, _text in [
    ("three", "[0,4,8]"), ("one", "[0]"), ("empty", "[]"), ("object", '{"0":0,"1":4}'), ("null", "null"),
    ("negative", "[-4,0]"), ("float", "[0.0,4.0]"), ("exponent", "[0,4e0]"), ("string", '["0","4"]'),
    ("bool", "[false,true]"), ("minus-zero", "[-0,4]"), ("over-u64", f"[0,{2**64}]"),
]:
    invalid(f"offsets-{_label}", f"data_offsets {_text}: not a pair of unsigned 64-bit integers",
            "invalid_offsets", raw(obj(('"a"', entry(offsets=_text))), FOUR))
invalid("offsets-end-u64-max", "data_offsets [0, 2**64 - 1] for a 4-byte tensor", "invalid_offsets",
        raw(obj(('"a"', entry(offsets=f"[0,{U64_MAX}]"))), FOUR))

# -- invalid: shapes ------------------------------------------------------------------------------
for _label, _text in [
    ("negative", "[-1]"), ("float", "[1.0]"), ("exponent", "[1e0]"), ("bool", "[true]"), ("string", '["1"]'),
    ("null", "null"), ("scalar", "1"), ("nested", "[[1]]"), ("minus-zero", "[-0]"), ("over-u64", f"[{2**64}]"),
]:
    invalid(f"shape-{_label}", f"shape {_text}: not a list of unsigned 64-bit integers", "invalid_shape",
            raw(obj(('"a"', entry(shape=_text))), FOUR))
invalid("shape-overflow", "shape [2**32, 2**32] of F32: the byte size overflows 64 bits", "invalid_shape",
        raw(obj(('"a"', entry(shape=f"[{2**32},{2**32}]"))), FOUR))
invalid("shape-u64-max", "shape [2**64 - 1] of F32: the byte size overflows", "invalid_shape",
        raw(obj(('"a"', entry(shape=f"[{U64_MAX}]"))), FOUR))
invalid("shape-overflow-bits", "U8 [2**61 + 2**60]: bytes fit in 64 bits but bits (elements x 8) do not",
        "invalid_shape", raw(obj(('"a"', entry('"U8"', f"[{2**61 + 2**60}]", "[0,4]"))), FOUR))
invalid("f4-odd-count", "F4 [3]: 12 bits do not fill whole bytes", "invalid_shape",
        raw(obj(('"q"', entry('"F4"', "[3]", "[0,2]"))), bytes(2)))
invalid("f4-scalar", "an F4 scalar (one 4-bit element)", "invalid_shape",
        raw(obj(('"q"', entry('"F4"', "[]", "[0,1]"))), bytes(1)))
invalid("f6-two", "F6_E3M2 [2]: 12 bits", "invalid_shape",
        raw(obj(('"q"', entry('"F6_E3M2"', "[2]", "[0,2]"))), bytes(2)))
invalid("f6-three", "F6_E2M3 [3]: 18 bits", "invalid_shape",
        raw(obj(('"q"', entry('"F6_E2M3"', "[3]", "[0,3]"))), bytes(3)))

# -- invalid: dtypes ------------------------------------------------------------------------------
for _label, _text in [
    ("unknown", '"C128"'), ("lowercase", '"f32"'), ("padded", '" F32"'), ("torch-name", '"float32"'),
    ("number", "1"), ("null", "null"), ("unit-variant-map", '{"F32":null}'),
]:
    invalid(f"dtype-{_label}", f"dtype {_text}", "invalid_dtype", raw(obj(('"a"', entry(dtype=_text))), FOUR))

# -- invalid: entries and metadata -----------------------------------------------------------------------
invalid("missing-dtype", "a tensor entry without dtype", "invalid_header",
        raw('{"a":{"shape":[1],"data_offsets":[0,4]}}', FOUR))
invalid("missing-shape", "a tensor entry without shape", "invalid_header",
        raw('{"a":{"dtype":"F32","data_offsets":[0,4]}}', FOUR))
invalid("missing-offsets", "a tensor entry without data_offsets", "invalid_header",
        raw('{"a":{"dtype":"F32","shape":[1]}}', FOUR))
for _label, _text in [("number", "1"), ("null", "null"), ("array", "[]"), ("string", '"F32"')]:
    invalid(f"entry-{_label}", f"a tensor entry that is {_text} instead of an object", "invalid_header",
            raw(obj(('"a"', _text))))
for _label, _text in [("array", "[]"), ("string", '"x"'), ("number", "0")]:
    invalid(f"metadata-{_label}", f'"__metadata__": {_text}', "invalid_metadata",
            raw(obj(('"__metadata__"', _text))))
for _label, _text in [("int", "1"), ("null", "null"), ("bool", "true"), ("object", "{}"), ("list", '["v"]')]:
    invalid(f"metadata-value-{_label}", f'a metadata value {_text}: values must be strings', "invalid_metadata",
            raw(obj(('"__metadata__"', obj(('"k"', _text))))))

# -- invalid: the JSON text -------------------------------------------------------------------------------
for _label, _text in [("array", "[]"), ("string", '"x"'), ("null", "null"), ("number", "1"), ("true", "true")]:
    invalid(f"top-level-{_label}", f"the header is {_text}, not an object", "invalid_header", raw(_text))
invalid("top-level-deep", "10,000 nested arrays as the whole header", "invalid_header", raw(deep(10_000)))
invalid("nesting-over-limit", "an unknown field nested to 128 levels in all (one over the reference's limit)",
        "invalid_header", raw(obj(("\"a\"", entry(extra=',"x":' + deep(126)))), FOUR))
invalid("nesting-very-deep", "an unknown field nested 10,000 levels", "invalid_header",
        raw(obj(("\"a\"", entry(extra=',"x":' + deep(10_000)))), FOUR))
invalid("nan-in-shape", "NaN (not JSON) in a shape", "invalid_header", raw(obj(('"a"', entry(shape="[NaN]"))), FOUR))
invalid("nan-in-unknown-field", "NaN in an unknown field", "invalid_header",
        raw(obj(('"a"', entry(extra=',"x":NaN'))), FOUR))
invalid("infinity-in-unknown-field", "-Infinity in an unknown field", "invalid_header",
        raw(obj(('"a"', entry(extra=',"x":-Infinity'))), FOUR))
invalid("number-out-of-range", "1e400 in an unknown field: not a finite double", "invalid_header",
        raw(obj(('"a"', entry(extra=',"x":1e400'))), FOUR))
invalid("number-near-double-max", "1.7976931348623157e308 (the largest double) in an unknown field: over "
        "tensorfile's 1e308 bound, which stays clear of where the reference's own limit falls",
        "invalid_header", raw(obj(('"a"', entry(extra=',"x":1.7976931348623157e308'))), FOUR))
invalid("integer-5000-digits", "a 5000-digit integer in an unknown field", "invalid_header",
        raw(obj(('"a"', entry(extra=',"x":' + "9" * 5000))), FOUR))
invalid("not-utf8", "a 0xFF byte in a tensor name", "invalid_header",
        raw(b'{"\xff":' + entry().encode() + b"}", FOUR))
invalid("overlong-utf8", "an overlong UTF-8 encoding of '/' (C0 AF)", "invalid_header",
        raw(b'{"\xc0\xaf":' + entry().encode() + b"}", FOUR))
invalid("utf8-encoded-surrogate", "a surrogate encoded as UTF-8 bytes (ED A0 80)", "invalid_header",
        raw(b'{"\xed\xa0\x80":' + entry().encode() + b"}", FOUR))
invalid("bom", "a UTF-8 byte order mark before the object", "invalid_header", raw("\ufeff{}"))
invalid("nul-padding", "the header padded with NUL bytes instead of spaces", "invalid_header", raw("{}\x00\x00\x00\x00\x00\x00"))
invalid("nul-leading", "a NUL byte before the object", "invalid_header", raw("\x00{}"))
for _label, _ws in [("vertical-tab", "\x0b"), ("form-feed", "\x0c"), ("nbsp", "\u00a0")]:
    invalid(f"padding-{_label}", f"padding with U+{ord(_ws):04X}, which is not JSON whitespace", "invalid_header",
            raw("{}" + _ws))
invalid("lone-surrogate-name", 'a tensor name "\\ud800" (an escape for half a surrogate pair)', "invalid_header",
        raw(obj(('"\\ud800"', entry())), FOUR))
invalid("lone-surrogate-metadata", 'a metadata value "\\udc00"', "invalid_header",
        raw(obj(('"__metadata__"', '{"k":"\\udc00"}'))))
invalid("lone-surrogate-unknown-field", 'an unknown field whose value is "x\\ud800y"', "invalid_header",
        raw(obj(('"a"', entry(extra=',"x":"x\\ud800y"'))), FOUR))
invalid("lone-surrogate-unknown-key", 'an unknown field named "\\udfff"', "invalid_header",
        raw(obj(('"a"', entry(extra=',"\\udfff":1'))), FOUR))
invalid("surrogates-reversed", 'a name "\\udc00\\ud800": a low then a high surrogate', "invalid_header",
        raw(obj(('"\\udc00\\ud800"', entry())), FOUR))
invalid("control-char-in-string", "a raw U+0001 inside a name (must be escaped in JSON)", "invalid_header",
        raw(obj(('"a\x01"', entry())), FOUR))
invalid("trailing-comma", "a comma after the last member", "invalid_header", raw('{"__metadata__":null,}'))
invalid("single-quotes", "single-quoted keys", "invalid_header", raw("{'__metadata__':null}"))
invalid("comment", "a // comment after the object", "invalid_header", raw("{}//"))
invalid("two-objects", "two objects back to back", "invalid_header", raw("{}{}"))
invalid("bad-escape", 'an invalid escape "\\x41" in a name', "invalid_header", raw(obj(('"\\x41"', entry())), FOUR))

# -- invalid: duplicate keys ------------------------------------------------------------------------------------
invalid("duplicate-tensor-identical", "the same tensor entry twice, word for word", "duplicate_key",
        raw(obj(ONE_F32, ONE_F32), FOUR))
invalid("duplicate-tensor-different", 'two different entries named "a"; the later covers the data', "duplicate_key",
        raw(obj(ONE_F32, ('"a"', entry(shape="[2]", offsets="[0,8]"))), bytes(8)))
invalid("duplicate-tensor-first-covers", 'two entries named "a"; the earlier covers the data', "duplicate_key",
        raw(obj(('"a"', entry(shape="[2]", offsets="[0,8]")), ONE_F32), bytes(8)))
invalid("duplicate-tensor-escaped", 'names "a" and "\\u0061" are the same key', "duplicate_key",
        raw(obj(ONE_F32, ('"\\u0061"', entry())), FOUR))
invalid("duplicate-field", 'a tensor entry with "dtype" twice', "duplicate_key",
        raw(obj(('"a"', '{"dtype":"F32","dtype":"F32","shape":[1],"data_offsets":[0,4]}')), FOUR))
invalid("duplicate-metadata", '"__metadata__" twice', "duplicate_key",
        raw(obj(('"__metadata__"', "{}"), ('"__metadata__"', "{}"))))
invalid("duplicate-metadata-key", 'a metadata key twice with different values', "duplicate_key",
        raw(obj(('"__metadata__"', '{"k":"1","k":"2"}'))))
invalid("duplicate-key-in-unknown-field", "a duplicate key inside an unknown field's object", "duplicate_key",
        raw(obj(('"a"', entry(extra=',"x":{"q":1,"q":2}'))), FOUR))


# -- appended later (numbers above stay stable) ------------------------------------------------------------------
# Values that only break a rule when read exactly: a fast decoder that turned
# "-0" into 0, or checked sizes before types, would accept these.
invalid("shape-minus-zero-empty", "shape [2, -0] with offsets [0, 0]: sizes agree only if -0 were 0",
        "invalid_shape", raw(obj(('"a"', entry(shape="[2,-0]", offsets="[0,0]")))))
invalid("offsets-minus-zero-end", "data_offsets [0, -0] on an empty tensor", "invalid_offsets",
        raw(obj(('"a"', entry(shape="[0]", offsets="[0,-0]")))))
invalid("shape-negative-in-empty", "shape [0, -5]: the product is 0 but -5 is not a dimension", "invalid_shape",
        raw(obj(('"a"', entry(shape="[0,-5]", offsets="[0,0]")))))
invalid("shape-over-u64-in-empty", "shape [0, 2**64]: the product is 0 but 2**64 is not a u64", "invalid_shape",
        raw(obj(('"a"', entry(shape=f"[0,{2**64}]", offsets="[0,0]")))))
# Colons: a decoder that finds duplicate keys by counting ':' must not be fooled.
invalid("duplicate-tensor-with-colon", 'the name "a:b" twice', "duplicate_key",
        raw(obj(('"a:b"', entry()), ('"a:b"', entry())), FOUR))
invalid("duplicate-metadata-key-with-colon", 'metadata {"k": "a:b", "k": "c"}', "duplicate_key",
        raw(obj(('"__metadata__"', '{"k":"a:b","k":"c"}'))))
valid("colons-everywhere", "colons in names, metadata keys and values",
      Layout([tensor("a:b", "F32", (1,)), tensor("::", "U8", (2,))], {"k:1": "v:2", "url": "https://x.y/z"}))
valid("escaped-colon-and-slash", 'names written with "\\u003a" for ":" and "\\/" for "/"',
      Layout([tensor("a:b", "F32", (1,)), tensor("c/d", "U8", (1,))],
             render=lambda d: compact(d).replace('"a:b"', '"a\\u003ab"').replace('"c/d"', '"c\\/d"')))
valid("unknown-field-with-colon", "an unknown field whose string value holds colons",
      Layout([tensor("a", "F32", (1,))], render=lambda d: compact(d)[:-2] + ',"note":"x:y:z"}}'))
valid("metadata-like-an-entry", "metadata whose keys are dtype, shape and data_offsets (all strings)",
      Layout([tensor("a", "F32", (1,))], {"dtype": "F32", "shape": "[1]", "data_offsets": "[0,4]"}))
valid("line-separator-name", "U+2028 and U+2029 raw in a name (valid JSON, unlike in JavaScript)",
      Layout([tensor("a\u2028b\u2029", "F32", (1,))]))

# ---------------------------------------------------------------------------
# Running the reference and writing the files
# ---------------------------------------------------------------------------


def reference_outcome(content: bytes, scratch: Path) -> str:
    """'accept' or 'reject': what safetensors 0.8.0 does with ``content``.

    Both entry points are run (the in-memory parser and the file reader); they
    share the header validation, and a disagreement would be worth knowing.
    """
    import safetensors

    try:
        safetensors.deserialize(content)
        by_bytes = "accept"
    except Exception:  # the reference raises SafetensorError; anything is a rejection
        by_bytes = "reject"
    path = scratch / "vector.safetensors"
    path.write_bytes(content)
    try:
        with safetensors.safe_open(str(path), framework="np") as f:
            f.keys()
        by_file = "accept"
    except Exception:
        by_file = "reject"
    if by_bytes != by_file:
        raise RuntimeError(f"safetensors.deserialize says {by_bytes} but safe_open says {by_file}")
    return by_bytes


def build_all() -> list[tuple[str, bytes, dict[str, Any]]]:
    """(file name, content, expected entry) for every vector, in order."""
    out = []
    seen: set[str] = set()
    for i, v in enumerate(VECTORS, 1):
        assert v.name not in seen, v.name
        seen.add(v.name)
        expected: dict[str, Any] = {"description": v.description}
        if v.layout is not None:
            content, tensors = v.layout.build()
            expected.update(
                valid=True,
                tensors=tensors,
                metadata=v.layout.metadata,
                canonical=v.layout.canonical,
            )
        else:
            content = v.content
            expected.update(valid=False, error=v.error)
        out.append((f"{i:03d}-{v.name}.safetensors", content, expected))
    return out


def generate(outdir: Path) -> int:
    """Write every vector and expected.json into ``outdir``; returns the count."""
    import safetensors

    if safetensors.__version__ != REFERENCE_VERSION:
        # "reference" records what one version does; another would rewrite it.
        raise RuntimeError(f"needs safetensors {REFERENCE_VERSION}, found {safetensors.__version__}")
    outdir.mkdir(parents=True, exist_ok=True)
    vectors = build_all()
    names = {name for name, _, _ in vectors}
    for stale in outdir.glob("*.safetensors"):
        if stale.name not in names:
            stale.unlink()
    expected: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for name, content, entry_ in vectors:
            entry_["reference"] = reference_outcome(content, Path(scratch))
            (outdir / name).write_bytes(content)
            expected[name] = entry_
    text = json.dumps(expected, indent=1, ensure_ascii=True) + "\n"
    (outdir / "expected.json").write_text(text, encoding="ascii")
    return len(vectors)


def main(argv: list[str]) -> int:
    outdir = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parent / "vectors"
    count = generate(outdir)
    print(f"wrote {count} vectors and expected.json to {os.path.relpath(outdir)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
