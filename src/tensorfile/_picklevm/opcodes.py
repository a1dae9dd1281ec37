"""Read pickle opcodes the way CPython's C unpickler (``_pickle.c``) reads them.

This module only decodes bytes into :class:`Op` records; it never imports, looks
up or calls anything named in the pickle. :mod:`tensorfile._picklevm.machine`
gives the opcodes their meaning.

Why not :func:`pickletools.genops`: scanners built on it have been bypassed
where it and the real unpickler disagree, and it gives up on input the real
unpickler executes happily up to the point of failure. The rules kept here are
the C unpickler's, which ``torch.load`` and ``pickle.load`` use:

* ``FRAME n`` checks that ``n`` more bytes exist (``load_frame`` reads them
  and rewinds); a frame length past the end of the data (or above
  ``PY_SSIZE_T_MAX``) stops the stream there. Within a frame the stream is
  read flat, as ``pickle.loads`` reads it. But when the unpickler reads from a
  file (``torch.load``: a ``BytesIO`` of ``data.pkl``, the legacy file,
  ``numpy.load``), ``load_frame`` pulls the whole frame out of the file with
  one ``read(n)`` (for a ``BytesIO``, for a frame of 128 KiB or more, or one
  larger than what a buffered file happens to hold), and an opcode that
  needs more than the frame has left is read from *after* the frame: the
  frame's last bytes are skipped, and a following pickle starts at the frame's
  end, not after STOP. Which reading applies depends on the file object and
  its buffer, so a stream whose frames do not line up with its opcodes has
  two readings and is refused: the reader goes on flat (so a payload after it
  is still seen; :func:`frame_by_frame` gives the other reading, which the
  containers scan too) and keeps an :class:`AmbiguousPickleError` in ``ambiguity``,
  which :func:`~.machine.run_stream` returns as the stream's error: an opcode or
  text line that starts inside a frame and ends past it, a ``FRAME`` inside an
  unfinished frame, a frame that runs on past STOP. ``pickle``'s writers never
  produce any of these (a frame ends at an opcode boundary, the last at STOP).
* Text arguments (protocol 0) end at the next ``\\n``; a missing newline ends
  the stream. ``GLOBAL``/``INST`` names are UTF-8, ``PERSID`` is ASCII. A
  line is looked for within :data:`MAX_LINE` bytes only (a longer one is a
  :class:`~tensorfile.errors.ScanLimitError`): a 3 GiB line in a sparse file
  must not cost 3 GiB.
* The pure-Python unpickler (``pickle._Unpickler``, which ``joblib.load``
  uses) reads on where the C one stops, and the reader reads the union: a
  ``FRAME`` longer than the data left is the rest of the data (``file.read``
  returns what there is; C stops), and a text line at the very end of the
  data without its newline is read without its last byte (``readline()[:-1]``;
  C stops). Either is kept in ``ambiguity`` (the loaders disagree), the
  stream is read on, and what it imports or calls there is reported.
* Every declared length is compared with the bytes that remain *before*
  anything is sliced, so a hostile 2**63 length costs nothing.
* Numbers the C code would reject are kept as :class:`Opaque` rather than
  ending the stream early: reading on further than the real unpickler can only
  make the scan report more, never less.

Large arguments are not copied: bytes longer than :data:`SMALL_BYTES` come
back as a :class:`BytesRef` window over the caller's buffer, and text longer
than the reader's ``max_text`` as a :class:`BigText` window (it cannot name a
module anyone would import, and decoding it would cost memory).
"""

from __future__ import annotations

import codecs
import mmap
import re
import struct
from collections.abc import Iterator
from typing import Final, NamedTuple, TypeAlias

from tensorfile._io.sources import Image, unpack_from
from tensorfile._records import FrozenRecord
from tensorfile.errors import MalformedPickleError, ScanLimitError

#: Buffers the reader accepts: anything with ``find`` and slicing (not memoryview);
#: an :class:`~tensorfile._io.sources.Image` is a file copied in as it is read.
Buffer: TypeAlias = bytes | bytearray | mmap.mmap | Image

#: Byte strings up to this length are materialised as ``bytes``; longer ones are windows.
SMALL_BYTES: Final = 4096
#: Default cap on text arguments that are decoded (longer ones become BigText).
DEFAULT_MAX_TEXT: Final = 1 << 20
#: The highest protocol CPython 3.8+ understands; PROTO above it stops the stream.
HIGHEST_PROTOCOL: Final = 5
_SSIZE_MAX: Final = (1 << 63) - 1
#: Longest text line (protocol 0 argument) the reader looks for a newline in.
MAX_LINE: Final = 16 << 20


