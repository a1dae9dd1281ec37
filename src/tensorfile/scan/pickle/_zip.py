"""Zip archives as torch 2.13's miniz reads them, compared with :mod:`zipfile`.

The central directory is taken where the end record says (miniz trusts the
stated offset), names match ignoring case, an entry's data starts after its
local header; every way in which Python's :mod:`zipfile` would read the same
bytes differently is listed as an ambiguity (spec/SCANNING.md, "Zip").
Bounded: offsets and counts are checked before anything is read, nothing is
copied.
"""

from __future__ import annotations

import itertools
import struct
from typing import Final, NamedTuple

from tensorfile._io.sources import prefetch, unpack_from
from tensorfile._picklevm.opcodes import (
    Buffer,
)
from tensorfile.errors import ScanError, ScanLimitError, UnsupportedContainerError

#: First pickle of the legacy torch format (``torch.serialization.MAGIC_NUMBER``).


class ZipEntry(NamedTuple):
    """One central-directory entry and where its data lies (offsets in the buffer)."""

    name: str
    local_name: str
    flags: int
    method: int
    data_start: int
    comp_size: int
    size: int
    #: Where the entry's local header starts, and its name as raw bytes.
    header: int = 0
    raw_name: bytes = b""


class ZipLayout(NamedTuple):
    """A zip archive as torch's miniz reads it, plus every way other readers disagree.

    ``entries`` are miniz's (offsets from the archive's first byte, the central
    directory where the end record says it is); entries only Python's
    :mod:`zipfile` would see are appended. ``problems`` names each ambiguity: a
    file with any is never ``safe``.
    """

    entries: list[ZipEntry]
    problems: list[str]


_EOCD, _CDH, _LFH = b"PK\x05\x06", b"PK\x01\x02", b"PK\x03\x04"
_Z64_REC, _Z64_LOC, _DESCRIPTOR = b"PK\x06\x06", b"PK\x06\x07", b"PK\x07\x08"
_U32: Final = 0xFFFFFFFF


def _u(fmt: str, buf: Buffer, at: int) -> tuple[int, ...]:
    return unpack_from(fmt, buf, at)


def find_eocd(buf: Buffer, start: int, end: int) -> int:
    """The end-of-central-directory record miniz (torch) uses, or -1.

    ``mz_zip_reader_locate_header_sig``: the last signature with 22 bytes after
    it, searched backwards in 4 KiB blocks (overlapping by 3 bytes) until a
    block reaching 65,557 bytes before the end has been searched.
    """
    size = end - start
    if size < 22:
        return -1
    cur = max(size - 4096, 0)
    while cur and size - cur < 65557:
        cur = max(cur - 4093, 0)
    return buf.rfind(_EOCD, start + cur, end - 18)


def _zipfile_eocd(buf: Buffer, start: int, end: int) -> int:
    """The end record :mod:`zipfile` (``_EndRecData``) uses, or -1 where it gives up."""
    if end - start >= 22 and buf[end - 22:end - 18] == _EOCD and buf[end - 2:end] == b"\0\0":
        return end - 22
    at = buf.rfind(_EOCD, max(end - 65536 - 22, start), end)
    return at if at >= 0 and end - at >= 22 else -1


def zip_entries(buf: Buffer, start: int, end: int, max_entries: int) -> list[ZipEntry]:
    """The entries of the zip in ``buf[start:end]`` as torch reads them.

    Raises :class:`UnsupportedContainerError` when miniz would refuse the
    archive or when readers disagree about it (see :func:`zip_layout`).
    """
    layout = zip_layout(buf, start, end, max_entries)
    if layout.problems:
        raise UnsupportedContainerError(f"ambiguous zip archive: {layout.problems[0]}")
    for entry in layout.entries:
        if entry.data_start < 0:
            raise UnsupportedContainerError(
                f"zip entry {entry.name!r}: no local header at byte {entry.header}, or its "
                "data runs past the end")
    return layout.entries


