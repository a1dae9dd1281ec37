"""Random access to a file that may change or fail under the reader: never a map of it.

The pickle scanner and the converter read containers (zip, tar, legacy torch
records, npy, GGUF, ONNX...) at scattered offsets. A memory map of the file
would be the easy way, but a page of a map whose file was cut short (or whose
disk answers ``EIO``) kills the process with ``SIGBUS``, with no message and
nothing to catch. So those readers get a :class:`Image` instead:

- a :class:`ByteSource` answers ``read_into(offset, view)`` with exactly the
  bytes asked for, or a typed error (:class:`FileSource`: ``pread`` on a
  local file; a short read (the file was cut short after it was opened) or
  an I/O error is a :class:`~tensorfile.errors.FileReadError` with the path
  and offset). A remote object is another source (:mod:`tensorfile.remote`).
- an :class:`Image` is a private, sparse copy of the source at the same
  offsets: bytes are copied in (a page at a time, runs of missing pages in
  one read) the first time they are asked for, and only those. It reads like
  ``bytes`` (indexing, slicing, ``find``, ``rfind``, :func:`unpack_from`), so
  the parsers keep their file offsets, and costs memory only for what was
  read (the pickle streams and container headers, never the tensor data).
  The copy lives in private anonymous memory (or an in-memory file) that
  nothing else can truncate, so reading it can never fault.
- :meth:`Image.buffer_for` hands the pickle machine a real buffer (the
  image's map, the region copied in) for a region of up to
  :data:`STREAM_WINDOW` bytes, so the opcode loop runs at full speed; a
  longer region (a raw pickle file, a legacy checkpoint whose records follow
  its pickles) is read through the :class:`Image` itself, page by page as
  the reader gets there.
"""

from __future__ import annotations

import errno
import mmap
import os
import struct
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from tensorfile._io.files import open_regular, pread_into
from tensorfile.errors import FileReadError, TruncatedFileError

#: Bytes copied in at a time at least (a page of the image).
PAGE = 4096
#: A pickle region up to this long is copied in whole before its stream is run
#: (the fast path); a longer one is read as the reader gets there.
STREAM_WINDOW = 64 << 20
#: ``find``/``rfind`` copy in this much at a time, so a search that hits early
#: reads little.
_SEARCH_STEP = 64 << 10


class ByteSource(Protocol):
    """A fixed-size sequence of bytes read by offset: a local file, a remote object."""

    #: Its size when it was opened; a source that changes is an error when read.
    size: int

    @property
    def label(self) -> str:
        """What error messages call it (a path, a URL)."""
        ...

    def read_into(self, offset: int, view: memoryview) -> None:
        """Fill ``view`` with the bytes at ``offset``: all of them, or a typed error."""
        ...

    def read_many(self, jobs: Sequence[tuple[int, memoryview]]) -> None:
        """:meth:`read_into` for each ``(offset, view)``, in any order or at once."""
        ...

    def close(self) -> None:
        """Release what the source holds (idempotent)."""
        ...


