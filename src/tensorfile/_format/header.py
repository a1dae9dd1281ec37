"""Pure functions that decode, validate and encode a safetensors header.

Layout (full text in spec/FORMAT.md)::

    [8 bytes: N, u64 little-endian][N bytes: JSON object, UTF-8][data buffer]

The JSON object maps tensor names to ``{"dtype", "shape", "data_offsets"}``
entries (offsets relative to the data buffer) plus an optional
``"__metadata__"`` mapping of strings to strings.

Nothing here touches a file: callers pass bytes and the real size of the data
buffer, so every declared length is checked against what exists before
anything is allocated from it.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from itertools import chain, repeat
from json.encoder import encode_basestring
from math import prod
from operator import attrgetter, itemgetter, mul, sub
from typing import Annotated, Any, Literal, NamedTuple

import numpy as np

from tensorfile._format.dtypes import DTYPES, DType, dtype_from_name
from tensorfile._format.strict_json import loads_strict
from tensorfile.errors import (
    DuplicateKeyError,
    HeaderTooLargeError,
    InvalidHeaderError,
    InvalidMetadataError,
    InvalidOffsetsError,
    InvalidShapeError,
    MetadataTypeError,
    SerializationError,
    TruncatedFileError,
)

#: Largest header the reference accepts (bytes of JSON after the length prefix).
MAX_HEADER_SIZE = 100_000_000
#: Every offset and size must fit in an unsigned 64-bit integer.
_U64_MAX = 2**64 - 1
METADATA_KEY = "__metadata__"
_FIELDS = frozenset({"dtype", "shape", "data_offsets"})
#: serde_json, which parses the reference's header, refuses JSON nested this
#: many levels deep (the header object and a tensor entry are two of them).
#: (_plain_extras counts levels in int8, which wraps at exactly this depth.)
_MAX_DEPTH = 128
#: The reference refuses numbers that overflow a double; tensorfile draws the
#: line just below so that it never accepts a number the reference refuses.
_MAX_NUMBER = 1e308


class TensorInfo(NamedTuple):
    """Where one tensor lives: offsets are relative to the data buffer."""

    name: str
    dtype: DType
    shape: tuple[int, ...]
    start: int
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.start

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


_get_dtype = attrgetter("dtype")
_get_shape = attrgetter("shape")
_get_offsets = attrgetter("data_offsets")
_get_start_end = attrgetter("start", "end")
_first = itemgetter(0)
_second = itemgetter(1)


class TensorTable(Mapping[str, TensorInfo]):
    """A validated header's tensors by name, in data-offset order.

    Rows are either :class:`TensorInfo` or the fast decoder's entry structs,
    turned into a ``TensorInfo`` the first time they are looked up: opening
    a file with 10,000 tensors to list its names builds none of them.
    """

    __slots__ = ("_rows",)

    def __init__(self, rows: dict[str, Any]) -> None:
        self._rows = rows

    @classmethod
    def of(cls, infos: Iterable[TensorInfo]) -> TensorTable:
        return cls({t.name: t for t in infos})

    def __getitem__(self, name: str) -> TensorInfo:
        row = self._rows[name]
        if type(row) is not TensorInfo:
            # Replacing a value never resizes the dict, so iterators stay valid.
            row = self._rows[name] = TensorInfo(
                name, DTYPES[row.dtype], row.shape, *row.data_offsets
            )
        return row  # type: ignore[no-any-return]

    def __iter__(self) -> Iterator[str]:
        return iter(self._rows)

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, name: object) -> bool:
        return name in self._rows

    def __repr__(self) -> str:
        return f"TensorTable({dict(self)!r})"

    def columns(self) -> TensorColumns:
        """Every tensor's fields as parallel lists, in data-offset order.

        Built with ``map`` over the rows, without a :class:`TensorInfo` per
        tensor: listing 1.4 million tensors (``tensorfile inspect``) costs
        a few passes in C instead of a Python call each.
        """
        rows = list(self._rows.values())
        if TensorInfo in set(map(type, rows)):
            # Some rows were looked up already (or came from the strict path).
            rows = [self[name] for name in self._rows]
            offsets = list(map(_get_start_end, rows))
            dtypes = list(map(_get_dtype, rows))
        else:
            offsets = list(map(_get_offsets, rows))
            dtypes = list(map(DTYPES.__getitem__, map(_get_dtype, rows)))
        return TensorColumns(
            list(self._rows), dtypes, list(map(_get_shape, rows)),
            list(map(_first, offsets)), list(map(_second, offsets)),
        )


class TensorColumns(NamedTuple):
    """A header's tensors as parallel lists (see :meth:`TensorTable.columns`)."""

    names: list[str]
    dtypes: list[DType]
    shapes: list[tuple[int, ...]]
    starts: list[int]
    ends: list[int]


