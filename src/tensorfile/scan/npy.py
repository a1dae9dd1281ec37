"""A bounded reader of ``.npy`` headers, as ``numpy.lib.format`` reads them.

numpy reads the header (a Python literal dict) with ``ast.literal_eval``, and
``numpy.load(allow_pickle=True)`` lifts its own 10,000-character limit: a
header of a few megabytes then costs gigabytes and seconds. The scanner never
hands an attacker's header to ``literal_eval``: a header over numpy's limit is
an ``error`` (a resource bound: numpy refuses it without ``allow_pickle``, and
with it the parse is the bomb), and a header within it is read by the small
parser below, which accepts the literals numpy writes (dicts, tuples, lists,
plain quoted strings, decimal ints with Python 2's ``L``, ``True``/``False``/
``None``) and refuses anything else (an ``error``, never ``safe``). The dtype
then comes from numpy's own ``descr_to_dtype``, as ``_read_array_header``
builds it.
"""

from __future__ import annotations

import struct
from typing import Final, NamedTuple

from tensorfile._io.sources import unpack_from
from tensorfile._picklevm.opcodes import Buffer
from tensorfile.errors import ScanLimitError, UnsupportedContainerError

#: numpy's ``_MAX_HEADER_SIZE`` (characters of the decoded header).
MAX_NPY_HEADER: Final = 10_000
_MAX_DEPTH: Final = 32
_VERSIONS: Final = {(1, 0): ("<H", "latin1"), (2, 0): ("<I", "latin1"), (3, 0): ("<I", "utf8")}
_KEYS: Final = frozenset({"descr", "fortran_order", "shape"})
#: ASCII digits only: ``str.isdigit`` also accepts "²" and "٣", which ``int`` refuses
#: (and ``literal_eval`` too).
_DIGITS: Final = frozenset("0123456789")


class NpyHeader(NamedTuple):
    """What numpy learns from the header: where the data starts, shape, order, dtype."""

    data: int
    shape: tuple[int, ...]
    fortran_order: bool
    itemsize: int
    has_objects: bool


def read_npy_header(buf: Buffer, start: int, end: int) -> NpyHeader:
    """Read the header at ``buf[start:end]`` (starting ``\\x93NUMPY``) with bounded work.

    Raises :class:`ScanLimitError` for a header over :data:`MAX_NPY_HEADER`
    and :class:`UnsupportedContainerError` for one numpy would refuse or the
    parser does not read.
    """
    if end - start < 10 or bytes(buf[start:start + 6]) != b"\x93NUMPY":
        raise UnsupportedContainerError("npy magic string is missing")
    version = (buf[start + 6], buf[start + 7])
    info = _VERSIONS.get(version)
    if info is None:
        raise UnsupportedContainerError(f"npy format version {version} is not one numpy reads")
    fmt, encoding = info
    size = struct.calcsize(fmt)
    if start + 8 + size > end:
        raise UnsupportedContainerError("npy header length is truncated")
    (length,) = unpack_from(fmt, buf, start + 8)
    pos = start + 8 + size
    if length > 4 * MAX_NPY_HEADER:  # more characters than numpy's limit, however encoded
        raise ScanLimitError(_too_long(length))
    if pos + length > end:
        raise UnsupportedContainerError("npy header runs past the end of the data")
    try:
        text = bytes(buf[pos:pos + length]).decode(encoding)
    except UnicodeDecodeError:
        raise UnsupportedContainerError("npy header is not text in its encoding") from None
    if len(text) > MAX_NPY_HEADER:
        raise ScanLimitError(_too_long(len(text)))
    if "\0" in text:  # literal_eval refuses source with NUL bytes
        raise UnsupportedContainerError("npy header holds a NUL character")
    value = _Parser(text, py2_longs=version <= (2, 0)).parse()
    if not isinstance(value, dict) or set(value) != _KEYS:
        raise UnsupportedContainerError("npy header is not a dict of descr, fortran_order, shape")
    shape, fortran = value["shape"], value["fortran_order"]
    if not (isinstance(shape, tuple) and all(isinstance(n, int) for n in shape)):
        raise UnsupportedContainerError("npy header's shape is not a tuple of ints")
    if not isinstance(fortran, bool):
        raise UnsupportedContainerError("npy header's fortran_order is not a bool")
    try:
        from numpy.lib import _format_impl as npformat  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.lib import format as npformat  # type: ignore[no-redef]
    try:
        dtype = npformat.descr_to_dtype(value["descr"])
    except Exception as exc:  # numpy refuses it: it unpickles nothing
        raise UnsupportedContainerError(
            f"npy header's descr is not a dtype numpy accepts ({type(exc).__name__})") from None
    return NpyHeader(pos + length, tuple(shape), fortran, dtype.itemsize, bool(dtype.hasobject))


