"""``joblib.load`` as joblib 1.x reads a file: decompression, then its pickle and array bytes.

``joblib.load`` looks at the first bytes (``numpy_pickle_utils._detect_compressor``):
``ZF`` is joblib < 0.10's format (a hex length, then zlib data), then in its
registry's order ``x`` zlib, ``\\x1f\\x8b`` gzip, ``BZ`` bz2, ``]\\x00`` lzma
("alone"), ``\\xfd7zXZ`` xz, ``\\x04\\x22\\x4d\\x18`` LZ4; anything else is read as
it is. The (decompressed) data is unpickled by ``NumpyUnpickler``, a
``pickle._Unpickler`` (the pure-Python reader) whose BUILD, when the object
built is a ``joblib.numpy_pickle.NumpyArrayWrapper``, reads the array from the
bytes that follow: a padding-length byte and padding (when the wrapper has
``numpy_array_alignment_bytes``), then ``prod(shape) * itemsize`` raw bytes, or
for an object dtype a whole nested pickle (read by a fresh ``pickle._Unpickler``).

:func:`decompress` inflates within a budget (a bomb is a
:class:`~tensorfile.errors.ScanLimitError`), and :func:`array_skip` is the
hook :func:`~.machine.run_stream` calls after each BUILD to step over the
array bytes exactly as ``NumpyArrayWrapper.read_array`` consumes them, refusing
what joblib would read differently (array bytes inside a FRAME, a shape whose
array does not fit in the data: ``np.empty`` allocates it before reading).
"""

from __future__ import annotations

import bz2
import lzma
import zlib
from typing import Final, Protocol

from tensorfile._picklevm.machine import JOBLIB_WRAPPER, Call, GlobalRef, PDict, StreamResult
from tensorfile._picklevm.opcodes import Buffer, OpcodeReader
from tensorfile.errors import MalformedPickleError, ScanLimitError, UnsupportedContainerError

#: The class joblib writes in place of every numpy array.
WRAPPER: Final = JOBLIB_WRAPPER
#: The wrapper's attributes (``numpy_array_alignment_bytes`` since joblib 1.2).
WRAPPER_FIELDS: Final = frozenset({"subclass", "shape", "order", "dtype", "allow_mmap",
                                   "numpy_array_alignment_bytes"})

#: joblib's ``_ZFILE_PREFIX`` and the width of the hex length after it (``len(hex(2**64))``).
_ZF: Final = b"ZF"
_ZF_LEN: Final = 19
#: joblib's compressor registry, in its order (first match wins).
COMPRESSIONS: Final = (
    (b"x", "zlib"), (b"\x1f\x8b", "gzip"), (b"BZ", "bz2"), (b"]\x00", "lzma"),
    (b"\xfd7zXZ", "xz"), (b"\x04\x22\x4d\x18", "lz4"),
)


def joblib_compression(head: bytes) -> str | None:
    """The compression ``joblib.load`` detects from a file's first bytes (None: plain)."""
    if head.startswith(_ZF):
        return "zf"
    for prefix, name in COMPRESSIONS:
        if head.startswith(prefix):
            return name
    return None