class AmbiguousPickleError(MalformedPickleError):
    """The stream's frames do not line up with its opcodes: loaders disagree on it.

    ``frame_end`` is set when a frame runs past STOP: where loaders that read
    frames whole start the next pickle.
    """

    def __init__(self, message: str, offset: int, frame_end: int | None = None) -> None:
        super().__init__(message, offset)
        self.frame_end = frame_end


class Opaque(FrozenRecord):
    """A value the scanner will not reconstruct (unparsable number, oversized text).

    It is never a literal string, so it can never name what STACK_GLOBAL imports.
    """

    __slots__ = ("why",)
    why: str

    def __init__(self, why: str) -> None:
        object.__setattr__(self, "why", why)


class BytesRef(FrozenRecord):
    """A zero-copy window ``buf[start:stop]`` holding a bytes argument."""

    __slots__ = ("buf", "start", "stop")
    buf: Buffer
    start: int
    stop: int

    def __init__(self, buf: Buffer, start: int, stop: int) -> None:
        object.__setattr__(self, "buf", buf)
        object.__setattr__(self, "start", start)
        object.__setattr__(self, "stop", stop)

    def __len__(self) -> int:
        return self.stop - self.start

    def tobytes(self) -> bytes:
        """Copy the window out (callers bound the size they accept first)."""
        return bytes(self.buf[self.start : self.stop])


class BigText(FrozenRecord):
    """Text longer than the reader's ``max_text``, left undecoded (UTF-8 in ``raw``).

    Never a literal string for STACK_GLOBAL; containers decode it only where
    torch would use it as data (``_codecs.encode(text, 'latin1')``).
    """

    __slots__ = ("raw",)
    raw: BytesRef

    def __init__(self, raw: BytesRef) -> None:
        object.__setattr__(self, "raw", raw)


class LegacyStr(str):
    """Text pushed by STRING/BINSTRING/SHORT_BINSTRING (Python 2 ``str``).

    torch never pushes module or attribute names this way for STACK_GLOBAL; the
    subclass keeps the provenance so the machine can treat such operands as
    unresolvable, as the shared notes require.
    """

    __slots__ = ()


class Op(NamedTuple):
    """One decoded opcode: its name, argument and byte offset in the buffer.

    A named tuple because millions are made per hostile stream.
    """

    name: str
    code: int
    offset: int
    arg: object = None


