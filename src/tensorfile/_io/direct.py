"""Reading around the page cache: cold bytes from the disk straight into their final buffer.

A verified load copies every byte into private memory. Out of a warm page
cache that copy is one ``memcpy``. Out of a cold one, a buffered ``pread``
has the kernel allocate and fill page-cache pages first and then copy out
of them: a second pass over memory, on top of the zeroing of the private
pages, and a second copy of the model held in the cache. An ``O_DIRECT``
read has the device write into the private buffer itself.

A direct read of bytes that are cached goes back to the disk, so each range
is looked up in the page cache first (``mincore`` of a short-lived map of
just that range, which faults no page in) and read buffered where most of it
is there already.

The direct reads go through a second descriptor of the *same open file*
(``/proc/self/fd``, checked by device and inode), never a second open of
the path, which another process could have replaced. ``O_DIRECT`` wants the
file offset, the length and the memory address aligned to the device's
logical block; :data:`ALIGN` covers every common device. A buffer to be
read so comes from :func:`empty_like_file`, whose address matches its file
offset modulo :data:`ALIGN`; a range's unaligned head and tail are read
buffered. Whatever the platform or file system refuses (no ``O_DIRECT``,
``EINVAL``) is read buffered instead: the same bytes, only slower.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import sys
from typing import Any

import numpy as np

from tensorfile._io.files import pread_exact, pread_into

#: The alignment direct reads keep: the page size, a multiple of every
#: common device's logical block.
ALIGN = max(mmap.PAGESIZE, 4096)

#: Ranges shorter than this are read buffered: the page-cache lookup and the
#: extra system calls would cost more than the copy they save.
MIN_DIRECT = 1 << 20

#: How much one direct read asks for: long reads keep the device's queue
#: full (a 1 MiB read at a time left this VM's disk idle between reads).
DIRECT_BLOCK = 16 << 20


def open_twin(fd: int) -> int | None:
    """An ``O_DIRECT`` descriptor of the file open as ``fd``, or None where
    there is none (not Linux, no ``/proc``, a file system that refuses it,
    or no ``preadv`` to read into the caller's aligned buffer)."""
    flag = getattr(os, "O_DIRECT", 0)
    if not flag or not sys.platform.startswith("linux") or not hasattr(os, "preadv"):
        return None
    try:
        twin = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | flag | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        a, b = os.fstat(fd), os.fstat(twin)
        if (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino):
            return twin
    except OSError:
        pass
    os.close(twin)
    return None


def empty_like_file(size: int, offset: int) -> np.ndarray[Any, Any]:
    """A new ``uint8`` array of ``size`` bytes whose address is ``offset``
    modulo :data:`ALIGN`: bytes read into it from file offset ``offset`` on
    can be read directly (at most :data:`ALIGN` bytes more are allocated)."""
    raw = np.empty(size + ALIGN, dtype=np.uint8)
    skip = (offset - raw.ctypes.data) % ALIGN
    return raw[skip : skip + size]


class _Libc:
    """``mmap``, ``munmap`` and ``mincore`` through ctypes (the standard
    library's :mod:`mmap` neither exposes an address nor asks ``mincore``)."""

    def __init__(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self.mmap = libc.mmap
        self.mmap.restype = ctypes.c_void_p
        self.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                              ctypes.c_int, ctypes.c_int64]
        self.munmap = libc.munmap
        self.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        self.mincore = libc.mincore
        self.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]


_libc: _Libc | None = None


def mostly_cached(fd: int, offset: int, size: int) -> bool:
    """Whether at least half of the pages of ``[offset, offset + size)`` are
    in the page cache (True where it cannot be told: then read buffered)."""
    global _libc
    try:
        if _libc is None:
            _libc = _Libc()
        lo = offset - offset % mmap.PAGESIZE
        length = offset + size - lo
        addr = _libc.mmap(None, length, mmap.PROT_READ, mmap.MAP_SHARED, fd, lo)
        if addr is None or addr == ctypes.c_void_p(-1).value:
            return True
        try:
            pages = -(-length // mmap.PAGESIZE)
            vec = np.empty(pages, dtype=np.uint8)
            if _libc.mincore(addr, length, vec.ctypes.data) != 0:
                return True
        finally:
            _libc.munmap(addr, length)
    except (OSError, AttributeError):
        return True
    return int(np.count_nonzero(vec & 1)) * 2 >= pages


def worth_reading_directly(fd: int, view: memoryview, offset: int) -> bool:
    """Whether filling ``view`` from file offset ``offset`` on should go
    through :func:`read_directly`: the buffer is placed for it
    (:func:`empty_like_file`), the aligned part is long enough, and most of
    it is not in the page cache."""
    lo = offset + (-offset % ALIGN)
    hi = (offset + len(view)) // ALIGN * ALIGN
    return (
        hi - lo >= MIN_DIRECT
        and (np.frombuffer(view, dtype=np.uint8).ctypes.data - offset) % ALIGN == 0
        and not mostly_cached(fd, lo, hi - lo)
    )


def read_directly(fd: int, twin: int, view: memoryview, offset: int) -> None:
    """Fill ``view`` (bytes, placed by :func:`empty_like_file`) with the
    file's bytes from ``offset`` on: the aligned middle through ``twin``,
    the unaligned head and tail, and anything ``twin`` refuses, buffered
    through ``fd``. Raises as :func:`pread_exact` does."""
    size = len(view)
    lo = min(offset + size, offset + (-offset % ALIGN))
    hi = max(lo, (offset + size) // ALIGN * ALIGN)
    pread_exact(fd, lo - offset, offset, view[: lo - offset])
    got = lo
    while got < hi:
        try:
            n = pread_into(twin, view[got - offset : hi - offset], got)
        except OSError:
            break  # refused after all (EINVAL): the rest buffered
        got += n
        if n == 0 or n % ALIGN:
            break  # the end of the file: the buffered read below says how short
    pread_exact(fd, offset + size - got, got, view[got - offset :])
