"""Find every pickle stream a loader would unpickle from a file, and scan each one.

Containers are recognised by their bytes, never by file name, and each is
read the way the loader that accepts it reads it (``torch.load`` of torch
2.13, ``numpy.load``); where two readers can read a file differently, the
file is an ``error`` naming the ambiguity and every reading is scanned
(spec/SCANNING.md, "Containers", has each rule beside the loader code):

* raw pickles, several back to back (a payload after STOP still counts);
* the legacy torch format (magic, protocol, sys_info, object and storage-key
  pickles, then one record per storage: an 8-byte element count and raw bytes,
  stepped over by length, never read), with ``_pickle.c``'s framing;
* zip archives (torch's format, ``.npz``, a zip inside a zip), read with the
  reader below as torch's miniz reads them (the central directory where the
  end record says, names matched ignoring case, data after the local header)
  and compared with :mod:`zipfile`'s reading;
* tar (torch < 0.4: ``storages``, ``tensors``, ``pickle``) whenever
  :mod:`tarfile` accepts the first header (a valid checksum, no ``ustar``
  magic needed), with tarfile's own member list;
* numpy ``.npy`` (object arrays are pickles: numpy's own header reader decides);
* nested ``torch.storage._load_from_bytes`` payloads found by the policy, read
  as ``torch.load(io.BytesIO(b))`` reads them (zip or pickles, never tar).

7z, gzip and other archives torch cannot read give ``error`` (never safe), as
does anything that cannot be read to the end. Storage records and other
non-pickle entries are only *sniffed* (their first bytes): if they look like
a pickle or an archive they are scanned, otherwise they are skipped, so the
scan time does not depend on the size of the weights. Files are memory-mapped;
only compressed zip entries are decompressed, within a budget (zip bombs).
"""

from __future__ import annotations

import itertools
import mmap
import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Final, NamedTuple

from tensorfile._io.files import open_regular
from tensorfile.errors import ScanError, ScanLimitError, UnsupportedContainerError
from tensorfile.pickles.machine import Call, Limits, StreamResult, run_stream
from tensorfile.pickles.opcodes import (
    OPCODE_BYTES,
    AmbiguousPickleError,
    BigText,
    Buffer,
    BytesRef,
    frame_by_frame,
    looks_like_binary_pickle,
)
from tensorfile.pickles.policy import STORAGE_TYPES, StreamPolicy, call_of
from tensorfile.pickles.report import FileReport, Finding, StreamReport, Verdict

#: First pickle of the legacy torch format (``torch.serialization.MAGIC_NUMBER``).
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C

_SNIFF = 512
_ARCHIVE_MAGIC = {
    b"7z\xbc\xaf\x27\x1c": "7z",
    b"\x1f\x8b": "gzip",
    b"BZh": "bzip2",
    b"\xfd7zXZ\x00": "xz",
    b"\x28\xb5\x2f\xfd": "zstd",
    b"Rar!\x1a\x07": "rar",
}


class ScanLimits(NamedTuple):
    """Bounds on the work done for one file (each exceeded bound gives ``error``).

    A ``NamedTuple``, like the other records of the scanner, because a
    dataclass costs start-up time (see :mod:`.machine`).
    """

    max_depth: int = 8
    max_streams: int = 10_000
    max_entries: int = 100_000
    max_inflate: int = 64 << 20
    machine: Limits = Limits()


# ---------------------------------------------------------------------------
# Zip (central directory + local headers), tar and npy readers: bounded, no copies
# ---------------------------------------------------------------------------

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
    return struct.unpack_from(fmt, buf, at)


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
    entries = []
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
        entries.append(_local(buf, base, end, loff, raw, flags, method, csize, usize, problems))
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


class TarMember(NamedTuple):
    """A member as :mod:`tarfile` lists it (offsets in the scanned buffer)."""

    name: str
    #: 'file' (tarfile hands out its bytes), 'link', 'symlink', 'sparse' or 'other'.
    kind: str
    data: int
    size: int
    linkname: str
    #: Its place in the listing (a hard link names an earlier member).
    position: int


#: The most one tarfile read may ask for (a pax or GNU long-name header).
_MAX_TAR_READ: Final = 16 << 20