def zip_layout(buf: Buffer, start: int, end: int, max_entries: int) -> ZipLayout:
    """Read the zip in ``buf[start:end]`` with miniz's rules and list every disagreement.

    Raises :class:`UnsupportedContainerError` where miniz itself refuses the
    archive (torch then reads nothing) or a record is cut off.
    """
    eocd = find_eocd(buf, start, end)
    if eocd < 0:
        raise UnsupportedContainerError("zip archive without an end-of-central-directory record")
    problems: list[str] = []
    try:
        entries = _read_zip(buf, start, end, eocd, max_entries, problems)
    except struct.error as exc:  # a record cut off by the end of the data
        raise UnsupportedContainerError(f"truncated zip record: {exc}") from None
    return ZipLayout(entries, problems)


def _read_zip(buf: Buffer, s: int, end: int, eocd: int, max_entries: int,
              problems: list[str]) -> list[ZipEntry]:
    size = end - s
    theirs = _zipfile_eocd(buf, s, end)
    if theirs not in (-1, eocd):
        problems.append(f"two end-of-central-directory records (bytes {eocd} and {theirs}): "
                        "torch's miniz and Python's zipfile pick different ones")
    disk, cd_disk, on_disk, total, cd_size, cd_ofs, comment = _u("<HHHHIIH", buf, eocd + 4)
    if eocd + 22 + comment > end:
        problems.append(f"the end record's comment runs {eocd + 22 + comment - end} bytes "
                        "past the end of the file")
    elif eocd + 22 + comment < end:
        problems.append(f"{end - eocd - 22 - comment} bytes follow the end record and its "
                        "comment (trailing data)")
    record = eocd  # the end record the central directory should sit right before
    zf_record = eocd
    loc = eocd - 20
    if eocd - s >= 76 and buf[loc:loc + 4] == _Z64_LOC:
        _, rel, disks = _u("<IQI", buf, loc + 4)
        if rel > size - 56:
            raise UnsupportedContainerError("zip64 end record offset lies past the end")
        at = s + rel
        if buf[at:at + 4] == _Z64_REC:
            rsize, _, _, disk, cd_disk, on_disk, total, cd_size, cd_ofs = _u(
                "<QHHIIQQQQ", buf, at + 4)
            if rsize < 44 or disks != 1:
                raise UnsupportedContainerError("zip64 end record is malformed or multi-disk")
            if total > _U32 or cd_size > _U32:
                raise UnsupportedContainerError("zip64 central directory too large for torch")
            record = at
        if buf[loc - 56:loc - 52] == _Z64_REC:
            zf_record = loc - 56  # zipfile reads the zip64 record right before the locator
        if zf_record != record:
            problems.append(f"the zip64 locator points at byte {at}, but the zip64 end record "
                            f"Python's zipfile reads sits right before the locator (byte {loc - 56})")
    elif total == 0xFFFF or _U32 in (cd_size, cd_ofs):
        raise UnsupportedContainerError("zip64 archive without a zip64 locator")
    if total != on_disk or ((disk | cd_disk) and (disk, cd_disk) != (1, 1)):
        raise UnsupportedContainerError("multi-disk zip archive")
    if cd_size < total * 46 or cd_ofs + cd_size > size:
        raise UnsupportedContainerError("zip central directory lies outside the file")
    if total > max_entries:
        raise ScanLimitError(f"zip archive lists {total} entries (limit {max_entries})")
    cd = s + cd_ofs
    if cd + cd_size != record:
        problems.append(
            f"the end record puts the central directory at byte {cd}, but it would end "
            f"{record - cd - cd_size} bytes before the end record; Python's zipfile reads it "
            f"at byte {record - cd_size} (relative offsets)")
    try:
        entries, used = _directory(buf, s, end, cd, cd_size, total, disk, problems)
        if used != cd_size:
            problems.append(f"the central directory holds {cd_size - used} bytes beyond its "
                            f"{total} entries (Python's zipfile reads entries until its size "
                            "is used)")
        _check_spans(entries, cd, cd + cd_size, problems)
    except UnsupportedContainerError as exc:
        problems.append(f"torch's miniz reader refuses it ({exc}), other readers may not")
        entries = []
    shift = record - cd - cd_size
    if shift and zf_record == record and s + shift >= s:
        # Python's zipfile: offsets relative to where the directory really ends.
        _add_directory(entries, buf, s + shift, end, record - cd_size, cd_size, max_entries)
    _other_directories(entries, buf, s, end, eocd, max_entries, problems)
    return entries


