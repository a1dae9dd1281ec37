"""Atomic file replacement: temporary file in the same folder, fsync, rename.

Every tensorfile command that writes a file (save, convert, sign) goes through
:func:`atomic_write` (or :class:`TempFile`, for a sharded save's shards), so a
crash or an exception at any moment leaves the destination either untouched
or complete, and never a stray temporary file when Python gets to run its
cleanup. A process killed outright (SIGKILL, a signal with no handler) leaves
its temporary file; every temporary file has one name pattern
(:func:`looks_like_temp_file`) and is locked while its writer lives, so the
next write into the folder removes the dead ones (:func:`sweep_temp_files`)
and hashing leaves them out.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import secrets
import shutil
import stat
import sys
import tempfile
import threading
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


# -- temporary files: the one naming pattern, a lock while alive, the sweep ---------

TEMP_SUFFIX = ".tmp"
#: Every temporary file tensorfile writes (a saved file, a shard, a signature,
#: a copied config) is ``.{final name}.{8 characters of [a-z0-9_]}.tmp`` in
#: the destination's folder: mkstemp's random part, or :func:`_random_part`'s.
#: This one pattern is what the sweep removes and what hashing leaves out.
_TEMP_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$", re.DOTALL)
#: Index files (``*.safetensors.index.json`` and the like) may name temporary
#: files: a sharded save switches to its new shards by an index naming them
#: under their temporary names first (see tensorfile.sharded._switch).
_INDEX_SUFFIX = ".index.json"
#: Index files bigger than this are not read by the sweep (their temporary
#: files are then kept: the sweep errs on the side of keeping).
_INDEX_READ_LIMIT = 100_000_000


def looks_like_temp_file(name: str) -> bool:
    """Whether ``name`` (a file name, no folder) has the form of tensorfile's
    temporary files: what a writer killed before its rename leaves behind."""
    return bool(_TEMP_NAME.match(name))


def _random_part() -> str:
    return secrets.token_hex(4)  # 8 characters of [0-9a-f], inside the pattern


if sys.platform != "win32":
    import fcntl

    def _flock(fd: int, *, wait: bool) -> bool | None:
        """Lock ``fd`` exclusively: True when locked, False when another open
        file holds the lock (only without ``wait``), None when this file
        system cannot lock (then nothing is ever swept from it)."""
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        except OSError:
            return None
        return True
else:  # pragma: no cover - Windows has no flock: temporary files are never swept there

    def _flock(fd: int, *, wait: bool) -> bool | None:
        return None


class TempFile:
    """A temporary file beside ``dest``, locked for as long as this process has it open.

    The lock (``flock``, released by the kernel when the process dies, however
    it dies) is how :func:`sweep_temp_files` tells a live writer's file from
    the leftover of a killed one: it removes only files it can lock.
    """

    def __init__(self, dest: Path, *, durable: bool) -> None:
        self.dest = dest
        self.folder = dest.parent if str(dest.parent) else Path(".")
        self.mode = _final_mode(dest)
        self.durable = durable
        while True:
            fd, name = tempfile.mkstemp(dir=self.folder, prefix=f".{dest.name}.", suffix=TEMP_SUFFIX)
            # A sweep may have locked and removed the file between mkstemp and
            # this lock (it was not locked yet): then make another.
            if _flock(fd, wait=True) is not True or os.fstat(fd).st_nlink > 0:
                break
            os.close(fd)
        self.path = Path(name)
        self.file: BinaryIO = (WriteBehindFile(fd) if durable  # type: ignore[assignment]
                               else io.FileIO(fd, "wb", closefd=True))

    def sync(self) -> None:
        """Flush the data to the disk (the size included: fdatasync is enough)."""
        getattr(os, "fdatasync", os.fsync)(self.file.fileno())

    def commit(self, dest: Path | None = None) -> None:
        """Give the file its final mode and rename it to ``dest`` (its
        destination by default), then close it."""
        os.fchmod(self.file.fileno(), self.mode)
        if sys.platform == "win32":  # pragma: no cover - an open file cannot be renamed there
            self.file.close()
        os.replace(self.path, dest if dest is not None else self.dest)
        self.file.close()  # after the rename: unlocked, it could be swept

    def link_as(self, dest: Path) -> None:
        """Make ``dest`` name this file's bytes too, replacing ``dest`` atomically;
        this file keeps its name. A hard link where the file system has them,
        otherwise a copy (synced when durable)."""
        while True:
            tmp = dest.with_name(f".{dest.name}.{_random_part()}{TEMP_SUFFIX}")
            try:
                os.link(self.path, tmp)
            except FileExistsError:
                continue
            except OSError:
                break  # no hard links here (FAT, some FUSE and network file systems)
            os.chmod(tmp, self.mode)
            try:
                os.replace(tmp, dest)
            except BaseException:
                with contextlib.suppress(OSError):
                    tmp.unlink()
                raise
            return
        copy = TempFile(dest, durable=self.durable)
        try:
            shutil.copyfile(self.path, copy.path)
            if self.durable:
                copy.sync()
            copy.commit()
        except BaseException:
            copy.discard()
            raise

    def discard(self) -> None:
        """Remove the file and close it (what every failure does)."""
        with contextlib.suppress(OSError):
            self.path.unlink()
        with contextlib.suppress(OSError):
            self.file.close()


def fsync_dir(folder: Path) -> None:
    """Make the folder's entries (a rename, a new file) durable."""
    _fsync_dir(folder)


