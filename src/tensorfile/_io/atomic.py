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
import random
import re
import shutil
import signal
import stat
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO


def _existing_mode(dest: str | os.PathLike[str]) -> int | None:
    """The permissions of ``dest`` if it exists, which its replacement keeps.

    A new file needs nothing: its temporary file is created as ``open()``
    creates any file (0666 less the umask), not with a private 0600.
    """
    try:
        return stat.S_IMODE(os.stat(dest).st_mode)
    except FileNotFoundError:
        return None


#: How a temporary file is created: a new name only, never through a link.
_CREATE = (os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
           | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0))


def _fsync_dir(folder: str | os.PathLike[str]) -> None:
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
#: the destination's folder (the random part is :func:`_random_part`'s;
#: earlier versions used mkstemp's, of the same form).
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


#: Temporary names come from a private generator seeded from ``os.urandom``
#: (reseeded in a forked child), as the ``tempfile`` module's do: a system
#: call per name cost a small save more than its name is worth. A guessed
#: name is harmless: O_EXCL|O_NOFOLLOW refuse it and the next name is tried.
_names = random.Random()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_names.seed)


def _random_part() -> str:
    return f"{_names.getrandbits(32):08x}"  # 8 characters of [0-9a-f], inside the pattern


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


#: Signals whose Python handlers unwind the program (KeyboardInterrupt, or an
#: exception a handler such as the CLI's raises): one must not land between
#: creating a temporary file and the code that removes it on failure.
_DEFERRED = tuple(int(getattr(signal, n)) for n in ("SIGINT", "SIGTERM", "SIGHUP")
                  if hasattr(signal, n))
#: The C functions themselves (the ``_signal`` module ``signal`` wraps):
#: ``signal``'s wrappers convert to and from enums, 30 times the cost, and
#: every save goes through here.
_handlers: Any = sys.modules.get("_signal", signal)


class signals_deferred:  # (lower case: used as a function, ``with signals_deferred():``)
    """Hold SIGINT, SIGTERM and SIGHUP until the block ends, then run their
    handlers (a Ctrl-C inside the block raises as it ends).

    Creating a temporary file and handing it to its owner, or switching a
    model's index and recording that it switched, are several steps; an
    exception from a signal between two of them would leave a file nobody
    removes. Python runs signal handlers in the main thread only, so the
    block swaps the main thread's handlers for one that records the signal
    (a signal mask would not do: another thread could take the signal).
    Signals left at their default action kill the process with no cleanup
    anyway, as SIGKILL does, and are not touched.

    (A class, not a generator context manager: every save enters one, and
    contextlib's machinery cost more than the swap itself.)
    """

    __slots__ = ("_held", "_saved")

    def __enter__(self) -> None:
        self._held: list[tuple[int, Any]] = []
        self._saved: dict[int, Any] = {}
        if threading.current_thread() is not threading.main_thread():
            return  # handlers only ever run in the main thread
        hold = self._held.append
        for sig in _DEFERRED:
            handler = _handlers.getsignal(sig)
            if callable(handler):
                self._saved[sig] = handler
                _handlers.signal(sig, lambda signum, frame: hold((signum, frame)))

    def __exit__(self, *exc: object) -> None:
        saved = self._saved
        for sig, handler in saved.items():
            _handlers.signal(sig, handler)
        for signum, frame in self._held:
            saved[signum](signum, frame)


def _create_temp(dest_name: str, folder: str) -> tuple[int, str]:
    """Create and lock a new temporary file for ``dest_name`` (a file name) in
    ``folder`` (``""``: the current one); its descriptor and path.

    Call inside :func:`signals_deferred`, together with the code that takes
    charge of the file."""
    head = os.path.join(folder, f".{dest_name}.")
    while True:
        name = f"{head}{_random_part()}{TEMP_SUFFIX}"
        try:
            fd = os.open(name, _CREATE, 0o666)
        except FileExistsError:
            continue
        try:
            # A sweep may have locked and removed the file between its
            # creation and this lock (it was not locked yet): another.
            if _flock(fd, wait=True) is not True or os.fstat(fd).st_nlink > 0:
                return fd, name
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(name)
            raise
        os.close(fd)


