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
from pathlib import PurePath

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