def _named_by_indexes(folder: Path, names: list[str]) -> set[str]:
    """Those of ``names`` that an index file in ``folder`` mentions."""
    named: set[str] = set()
    try:
        indexes = [e for e in os.scandir(folder)
                   if e.name.endswith(_INDEX_SUFFIX) and e.is_file(follow_symlinks=False)]
    except OSError:
        return set(names)
    for entry in indexes:
        try:
            if entry.stat(follow_symlinks=False).st_size > _INDEX_READ_LIMIT:
                return set(names)
            data = Path(entry.path).read_bytes()
        except OSError:
            return set(names)
        named.update(n for n in names
                     if n.encode("utf-8", "surrogateescape") in data or json.dumps(n).encode() in data)
    return named


def _remove_if_dead(path: Path) -> bool:
    """Remove ``path`` if no process holds it open locked (its writer is gone)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return False
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or _flock(fd, wait=False) is not True:
            return False
        now = os.lstat(path)
        if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
            return False
        path.unlink()
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def sweep_temp_files(folder: str | os.PathLike[str]) -> list[str]:
    """Remove the temporary files that killed tensorfile writers left in ``folder``.

    A file is removed only if its name has the temporary pattern
    (:func:`looks_like_temp_file`), no live process holds it (its writer's
    lock is gone), and no index file in the folder names it (the switch of a
    sharded save interrupted after its first index). Returns the names removed.
    """
    where = Path(folder)
    try:
        names = [e.name for e in os.scandir(where)
                 if looks_like_temp_file(e.name) and e.is_file(follow_symlinks=False)]
    except OSError:
        return []
    if not names:
        return []
    keep = _named_by_indexes(where, names)
    return [n for n in names if n not in keep and _remove_if_dead(where / n)]


_swept: set[tuple[int, int]] = set()
_swept_lock = threading.Lock()


def sweep_once(folder: Path) -> None:
    """:func:`sweep_temp_files` the first time this process writes into ``folder``.

    Leftovers come from earlier, killed processes, so once per process is
    enough, and a loop of saves into a big folder lists it only once.
    """
    try:
        st = os.stat(folder)
    except OSError:
        return
    key = (st.st_dev, st.st_ino)
    with _swept_lock:
        if key in _swept:
            return
        _swept.add(key)
    sweep_temp_files(folder)


@contextlib.contextmanager
def atomic_write(dest: str | os.PathLike[str], *, durable: bool = True) -> Iterator[BinaryIO]:
    """Open a temporary file beside ``dest``; on success move it into place.

    If the body raises (an exception, Ctrl-C, a signal turned into one), the
    temporary file is removed and ``dest`` is left as it was; a process killed
    outright leaves it, and the next tensorfile write into the folder removes
    it (:func:`sweep_once`). ``durable`` syncs the data and the folder entry
    (on by default: a power cut must never leave a renamed but empty file);
    ``durable=False`` keeps the all-or-nothing rename and skips the syncs,
    for scratch files and for callers that sync once themselves.
    """
    dest = Path(dest)
    folder = dest.parent if str(dest.parent) else Path(".")
    sweep_once(folder)
    tmp = TempFile(dest, durable=durable)
    try:
        yield tmp.file
        if durable:
            tmp.sync()
        tmp.commit()
    except BaseException:
        tmp.discard()
        raise
    if durable:
        _fsync_dir(folder)