class TempFile:
    """A temporary file beside ``dest``, locked for as long as this process has it open.

    The lock (``flock``, released by the kernel when the process dies, however
    it dies) is how :func:`sweep_temp_files` tells a live writer's file from
    the leftover of a killed one: it removes only files it can lock. Create
    one inside :func:`signals_deferred`, together with the code that takes
    charge of it (a ``try`` that discards it on failure), so that a Ctrl-C
    cannot fall between the two.
    """

    def __init__(self, dest: Path, *, durable: bool, folder: str | None = None) -> None:
        self.dest = dest
        # (Plain strings for the system calls: a path object converts on each.)
        target = os.fspath(dest)
        self.mode = _existing_mode(target)
        self.durable = durable
        self.renamed = False
        folder = os.path.dirname(target) if folder is None else folder
        fd, name = _create_temp(dest.name, folder)
        self._name = name
        self.file: BinaryIO = (WriteBehindFile(fd) if durable  # type: ignore[assignment]
                               else io.FileIO(fd, "wb", closefd=True))

    @property
    def path(self) -> Path:
        """The temporary file's path (made when asked: most saves never do)."""
        return Path(self._name)

    def sync(self) -> None:
        """Flush the data to the disk (the size included: fdatasync is enough)."""
        getattr(os, "fdatasync", os.fsync)(self.file.fileno())

    def commit(self, dest: Path | None = None) -> None:
        """Give the file its final mode and rename it to ``dest`` (its
        destination by default), then close it."""
        if self.mode is not None:
            os.fchmod(self.file.fileno(), self.mode)
        if sys.platform == "win32":  # pragma: no cover - an open file cannot be renamed there
            self.file.close()
        os.replace(self._name, dest if dest is not None else self.dest)
        self.renamed = True
        self.file.close()  # after the rename: unlocked, it could be swept

    def link_as(self, dest: Path) -> None:
        """Make ``dest`` name this file's bytes too, replacing ``dest`` atomically;
        this file keeps its name. A hard link where the file system has them,
        otherwise a copy (synced when durable)."""
        try:
            with signals_deferred():
                os.link(self.path, dest)  # a new name: one link, nothing to replace
            return
        except OSError:
            pass  # an old file to replace (or no hard links here: the loop finds out)
        while True:
            tmp = dest.with_name(f".{dest.name}.{_random_part()}{TEMP_SUFFIX}")
            with signals_deferred():
                try:
                    os.link(self.path, tmp)
                except FileExistsError:
                    continue
                except OSError:
                    break  # no hard links here (FAT, some FUSE and network file systems)
                try:
                    if self.mode is not None:
                        os.chmod(tmp, self.mode)
                    os.replace(tmp, dest)
                except BaseException:
                    with contextlib.suppress(OSError):
                        tmp.unlink()
                    raise
            return
        copy: TempFile | None = None
        try:
            with signals_deferred():
                copy = TempFile(dest, durable=self.durable)
            shutil.copyfile(self.path, copy.path)
            if self.durable:
                copy.sync()
            with signals_deferred():
                copy.commit()
        except BaseException:
            if copy is not None:
                copy.discard()
            raise

    def discard(self) -> None:
        """Remove the file and close it (what every failure does)."""
        if not self.renamed:
            with contextlib.suppress(OSError):
                os.unlink(self._name)
        with contextlib.suppress(OSError):
            self.file.close()


def sync_all(files: Iterable[TempFile]) -> None:
    """Sync the data of several temporary files at once (a sharded save's shards).

    The syncs run concurrently: journaling file systems (ext4, xfs) commit
    concurrent syncs together, where one after another each would wait for a
    journal commit of its own.
    """
    todo = list(files)
    if len(todo) <= 1:
        for tmp in todo:
            tmp.sync()
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(len(todo), 16)) as pool:
        for _ in pool.map(TempFile.sync, todo):
            pass


