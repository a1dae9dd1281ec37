"""Reading around the page cache: cold bytes from the disk straight into their final buffer.

A verified load, or a load with the ``pread`` backend, copies every byte
into private memory. Out of a warm page
cache that copy is one ``memcpy``. Out of a cold one, a buffered ``pread``
has the kernel allocate and fill page-cache pages first and then copy out
of them: a second pass over memory, on top of the zeroing of the private
pages, and a second copy of the model held in the cache. An ``O_DIRECT``
read has the device write into the private buffer itself.

A direct read of bytes that are cached goes back to the disk, so each range
is looked up in the page cache first (``mincore`` of a map of the file that
is never touched, so it faults nothing in and cannot raise SIGBUS) and read
buffered where most of it is there already. The map is made once per open
file: mapping and unmapping per range would take the address space's lock
for writing against the page faults of the threads filling new memory.

:class:`DirectReads` holds both for one open file. The direct reads go
through a second descriptor of the *same open file* (``/proc/self/fd``,
checked by device and inode), never a second open of the path, which
another process could have replaced. ``O_DIRECT`` wants the
file offset, the length and the memory address aligned to the device's
logical block; :data:`ALIGN` covers every common device. A buffer to be
read so comes from :func:`empty_like_file`, whose address matches its file
offset modulo :data:`ALIGN`; a range's unaligned head and tail are read
buffered. Whatever the platform or file system refuses (no ``O_DIRECT``,
``EINVAL``, ``EIO``) is read buffered instead: the same bytes, only slower,
and an error that persists is the buffered read's error.
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

#: Pages of a range whose presence in the page cache is asked (spread
#: evenly) to judge whether the range is cached.
SAMPLES = 32

#: How much one direct read asks for: long reads keep the device's queue
#: full (a 1 MiB read at a time left this VM's disk idle between reads).
DIRECT_BLOCK = 16 << 20


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


class DirectReads:
    """Direct reads of one open file: its ``O_DIRECT`` twin and a map of it
    for ``mincore``. :meth:`open` returns None where there are none (not
    Linux, no ``/proc``, a file system that refuses ``O_DIRECT``, no
    ``preadv`` to read into the caller's aligned buffer). Thread-safe;
    :meth:`close` once no read is in flight."""

    def __init__(self, fd: int, twin: int, addr: int, length: int) -> None:
        self._fd, self._twin, self._addr, self._length = fd, twin, addr, length

    @classmethod
    def open(cls, fd: int, size: int) -> DirectReads | None:
        global _libc
        flag = getattr(os, "O_DIRECT", 0)
        if not flag or not sys.platform.startswith("linux") or not hasattr(os, "preadv") or size <= 0:
            return None
        try:
            twin = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | flag | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            a, b = os.fstat(fd), os.fstat(twin)
            if (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino):
                if _libc is None:
                    _libc = _Libc()
                addr = _libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
                if addr is not None and addr != ctypes.c_void_p(-1).value:
                    return cls(fd, twin, addr, size)
        except (OSError, AttributeError):
            pass
        os.close(twin)
        return None

    def close(self) -> None:
        if self._twin >= 0:
            assert _libc is not None
            _libc.munmap(self._addr, self._length)
            os.close(self._twin)
            self._twin = -1

    def mostly_cached(self, offset: int, size: int) -> bool:
        """Whether at least half of the pages of ``[offset, offset + size)``
        are in the page cache, judged from :data:`SAMPLES` pages spread over
        it (True where it cannot be told: read buffered)."""
        lo = offset - offset % mmap.PAGESIZE
        hi = min(offset + size, self._length)
        if hi <= lo:
            return True
        pages = -(-(hi - lo) // mmap.PAGESIZE)
        # The kernel looks each page up in the cache: asking for every page
        # of a warm 512 MiB load cost about a tenth of the load itself.
        picks = range(pages) if pages <= SAMPLES else (i * pages // SAMPLES for i in range(SAMPLES))
        vec = ctypes.c_ubyte()
        cached = asked = 0
        assert _libc is not None
        for i in picks:
            if _libc.mincore(self._addr + lo + i * mmap.PAGESIZE, 1, ctypes.byref(vec)) != 0:
                return True
            cached += vec.value & 1
            asked += 1
        return cached * 2 >= asked

    def worth_it(self, view: memoryview, offset: int) -> bool:
        """Whether filling ``view`` from file offset ``offset`` on should go
        through :meth:`read`: the buffer is placed for it
        (:func:`empty_like_file`), the aligned part is long enough, and most
        of it is not in the page cache."""
        lo = offset + (-offset % ALIGN)
        hi = (offset + len(view)) // ALIGN * ALIGN
        return (
            hi - lo >= MIN_DIRECT
            and (np.frombuffer(view, dtype=np.uint8).ctypes.data - offset) % ALIGN == 0
            and not self.mostly_cached(lo, hi - lo)
        )

    def read(self, view: memoryview, offset: int) -> None:
        """Fill ``view`` (bytes, placed by :func:`empty_like_file`) with the
        file's bytes from ``offset`` on: the aligned middle through the twin;
        the unaligned head and tail, and anything the twin refuses, buffered.
        Raises as :func:`pread_exact` does."""
        size = len(view)
        lo = min(offset + size, offset + (-offset % ALIGN))
        hi = max(lo, (offset + size) // ALIGN * ALIGN)
        pread_exact(self._fd, lo - offset, offset, view[: lo - offset])
        got = lo
        while got < hi:
            try:
                n = pread_into(self._twin, view[got - offset : hi - offset], got)
            except OSError:
                break  # refused after all (EINVAL): the rest buffered
            got += n
            if n == 0 or n % ALIGN:
                break  # the end of the file: the buffered read below says how short
        pread_exact(self._fd, offset + size - got, got, view[got - offset :])


def empty_like_file(size: int, offset: int) -> np.ndarray[Any, Any]:
    """A new ``uint8`` array of ``size`` bytes whose address is ``offset``
    modulo :data:`ALIGN`: bytes read into it from file offset ``offset`` on
    can be read directly (at most :data:`ALIGN` bytes more are allocated)."""
    raw = np.empty(size + ALIGN, dtype=np.uint8)
    skip = (offset - raw.ctypes.data) % ALIGN
    return raw[skip : skip + size]