class Header(NamedTuple):
    """A validated header."""

    #: Tensors in data-offset order (the order they sit in the file).
    tensors: TensorTable
    metadata: dict[str, str] | None
    #: N, the header length in bytes (JSON plus padding).
    length: int

    @property
    def data_offset(self) -> int:
        """Absolute file offset of the data buffer."""
        return 8 + self.length


#: First bytes of files people mistake for safetensors, and what to do.
_CONVERT = "`tensorfile convert FILE` converts it to safetensors without running it"
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"PK\x03\x04", f"a zip archive (a PyTorch checkpoint from torch.save?): {_CONVERT}"),
    (b"\x80\x02", f"a pickle (an old-format PyTorch checkpoint?): {_CONVERT}"),
    (b"\x80\x03", f"a pickle checkpoint: {_CONVERT}"),
    (b"\x80\x04", f"a pickle checkpoint: {_CONVERT}"),
    (b"\x80\x05", f"a pickle checkpoint: {_CONVERT}"),
    (b"\x93NUMPY", "a numpy .npy array, not safetensors"),
    (b"GGUF", "a GGUF model (llama.cpp), not safetensors"),
    (b"\x89HDF", "an HDF5 file (Keras .h5?), not safetensors"),
    (b"{", "a JSON text file (a config?), not safetensors"),
    (b"version ", "a text file, perhaps a Git LFS pointer: the weights themselves were not "
                  "downloaded (`git lfs pull` fetches them)"),
)


def _other_format(prefix: bytes) -> str | None:
    """``not a safetensors file: it is ...`` when the first bytes name another format."""
    for magic, what in _MAGIC:
        if prefix.startswith(magic):
            return f"not a safetensors file: it is {what}"
    return None


def read_length(prefix: bytes, file_size: int) -> int:
    """Decode N from the first 8 bytes and check it against the file size."""
    if len(prefix) < 8 or file_size < 8:
        raise TruncatedFileError(
            f"file is {file_size} bytes: too short for the 8-byte header length"
        )
    (n,) = struct.unpack("<Q", prefix[:8])
    if n > MAX_HEADER_SIZE:
        raise HeaderTooLargeError(_other_format(prefix) or (
            f"header length at offset 0 is {n} bytes, over the {MAX_HEADER_SIZE}-byte limit"
        ))
    if 8 + n > file_size:
        raise TruncatedFileError(
            f"header length at offset 0 declares {n} bytes but only {file_size - 8} follow"
        )
    return int(n)