def decompress(buf: Buffer, start: int, end: int, kind: str, limit: int) -> bytes:
    """The bytes ``joblib.load`` unpickles from ``buf[start:end]`` compressed with ``kind``.

    Raises :class:`ScanLimitError` past ``limit`` bytes (a bomb: joblib would
    inflate it all), :class:`UnsupportedContainerError` when the data is
    corrupt or has trailing bytes joblib's reader does not handle (with what
    was decompressed before the fault in ``partial``).
    """
    data = bytes(buf[start:end])
    if kind == "zf":
        # read_zfile: hex length, an optional space (joblib <= 0.8.4), zlib data.
        head = data[2:2 + _ZF_LEN]
        try:
            int(head, 16)
        except ValueError:
            raise UnsupportedContainerError(
                "joblib ZF file: its length field is not hexadecimal") from None
        data = data[2 + _ZF_LEN + (data[2 + _ZF_LEN:3 + _ZF_LEN] == b" "):]
        return _inflate(data, zlib.decompressobj(15), limit, "ZF/zlib", single=True)
    if kind in ("zlib", "gzip"):
        # joblib's BinaryZlibFile: one stream; bytes after it make its reader spin
        # forever (it feeds unused_data back to the finished decompressor).
        wbits = 15 if kind == "zlib" else 31
        return _inflate(data, zlib.decompressobj(wbits), limit, kind, single=True)
    out = bytearray()
    while data:  # bz2.BZ2File, lzma.LZMAFile, LZ4FrameFile: streams back to back
        d: _Decompressor
        if kind == "bz2":
            d = bz2.BZ2Decompressor()
        elif kind == "lz4":
            d = _lz4()
        else:
            d = lzma.LZMADecompressor(lzma.FORMAT_AUTO)
        try:
            out += _inflate(data, d, limit - len(out), kind, single=False)
        except _Corrupt as exc:
            if out and not exc.partial:  # the library readers end quietly at trailing garbage
                break
            raise _Corrupt(str(exc), bytes(out) + exc.partial) from None
        data = d.unused_data
    return bytes(out)


class _Decompressor(Protocol):
    """What the stdlib decompressors have in common (for typing)."""

    @property
    def unused_data(self) -> bytes: ...

    @property
    def eof(self) -> bool: ...

    def decompress(self, data: bytes, max_length: int = -1, /) -> bytes: ...


def _lz4() -> _Decompressor:
    try:
        import lz4.frame  # type: ignore[import-not-found,import-untyped,unused-ignore]
    except ImportError:
        raise UnsupportedContainerError(
            "LZ4-compressed joblib file: the lz4 package is not installed, so it is "
            "not read (joblib reads it where lz4 is installed)") from None
    d: _Decompressor = lz4.frame.LZ4FrameDecompressor()
    return d


def _inflate(data: bytes, d: object, limit: int, kind: str, *, single: bool) -> bytes:
    dec: _Decompressor = d  # type: ignore[assignment]
    out = bytearray()
    pos = 0
    try:
        while pos < len(data) and not dec.eof:
            chunk = data[pos:pos + (1 << 20)]
            pos += len(chunk)
            out += dec.decompress(chunk, limit + 1 - len(out))
            if len(out) > limit:
                raise ScanLimitError(f"{kind} data decompresses past {limit} bytes "
                                     "(a compression bomb: joblib.load would inflate it all)")
            while not dec.eof and _more(dec) and len(out) <= limit:
                out += dec.decompress(b"", limit + 1 - len(out))
                if len(out) > limit:
                    raise ScanLimitError(f"{kind} data decompresses past {limit} bytes "
                                         "(a compression bomb: joblib.load would inflate it all)")
    except ScanLimitError:
        raise
    except Exception as exc:  # zlib.error, OSError, EOFError, LZMAError, RuntimeError
        raise _Corrupt(f"{kind} data is corrupt ({type(exc).__name__})", bytes(out)) from None
    if not dec.eof:
        raise _Corrupt(f"{kind} data ends before its end-of-stream marker", bytes(out))
    if single and dec.unused_data:
        raise _Corrupt(f"{len(dec.unused_data)} bytes after the {kind} stream (joblib's "
                       "reader never finishes on them)", bytes(out))
    return bytes(out)


def _more(dec: _Decompressor) -> bool:
    """Whether a decompressor holds input it has not turned into output yet."""
    if hasattr(dec, "unconsumed_tail"):
        return bool(dec.unconsumed_tail)
    return not getattr(dec, "needs_input", True)


class _Corrupt(UnsupportedContainerError):
    """Corrupt compressed data; ``partial`` holds what came out before the fault."""

    def __init__(self, message: str, partial: bytes) -> None:
        super().__init__(message)
        self.partial = partial


