"""Atomic file replacement: temporary file in the same folder, fsync, rename.

Every tensorfile command that writes a file (save, convert, sign) goes through
:func:`atomic_write`, so a crash or an exception at any moment leaves the
destination either untouched or complete, and never a stray temporary file
when Python gets to run its cleanup.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import stat
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO


def _current_umask() -> int:
    # Linux reports the umask without changing it; elsewhere it can only be
    # read by setting it, which briefly affects other threads.
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _final_mode(dest: Path) -> int:
    """The mode the destination should end up with.

    An existing file keeps its permissions; a new one gets what ``open()``
    would have given it (0666 less the umask), not mkstemp's private 0600.
    """
    try:
        return stat.S_IMODE(os.stat(dest).st_mode)
    except FileNotFoundError:
        return 0o666 & ~_current_umask()


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # not every platform can open a directory
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _temp_prefix(dest: Path) -> str:
    return f".{dest.name}."


_TEMP_SUFFIX = ".tmp"
#: mkstemp's random part: 8 characters of [a-z0-9_].
_TEMP_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")


def looks_like_temp_file(name: str) -> bool:
    """Whether ``name`` (a file name, no folder) has the form of
    :func:`atomic_write`'s temporary files: what a writer killed before its
    rename leaves behind."""
    return bool(_TEMP_NAME.match(name))


def _sync_file_range() -> Callable[[int, int, int], None] | None:
    """Linux's ``sync_file_range(fd, offset, nbytes, SYNC_FILE_RANGE_WRITE)``,
    which starts writing a range to disk without waiting; None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    fn.restype = ctypes.c_int
    write = 2  # SYNC_FILE_RANGE_WRITE

    def start(fd: int, offset: int, nbytes: int) -> None:
        fn(fd, offset, nbytes, write)  # advisory: an error only means no head start

    return start


#: Written bytes after which the disk is told to start on them.
WRITEBACK_BYTES = 64 << 20


class WriteBehindFile(io.FileIO):
    """A raw file that asks the kernel to start writing each ``WRITEBACK_BYTES``
    to disk as soon as they are written.

    The final fsync then waits only for the tail, instead of for the whole
    file after the last byte: writing and the disk overlap, and the dirty
    pages never pile up to the whole file's size.
    """

    _start = staticmethod(_sync_file_range() or (lambda fd, offset, nbytes: None))

    def __init__(self, fd: int) -> None:
        super().__init__(fd, "wb", closefd=True)
        self._written = 0
        self._flushed = 0

    def write(self, data: Any, /) -> int:
        n = super().write(data)
        if n:
            self.written_elsewhere(n)
        return n

    def written_elsewhere(self, n: int) -> None:
        """Count ``n`` bytes that reached the file at its position by another
        way than :meth:`write` (a kernel copy into the descriptor)."""
        self._written += n
        if self._written - self._flushed >= WRITEBACK_BYTES:
            self._start(self.fileno(), self._flushed, self._written - self._flushed)
            self._flushed = self._written


@contextlib.contextmanager
def atomic_write(dest: str | os.PathLike[str], *, durable: bool = True) -> Iterator[BinaryIO]:
    """Open a temporary file beside ``dest``; on success move it into place.

    If the body raises, the temporary file is removed and ``dest`` is left as
    it was. ``durable`` fsyncs the data and the folder entry (on by default:
    the cost is small next to writing model weights, and a power cut must
    never leave a renamed but empty file).
    """
    dest = Path(dest)
    folder = dest.parent if str(dest.parent) else Path(".")
    mode = _final_mode(dest)
    fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=_temp_prefix(dest), suffix=_TEMP_SUFFIX)
    tmp = Path(tmp_name)
    try:
        with WriteBehindFile(fd) if durable else os.fdopen(fd, "wb", buffering=0) as raw:
            f: BinaryIO = raw  # type: ignore[assignment]
            yield f
            if durable:
                os.fsync(raw.fileno())
            os.fchmod(raw.fileno(), mode)
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    if durable:
        _fsync_dir(folder)