class _Window:
    """``buf[start:end]`` as the seekable file :mod:`tarfile` reads (no copy of the whole)."""

    def __init__(self, buf: Buffer, start: int, end: int) -> None:
        self.buf, self.start, self.end, self.pos = buf, start, end, start

    def read(self, n: int | None = -1) -> bytes:
        if n is None or n < 0:
            n = self.end - self.pos
        if n > _MAX_TAR_READ:
            raise ScanLimitError(f"tar header asks to read {n} bytes at once")
        stop = min(self.end, self.pos + n)
        data = bytes(self.buf[self.pos:stop])
        self.pos = stop
        return data

    def seek(self, pos: int, whence: int = 0) -> int:
        base = (self.start, self.pos, self.end)[whence]
        self.pos = max(self.start, base + pos)
        return self.pos - self.start

    def tell(self) -> int:
        return self.pos - self.start


def tar_checksum_ok(head: bytes) -> bool:
    """Whether ``tarfile`` takes this first block for a header (``TarInfo.frombuf``).

    Only the checksum is checked (no ``ustar`` magic): torch tries ``tarfile``
    on every file that does not start like a zip. This is ``frombuf``'s test
    (``nti(buf[148:156]) in calc_chksums(buf)``) without importing
    :mod:`tarfile` (8 ms of every scan's start-up); a test holds it to
    tarfile's own functions.
    """
    block = head[:512]
    if len(block) < 512 or block.count(0) == 512:
        return False
    field = block[148:156]
    if field[0] in (0o200, 0o377):  # base-256
        stated = int.from_bytes(field[1:], "big")
        if field[0] == 0o377:
            stated -= 256 ** 7
    else:
        try:  # nts(): up to the first NUL, ASCII; then int(s.strip() or "0", 8)
            text = field.split(b"\0", 1)[0].decode("ascii")
            stated = int(text.strip() or "0", 8)
        except ValueError:
            return False
    unsigned = 256 + sum(block[:148]) + sum(block[156:])
    high = len(block[:148].translate(None, _LOW_BYTES)) + len(
        block[156:].translate(None, _LOW_BYTES))
    return stated in (unsigned, unsigned - 256 * high)


_LOW_BYTES: Final = bytes(range(128))


def tar_listing(buf: Buffer, start: int, end: int, max_entries: int) -> list[TarMember] | None:
    """Members of ``buf[start:end]`` exactly as Python's :mod:`tarfile` lists them.

    ``None`` when ``tarfile.open`` or the listing raises ``TarError``: torch's
    legacy loader then falls back to reading the file as pickles. The listing
    stops, as ``tarfile``'s does, at the first header after the first that is
    not valid. tarfile only parses headers here; nothing is extracted.
    """
    import tarfile

    try:
        with tarfile.open(fileobj=_Window(buf, start, end), mode="r:") as tf:  # type: ignore[call-overload]
            members = []
            for index, info in enumerate(tf):
                if index >= max_entries:
                    raise ScanLimitError(f"tar archive has more than {max_entries} members")
                kind = ("sparse" if info.issparse() else "file" if info.isreg()
                        or info.type not in tarfile.SUPPORTED_TYPES else "link" if info.islnk()
                        else "symlink" if info.issym() else "other")
                members.append(TarMember(info.name, kind, start + info.offset_data, info.size,
                                         info.linkname, index))
            return members
    except tarfile.TarError:
        return None
    except ScanError:
        raise
    except Exception as exc:  # tarfile's own failure outside TarError: torch.load fails too
        raise UnsupportedContainerError(f"tar header cannot be read ({type(exc).__name__})"
                                        ) from None


def tar_members(buf: Buffer, start: int, end: int, max_entries: int
                ) -> Iterator[tuple[str, int, int]]:
    """(name, data start, size) of each member whose bytes tarfile hands out as a file."""
    members = tar_listing(buf, start, end, max_entries)
    if members is None:
        raise UnsupportedContainerError("tarfile does not read it as a tar archive")
    for m in members:
        if m.kind == "file":
            yield m.name, m.data, m.size


def _tar_target(members: list[TarMember], member: TarMember) -> TarMember | None:
    """What tarfile reads for ``member``: a hard link's target (``_find_link_target``:
    the last member before it with that name), anything else itself."""
    seen = 0
    while member.kind == "link" and seen < 64:
        seen += 1
        name = os.path.normpath(member.linkname)
        found = [m for m in members[:member.position] if os.path.normpath(m.name) == name]
        if not found:
            return None
        member = found[-1]
    return member


