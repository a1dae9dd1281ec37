"""Opening the files tensorfile is handed: regular files only, never a hang.

Every path tensorfile reads (a model file, a shard, an index, a signature, a
key or certificate) may be hostile. Opening a FIFO for reading blocks until
a writer appears, so files are opened non-blocking (which changes nothing for
a regular file) and anything that is not a regular file is refused at once,
a folder with a hint.
"""

from __future__ import annotations

import errno
import os
import stat
import threading
from collections.abc import Callable
from pathlib import PurePath
from types import ModuleType
from typing import Any

from tensorfile.errors import InputNotFoundError, OutputExistsError, TruncatedFileError

#: A path argument as the public functions take it.
PathLike = str | os.PathLike[str]

_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_BINARY", 0)
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_CLOEXEC", 0)
)


def open_regular(
    path: str | os.PathLike[str], *, follow_symlinks: bool = True, folder_hint: str = ""
) -> tuple[int, int]:
    """A read-only descriptor on ``path`` and the file's size.

    Raises :class:`IsADirectoryError` for a folder (its message ends with
    ``folder_hint``), :class:`OSError` (``EINVAL``) for a FIFO, socket or
    device, and whatever ``open`` raises otherwise (with
    ``follow_symlinks=False``, a symlink is refused with ``ELOOP``).
    """
    flags = _FLAGS if follow_symlinks else _FLAGS | getattr(os, "O_NOFOLLOW", 0)
    try:
        if not hasattr(os, "O_NONBLOCK"):
            # Without a non-blocking open, a FIFO would block open() itself: look
            # first (a race with a swap is still caught by the fstat below).
            st_mode = os.stat(path, follow_symlinks=follow_symlinks).st_mode
            _refuse_special(path, st_mode, folder_hint)
        fd = os.open(path, flags)
    except FileNotFoundError:
        # A TensorfileError too, as every bad-input error (and still a FileNotFoundError).
        raise InputNotFoundError(errno.ENOENT, "no such file or folder", os.fspath(path)) from None
    try:
        st = os.fstat(fd)
        _refuse_special(path, st.st_mode, folder_hint)
        return fd, st.st_size
    except BaseException:
        os.close(fd)
        raise


def refuse_existing(path: PathLike) -> None:
    """Raise :class:`OutputExistsError` if ``path`` exists (a dangling link
    too): what a writer calls first when it was not asked to replace files."""
    if os.path.lexists(path):
        what = "is a folder" if os.path.isdir(path) else "already exists"
        raise OutputExistsError(errno.EEXIST, f"{what}; nothing was written", os.fspath(path))


def _refuse_special(path: str | os.PathLike[str], mode: int, folder_hint: str = "") -> None:
    if stat.S_ISREG(mode):
        return
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(errno.EISDIR, "is a folder" + folder_hint, os.fspath(path))
    raise OSError(errno.EINVAL, "not a regular file (a FIFO, socket or device)", os.fspath(path))


PreadInto = Callable[[int, Any, int], int]


def select_pread_into(osmod: ModuleType = os) -> PreadInto:
    """``pread_into(fd, view, offset)``: read up to ``len(view)`` bytes at
    ``offset`` into the writable buffer ``view``; return how many (0 at the
    end of the file). Never moves the descriptor's position where the
    platform can help it, so threads may share a descriptor.

    ``os.preadv`` reads straight into the buffer (Linux, BSDs); ``os.pread``
    (macOS) costs one copy; where neither exists (Windows) a seek and a read
    under one lock stand in.
    """
    if hasattr(osmod, "preadv"):
        preadv = osmod.preadv

        def by_preadv(fd: int, view: Any, offset: int) -> int:
            return int(preadv(fd, [view], offset))

        return by_preadv
    if hasattr(osmod, "pread"):
        pread = osmod.pread

        def by_pread(fd: int, view: Any, offset: int) -> int:
            data = pread(fd, len(view), offset)
            view[: len(data)] = data
            return len(data)

        return by_pread
    lock = threading.Lock()

    def by_seek(fd: int, view: Any, offset: int) -> int:
        with lock:  # the position is shared by every thread using fd
            osmod.lseek(fd, offset, osmod.SEEK_SET)
            data = osmod.read(fd, len(view))
        view[: len(data)] = data
        return len(data)

    return by_seek


pread_into: PreadInto = select_pread_into()


