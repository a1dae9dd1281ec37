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
    fd = os.open(path, flags)
    try:
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode):
            return fd, st.st_size
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(errno.EISDIR, "is a folder" + folder_hint, os.fspath(path))
        raise OSError(errno.EINVAL, "not a regular file (a FIFO, socket or device)", os.fspath(path))
    except BaseException:
        os.close(fd)
        raise


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
            done += os.pwrite(fd, view[done:], done)
        return fd, len(view)
    except BaseException:
        os.close(fd)
        raise