def fsync_dir(folder: str | os.PathLike[str]) -> None:
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
#: Folders by name already swept (a folder later replaced under the same name
#: is not swept again by this process: its leftovers wait for the next one).
_swept_names: set[str] = set()
_swept_lock = threading.Lock()


def sweep_once(folder: str | os.PathLike[str]) -> None:
    """:func:`sweep_temp_files` the first time this process writes into ``folder``.

    Leftovers come from earlier, killed processes, so once per process is
    enough, and a loop of saves into a big folder lists it only once.
    """
    if folder in _swept_names:  # an absolute name seen before: not even abspath
        return
    name = os.path.abspath(folder)
    if name in _swept_names:  # no system call for a folder written into before
        return
    try:
        st = os.stat(folder)
    except OSError:
        return
    key = (st.st_dev, st.st_ino)
    with _swept_lock:
        _swept_names.add(name)
        if isinstance(folder, str) and os.path.isabs(folder):
            _swept_names.add(folder)
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
    parent = os.path.dirname(os.fspath(dest))
    folder = parent or "."
    sweep_once(folder)
    tmp: TempFile | None = None
    try:
        # Held signals are raised as each block ends: inside this try, with
        # ``tmp`` known, so the temporary file is removed.
        with signals_deferred():
            tmp = TempFile(dest, durable=durable, folder=parent)
        yield tmp.file
        if durable:
            tmp.sync()
        tmp.commit()
    except BaseException:
        if tmp is not None:
            tmp.discard()
        raise
    if durable:
        _fsync_dir(folder)


#: Buffers per ``writev`` call (POSIX guarantees at least 16; Linux takes 1024).
_IOV_MAX = 1024


def write_views(fd: int, views: list[memoryview], arrived: Callable[[int], None] | None = None) -> None:
    """Write the byte views ``views`` (format ``B``, flat) one after another at
    ``fd``'s position, several per system call (``writev``) where the platform
    has it; ``arrived`` is told each count written."""
    flat = [v for v in views if len(v)]
    while flat:
        if _HAS_WRITEV:
            n = os.writev(fd, flat[:_IOV_MAX])
        else:  # pragma: no cover - Windows
            n = os.write(fd, flat[0][: 1 << 30])
        if n <= 0:
            raise OSError("short write")
        if arrived is not None:
            arrived(n)
        while n and n >= len(flat[0]):
            n -= len(flat.pop(0))
        if n:
            flat[0] = flat[0][n:]


_HAS_WRITEV = hasattr(os, "writev")


def write_scratch_file(dest: str | os.PathLike[str], views: list[memoryview]) -> None:
    """Replace ``dest`` with the bytes of ``views`` (format ``B``, flat) as
    ``atomic_write(dest, durable=False)`` would, for a whole file in hand.

    The same temporary file, lock and rename (all or nothing against a crash
    or a kill; no syncs), written straight through the descriptor: no file
    object, no generator context manager, no path object (many small saves
    spent more time in those than in their system calls).
    """
    target = os.fspath(dest)
    folder = os.path.dirname(target)
    sweep_once(folder or ".")
    mode = _existing_mode(target)
    fd = -1
    name: str | None = None
    try:
        # Held signals are raised as this block ends: inside the try, with
        # ``name`` known, so the temporary file is removed.
        with signals_deferred():
            fd, name = _create_temp(os.path.basename(target), folder)
        write_views(fd, views)
        if mode is not None:
            os.fchmod(fd, mode)
        if sys.platform == "win32":  # pragma: no cover - an open file cannot be renamed there
            os.close(fd)
            fd = -1
        os.replace(name, target)
        name = None
    except BaseException:
        if name is not None:
            with contextlib.suppress(OSError):
                os.unlink(name)
        raise
    finally:
        if fd >= 0:
            os.close(fd)  # after the rename: unlocked, the file could be swept