def _add_directory(entries: list[ZipEntry], buf: Buffer, base: int, end: int, cd: int,
                   cd_size: int, max_entries: int) -> None:
    """Append the entries another reader would see there (best effort: scanned too)."""
    try:
        extra, _ = _directory(buf, base, end, cd, cd_size, max_entries, 0, [], by_size=True)
    except (ScanError, struct.error):
        return
    seen = {e.data_start for e in entries}
    entries += [e for e in extra if e.data_start not in seen]


def _directory(buf: Buffer, base: int, end: int, cd: int, cd_size: int, total: int,
               disk: int, problems: list[str], *, by_size: bool = False
               ) -> tuple[list[ZipEntry], int]:
    """``total`` central entries from ``cd`` (miniz) or all within ``cd_size`` (zipfile)."""
    central: list[tuple[int, bytes, int, int, int, int, int]] = []
    pos, cd_end = cd, cd + cd_size
    seen: dict[bytes, bytes] = {}
    for _ in range(total):
        if by_size and pos >= cd_end:
            break
        if pos + 46 > cd_end or buf[pos:pos + 4] != _CDH:
            raise UnsupportedContainerError(f"broken zip central directory at byte {pos}")
        flags, method = _u("<HH", buf, pos + 8)
        csize, usize, nlen, xlen, clen, disk_start = _u("<IIHHHH", buf, pos + 20)
        (loff,) = _u("<I", buf, pos + 42)
        if pos + 46 + nlen + xlen + clen > cd_end:
            raise UnsupportedContainerError(f"zip central entry at byte {pos} runs past the directory")
        raw = bytes(buf[pos + 46:pos + 46 + nlen])
        extra = bytes(buf[pos + 46 + nlen:pos + 46 + nlen + xlen])
        if _U32 in (csize, usize, loff):
            usize, csize, loff = _zip64_extra(extra, usize, csize, loff)
        if csize != _U32 and usize != _U32 and ((method == 0 and usize != csize)
                                                or (usize and not csize)):
            raise UnsupportedContainerError(f"zip entry {raw!r}: sizes are inconsistent")
        if not by_size and (disk_start == 0xFFFF or disk_start not in (disk, 1)):
            raise UnsupportedContainerError("multi-disk zip archive")
        if flags & 0x2000:
            raise UnsupportedContainerError("zip central directory is encrypted")
        pos += 46 + nlen + xlen + clen
        key = raw.lower()  # miniz looks names up ignoring ASCII case
        if key in seen:
            what = "appears twice" if seen[key] == raw else f"collides with {seen[key]!r} when case is ignored"
            problems.append(f"zip entry {raw!r} {what} (readers pick different ones)")
        seen[key] = raw
        central.append((loff, raw, flags, method, csize, usize, xlen))
    # Every local header is read next: asked for at once, which a remote
    # checkpoint fetches concurrently rather than one round trip per entry.
    prefetch(buf, [(base + loff, base + loff + 30 + len(raw) + xlen)
                   for loff, raw, *_, xlen in central])
    entries = [_local(buf, base, end, loff, raw, flags, method, csize, usize, problems)
               for loff, raw, flags, method, csize, usize, _ in central]
    return entries, pos - cd


def _zip64_extra(extra: bytes, usize: int, csize: int, loff: int) -> tuple[int, int, int]:
    at = 0
    while at + 4 <= len(extra):
        tag, size = struct.unpack_from("<HH", extra, at)
        body = extra[at + 4:at + 4 + size]
        if tag == 1:
            vals = [struct.unpack_from("<Q", body, i)[0] for i in range(0, len(body) - 7, 8)]
            if usize == _U32 and vals:
                usize = vals.pop(0)
            if csize == _U32 and vals:
                csize = vals.pop(0)
            if loff == _U32 and vals:
                loff = vals.pop(0)
            break
        at += 4 + size
    return usize, csize, loff


def _zip_name(raw: bytes, flags: int) -> str:
    return raw.decode("utf-8" if flags & 0x800 else "cp437", "replace")


