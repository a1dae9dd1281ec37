"""Is this file a valid safetensors file? Asked by the folder scan, answered by the format core.

``tensorfile scan`` meets ``.safetensors`` files in every model folder. They
are checked with the same header validation :func:`tensorfile.load_file` uses
(``tensorfile._format.header``), reading only the length prefix and the header
JSON, never the tensor data; the format core (and numpy, which it imports) is
loaded only when such a file turns up.
"""

from __future__ import annotations

import os
import struct

from tensorfile._io.files import open_regular, pread_exact
from tensorfile.errors import FormatError

#: The format core's own limit, repeated so that sniffing needs no import.
_MAX_HEADER_SIZE = 100_000_000


def check_safetensors(path: os.PathLike[str] | str, named: bool) -> str | None:
    """``""`` for a valid safetensors file, else the rule it breaks, as
    ``"TruncatedFileError: ..."``; ``None`` when the file is neither ``named``
    ``.safetensors`` nor starts like one (an 8-byte little-endian header
    length of at most 100 MB, then ``{``).
    """
    try:
        fd, size = open_regular(path)
    except OSError as exc:
        return f"cannot read: {exc.strerror or exc}" if named else None
    try:
        prefix = bytes(pread_exact(fd, min(9, size), 0))
        n = struct.unpack("<Q", prefix[:8])[0] if len(prefix) >= 8 else -1
        if not named and not (2 <= n <= _MAX_HEADER_SIZE and prefix[8:9] == b"{"):
            return None
        # The format core (and numpy) loads only when a safetensors file turns up.
        from tensorfile._io.headers import read_header

        try:
            read_header(fd, size)
        except FormatError as exc:
            return f"{type(exc).__name__}: {exc}"
        return ""
    finally:
        os.close(fd)