class FileSource:
    """A local regular file read with ``pread`` (never mapped), and its size at open."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.label = os.fspath(path)
        self.fd, self.size = open_regular(path)

    def fileno(self) -> int:
        """The open descriptor (read with explicit offsets only)."""
        return self.fd

    def read_into(self, offset: int, view: memoryview) -> None:
        got, want = 0, len(view)
        while got < want:
            try:
                n = pread_into(self.fd, view[got:], offset + got)
            except OSError as exc:
                raise FileReadError(
                    exc.errno or errno.EIO,
                    f"cannot read byte {offset + got}: {exc.strerror or exc}", self.label,
                ) from None
            if n == 0:
                # Within the size the file had when it was opened: it changed.
                raise FileReadError(
                    errno.EIO, f"file ended at byte {offset + got} while it was read (it "
                    f"was {self.size} bytes when opened: changed or cut short)", self.label)
            got += n

    def read_many(self, jobs: Sequence[tuple[int, memoryview]]) -> None:
        for offset, view in jobs:  # a local read costs no round trip: one by one
            self.read_into(offset, view)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _backing(size: int) -> tuple[int, mmap.mmap]:
    """Private memory for ``size`` bytes, of which only the pages written cost
    anything, and the descriptor behind it (-1 for none).

    Anonymous memory first (its page faults cost a third of a shared file's);
    where the kernel refuses a private map that big (overcommit), an in-memory
    file (``memfd``), whose holes cost nothing either."""
    n = max(size, 1)
    try:
        return -1, mmap.mmap(-1, n, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    except (OSError, AttributeError, TypeError):  # ENOMEM; no such flags (Windows)
        pass
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("tensorfile-image", getattr(os, "MFD_CLOEXEC", 0))
    else:  # pragma: no cover - not Linux: a temporary file on disk, unlinked at once
        import tempfile

        with tempfile.TemporaryFile() as tmp:
            fd = os.dup(tmp.fileno())
    try:
        os.ftruncate(fd, n)
        return fd, mmap.mmap(fd, n)
    except BaseException:
        os.close(fd)
        raise


class Image:
    """A private copy of a :class:`ByteSource`, filled in only where it is read.

    Reads like ``bytes`` at the source's offsets (``len``, indexing, slicing,
    ``find``, ``rfind``, and :func:`unpack_from` for ``struct``). Every read
    first copies in the pages it touches that are not there yet; an error of
    the source propagates (typed) and the image stays as it was.
    """

    def __init__(self, source: ByteSource) -> None:
        self.source = source
        self.label = source.label
        self.size = source.size
        self._fd, self._map = _backing(self.size)
        self._closed = False
        #: One byte per page: 1 once the page holds the source's bytes.
        self._have = bytearray(-(-self.size // PAGE))

    def __len__(self) -> int:
        return self.size

    def fill(self, lo: int, hi: int) -> None:
        """Copy in ``[lo, hi)`` (clamped to the source) where it is not yet."""
        lo, hi = max(lo, 0), min(hi, self.size)
        if lo >= hi:
            return
        have, first, stop = self._have, lo // PAGE, (hi - 1) // PAGE + 1
        while True:
            i = have.find(0, first, stop)
            if i < 0:
                return
            j = have.find(1, i, stop)
            j = stop if j < 0 else j
            a, b = i * PAGE, min(j * PAGE, self.size)
            with memoryview(self._map) as view:
                self.source.read_into(a, view[a:b])
            have[i:j] = b"\x01" * (j - i)
            first = j

    def prefetch(self, spans: Iterable[tuple[int, int]]) -> None:
        """Copy in every ``[lo, hi)`` of ``spans`` (clamped) where it is not yet,
        in one :meth:`ByteSource.read_many`: a parser that knows it will look
        at many scattered places (a zip's local headers) asks for them at
        once, which a remote source fetches concurrently instead of one round
        trip each."""
        have, last = self._have, -1
        runs: list[list[int]] = []
        for lo, hi in sorted(spans):
            first, stop = max(lo, 0) // PAGE, (min(hi, self.size) - 1) // PAGE + 1
            for i in range(max(first, last), stop):
                if not have[i]:
                    if runs and runs[-1][1] == i:
                        runs[-1][1] = i + 1
                    else:
                        runs.append([i, i + 1])
            last = max(last, stop)
        if not runs:
            return
        with memoryview(self._map) as view:
            self.source.read_many(
                [(i * PAGE, view[i * PAGE : min(j * PAGE, self.size)]) for i, j in runs])
        for i, j in runs:
            have[i:j] = b"\x01" * (j - i)

    def buffer_for(self, start: int, end: int) -> Image | mmap.mmap:
        """What the pickle reader should read ``[start, end)`` from: the image's
        own map with the region copied in when it is at most
        :data:`STREAM_WINDOW` long, else this image (copied in as it is read)."""
        if end - start > STREAM_WINDOW:
            return self
        self.fill(start, end)
        return self._map

    def copy(self, lo: int, hi: int) -> bytearray:
        """A new buffer with bytes ``[lo, hi)`` read straight from the source
        (tensor data: one tensor's worth, never kept in the image)."""
        out = bytearray(hi - lo)
        if hi > lo:
            if hi > self.size:
                raise TruncatedFileError(
                    f"{self.label}: bytes {lo}-{hi} lie past the end ({self.size} bytes)")
            self.source.read_into(lo, memoryview(out))
        return out

    def __getitem__(self, key: int | slice) -> Any:
        # The parsers make thousands of small reads: those within pages already
        # copied in skip fill() (a page or two checked here is all they touch).
        have = self._have
        if isinstance(key, slice):
            lo, hi, step = key.indices(self.size)
            if step != 1:
                self.fill(min(lo, hi), max(lo, hi) + 1)
            elif hi - lo > PAGE or (hi > lo and not (have[lo // PAGE]
                                                     and have[(hi - 1) // PAGE])):
                self.fill(lo, hi)
            return self._map[key]
        if key < 0:
            key += self.size
        if not 0 <= key < self.size:
            raise IndexError("index out of range")
        if not have[key // PAGE]:
            self.fill(key, key + 1)
        return self._map[key]

    def find(self, sub: bytes, start: int | None = None, end: int | None = None) -> int:
        lo, hi, _ = slice(start, end).indices(self.size)
        at = lo
        while at < hi:
            stop = min(hi, at + _SEARCH_STEP)
            self.fill(at, stop)
            # Only the new bytes (and a match straddling the last step) are searched.
            found = self._map.find(sub, max(lo, at - len(sub) + 1), stop)
            if found >= 0:
                return found
            if stop >= hi:
                break
            at = stop
        return -1

    def rfind(self, sub: bytes, start: int | None = None, end: int | None = None) -> int:
        lo, hi, _ = slice(start, end).indices(self.size)
        at = hi
        while at > lo:
            begin = max(lo, at - _SEARCH_STEP)
            self.fill(begin, hi)
            found = self._map.rfind(sub, begin, min(hi, at + len(sub) - 1))
            if found >= 0:
                return found
            if begin <= lo:
                break
            at = begin
        return -1

    def unpack_from(self, fmt: str, offset: int = 0) -> tuple[Any, ...]:
        """``struct.unpack_from(fmt, image, offset)`` (the same errors)."""
        size = struct.calcsize(fmt)
        if offset < 0:
            offset += self.size
        end = offset + size
        if offset < 0 or end > self.size:
            raise struct.error(f"unpack_from requires a buffer of at least {end} "
                               f"bytes for unpacking {size} bytes at offset {offset}")
        have = self._have
        if size > PAGE or (size and not (have[offset // PAGE] and have[(end - 1) // PAGE])):
            self.fill(offset, end)
        return struct.unpack_from(fmt, self._map, offset)

    def close(self) -> None:
        """Drop the copy and close the source (safe to call twice)."""
        if not self._closed:
            self._closed = True
            try:
                self._map.close()
            except BufferError:  # a caller still holds a view of it: it goes with that
                pass
            if self._fd >= 0:
                os.close(self._fd)
        self.source.close()

    def __enter__(self) -> Image:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def prefetch(buf: Any, spans: Iterable[tuple[int, int]]) -> None:
    """:meth:`Image.prefetch` where ``buf`` is an :class:`Image`; other buffers
    (bytes, a map) already hold every byte."""
    if type(buf) is Image:
        buf.prefetch(spans)


def unpack_from(fmt: str, buf: Any, offset: int = 0) -> tuple[Any, ...]:
    """``struct.unpack_from`` for any buffer the parsers take, an :class:`Image` too."""
    if type(buf) is Image:
        return buf.unpack_from(fmt, offset)
    return struct.unpack_from(fmt, buf, offset)


def open_image(path: str | os.PathLike[str]) -> Image:
    """An :class:`Image` of the local file ``path`` (nothing read yet)."""
    source = FileSource(path)
    try:
        return Image(source)
    except BaseException:
        source.close()
        raise
