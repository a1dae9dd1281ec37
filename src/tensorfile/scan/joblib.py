"""joblib's files: which compression ``joblib.load`` detects, and its decompression, bounded.

``joblib.load`` looks at the first bytes (``numpy_pickle_utils._detect_compressor``):
``ZF`` is joblib < 0.10's format (a hex length, then zlib data), then in its
registry's order ``x`` zlib, ``\\x1f\\x8b`` gzip, ``BZ`` bz2, ``]\\x00`` lzma
("alone"), ``\\xfd7zXZ`` xz, ``\\x04\\x22\\x4d\\x18`` LZ4; anything else is read as
it is. :func:`decompress` inflates within a budget (a bomb is a
:class:`~tensorfile.errors.ScanLimitError`) and gives the bytes joblib
unpickles. How joblib's ``NumpyUnpickler`` then reads them (its array
wrapper and the array bytes after it) is the pickle machine's part:
:mod:`tensorfile._picklevm._joblib`. The pickle containers
(:mod:`tensorfile.scan.pickle.containers`) call both.
"""

from __future__ import annotations

import bz2
import lzma
import zlib
from typing import Final, Protocol

from tensorfile._picklevm.opcodes import Buffer
from tensorfile.errors import ScanLimitError, UnsupportedContainerError

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