def _has_surrogates(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _parse_int(s: str) -> int | float:
    # serde_json reads "-0" as the float -0.0, so the reference refuses it as a
    # shape or offset; keeping it a float makes the same checks refuse it here.
    return -0.0 if s == "-0" else int(s)


def decode_json(raw: bytes) -> dict[str, Any]:
    """Header bytes (without the length prefix) to a dict, strictly.

    Strict UTF-8, standard JSON only (no NaN/Infinity), no duplicate keys, no
    lone surrogate escapes, and the top level must be an object.
    """
    # A Python call per integer is only worth it when a "-0" may be there.
    obj = loads_strict(
        raw, "header", InvalidHeaderError, duplicate=DuplicateKeyError, offset=8,
        parse_int=_parse_int if b"-0" in raw else None,
    )
    if not isinstance(obj, dict):
        raise InvalidHeaderError(f"header must be a JSON object, not {type(obj).__name__}")
    # Lone surrogates (\ud800) decode in Python but are not text; the reference
    # rejects them. Only scan when an escape that could produce one is present.
    if b"\\ud" in raw or b"\\uD" in raw:
        for k, v in obj.items():
            if _has_surrogates(k) or (
                k == METADATA_KEY
                and isinstance(v, dict)
                and any(_has_surrogates(a) or (isinstance(b, str) and _has_surrogates(b))
                        for a, b in v.items())
            ):
                raise InvalidHeaderError(f"header has a lone surrogate escape in {k!r}")
    return obj


def _is_uint(x: object) -> bool:
    return type(x) is int and 0 <= x <= _U64_MAX


def validate(
    obj: Mapping[str, Any], data_size: int, length: int = 0, *, unknown_fields_checked: bool = False
) -> Header:
    """Check a decoded header against the data buffer's real size.

    ``unknown_fields_checked``: the caller found, in the bytes, nothing that
    rules H4, H8 and H9 refuse in unknown fields, so they are not walked.
    """
    metadata: dict[str, str] | None = None
    infos: list[TensorInfo] = []
    append = infos.append
    for name, entry in obj.items():
        if name == METADATA_KEY:
            metadata = _validate_metadata(entry)
            continue
        if type(entry) is not dict:
            raise InvalidHeaderError(f"tensor {name!r}: entry must be an object")
        try:
            dtype_name = entry["dtype"]
            shape = entry["shape"]
            offsets = entry["data_offsets"]
        except KeyError as e:
            raise InvalidHeaderError(f"tensor {name!r}: missing field {e.args[0]!r}") from None
        if len(entry) > 3 and not unknown_fields_checked:
            _check_unknown_fields(name, entry)
        dtype = dtype_from_name(dtype_name) if type(dtype_name) is str else dtype_from_name(None)
        if type(shape) is not list or not all(_is_uint(d) for d in shape):
            raise InvalidShapeError(
                f"tensor {name!r}: shape must be a list of non-negative integers, got {shape!r:.80}"
            )
        if type(offsets) is not list or len(offsets) != 2 or not (
            _is_uint(offsets[0]) and _is_uint(offsets[1])
        ):
            raise InvalidOffsetsError(
                f"tensor {name!r}: data_offsets must be a pair of non-negative integers, "
                f"got {offsets!r:.80}"
            )
        append(TensorInfo(name, dtype, tuple(shape), offsets[0], offsets[1]))

    infos.sort(key=lambda t: (t.start, t.end))
    _check_layout(infos, data_size, length)
    return Header(TensorTable.of(infos), metadata, length)


def _check_layout(infos: Iterable[TensorInfo], data_size: int, length: int) -> None:
    """Rules T4-T7 and F1-F2 for tensors given in ``(start, end)`` order: they
    tile the data buffer exactly, each spanning what its shape needs."""
    pos = 0
    base = 8 + length
    for t in infos:
        if t.start != pos or t.end < t.start:
            what = "overlaps the previous tensor" if t.start < pos else "leaves a gap"
            if t.end < t.start:
                what = "ends before it begins"
            raise InvalidOffsetsError(
                f"tensor {t.name!r}: data_offsets [{t.start}, {t.end}] (file byte {base + t.start}) "
                f"{what}; expected it to begin at {pos}"
            )
        numel = 1
        for d in t.shape:
            numel *= d
        bits = numel * t.dtype.bits
        if bits > _U64_MAX:
            raise InvalidShapeError(f"tensor {t.name!r}: shape {list(t.shape)} overflows")
        if bits % 8:
            raise InvalidShapeError(
                f"tensor {t.name!r}: {numel} elements of {t.dtype.name} do not fill whole bytes"
            )
        if bits // 8 != t.end - t.start:
            raise InvalidOffsetsError(
                f"tensor {t.name!r}: shape {list(t.shape)} of {t.dtype.name} needs {bits // 8} bytes "
                f"but data_offsets [{t.start}, {t.end}] (file byte {base + t.start}) span "
                f"{t.end - t.start}"
            )
        pos = t.end
    if pos != data_size:
        if pos > data_size:
            raise TruncatedFileError(
                f"tensors need {pos} bytes of data but the file has {data_size} after the header"
            )
        raise InvalidOffsetsError(
            f"tensors cover {pos} bytes but the data buffer has {data_size}: "
            f"{data_size - pos} trailing bytes at file byte {base + pos}"
        )


def _check_unknown_fields(name: str, entry: dict[str, Any]) -> None:
    """Unknown fields are ignored, but only if the reference could parse them too.

    serde_json refuses, even in fields it skips, nesting of ``_MAX_DEPTH``
    levels, numbers that overflow a double, and lone surrogate escapes; a file
    that tensorfile accepted and the reference refused would let the two
    readers disagree about the same bytes.
    """
    todo: list[tuple[object, int, str]] = []
    for field, value in entry.items():
        if field not in _FIELDS:
            todo += [(field, 2, field), (value, 3, field)]
    while todo:
        value, level, field = todo.pop()
        problem = ""
        if isinstance(value, str):
            if _has_surrogates(value):
                problem = "a lone surrogate escape"
        elif isinstance(value, (int, float)):
            if not abs(value) < _MAX_NUMBER:
                problem = "a number out of range"
        elif isinstance(value, (dict, list)) and level >= _MAX_DEPTH:
            problem = f"JSON nested {_MAX_DEPTH} or more levels deep"
        elif isinstance(value, dict):
            todo += [(k, level, field) for k in value]
            todo += [(v, level + 1, field) for v in value.values()]
        elif isinstance(value, list):
            todo += [(v, level + 1, field) for v in value]
        if problem:
            raise InvalidHeaderError(f"tensor {name!r}: unknown field {field!r} holds {problem}")


def _validate_metadata(entry: object) -> dict[str, str] | None:
    if entry is None:
        return None
    if type(entry) is not dict:
        raise InvalidMetadataError("__metadata__ must be an object of strings")
    for k, v in entry.items():
        if type(v) is not str:
            raise InvalidMetadataError(
                f"__metadata__[{k!r}] must be a string, got {type(v).__name__}"
            )
    return entry


# --------------------------------------------------------------------------
# Fast path: msgspec decodes and type-checks the common case in C, without
# building a dict per entry. It only ever *accepts*; anything it does not
# accept outright goes through decode_json + validate above, which decide
# and word the error. tests/format/test_header_paths.py checks that the two
# paths agree.
# --------------------------------------------------------------------------

try:
    import msgspec
except ImportError:  # pragma: no cover - msgspec is a dependency; stay correct without it
    msgspec = None  # type: ignore[assignment]

if msgspec is not None:
    _UInt = Annotated[int, msgspec.Meta(ge=0)]

    class _FastEntry(msgspec.Struct, gc=False):
        # A Literal decodes to one shared string per dtype name, and refuses
        # unknown names in C.
        dtype: Literal[tuple(DTYPES)] | None = None  # type: ignore[valid-type]
        shape: tuple[_UInt, ...] | None = None
        data_offsets: tuple[_UInt, _UInt] | None = None

    class _FastMeta(msgspec.Struct):
        meta: dict[str, str] | None = msgspec.field(default=None, name=METADATA_KEY)

    _ENTRIES = msgspec.json.Decoder(dict[str, _FastEntry])
    _META = msgspec.json.Decoder(_FastMeta)
    # The keys of every entry (and of the metadata), values left unparsed.
    _ENTRY_KEYS = msgspec.json.Decoder(dict[str, dict[str, msgspec.Raw] | None])

# Digits to "0", "e" and "E" to "e", the rest to " ": outside strings an "e"
# then digits is an exponent (or true/false before a number: strict path).
_DIGITS = bytes(0x30 if 0x30 <= b <= 0x39 else 0x65 if b in b"eE" else 0x20 for b in range(256))
_BRACKET_STEP = np.zeros(256, np.int8)
_BRACKET_STEP[list(b"[{")] = 1
_BRACKET_STEP[list(b"]}")] = -1
_CHUNK = 1 << 22

_BITS = {name: dt.bits for name, dt in DTYPES.items()}


def _fast_validate(raw: bytes, data_size: int, length: int) -> Header | None:
    """The validated header, or None to let the strict path decide.

    The checks run column by column (``map`` over whole lists, compared as
    lists) rather than entry by entry: a 10,000-tensor header validates in a
    few milliseconds, less than the reference takes. A header whose tensors
    are all well-formed but do not tile the data buffer raises here, with the
    strict path's error, rather than being decoded a second time.
    """
    # (A one-byte search is a memchr; the two-byte one runs only if it hits.)
    if msgspec is None or (b"-" in raw and b"-0" in raw):
        # "-0" is a float to the reference, an int to msgspec.
        return None
    try:
        entries = _ENTRIES.decode(raw)
        has_meta = entries.pop(METADATA_KEY, None) is not None
        metadata = _META.decode(raw).meta if has_meta else None
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError, RecursionError):
        return None
    names = list(entries)
    values = list(entries.values())
    try:
        # A missing field is None, which fails the lookup, the unpacking or
        # prod() with KeyError or TypeError: strict path.
        dtype_names: list[str] = list(map(_get_dtype, values))
        bits = list(map(_BITS.__getitem__, dtype_names))
        # [start0, end0, start1, end1, ...]
        offsets = list(chain.from_iterable(map(_get_offsets, values)))
        shapes = list(map(_get_shape, values))
        numels = list(map(prod, shapes))
    except (KeyError, TypeError):
        return None
    order: list[int] | None = None
    tiled = _contiguous(offsets, data_size)
    if not tiled:
        order = sorted(range(len(names)), key=list(zip(offsets[::2], offsets[1::2], strict=True)).__getitem__)
        tiled = _contiguous([x for i in order for x in offsets[2 * i : 2 * i + 2]], data_size)
    # numel * bits == 8 * (end - start) also proves whole bytes, end >= start
    # and no u64 overflow (the span is within the file).
    tiled = tiled and list(map(mul, numels, bits)) == list(
        map(mul, map(sub, offsets[1::2], offsets[::2]), repeat(8))
    )
    # msgspec bounds integers below only; the strict path refuses a
    # dimension or offset over 2**64 - 1 before it looks at the layout.
    if (not tiled or 0 in numels) and (
        max(offsets, default=0) > _U64_MAX or any(d > _U64_MAX for s in shapes for d in s)
    ):
        return None
    if not _same_pairs(raw, names, metadata):
        return None
    if not tiled:
        # Every entry passed the strict path's per-entry rules, so its error
        # is the first layout rule broken in offset order.
        in_order = range(len(names)) if order is None else order
        _check_layout(
            (TensorInfo(names[i], DTYPES[dtype_names[i]], shapes[i], offsets[2 * i], offsets[2 * i + 1])
             for i in in_order),
            data_size, length,
        )
        return None  # pragma: no cover - _check_layout raised
    if order is not None:
        entries = {names[i]: values[i] for i in order}
    return Header(TensorTable(entries), metadata, length)


