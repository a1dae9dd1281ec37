"""Reading a safetensors header from a file: the one routine every reader uses.

The reader, the sharded reader, hashing, verification and the folder scan all
read headers through here, so every path goes through the safe opener
(:func:`tensorfile._io.files.open_regular`: no FIFO hang, no folder) and the
same validation.
"""

from __future__ import annotations

import os

from tensorfile._format import header as hdr
from tensorfile._format.header import Header
from tensorfile._io.files import open_regular, pread_exact
from tensorfile.errors import FormatError


def read_header(fd: int, file_size: int) -> tuple[Header, bytes]:
    """Read and validate the header of an open file; also return its raw bytes."""
    prefix = pread_exact(fd, min(8, file_size), 0) if file_size else b""
    n = hdr.read_length(bytes(prefix), file_size)
    # (Copies of a 100 MB header add up: the JSON is read once, parsed as is.)
    body = bytes(pread_exact(fd, n, 8))
    return hdr.parse_json(body, file_size - 8 - n, n), bytes(prefix) + body


def read_path_header(path: str | os.PathLike[str], *, follow_symlinks: bool = True) -> tuple[Header, bytes]:
    """The validated header of the file at ``path`` and its raw bytes (length
    prefix included); a :class:`FormatError` names the path."""
    fd, size = open_regular(path, follow_symlinks=follow_symlinks)
    try:
        return read_header(fd, size)
    except FormatError as e:
        raise type(e)(f"{os.fspath(path)}: {e}") from None
    finally:
        os.close(fd)