def is_wrapper(value: object) -> bool:
    """True for a ``NumpyArrayWrapper`` instance as joblib writes it (NEWOBJ, no arguments)."""
    if not isinstance(value, Call):
        return False
    func = value.func
    return (isinstance(func, GlobalRef) and func.qualname == WRAPPER and func.literal
            and value.opcode == "NEWOBJ")


def wrapper_state(value: Call) -> dict[str, object] | None:
    """The wrapper's attributes (its last BUILD state, a dict of str keys), or None."""
    builds = [e for e in value.effects if e.opcode == "BUILD"]
    if not builds or not isinstance(builds[-1].payload[0], PDict):
        return None
    state: dict[str, object] = {}
    for k, v in builds[-1].payload[0].items:
        if not isinstance(k, str):
            return None
        state[k] = v
    return state


def dtype_of(value: object) -> tuple[int, bool] | None:
    """(itemsize, has objects) of a ``numpy.dtype(str, ...)`` call with plain BUILD state.

    Structured dtypes (fields in the state) give None: the scanner does not
    compute their layout, so their arrays are not read.
    """
    if not (isinstance(value, Call) and isinstance(value.func, GlobalRef)
            and value.func.qualname == "numpy.dtype" and isinstance(value.args, tuple)
            and value.args and isinstance(value.args[0], str) and len(value.args[0]) <= 64):
        return None
    for eff in value.effects:
        state = eff.payload[0] if eff.payload else None
        if eff.opcode != "BUILD" or not (isinstance(state, tuple) and len(state) >= 5
                                         and state[2] is None and state[3] is None):
            return None  # names/fields set: a structured dtype
    import numpy

    try:
        dt = numpy.dtype(value.args[0])
    except Exception:  # numpy refuses it: joblib fails there too
        return None
    if dt.fields is not None or dt.subdtype is not None:
        return None
    return dt.itemsize, dt.hasobject


def array_skip(target: object, reader: OpcodeReader, run_nested: object) -> None:
    """After a BUILD: step ``reader`` over the array bytes ``NumpyUnpickler`` would read.

    ``run_nested(start)`` runs the nested pickle of an object array and returns
    its :class:`~.machine.StreamResult`. Raises :class:`MalformedPickleError`
    where joblib would fail or read other bytes than the C unpickler's frame
    layout suggests.
    """
    if not is_wrapper(target):
        return
    assert isinstance(target, Call)
    at = reader.pos
    state = wrapper_state(target)
    if state is None:
        raise MalformedPickleError("joblib array wrapper without a plain state dict", at)
    if at < reader.frame_end:
        # NumpyUnpickler reads the array from the file, after the whole frame:
        # other bytes than a flat reading (joblib.dump always ends the frame here).
        raise MalformedPickleError(
            "joblib array data starts inside a FRAME: joblib reads it from after the frame", at)
    shape = state.get("shape")
    if not (isinstance(shape, tuple) and len(shape) <= 64
            and all(type(n) is int and n >= 0 for n in shape)):
        raise MalformedPickleError("joblib array shape is not a tuple of sizes", at)
    dt = dtype_of(state.get("dtype"))
    if dt is None:
        raise MalformedPickleError(
            "joblib array dtype is not a plain numpy dtype the scanner reads", at)
    itemsize, has_objects = dt
    if has_objects:
        result: StreamResult = run_nested(at)  # type: ignore[operator]
        if result.error is not None:
            raise result.error
        reader.pos = result.end
        return
    pos = at
    if state.get("numpy_array_alignment_bytes") is not None:
        if pos >= reader.end:
            raise MalformedPickleError("joblib array padding byte is missing", pos)
        pos += 1 + reader.buf[pos]
    count = 1
    for n in shape:
        count *= n
    nbytes = count * itemsize
    if nbytes > reader.end - pos:
        # np.empty(count) runs before the data is read: the allocation is the bomb.
        raise MalformedPickleError(
            f"joblib array of shape {shape} needs {nbytes} bytes but "
            f"{max(0, reader.end - pos)} remain (numpy allocates it before reading)", at)
    reader.pos = pos + nbytes