def _same_pairs(raw: bytes, names: list[str], metadata: dict[str, str] | None) -> bool:
    """Whether ``raw`` holds no duplicate key and no unknown field the strict
    path would refuse, given that msgspec decoded its tensors and metadata.

    Duplicate keys vanish in decoding. Every colon outside a string separates
    one key from its value, so the text must have exactly as many as the
    decoded document has pairs (plus colons inside decoded strings).
    """
    pairs = len(names) * 4 + (metadata is not None)
    if b"\\u003" not in raw:  # \u003a is an escaped colon, which this count cannot see
        colons = "".join(names).count(":")
        if metadata is not None:
            pairs += len(metadata)
            colons += sum(k.count(":") + v.count(":") for k, v in metadata.items())
        if raw.count(b":") == pairs + colons:
            return True
    return _plain_extras(raw)


def _plain_extras(raw: bytes) -> bool:
    """The colon count of :func:`_same_pairs` made exact, with unknown fields.

    Decided over the bytes, in C and numpy, without an object per JSON value:
    a legal 99 MB header of ignored empty lists or objects costs a few passes
    over its bytes, where decoding it would build 33 million containers. Only
    the common case is accepted here (unknown fields of lists, empty objects,
    strings, plain numbers and literals); anything else, such as keys inside
    an unknown field, goes to the strict path.
    """
    try:
        top = _ENTRY_KEYS.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return False
    pairs = len(top) + sum(len(v) for v in top.values() if v is not None)
    # H1: msgspec does not check the UTF-8 of strings it skips.
    if not raw.isascii():
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            return False
    outside = _outside_strings_if_harmless(raw)
    # H7: one colon per decoded pair, so no duplicate and no key inside an
    # unknown field.
    return outside is not None and outside.count(b":") == pairs