def npy_pickle_start(buf: Buffer, start: int, end: int) -> int | None:
    """Where ``numpy.load(allow_pickle=True)`` would start unpickling this ``.npy``, or None.

    The header is read by numpy's own reader (``read_magic``, ``_check_version``,
    ``_read_array_header``, as ``numpy.lib.format.read_array`` calls them: the
    version's length field and encoding, ``ast.literal_eval`` with the Python 2
    ``L`` filter, the key check, ``descr_to_dtype``), so "object array" means
    what it means to numpy: ``dtype.hasobject`` (``'object'``, ``'b1,O'``,
    ``[('a', 'O')]``, ...). Reads are bounded (one read of at most 16 MiB).
    """
    import warnings

    try:
        from numpy.lib import _format_impl as npformat  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.lib import format as npformat  # type: ignore[no-redef]
    window = _Window(buf, start, end)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            version = npformat.read_magic(window)
            npformat._check_version(version)  # type: ignore[attr-defined]
            _, _, dtype = npformat._read_array_header(  # type: ignore[attr-defined]
                window, version, max_header_size=2**64)
    except ScanError:
        raise
    except Exception as exc:  # numpy refuses the header: it unpickles nothing
        # Only the exception type: messages quote object addresses and the
        # same file must always give the same report.
        raise UnsupportedContainerError(
            f"npy header is not a literal dict numpy accepts ({type(exc).__name__})") from None
    return window.pos if dtype.hasobject else None


def _zip_at_end(buf: Buffer, start: int, end: int) -> bool:
    """An end record near the end whose directory is really there (zipfile's reading)."""
    at = _zipfile_eocd(buf, start, end)
    if at < 0:
        return False
    cd_size, cd_ofs = _u("<II", buf, at + 12)
    cd = at - cd_size
    return ((start <= cd < at and buf[cd:cd + 4] == _CDH)
            or buf[start + cd_ofs:start + cd_ofs + 4] == _CDH)


def sniff(head: bytes) -> str | None:
    """What ``head`` (the first bytes of something) is: 'zip', 'npy', 'tar', an archive name."""
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    if tar_checksum_ok(head):  # torch tries tar before anything but zip
        return "tar"
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    for magic, name in _ARCHIVE_MAGIC.items():
        if head.startswith(magic):
            return name
    return None


# ---------------------------------------------------------------------------
# The walker
# ---------------------------------------------------------------------------

#: Roles of parts that are only sniffed: "storage" (raw tensor bytes: torch
#: never unpickles them, so only a binary pickle header or an archive is worth
#: a look) and "record" (any other non-pickle member: anything that starts like
#: a pickle is tried). A tried part that fails without importing anything is data.
_SNIFFED: Final = frozenset({"storage", "record"})


def _worth_parsing(head: bytes, role: str) -> bool:
    if role == "storage":
        return looks_like_binary_pickle(head)
    return bool(head) and head[0] in OPCODE_BYTES


def _fatal(error: ScanError | None) -> bool:
    """Whether a stream's error ends the reading of what follows it.

    A frame ambiguity does not: the stream was read on flat, and the next one
    is read from there (as a buffered file reads it) so nothing after it is missed.
    """
    return error is not None and not isinstance(error, AmbiguousPickleError)


def _inside(location: str, member: str) -> str:
    """Location of ``member`` inside ``location`` (``outer.zip!inner.pt!data.pkl``)."""
    return f"{location}!{member}" if location else member


def _part(location: str, what: str) -> str:
    """Location of a part of the stream sequence at ``location`` (``data.pkl #2``)."""
    return f"{location} {what}" if location else what