def _too_long(n: int) -> str:
    return (f"npy header of {n} characters is over numpy's limit of {MAX_NPY_HEADER} "
            "(numpy.load(allow_pickle=True) parses it anyway with ast.literal_eval, which "
            "takes gigabytes on a few megabytes): not read")


class _Parser:
    """Recursive descent over the literal subset numpy writes; depth and input bounded."""

    def __init__(self, text: str, *, py2_longs: bool) -> None:
        self.s = text
        self.i = 0
        self.py2_longs = py2_longs

    def fail(self, why: str) -> UnsupportedContainerError:
        return UnsupportedContainerError(
            f"npy header is not a literal the scanner reads: {why} at character {self.i}")

    def ws(self) -> None:
        s, i = self.s, self.i
        while i < len(s) and s[i] in " \t\r\n\f\v":
            i += 1
        self.i = i

    def parse(self) -> object:
        value = self.value(0)
        self.ws()
        if self.i != len(self.s):
            raise self.fail("text after the literal")
        return value

    def value(self, depth: int) -> object:
        if depth > _MAX_DEPTH:
            raise self.fail("nested too deep")
        self.ws()
        if self.i >= len(self.s):
            raise self.fail("end of header")
        c = self.s[self.i]
        if c == "{":
            items = self.seq("}", depth, pairs=True)
            return dict(items)  # type: ignore[arg-type]
        if c == "(":
            return self.tuple_(depth)
        if c == "[":
            return self.seq("]", depth)
        if c in "'\"":
            return self.string(c)
        if c in _DIGITS or c in "+-":
            return self.int_()
        for word, val in (("True", True), ("False", False), ("None", None)):
            if self.s.startswith(word, self.i):
                end = self.i + len(word)
                if end < len(self.s) and (self.s[end].isalnum() or self.s[end] == "_"):
                    break
                self.i = end
                return val
        raise self.fail(f"unexpected {c!r}")

    def seq(self, close: str, depth: int, *, pairs: bool = False) -> list[object]:
        self.i += 1
        out: list[object] = []
        while True:
            self.ws()
            if self.i < len(self.s) and self.s[self.i] == close:
                self.i += 1
                return out
            item = self.value(depth + 1)
            if pairs:
                self.ws()
                if not self.s.startswith(":", self.i):
                    raise self.fail("':' expected")
                self.i += 1
                item = (item, self.value(depth + 1))
                try:  # a tuple key may hold a list: literal_eval refuses it too
                    hash(item[0])
                except TypeError:
                    raise self.fail("unhashable dict key") from None
            out.append(item)
            self.ws()
            if self.s.startswith(",", self.i):
                self.i += 1
            elif not self.s.startswith(close, self.i):
                raise self.fail(f"',' or {close!r} expected")

    def tuple_(self, depth: int) -> tuple[object, ...]:
        self.i += 1
        out: list[object] = []
        comma = False
        while True:
            self.ws()
            if self.s.startswith(")", self.i):
                self.i += 1
                if len(out) == 1 and not comma:
                    return out[0]  # type: ignore[return-value]  # (x) is x
                return tuple(out)
            out.append(self.value(depth + 1))
            self.ws()
            if self.s.startswith(",", self.i):
                self.i += 1
                comma = True
            elif not self.s.startswith(")", self.i):
                raise self.fail("',' or ')' expected")
            else:
                comma = comma or len(out) > 1

    def string(self, quote: str) -> str:
        end = self.s.find(quote, self.i + 1)
        if end < 0:
            raise self.fail("unterminated string")
        body = self.s[self.i + 1:end]
        if "\\" in body or "\n" in body:
            raise self.fail("escapes in a string")
        self.i = end + 1
        return body

    def int_(self) -> int:
        s, i = self.s, self.i
        sign = -1 if s[i] == "-" else 1
        if s[i] in "+-":
            i += 1
        j = i
        while j < len(s) and s[j] in _DIGITS:
            j += 1
        digits = s[i:j]
        if not digits or (len(digits) > 1 and digits[0] == "0") or len(digits) > 40:
            raise self.fail("not a decimal int")
        if self.py2_longs and j < len(s) and s[j] in "lL":
            j += 1  # numpy's _filter_header drops Python 2's long suffix
        if j < len(s) and (s[j].isalnum() or s[j] in "._"):
            raise self.fail("not a decimal int")
        self.i = j
        return sign * int(digits)