def _outside_strings_if_harmless(raw: bytes) -> bytes | None:
    """The bytes of valid JSON ``raw`` outside its strings, or None if
    anywhere in it rule H4 (a surrogate escape: the strict path pairs them),
    H8 (nesting) or H9 (numbers of 10**308 and more) might apply.
    """
    # With each escaped backslash, then each escaped quote, blanked out (same
    # length: only string contents change), every quote left opens or closes
    # a string.
    text = raw.replace(b"\\\\", b"  ").replace(b'\\"', b"  ") if b"\\" in raw else raw
    if b"\\ud" in text or b"\\uD" in text:
        return None
    # (In place where it can be: the peak stays a few times the header.)
    a = np.frombuffer(text, np.uint8)
    keep = a == 0x22
    # Parity of the quotes so far (uint8 wraps, its low bit does not).
    inside = np.cumsum(keep, dtype=np.uint8)
    inside &= 1
    keep |= inside.view(np.bool_)
    del inside
    np.logical_not(keep, out=keep)
    kept = a[keep]
    del keep, a, text
    # H8: the depth of brackets (the header object is level 1) stays below
    # 128. Summed in int8 it wraps there, so the first refused level shows
    # as a negative sum (true depths never are).
    depth = 0
    for i in range(0, len(kept), _CHUNK):
        run = np.cumsum(_BRACKET_STEP[kept[i : i + _CHUNK]], dtype=np.int8)
        run += depth
        if run.min() < 0:
            return None
        depth = int(run[-1])
    outside: bytes = kept.tobytes()
    del kept
    # H9: a number can reach 10**308 only with a run of 200 digits or an
    # exponent of three digits (signs and points read as spaces here).
    digits = outside.translate(_DIGITS)
    if b"0" * 200 in digits or b"e000" in digits or b"e 000" in digits:
        return None
    return outside