def read_small(path: str | os.PathLike[str], limit: int) -> bytes:
    """At most ``limit + 1`` bytes of the regular file ``path`` (one more than
    allowed, so the caller can tell a file that is too big)."""
    fd, _ = open_regular(path)
    try:
        chunks = []
        left = limit + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_bounded(
    path: str | os.PathLike[str], limit: int, error: type[Exception], what: str
) -> bytes:
    """The whole of a small file the caller must trust (a key, an index, pins,
    a trusted root): at most ``limit`` bytes, or ``error`` saying which file
    could not be read or was too big."""
    try:
        data = read_small(path, limit)
    except OSError as e:
        raise error(f"{path}: cannot read {what}: {e.strerror or e}") from None
    if len(data) > limit:
        raise error(f"{path}: {what} is over the {limit:,}-byte limit")
    return data


def pread_exact(fd: int, size: int, offset: int, into: Any = None) -> Any:
    """Read exactly ``size`` bytes at ``offset`` (into a new or given buffer)."""
    buf = bytearray(size) if into is None else into
    view = memoryview(buf)
    got = 0
    while got < size:
        n = pread_into(fd, view[got:size], offset + got)
        if n == 0:
            raise TruncatedFileError(
                f"file ended at byte {offset + got}, {size - got} bytes short of what the header declares"
            )
        got += n
    return buf


#: Folder-name prefixes of a repository in a Hugging Face hub cache
#: (``models--org--name``, ``datasets--...``, ``spaces--...``).
HF_CACHE_REPO_PREFIXES = ("models--", "datasets--", "spaces--")


def hf_cache_blobs(path: str | os.PathLike[str]) -> str | None:
    """The resolved ``blobs/`` folder of the Hugging Face cache repository
    whose snapshot holds ``path``, or None when ``path`` is not in a snapshot.

    A snapshot is ``<cache>/models--org--name/snapshots/<revision>/``; its
    files are symlinks to ``../../blobs/<digest>``. ``path`` is a folder (the
    snapshot or one below it), resolved first: a snapshot reached through a
    symlink still counts. A ``blobs`` that is itself a symlink does not.
    """
    parts = PurePath(os.path.realpath(path)).parts
    for i in range(len(parts) - 2, 0, -1):
        if parts[i] == "snapshots" and parts[i - 1].startswith(HF_CACHE_REPO_PREFIXES):
            blobs = os.path.join(*parts[:i], "blobs")
            return blobs if os.path.isdir(blobs) and not os.path.islink(blobs) else None
    return None


def open_file_object(obj: object) -> tuple[str, int, int]:
    """A label, a private read-only descriptor and the size for a file object.

    A file object backed by a regular file (one whose ``fileno()`` works) is
    read through a duplicate of its descriptor, from byte 0 whatever its
    position, and never changes the object's own position. Any other object
    with ``read()`` (``io.BytesIO``, an fsspec file) is read once, whole, into
    an anonymous in-memory file that the descriptor then names.
    """
    name = getattr(obj, "name", None)
    label = name if isinstance(name, str) else f"<{type(obj).__name__}>"
    fileno = getattr(obj, "fileno", None)
    fd = -1
    if fileno is not None:
        try:
            fd = os.dup(fileno())
        except (OSError, ValueError, AttributeError):
            fd = -1  # io.UnsupportedOperation is an OSError: no descriptor, read it
    if fd >= 0:
        try:
            st = os.fstat(fd)
            if stat.S_ISREG(st.st_mode):
                return label, fd, st.st_size
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
    read = getattr(obj, "read", None)
    if read is None:
        raise TypeError(
            f"expected a path or a binary file object, got {type(obj).__name__}"
        )
    data = read()
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"{label}: the file object returned {type(data).__name__}, not bytes; open it in binary mode")
    return label, *_anonymous_file(data)


def _anonymous_file(data: bytes | bytearray | memoryview) -> tuple[int, int]:
    """A descriptor on a new unnamed file holding ``data`` (memfd where the OS has it)."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("tensorfile", getattr(os, "MFD_CLOEXEC", 0))
    else:  # pragma: no cover - not Linux
        import tempfile

        with tempfile.TemporaryFile() as tmp:
            fd = os.dup(tmp.fileno())
    try:
        view = memoryview(data).cast("B")
        done = 0
        while done < len(view):
            done += os.write(fd, view[done:])  # a new descriptor: it starts at 0
        return fd, len(view)
    except BaseException:
        os.close(fd)
        raise
