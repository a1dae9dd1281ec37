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
from tensorfile._report import FileReport, Verdict
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
    if not named and not _shaped(prefix):
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


def _shaped(head: bytes) -> bool:
    """Starts like safetensors: an 8-byte little-endian header length of at most 100 MB, then ``{``."""
    n = struct.unpack("<Q", head[:8])[0] if len(head) >= 8 else -1
    return 2 <= n <= _MAX_HEADER_SIZE and head[8:9] == b"{"


class SafetensorsAssessor:
    """The safetensors check as a :class:`~tensorfile.scan._base.ByteAssessor`:
    it claims a file named ``.safetensors`` or shaped like one and reads only
    the length prefix and the header (a local file and a remote object alike)."""

    format = "safetensors"

    def detect(self, head: bytes, name: str) -> bool:
        return name.lower().endswith(".safetensors") or _shaped(head)

    def read(self, image: Image, name: str, basename: str) -> FileReport | None:
        """``safetensors``/``safe``, or ``error`` naming the broken rule; None
        when it is neither named nor shaped like safetensors after all. A
        source that fails is ``unreadable``."""
        try:
            found = check_safetensors(image, basename.lower().endswith(".safetensors"))
        except OSError as exc:  # the source failed or changed since it was sniffed
            return FileReport(name, "unreadable", Verdict.ERROR, error=f"cannot read: {exc}")
        if found is None:
            return None
        if found:
            return FileReport(name, self.format, Verdict.ERROR,
                              error=f"not a valid safetensors file: {found}")
        return FileReport(name, self.format, Verdict.SAFE)