def _contiguous(offsets: Sequence[int], data_size: int) -> bool:
    """Whether ``[start0, end0, start1, end1, ...]`` tile ``[0, data_size)``
    in this order, each span ending where the next begins."""
    if not offsets:
        return data_size == 0
    return offsets[0] == 0 and offsets[-1] == data_size and offsets[1:-1:2] == offsets[2::2]


def parse_json(raw: bytes, data_size: int, length: int) -> Header:
    """Decode and validate header JSON (``raw``, without the length prefix)."""
    fast = _fast_validate(raw, data_size, length)
    if fast is not None:
        return fast
    obj = decode_json(raw)
    # Walking every value of the unknown fields costs a Python call each; a
    # scan of the bytes that finds nothing those rules refuse makes it moot.
    harmless = _outside_strings_if_harmless(raw) is not None
    return validate(obj, data_size, length, unknown_fields_checked=harmless)


def parse(buf: bytes | bytearray | memoryview, file_size: int | None = None) -> Header:
    """Parse and validate a header from the start of a file's bytes.

    ``buf`` must hold at least the first ``8 + N`` bytes; ``file_size`` is the
    whole file's size (default: ``len(buf)``).
    """
    size = len(buf) if file_size is None else file_size
    n = read_length(bytes(buf[:8]), size)
    if len(buf) < 8 + n:
        raise TruncatedFileError(f"header needs {8 + n} bytes, {len(buf)} given")
    return parse_json(bytes(buf[8 : 8 + n]), size - 8 - n, n)