# name, argument kind.  Kinds: "" none, "u1" "u2" "u4" "i4" "u8" little-endian
# ints, "f8" big-endian double, "line" text line, "line2" two text lines,
# "b1" "b4s" "b4" "b8" length-prefixed bytes, "t1" "t4" "t8" length-prefixed
# UTF-8 text, "s1" "s4" length-prefixed py2 strings, "l1" "l4" two's-complement
# longs, "int" "long" "float" "put" "get" "string" "unicode" "persid" text forms.
_TABLE: Final[dict[int, tuple[str, str]]] = {
    ord("("): ("MARK", ""),
    ord("."): ("STOP", ""),
    ord("0"): ("POP", ""),
    ord("1"): ("POP_MARK", ""),
    ord("2"): ("DUP", ""),
    ord("F"): ("FLOAT", "float"),
    ord("I"): ("INT", "int"),
    ord("J"): ("BININT", "i4"),
    ord("K"): ("BININT1", "u1"),
    ord("L"): ("LONG", "long"),
    ord("M"): ("BININT2", "u2"),
    ord("N"): ("NONE", ""),
    ord("P"): ("PERSID", "persid"),
    ord("Q"): ("BINPERSID", ""),
    ord("R"): ("REDUCE", ""),
    ord("S"): ("STRING", "string"),
    ord("T"): ("BINSTRING", "s4"),
    ord("U"): ("SHORT_BINSTRING", "s1"),
    ord("V"): ("UNICODE", "unicode"),
    ord("X"): ("BINUNICODE", "t4"),
    ord("a"): ("APPEND", ""),
    ord("b"): ("BUILD", ""),
    ord("c"): ("GLOBAL", "line2"),
    ord("d"): ("DICT", ""),
    ord("}"): ("EMPTY_DICT", ""),
    ord("e"): ("APPENDS", ""),
    ord("g"): ("GET", "get"),
    ord("h"): ("BINGET", "u1"),
    ord("i"): ("INST", "line2"),
    ord("j"): ("LONG_BINGET", "u4"),
    ord("l"): ("LIST", ""),
    ord("]"): ("EMPTY_LIST", ""),
    ord("o"): ("OBJ", ""),
    ord("p"): ("PUT", "put"),
    ord("q"): ("BINPUT", "u1"),
    ord("r"): ("LONG_BINPUT", "u4"),
    ord("s"): ("SETITEM", ""),
    ord("t"): ("TUPLE", ""),
    ord(")"): ("EMPTY_TUPLE", ""),
    ord("u"): ("SETITEMS", ""),
    ord("G"): ("BINFLOAT", "f8"),
    0x80: ("PROTO", "u1"),
    0x81: ("NEWOBJ", ""),
    0x82: ("EXT1", "u1"),
    0x83: ("EXT2", "u2"),
    0x84: ("EXT4", "i4"),
    0x85: ("TUPLE1", ""),
    0x86: ("TUPLE2", ""),
    0x87: ("TUPLE3", ""),
    0x88: ("NEWTRUE", ""),
    0x89: ("NEWFALSE", ""),
    0x8A: ("LONG1", "l1"),
    0x8B: ("LONG4", "l4"),
    ord("B"): ("BINBYTES", "b4"),
    ord("C"): ("SHORT_BINBYTES", "b1"),
    0x8C: ("SHORT_BINUNICODE", "t1"),
    0x8D: ("BINUNICODE8", "t8"),
    0x8E: ("BINBYTES8", "b8"),
    0x8F: ("EMPTY_SET", ""),
    0x90: ("ADDITEMS", ""),
    0x91: ("FROZENSET", ""),
    0x92: ("NEWOBJ_EX", ""),
    0x93: ("STACK_GLOBAL", ""),
    0x94: ("MEMOIZE", ""),
    0x95: ("FRAME", "u8"),
    0x96: ("BYTEARRAY8", "b8"),
    0x97: ("NEXT_BUFFER", ""),
    0x98: ("READONLY_BUFFER", ""),
}

#: Opcode bytes a pickle can start with; used by containers to sniff content.
OPCODE_BYTES: Final = frozenset(_TABLE)

_COUNT_FORMATS: Final = {
    ("1", False): struct.Struct("<B"), ("1", True): struct.Struct("<B"),
    ("4", False): struct.Struct("<I"), ("4", True): struct.Struct("<i"),
    ("8", False): struct.Struct("<Q"), ("8", True): struct.Struct("<Q"),
}
_FIXED: Final = {"u1": ("<B", 1), "u2": ("<H", 2), "u4": ("<I", 4), "i4": ("<i", 4),
                 "u8": ("<Q", 8), "f8": (">d", 8)}


def looks_like_binary_pickle(head: bytes) -> bool:
    """True when ``head`` starts the way protocol 2+ pickles do (PROTO n, opcode)."""
    return (
        len(head) >= 3
        and head[0] == 0x80
        and head[1] <= HIGHEST_PROTOCOL
        and head[2] in OPCODE_BYTES
    )