class _Walker:
    """Scans one file, appending a StreamReport per stream found."""

    def __init__(self, limits: ScanLimits) -> None:
        self.limits = limits
        self.streams: list[StreamReport] = []
        self.inflated = 0
        # A stream stopped by the scanner's own bound, where the real unpickler
        # reads on: such a file is never "not-pickle".
        self.limited = False
        # Storage sizes each stream's persistent ids declare, in stream order
        # (zip checkpoints compare them with their data records).
        self.claims: list[dict[str, tuple[int, int, str]]] = []
        self.alternatives = 0

    def fail(self, location: str, offset: int, message: str) -> None:
        self.streams.append(StreamReport(location, offset, Verdict.ERROR, error=message))

    # -- one stream --------------------------------------------------------------
    def stream(self, buf: Buffer, start: int, end: int, location: str, depth: int, *,
               tentative: bool = False, key_pids: bool = False
               ) -> tuple[StreamResult, StreamPolicy] | None:
        """Run one stream; None when ``tentative`` and it turned out not to be a pickle."""
        if len(self.streams) >= self.limits.max_streams:
            raise ScanLimitError(f"more than {self.limits.max_streams} pickle streams")
        policy = StreamPolicy(key_pids=key_pids)
        result = run_stream(buf, start, policy, end=end, limits=self.limits.machine)
        self.limited = self.limited or isinstance(result.error, ScanLimitError)
        self.claims.append(policy.storage_nbytes)
        if tentative and result.error is not None and not policy.findings and not policy.globals:
            return None  # raw data that merely starts with an opcode byte
        verdict = policy.verdict
        if result.error is not None:
            verdict = Verdict.worst([verdict], Verdict.ERROR)
        findings = list(policy.findings)
        resume = None
        other = None
        if isinstance(result.error, AmbiguousPickleError):  # a finding: never "not a pickle"
            findings.append(Finding(Verdict.ERROR, f"two readings: {result.error}", "FRAME",
                                    result.error.offset))
            resume = result.error.frame_end
            if self.alternatives < _MAX_ALTERNATIVES:
                # The second reading of the stream itself: frames read whole.
                self.alternatives += 1
                other = frame_by_frame(buf, start, end, self.limits.max_inflate)
        if policy.dropped:
            findings.append(Finding(verdict, f"{policy.dropped} further findings not listed"))
        self.streams.append(StreamReport(
            location, start, verdict, findings, list(policy.globals),
            None if result.error is None else str(result.error)))
        if other is not None:
            self.stream(other, 0, len(other), _part(location, "(read frame by frame)"), depth,
                        tentative=True, key_pids=key_pids)
        if resume is not None and self.alternatives < _MAX_ALTERNATIVES:
            # The other reading: the next pickle starts where the frame ends.
            self.alternatives += 1
            self.pickles(buf, resume, end, _part(location, f"@ {resume} (after its FRAME)"),
                         depth, tentative=True)
        seen: set[int] = set()
        for offset, payload in policy.nested:
            if id(payload) not in seen:  # one memoized payload called many times
                seen.add(id(payload))
                self.nested(payload, _inside(location, f"_load_from_bytes@{offset}"), offset,
                            depth + 1)
        return result, policy

    def nested(self, payload: object, location: str, offset: int, depth: int) -> None:
        """Scan a ``_load_from_bytes`` argument as the torch.load input it is."""
        if isinstance(payload, bytes):
            self.blob(payload, 0, len(payload), location, depth, "nested")
        elif isinstance(payload, BytesRef):
            self.blob(payload.buf, payload.start, payload.stop, location, depth, "nested")
        elif isinstance(payload, Call) and call_of(payload, "_codecs.encode"):
            assert isinstance(payload.args, tuple)
            text = payload.args[0]
            if isinstance(text, BigText):
                if len(text.raw) > self.limits.max_inflate:
                    self.fail(location, offset, "nested stream too large to decode")
                    return
                text = text.raw.tobytes().decode("utf-8", "surrogatepass")
            try:
                data = str(text).encode("latin-1")
            except UnicodeEncodeError:
                self.fail(location, offset, "nested stream is not latin-1 text")
                return
            self.blob(data, 0, len(data), location, depth, "nested")
        else:
            self.fail(location, offset, "nested stream is not literal bytes")

    # -- dispatch by content -------------------------------------------------------
    def blob(self, buf: Buffer, start: int, end: int, location: str, depth: int, role: str
             ) -> str:
        """Scan ``buf[start:end]``; ``role`` is 'top', 'pickle', 'record' or 'storage'.

        Returns the format found.
        """
        if depth > self.limits.max_depth:
            self.fail(location, start, f"containers nested deeper than {self.limits.max_depth}")
            return "nested"
        head = bytes(buf[start:min(end, start + _SNIFF)])
        kind = sniff(head)
        if role == "nested":
            # torch.load(io.BytesIO(b)): a zip by its first four bytes, else pickles
            # (a BytesIO is never tried as tar, numpy never reads it).
            kind = "zip" if head[:4] == b"PK\x03\x04" else None
            role = "top"
        elif kind is None and role == "top" and _zip_at_end(buf, start, end):
            # Data before the archive: zip readers that search from the end find
            # it, but torch.load and numpy.load see no PK header and unpickle from byte 0.
            self.fail(location, start, "data before a zip archive: zipfile reads the archive, "
                      "torch.load and numpy.load read the file as a pickle")
            if head[:1] and head[0] in OPCODE_BYTES:
                self.pickles(buf, start, end, location, depth)
            kind = "zip"
        try:
            if kind == "zip":
                return self.zip(buf, start, end, location, depth)
            if kind == "npy":
                return self.npy(buf, start, end, location, depth)
            if kind == "tar":
                got = self.tar(buf, start, end, location, depth)
                if got is None:  # tarfile refuses it: torch reads pickles
                    kind = None
                else:
                    if head.startswith(b"\x93NUMPY"):  # numpy reads it as .npy
                        self.fail(location, start, "ambiguous: a tar archive to torch.load and "
                                  "an .npy array to numpy.load")
                        self.npy(buf, start, end, location, depth)
                    if role == "top" and head[0] in OPCODE_BYTES:
                        # legacy_load falls back to pickles when a member fails to extract.
                        self.pickles(buf, start, end, location, depth, tentative=True)
                    return got
        except ScanError as exc:
            self.fail(location, start, f"{kind}: {exc}")
            return str(kind)
        if kind is not None:
            self.fail(location, start, f"{kind} archive: torch cannot load it and the scanner "
                      "does not read it, so it cannot be called safe")
            return kind
        if role in _SNIFFED:
            if _worth_parsing(head, role):
                self.pickles(buf, start, end, location, depth, tentative=True)
            return "data"
        if not head:
            self.fail(location, start, "empty")
            return "empty"
        if head[0] not in OPCODE_BYTES:
            self.fail(location, start, "not a pickle or a known container")
            return "unknown"
        return self.pickles(buf, start, end, location, depth)

    # -- raw pickles and the legacy torch format --------------------------------
    def pickles(self, buf: Buffer, start: int, end: int, location: str, depth: int, *,
                tentative: bool = False, key_pids: bool = False) -> str:
        """Scan back-to-back streams; switch to the legacy layout after its magic."""
        pos, index, kind = start, 0, "pickle"
        while pos < end:
            if index and buf[pos] not in OPCODE_BYTES:
                if not tentative:
                    self.fail(_part(location, f"@ {pos}"), pos,
                              f"{end - pos} bytes after the last pickle are not a pickle")
                return kind
            name = location if index == 0 else _part(location, f"#{index + 1}")
            ran = self.stream(buf, pos, end, name, depth, tentative=tentative,
                              key_pids=key_pids)
            if ran is None or _fatal(ran[0].error):
                return kind
            result = ran[0]
            pos, index = result.end, index + 1
            if index == 1 and type(result.root) is int and result.root == LEGACY_MAGIC:
                return self.legacy(buf, pos, end, location, depth)
        return kind

    def legacy(self, buf: Buffer, pos: int, end: int, location: str, depth: int) -> str:
        """After the magic: protocol, sys_info, object, keys pickles, then storage records."""
        runs = []
        for part in ("protocol", "sys_info", "objects", "storage keys"):
            if pos >= end:
                self.fail(location, pos, f"legacy torch file ends before its {part} pickle")
                return "torch-legacy"
            ran = self.stream(buf, pos, end, _part(location, f"({part})"), depth)
            assert ran is not None
            if _fatal(ran[0].error):
                return "torch-legacy"
            runs.append(ran)
            pos = ran[0].end
        sizes = runs[2][1].storages
        keys = runs[3][0].root
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            self.fail(location, pos, "legacy storage-key pickle is not a list of strings")
            return "torch-legacy"
        try:
            records, pos = legacy_storage_records(buf, pos, end, keys, sizes)
        except UnsupportedContainerError as exc:
            self.fail(location, pos, str(exc))
            return "torch-legacy"
        for key, (start, nbytes) in records.items():
            self.blob(buf, start, start + nbytes, _part(location, f"(storage {key})"),
                      depth + 1, "storage")
        if pos < end:
            self.pickles(buf, pos, end, _part(location, f"@ {pos}"), depth)
        return "torch-legacy"

    # -- zip ----------------------------------------------------------------------
    def zip(self, buf: Buffer, start: int, end: int, location: str, depth: int) -> str:
        layout = zip_layout(buf, start, end, self.limits.max_entries)
        for problem in layout.problems[:_MAX_PROBLEMS]:
            self.fail(location, start, f"ambiguous zip archive: {problem}")
        if len(layout.problems) > _MAX_PROBLEMS:
            more = len(layout.problems) - _MAX_PROBLEMS
            self.fail(location, start, f"ambiguous zip archive: {more} more disagreements")
        entries = layout.entries
        kind = "zip"
        before = len(self.streams)
        readable = 0
        seen: set[tuple[int, int, int]] = set()
        pickles: list[tuple[ZipEntry, str, dict[str, tuple[int, int, str]]]] = []
        for entry in entries:
            span = (entry.data_start, entry.comp_size, entry.method)
            if span in seen:  # several central entries sharing one body (reported above)
                continue
            seen.add(span)
            loc = _inside(location, entry.name)
            if entry.local_name != entry.name:
                loc += f" (local header says {entry.local_name!r})"
            # miniz finds names ignoring ASCII case: archive/DATA.PKL is data.pkl to torch.
            must_pickle = any(n.lower().endswith(".pkl") for n in (entry.name, entry.local_name))
            lower = entry.name.lower()
            if lower.endswith("/data.pkl"):
                kind = "torch-zip"
            if lower.endswith("/constants.pkl"):
                self.streams.append(StreamReport(
                    loc, entry.data_start, Verdict.UNKNOWN, [Finding(
                        Verdict.UNKNOWN, "TorchScript archive (constants.pkl): torch.load hands "
                        "it to torch.jit.load, which compiles its code; not read by the scanner")]))
            parts = lower.split("/")
            role = ("pickle" if must_pickle else
                    "storage" if len(parts) > 2 and parts[-2] == "data" else "record")
            try:
                first = len(self.claims)
                got = self.entry(buf, entry, loc, depth, role)
                if entry.name.endswith("data.pkl") and len(self.claims) > first:
                    pickles.append((entry, loc, self.claims[first]))
            except ScanLimitError:
                raise  # a budget for the whole file: stop here
            except ScanError as exc:
                self.fail(loc, entry.data_start, str(exc))
                got = "unreadable"
            readable += got != "data" or must_pickle
        self.records(entries, pickles)
        if not readable and len(self.streams) == before:
            encrypted = any(e.flags & 1 for e in entries)
            self.fail(location, start, "encrypted zip: its entries cannot be read" if encrypted
                      else "zip archive holds no pickle, numpy array or archive")
        return kind

    def records(self, entries: list[ZipEntry],
                pickles: list[tuple[ZipEntry, str, dict[str, tuple[int, int, str]]]]) -> None:
        """Each storage a ``data.pkl`` names needs a ``data/<key>`` record that holds
        it: torch (and tensorfile convert) refuse the file otherwise."""
        by_name = {e.name: e for e in entries}
        for pkl, loc, claims in pickles:
            prefix = pkl.name[:-len("data.pkl")]
            for key, (nbytes, numel, stype) in claims.items():
                record = by_name.get(f"{prefix}data/{key}")
                if record is None:
                    self.fail(loc, 0, f"storage {key!r} ({stype}) has no record "
                              f"{prefix}data/{key} in the archive")
                elif record.size < nbytes:
                    self.fail(loc, 0, f"storage record {record.name} holds {record.size} bytes, "
                              f"but its persistent id declares {numel} elements of {stype} "
                              f"({nbytes} bytes)")

    def entry(self, buf: Buffer, entry: ZipEntry, loc: str, depth: int, role: str) -> str:
        """Scan one zip entry; records that do not look like anything are skipped."""
        start, stop = entry.data_start, entry.data_start + entry.comp_size
        if start < 0:
            self.fail(loc, entry.header, "no local header where the central directory points, "
                      "or its data runs past the end: unreadable")
            return "unreadable"
        if entry.method not in (0, 8):
            self.fail(loc, start, f"compression method {entry.method} is not supported")
            return "unsupported"
        head = (bytes(self.inflate(buf, start, stop, _SNIFF, partial=True)) if entry.method
                else bytes(buf[start:min(stop, start + _SNIFF)]))
        encrypted = bool(entry.flags & 1)
        if role in _SNIFFED and sniff(head) is None and not _worth_parsing(head, role):
            if encrypted:
                self.fail(loc, start, "encrypted entry could not be read as plain data")
            return "data"
        if entry.method:
            data = self.inflate(buf, start, stop, self.limits.max_inflate)
            buf, start, stop = data, 0, len(data)
        before = len(self.streams)
        kind = self.blob(buf, start, stop, loc, depth + 1, role)
        if encrypted and len(self.streams) == before and role in _SNIFFED:
            self.fail(loc, start, "encrypted entry could not be read as plain data")
        return kind

    def inflate(self, buf: Buffer, start: int, stop: int, limit: int, *,
                partial: bool = False) -> bytearray:
        """Decompress a deflate entry, at most ``limit`` bytes (and a per-file budget)."""
        d = zlib.decompressobj(-15)
        out = bytearray()
        pos = start
        try:
            while pos < stop and len(out) < limit and not d.eof:
                chunk = bytes(buf[pos:min(stop, pos + (1 << 20))])
                pos += len(chunk)
                out += d.decompress(chunk, limit - len(out))
                while d.unconsumed_tail and len(out) < limit:
                    out += d.decompress(d.unconsumed_tail, limit - len(out))
        except zlib.error as exc:
            if partial and out:
                return out
            raise UnsupportedContainerError(f"deflate data is corrupt: {exc}") from None
        if not partial and not d.eof and len(out) >= limit:
            raise ScanLimitError(f"entry inflates past {limit} bytes (zip bomb?)")
        self.inflated += len(out)
        if self.inflated > 4 * self.limits.max_inflate:
            raise ScanLimitError("archive inflates past the scanner's budget (zip bomb?)")
        return out

    # -- numpy and tar ---------------------------------------------------------------
    def npy(self, buf: Buffer, start: int, end: int, location: str, depth: int) -> str:
        data = npy_pickle_start(buf, start, end)
        if data is not None:
            self.pickles(buf, data, end, location, depth)
        return "npy"

    def tar(self, buf: Buffer, start: int, end: int, location: str, depth: int) -> str | None:
        """torch < 0.4's tar, read as ``torch.serialization.legacy_load`` reads it.

        None when tarfile refuses it (torch then reads the file as pickles).
        """
        members = tar_listing(buf, start, end, self.limits.max_entries)
        if members is None:
            return None
        last = {m.name: m for m in members}  # tarfile's getmember: the last occurrence
        torch_reads = ("storages", "tensors", "pickle")
        for name in torch_reads:
            if sum(m.name == name for m in members) > 1:
                self.fail(_inside(location, name), start, f"ambiguous tar archive: {name!r} "
                          "appears more than once (tarfile takes the last, other readers the first)")
        for m in members:  # what torch never reads is only sniffed
            if m.kind == "file" and (m.name not in torch_reads or last[m.name] is not m):
                self.blob(buf, m.data, min(end, m.data + m.size), _inside(location, m.name),
                          depth + 1, "record")
        for name in torch_reads:
            member = last.get(name)
            if member is None:
                continue
            loc = _inside(location, name)
            target = _tar_target(members, member)
            if target is None or target.kind not in ("file", "link"):
                what = target.kind if target is not None else "a link to nothing"
                self.fail(loc, start, f"tar member {name!r} is {what}: torch would read "
                          "something the scanner cannot see")
                continue
            if target is not member:
                loc += f" (hard link to {target.name!r})"
            data, stop = target.data, target.data + target.size
            if stop > end:
                self.fail(loc, data, "tar member runs past the end (torch then reads the file "
                          "as pickles)")
                continue
            if name == "pickle":
                self.pickles(buf, data, stop, loc, depth, key_pids=True)
            else:
                self.tar_records(buf, data, stop, loc, depth, name == "storages")
        return "torch-tar" if "pickle" in last else "tar"

    def tar_records(self, buf: Buffer, pos: int, end: int, location: str, depth: int,
                    storages: bool) -> None:
        """torch < 0.4 'storages'/'tensors' members: a count, then pickle + binary per item."""
        ran = self.stream(buf, pos, end, location, depth)
        assert ran is not None
        count = ran[0].root
        if ran[0].error is not None:
            return
        if type(count) is not int or count < 0:
            self.fail(location, pos, "record count is not an int")
            return
        pos = ran[0].end
        for i in range(count):
            item = self.stream(buf, pos, end, _part(location, f"#{i + 1}"), depth)
            assert item is not None
            if item[0].error is not None:
                return
            pos = item[0].end
            args = item[0].root
            if storages:
                stype = args[2] if isinstance(args, tuple) and len(args) == 3 else None
                size = STORAGE_TYPES.get(getattr(stype, "qualname", ""))
                if size is None or pos + 8 > end:
                    self.fail(location, pos, "storage header is not (key, location, type)")
                    return
                (numel,) = _u("<q", buf, pos)
                skip = 8 + numel * size
            else:
                if pos + 8 > end:
                    self.fail(location, pos, "tensor record is truncated")
                    return
                (ndim,) = _u("<i", buf, pos)
                skip = 8 + 16 * ndim + 8
            if skip < 8 or pos + skip > end:
                self.fail(location, pos, "record runs past the end of the member")
                return
            pos += skip
        if storages and pos < end:
            self.pickles(buf, pos, end, _part(location, "(views)"), depth)