# --------------------------------------------------------------------------
# Writing: the canonical form (identical to the reference writer's output)
# --------------------------------------------------------------------------


class Entry(NamedTuple):
    """What the writer needs to know about one tensor before its bytes."""

    name: str
    dtype: DType
    shape: tuple[int, ...]


#: JSON string literal of a str, escaped as ``json.dumps(s, ensure_ascii=False)`` does (in C).
_json_str: Callable[[str], str] = encode_basestring
_INT = frozenset({int})


def canonical_order(entries: Iterable[Entry]) -> list[Entry]:
    """Widest dtype first (reference enum rank, descending), then by name."""
    return sorted(entries, key=lambda e: (-e.dtype.rank, e.name))


def encode(
    entries: Iterable[Entry], metadata: Mapping[str, str] | None = None
) -> tuple[bytes, list[TensorInfo]]:
    """Build the header for ``entries`` in canonical order.

    Returns the 8-byte length prefix plus padded JSON, and the tensors with
    their offsets in the order their bytes must follow.
    """
    ordered = canonical_order(entries)
    # The JSON text is assembled here rather than by json.dumps of a dict (a
    # third of a small file's save went to the encoder's set-up): strings
    # are escaped by the function json.dumps(ensure_ascii=False) uses, so the
    # bytes are the same (tests/format/test_interop.py checks them against
    # the reference's, test_writer.py against json.dumps).
    parts: list[str] = []
    if metadata is not None:
        if not isinstance(metadata, Mapping):
            raise MetadataTypeError(
                f"metadata must be a dict of str to str, got {type(metadata).__name__}"
            )
        meta = dict(metadata)
        for k, v in meta.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise MetadataTypeError(
                    f"metadata must map str to str, got {k!r}: {type(v).__name__}"
                )
        # The reference serializes a hash map, so its key order is random; sorted
        # keys make tensorfile's output deterministic (same bytes, same digest).
        pairs = ",".join(f"{_json_str(k)}:{_json_str(v)}" for k, v in sorted(meta.items()))
        parts.append(f'"{METADATA_KEY}":{{{pairs}}}')
    infos: list[TensorInfo] = []
    seen: set[str] = set()
    pos = 0
    for e in ordered:
        if not isinstance(e.name, str):
            raise SerializationError(f"tensor names must be str, got {e.name!r}")
        if e.name == METADATA_KEY:
            raise SerializationError(f"{METADATA_KEY!r} is reserved and cannot name a tensor")
        if e.name in seen:
            raise SerializationError(f"tensor {e.name!r} given twice")
        seen.add(e.name)
        numel = math.prod(e.shape)
        if (numel * e.dtype.bits) % 8:
            raise SerializationError(
                f"tensor {e.name!r}: {numel} elements of {e.dtype.name} do not fill whole bytes"
            )
        nbytes = e.dtype.nbytes(numel)
        # (Dimensions of any other type are spelled, or refused, by json.)
        dims = (",".join(map(str, e.shape)) if set(map(type, e.shape)) <= _INT
                else json.dumps(list(e.shape), separators=(",", ":"))[1:-1])
        parts.append(f'{_json_str(e.name)}:{{"dtype":"{e.dtype.name}","shape":[{dims}],'
                     f'"data_offsets":[{pos},{pos + nbytes}]}}')
        infos.append(TensorInfo(e.name, e.dtype, tuple(e.shape), pos, pos + nbytes))
        pos += nbytes
    try:
        text = ("{" + ",".join(parts) + "}").encode("utf-8")
    except UnicodeEncodeError as err:
        raise SerializationError(f"a tensor name or metadata string is not valid text: {err}") from None
    text += b" " * (-len(text) % 8)
    if len(text) > MAX_HEADER_SIZE:
        raise SerializationError(
            f"header would be {len(text)} bytes, over the {MAX_HEADER_SIZE}-byte limit"
        )
    return struct.pack("<Q", len(text)) + text, infos