class OpcodeReader:
    """Iterate the opcodes of one pickle stream in ``buf[start:end]``.

    Iteration stops after STOP (inclusive). Malformed input raises
    :class:`MalformedPickleError` at the first byte the C unpickler would also
    fail on; opcodes yielded before it stand. ``pos`` is the offset just past the
    last opcode read, so a caller can look for a following stream there.
    """

    def __init__(
        self, buf: Buffer, start: int = 0, end: int | None = None,
        *, max_text: int = DEFAULT_MAX_TEXT,
    ) -> None:
        self.buf = buf
        self.pos = start
        self.end = len(buf) if end is None else min(end, len(buf))
        self.max_text = max_text
        #: Where the current frame ends (at or before ``pos``: no frame is open).
        self.frame_end = start
        #: The first place where frames and opcodes do not line up (reading goes on).
        self.ambiguity: AmbiguousPickleError | None = None

    # -- low-level reads, each checked against the bytes that remain ---------
    def _need(self, n: int, what: str, at: int) -> int:
        if n < 0 or n > self.end - self.pos:
            raise MalformedPickleError(
                f"{what} needs {n} bytes but {self.end - self.pos} remain", at)
        start = self.pos
        self.pos += n
        return start

    def _line(self, at: int) -> bytes:
        nl = self.buf.find(b"\n", self.pos, min(self.end, self.pos + MAX_LINE))
        if nl < 0:
            if self.end - self.pos > MAX_LINE:
                raise ScanLimitError(
                    f"text argument at byte {at} has no newline within {MAX_LINE} bytes")
            if self.pos < self.frame_end:  # pickle._Unpickler refuses it in a frame too
                raise MalformedPickleError("text argument has no terminating newline", at)
            # pickle._Unpickler: readline() returns the rest, [:-1] drops its last byte.
            self._ambiguous(
                "text argument at the end of the data has no newline: the C unpickler stops, "
                "the pure-Python one (joblib.load) reads it without its last byte", at)
            line = bytes(self.buf[self.pos:max(self.pos, self.end - 1)])
            self.pos = self.end
            return line
        line = bytes(self.buf[self.pos : nl])
        self.pos = nl + 1
        return line

    def _text(self, start: int, n: int, at: int) -> str | BigText:
        if n > self.max_text:
            return BigText(BytesRef(self.buf, start, start + n))
        raw = bytes(self.buf[start : start + n])
        try:
            return raw.decode("utf-8", "surrogatepass")
        except UnicodeDecodeError as exc:
            raise MalformedPickleError(f"text is not UTF-8: {exc.reason}", at) from None

    def _bytes(self, start: int, n: int) -> bytes | BytesRef:
        if n <= SMALL_BYTES:
            return bytes(self.buf[start : start + n])
        return BytesRef(self.buf, start, start + n)

    # -- decoding -------------------------------------------------------------
    def __iter__(self) -> Iterator[Op]:
        buf, table, end = self.buf, _TABLE, self.end
        fend = self.frame_end  # a local: checked on every opcode
        while True:
            at = self.pos
            if at >= end:
                raise MalformedPickleError("pickle data ends before STOP", at)
            code = buf[at]
            entry = table.get(code)
            if entry is None:
                raise MalformedPickleError(f"invalid opcode byte 0x{code:02x}", at)
            self.pos = at + 1
            name, kind = entry
            if not kind:
                if code == 0x2E and at + 1 < fend:  # STOP
                    self._ambiguous(
                        f"the FRAME holding STOP runs {self.frame_end - at - 1} bytes past it "
                        "(loaders that read frames whole start the next pickle at the "
                        "frame's end)", at, self.frame_end)
                yield Op(name, code, at)
                if code == 0x2E:
                    return
            elif kind == "u1" and code != 0x80:  # BININT1 BINPUT BINGET EXT1: the hot path
                if at + 1 >= end:
                    raise MalformedPickleError(f"{name} needs 1 bytes but 0 remain", at)
                self.pos = at + 2
                if at + 2 > fend > at:
                    self._straddles(name, at)
                yield Op(name, code, at, buf[at + 1])
            else:
                arg = self._arg(name, kind, at)
                if code == 0x95:
                    fend = self.frame_end
                elif self.pos > fend > at:
                    self._straddles(name, at)
                yield Op(name, code, at, arg)

    def _straddles(self, name: str, at: int) -> None:
        self._ambiguous(
            f"{name} starts inside a FRAME that ends at byte {self.frame_end} and ends past it "
            "(loaders that read frames whole read other bytes here)", at)

    def _ambiguous(self, message: str, at: int, frame_end: int | None = None) -> None:
        # Read on flat (as pickle.loads does) so what follows is still reported;
        # the stream ends as an error either way (run_stream).
        if self.ambiguity is None or frame_end is not None:
            self.ambiguity = AmbiguousPickleError(message, at, frame_end)

    def _arg(self, name: str, kind: str, at: int) -> object:
        fixed = _FIXED.get(kind)
        if fixed is not None:
            fmt, size = fixed
            start = self._need(size, name, at)
            value = unpack_from(fmt, self.buf, start)[0]
            if name == "FRAME":
                if value > _SSIZE_MAX:
                    raise MalformedPickleError("FRAME length exceeds PY_SSIZE_T_MAX", at)
                if at < self.frame_end:
                    self._ambiguous(
                        f"FRAME inside a frame that ends at byte {self.frame_end} (loaders "
                        "that read frames whole skip the rest of the outer frame)", at)
                if value > self.end - self.pos:
                    # pickle._Unpickler's load_frame takes what file.read gives: the
                    # rest of the data is the frame. _pickle.c stops here.
                    self._ambiguous(
                        f"FRAME of {value} bytes runs past the end of the data "
                        f"({self.end - self.pos} remain): the C unpickler stops, the "
                        "pure-Python one (joblib.load) reads the rest as the frame", at)
                    value = self.end - self.pos
                self._need(value, "FRAME", at)  # load_frame reads the frame, then rewinds
                self.pos -= value
                self.frame_end = self.pos + value
            elif name == "PROTO" and value > HIGHEST_PROTOCOL:
                raise MalformedPickleError(f"unsupported pickle protocol {value}", at)
            return value
        if kind in ("b1", "b4", "b8", "t1", "t4", "t8", "s1", "s4"):
            return self._counted(name, kind, at)
        if kind in ("l1", "l4"):
            n = self._count(kind[1], name, at, signed=kind == "l4")
            start = self._need(n, name, at)
            return int.from_bytes(self.buf[start : start + n], "little", signed=True)
        if kind == "line2":
            module = self._line(at)
            qualname = self._line(at)
            try:
                return module.decode("utf-8"), qualname.decode("utf-8")
            except UnicodeDecodeError:
                raise MalformedPickleError(f"{name} names are not UTF-8", at) from None
        line = self._line(at)
        return _TEXT_DECODERS[kind](line, at)

    def _count(self, width: str, name: str, at: int, *, signed: bool) -> int:
        fmt = _COUNT_FORMATS[width, signed]
        start = self._need(fmt.size, name, at)
        buf = self.buf
        n: int = (buf.unpack_from(fmt.format, start) if isinstance(buf, Image)
                  else fmt.unpack_from(buf, start))[0]
        if n < 0:
            raise MalformedPickleError(f"{name} has negative length {n}", at)
        return n

    def _counted(self, name: str, kind: str, at: int) -> object:
        n = self._count(kind[1], name, at, signed=kind == "s4")
        start = self._need(n, name, at)
        if kind[0] == "b":
            return self._bytes(start, n)
        if kind[0] == "t":
            return self._text(start, n, at)
        # BINSTRING / SHORT_BINSTRING: torch.load decodes them as UTF-8 (its
        # default encoding); undecodable ones (loadable with encoding='latin1')
        # stay bytes rather than ending the stream.
        if n <= self.max_text:
            try:
                return LegacyStr(bytes(self.buf[start:start + n]).decode("utf-8"))
            except UnicodeDecodeError:
                pass
        return self._bytes(start, n)


