"""Is this file a valid safetensors file? Asked by the folder scan, answered by the format core.

``tensorfile scan`` meets ``.safetensors`` files in every model folder. They
are checked with the same header validation :func:`tensorfile.load_file` uses
(``tensorfile._format.header``), reading only the length prefix and the header
JSON, never the tensor data; the format core (and numpy, which it imports) is
loaded only when such a file turns up.
"""

from __future__ import annotations

import struct

from tensorfile._io.sources import Image
from tensorfile.errors import FormatError

#: The format core's own limit, repeated so that sniffing needs no import.
_MAX_HEADER_SIZE = 100_000_000


def check_safetensors(image: Image, named: bool) -> str | None:
    """``""`` for a valid safetensors file, else the rule it breaks, as
    ``"TruncatedFileError: ..."``; ``None`` when the file is neither ``named``
    ``.safetensors`` nor starts like one (an 8-byte little-endian header
    length of at most 100 MB, then ``{``).

    ``image`` is the file (or remote object) as the scanner reads it
    (:mod:`tensorfile._io.sources`): a source that fails is an
    ``OSError`` (:class:`~tensorfile.errors.FileReadError`,
    :class:`~tensorfile.errors.RemoteError`) for the caller.
    """
    size = len(image)
    prefix = image[:min(9, size)]
    n = struct.unpack("<Q", prefix[:8])[0] if len(prefix) >= 8 else -1
    if not named and not (2 <= n <= _MAX_HEADER_SIZE and prefix[8:9] == b"{"):
        return None
    # The format core (and numpy) loads only when a safetensors file turns up.
    from tensorfile._format import header as hdr

    try:
        length = hdr.read_length(prefix[:8], size)
        # The header is read straight from the source: never kept in the image.
        hdr.parse_json(bytes(image.copy(8, 8 + length)), size - 8 - length, length)
    except FormatError as exc:
        return f"{type(exc).__name__}: {exc}"
    return ""