def _local(buf: Buffer, base: int, end: int, loff: int, raw: bytes, flags: int, method: int,
           csize: int, usize: int, problems: list[str]) -> ZipEntry:
    name = _zip_name(raw, flags)
    at = base + loff
    if at + 30 > end or buf[at:at + 4] != _LFH:
        # Readers look at a local header only when they extract the entry: an
        # entry without one cannot be read (the walker reports it), the others can.
        return ZipEntry(name, name, flags, method, -1, csize, usize, at, raw)
    lflags, lmethod, _, _, _, lcsize, lusize, nlen, xlen = _u("<HHHHIIIHH", buf, at + 6)
    data = at + 30 + nlen + xlen
    if data + csize > end:
        return ZipEntry(name, name, flags, method, -1, csize, usize, at, raw)
    local_raw = bytes(buf[at + 30:at + 30 + nlen])
    if local_raw != raw:
        problems.append(f"zip entry {raw!r}: its local header names it {local_raw!r}")
    if lmethod != method:
        problems.append(f"zip entry {raw!r}: local header says method {lmethod}, "
                        f"central directory {method}")
    if _U32 in (lcsize, lusize):
        lusize, lcsize, _ = _zip64_extra(bytes(buf[at + 30 + nlen:data]), lusize, lcsize, 0)
    if (not lflags & 8 or (lcsize, lusize) != (0, 0)) and (lcsize, lusize) != (csize, usize):
        problems.append(f"zip entry {raw!r}: sizes disagree (central directory {csize}/{usize}, "
                        f"local header {lcsize}/{lusize})")
    if flags & 8:
        d = data + csize
        d += 4 if buf[d:d + 4] == _DESCRIPTOR else 0
        sizes = (csize, usize)
        if sizes != _sizes(buf, d + 4, "<II", end) and sizes != _sizes(buf, d + 4, "<QQ", end):
            problems.append(f"zip entry {raw!r}: its data descriptor disagrees with the "
                            f"central directory's sizes {csize}/{usize}")
    return ZipEntry(name, _zip_name(local_raw, lflags), flags, method, data, csize, usize, at, raw)


def _sizes(buf: Buffer, at: int, fmt: str, end: int) -> tuple[int, int] | None:
    if at + struct.calcsize(fmt) > end:
        return None
    c, u = _u(fmt, buf, at)
    return c, u


def _check_spans(entries: list[ZipEntry], cd: int, cd_end: int, problems: list[str]) -> None:
    """Entries must not share bytes with each other or with the central directory."""
    spans = [(e.header, e.data_start + e.comp_size, e.raw_name) for e in entries
             if e.data_start >= 0]
    spans.append((cd, cd_end, b"<central directory>"))
    spans.sort()
    for (_, a1, an), (b0, _, bn) in itertools.pairwise(spans):
        if b0 < a1:
            problems.append(f"zip entries {an!r} and {bn!r} overlap (bytes {b0}-{a1})")
            return


def _other_directories(entries: list[ZipEntry], buf: Buffer, s: int, end: int, eocd: int,
                       max_entries: int, problems: list[str]) -> None:
    """Another end record before the one used that points at a directory: a second
    reading (say, an archive hidden in the comment). Its entries are scanned too."""
    at = eocd
    for _ in range(_MAX_EXTRA_EOCD):
        at = buf.rfind(_EOCD, max(s, end - 65557 - 4096), at)
        if at < 0 or at + 22 > end:
            return
        total, cd_size, cd_ofs = _u("<HII", buf, at + 10)
        for base in dict.fromkeys((s, at - cd_size - cd_ofs)):
            cd = base + cd_ofs
            if total and base >= s and cd + cd_size <= at and buf[cd:cd + 4] == _CDH:
                problems.append(f"a second end-of-central-directory record at byte {at} "
                                "describes another central directory")
                _add_directory(entries, buf, base, end, cd, cd_size, max_entries)
                break


#: Frame ambiguities per file whose second reading (from the frame's end) is scanned too.
_MAX_ALTERNATIVES: Final = 8
#: Ambiguities of one archive listed one by one (the rest are counted).
_MAX_PROBLEMS: Final = 8
#: How many earlier end-of-central-directory candidates are checked.
_MAX_EXTRA_EOCD: Final = 8