_STRTOL = re.compile(rb"\s*([+-]?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)")
_LONG_MAX = (1 << 63) - 1


def _int_text(line: bytes, at: int) -> object:
    # load_int: strtol(s, &end, 0) must consume the whole line (C base-0 rules:
    # 0x hex, leading-0 octal); otherwise Python's int(s, 0). A value of 0 or 1
    # written in two characters ("00", "01") is the protocol 0 bool.
    m = _STRTOL.fullmatch(line)
    if m is None:
        return _number(line, int)
    digits = m.group(2)
    base = 16 if digits[:2].lower() == b"0x" else 8 if digits[:1] == b"0" else 10
    value = int(digits, base) * (-1 if m.group(1) == b"-" else 1)
    if abs(value) > _LONG_MAX:
        return _number(line, int)
    if len(line) == 2 and value in (0, 1):
        return bool(value)
    return value


def _long_text(line: bytes, at: int) -> object:
    return _number(line[:-1] if line.endswith(b"L") else line, int)


def _float_text(line: bytes, at: int) -> object:
    return _number(line, float)


def _number(text: bytes, kind: type[int] | type[float]) -> object:
    try:
        return kind(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        try:
            return int(text.decode("ascii"), 0) if kind is int else Opaque("float text")
        except (UnicodeDecodeError, ValueError):
            return Opaque(f"unparsed number {text[:32]!r}")


def _memo_index(line: bytes, at: int) -> object:
    value = _number(line, int)
    if isinstance(value, int) and value < 0:
        raise MalformedPickleError("negative memo index", at)
    return value


def _string_text(line: bytes, at: int) -> object:
    # load_string: the argument must be quoted with matching quotes, then
    # backslash escapes are decoded (PyBytes_DecodeEscape).
    if len(line) < 2 or line[0] != line[-1] or line[:1] not in (b"'", b'"'):
        raise MalformedPickleError("the STRING opcode argument must be quoted", at)
    try:
        raw = codecs.escape_decode(line[1:-1])[0]
    except ValueError as exc:
        raise MalformedPickleError(f"bad STRING escape: {exc}", at) from None
    try:
        return LegacyStr(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return raw


def _unicode_text(line: bytes, at: int) -> object:
    try:
        return codecs.raw_unicode_escape_decode(line)[0]
    except UnicodeDecodeError as exc:
        raise MalformedPickleError(f"bad UNICODE escape: {exc.reason}", at) from None


def _persid_text(line: bytes, at: int) -> object:
    try:
        return line.decode("ascii")
    except UnicodeDecodeError:
        raise MalformedPickleError("persistent IDs in protocol 0 must be ASCII", at) from None


_TEXT_DECODERS: Final = {
    "int": _int_text,
    "long": _long_text,
    "float": _float_text,
    "put": _memo_index,
    "get": _memo_index,
    "string": _string_text,
    "unicode": _unicode_text,
    "persid": _persid_text,
}


def iter_ops(buf: Buffer, start: int = 0, end: int | None = None) -> Iterator[Op]:
    """Convenience wrapper: the opcodes of the stream starting at ``start``."""
    return iter(OpcodeReader(buf, start, end))


_WIDTHS: Final = {"1": 1, "2": 2, "4": 4, "8": 8}


def frame_by_frame(buf: Buffer, start: int, end: int, limit: int) -> bytes | None:
    """The opcodes an unpickler reading frames whole from a file sees, as a flat stream.

    ``_pickle.c`` reading a file without ``peek`` (a ``BytesIO``) or a large
    frame: ``load_frame`` reads the whole frame, and an opcode (or text line)
    that needs more than the frame has left is read from after the frame, the
    frame's last bytes skipped. This replays that on ``buf[start:end]`` and
    returns the opcodes so read, FRAMEs dropped (they do nothing else), so
    the flat reader can scan this second reading. Stops at STOP, at the first
    opcode that cannot be read, or after ``limit`` bytes (None: nothing read).
    """
    out = bytearray()
    pos = have = start  # next byte to read; end of what the last read brought in

    def take(n: int) -> int | None:
        nonlocal pos, have
        if n <= have - pos:
            at = pos
        elif have + n > end:
            return None
        else:  # a new read: from where the last one ended, the rest skipped
            at, have = have, have + n
        pos = at + n
        return at

    def line() -> int | None:
        nonlocal pos, have
        nl = buf.find(b"\n", pos, have)
        if nl < 0:
            nl = buf.find(b"\n", have, min(end, have + MAX_LINE))
            if nl < 0:
                return None
            pos = have
            have = nl + 1
        at, pos = pos, nl + 1
        return at

    while len(out) < limit:
        at = take(1)
        if at is None:
            break
        code = buf[at]
        entry = _TABLE.get(code)
        if entry is None:
            break
        name, kind = entry
        spans: list[tuple[int, int]] = []
        if kind in _FIXED:
            size = _FIXED[kind][1]
            arg = take(size)
            if arg is None:
                break
            if name == "FRAME":
                (length,) = unpack_from("<Q", buf, arg)
                if length > _SSIZE_MAX:
                    break
                if length > have - pos:  # read the frame whole, then rewind to its start
                    frame = take(length)
                    if frame is None:
                        break
                    pos = frame
                continue
            spans.append((arg, arg + size))
        elif kind == "line2" or kind in _TEXT_DECODERS:
            arg = line()
            if arg is None:
                break
            spans.append((arg, pos))
            if kind == "line2":
                arg = line()
                if arg is None:
                    break
                spans.append((arg, pos))
        elif kind:  # counted: a length, then that many bytes
            width = _WIDTHS[kind[1]]
            arg = take(width)
            if arg is None:
                break
            n = int.from_bytes(buf[arg:arg + width], "little", signed=kind in ("s4", "l4"))
            data = take(n) if 0 <= n <= limit - len(out) else None
            if data is None:
                break
            spans += [(arg, arg + width), (data, data + n)]
        out.append(code)
        for lo, hi in spans:
            out += buf[lo:hi]
        if code == 0x2E:
            break
    return bytes(out) if out else None