def legacy_storage_records(buf: Buffer, pos: int, end: int, keys: list[str],
                           element_sizes: dict[str, int]) -> tuple[dict[str, tuple[int, int]], int]:
    """Locate the legacy format's storage records (for the converter, which maps them).

    ``pos`` is where the storage-key pickle ended; ``keys`` is that pickle's
    list and ``element_sizes`` the element size of each key's storage type.
    Each record is an 8-byte little-endian element count and the raw bytes.
    Returns ``{key: (data start, byte length)}`` and where the records end.
    Raises :class:`UnsupportedContainerError` for a key named by no storage
    or a record running past ``end``.
    """
    records: dict[str, tuple[int, int]] = {}
    for key in keys:
        size = element_sizes.get(key)
        if size is None:
            raise UnsupportedContainerError(f"storage key {key!r} is named by no persistent id")
        if pos + 8 > end:
            raise UnsupportedContainerError(f"storage record {key!r} is truncated")
        (count,) = _u("<q", buf, pos)
        if count < 0 or pos + 8 + count * size > end:
            raise UnsupportedContainerError(
                f"storage record {key!r} declares {count} elements past the end of the file")
        records[key] = (pos + 8, count * size)
        pos += 8 + count * size
    return records, pos


def scan_file(path: Path, limits: ScanLimits | None = None, *, named: bool = True
              ) -> FileReport:
    """Scan one file (memory-mapped) and return its report. Never raises on bad content.

    ``named`` is False for files found by walking a folder. Such a file that is
    not a pickle at all (empty, or an unpickler would fail before importing or
    calling anything: JSON, safetensors, most text) is reported as format
    ``not-pickle``, verdict ``safe``: nothing in it can run. A file named
    explicitly is expected to be a checkpoint, so the same content is an ``error``.
    """
    walker = _Walker(limits or ScanLimits())
    name = str(path)
    try:
        fd, size = open_regular(path)
        with os.fdopen(fd, "rb") as f:
            if size == 0:
                if not named:
                    return FileReport(name, "not-pickle", Verdict.SAFE)
                return FileReport(name, "empty", Verdict.ERROR, error="empty file")
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                fmt = walker.blob(buf, 0, size, "", 0, "top")
    except ScanError as exc:
        walker.fail("", 0, str(exc))
        fmt = "unreadable"
    except OSError as exc:
        return FileReport(name, "unreadable", Verdict.ERROR, error=f"cannot read: {exc}")
    for stream in walker.streams:
        stream.location = stream.location or "(file)"
    if not named and not walker.limited and _runs_nothing(fmt, walker.streams):
        return FileReport(name, "not-pickle", Verdict.SAFE)
    verdict = Verdict.worst((s.verdict for s in walker.streams), Verdict.SAFE)
    return FileReport(name, fmt, verdict, walker.streams)


def _runs_nothing(fmt: str, streams: list[StreamReport]) -> bool:
    """True when the file is not a pickle and unpickling it fails before any import or call.

    The reader never stops earlier than the C unpickler, so a first stream
    that broke with no import, call or persistent id seen means the real
    unpickler also failed before it could run anything.
    """
    if fmt not in ("unknown", "pickle") or len(streams) != 1:
        return False
    (stream,) = streams
    return (stream.verdict is Verdict.ERROR and stream.offset == 0 and not stream.findings
            and not stream.globals)
