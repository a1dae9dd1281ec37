"""Find every pickle stream in a file, by content, and scan each one.

Containers are recognised by their bytes, never by file name:

* raw pickles, several back to back (a payload after STOP still counts);
* the legacy torch format (magic, protocol, sys_info, object and storage-key
  pickles, then one record per storage: an 8-byte element count and raw bytes,
  stepped over by length, never read);
* zip archives (torch's format, ``.npz``, a zip inside a zip), read with the
  small reader below rather than :mod:`zipfile`, because torch reads archives
  :mod:`zipfile` refuses: encryption/flag bits 0x1, 0x20, 0x40 are ignored,
  CRCs are not checked, the central directory decides which entries exist and
  the local header where their data starts;
* the tar format of torch < 0.4 (``sys_info``, ``storages``, ``tensors``, ``pickle``);
* numpy ``.npy`` (object arrays are pickles);
* nested ``torch.storage._load_from_bytes`` payloads found by the policy.

7z, gzip and other archives torch cannot read give ``error`` (never safe), as
does anything that cannot be read to the end. Storage records and other
non-pickle entries are only *sniffed* (their first bytes): if they look like
a pickle or an archive they are scanned, otherwise they are skipped, so the
scan time does not depend on the size of the weights. Files are memory-mapped;
only compressed zip entries are decompressed, within a budget (zip bombs).
"""

from __future__ import annotations

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
    BigText,
    Buffer,
    BytesRef,
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
    """One central-directory entry and where its data lies."""

    name: str
    local_name: str
    flags: int
    method: int
    data_start: int
    comp_size: int
    size: int


def _u(fmt: str, buf: Buffer, at: int) -> tuple[int, ...]:
    return struct.unpack_from(fmt, buf, at)


def find_eocd(buf: Buffer, start: int, end: int) -> int:
    """Offset of the end-of-central-directory record, or -1."""
    return buf.rfind(b"PK\x05\x06", max(start, end - 65557), max(start, end - 18))


def zip_entries(buf: Buffer, start: int, end: int, max_entries: int) -> list[ZipEntry]:
    """Read the central directory of the zip in ``buf[start:end]`` (zip64 aware).

    The directory readers use (the last end-of-central-directory record, as
    zipfile and torch's miniz pick it) decides; Raises
    :class:`UnsupportedContainerError` when it is broken. Entries of further
    end records hidden before it (say, in the archive comment, where another
    reader might look first) are appended when they parse.
    """
    eocd = find_eocd(buf, start, end)
    if eocd < 0:
        raise UnsupportedContainerError("zip archive without an end-of-central-directory record")
    try:
        entries = _zip_entries(buf, start, end, eocd, max_entries)
    except struct.error as exc:  # a record cut off by the end of the data
        raise UnsupportedContainerError(f"truncated zip record: {exc}") from None
    for _ in range(_MAX_EXTRA_EOCD):
        eocd = buf.rfind(b"PK\x05\x06", max(start, end - 65557), eocd)
        if eocd < 0:
            break
        try:
            entries += _zip_entries(buf, start, end, eocd, max_entries - len(entries))
        except (ScanError, struct.error):
            continue  # the signature bytes occurred in data: not a directory
    return entries


#: How many earlier end-of-central-directory candidates are also tried.
_MAX_EXTRA_EOCD: Final = 8


def _zip_entries(buf: Buffer, start: int, end: int, eocd: int, max_entries: int
                 ) -> list[ZipEntry]:
    total, cd_size, cd_offset = _u("<HII", buf, eocd + 10)
    cd_end = eocd
    loc = eocd - 20
    if loc >= start and buf[loc:loc + 4] == b"PK\x06\x07":  # zip64 (torch always writes it)
        (eocd64_rel,) = _u("<Q", buf, loc + 8)
        eocd64 = _find_sig(buf, start, loc, b"PK\x06\x06", eocd64_rel)
        total, cd_size, cd_offset = _u("<QQQ", buf, eocd64 + 32)
        cd_end = eocd64
    elif 0xFFFF == total or 0xFFFFFFFF in (cd_size, cd_offset):
        raise UnsupportedContainerError("zip64 archive without a zip64 locator")
    base = cd_end - cd_size - cd_offset  # the archive's first byte (data may precede it)
    cd = cd_end - cd_size
    if base < start or cd < start:
        raise UnsupportedContainerError("zip central directory lies outside the file")
    if total > max_entries:
        raise ScanLimitError(f"zip archive lists {total} entries (limit {max_entries})")
    entries = []
    pos = cd
    for _ in range(total):
        if pos + 46 > cd_end or buf[pos:pos + 4] != b"PK\x01\x02":
            raise UnsupportedContainerError(f"broken zip central directory at byte {pos}")
        flags, method = _u("<HH", buf, pos + 8)
        csize, usize, nlen, xlen, clen = _u("<IIHHH", buf, pos + 20)
        (loff,) = _u("<I", buf, pos + 42)
        name_raw = bytes(buf[pos + 46:pos + 46 + nlen])
        extra = bytes(buf[pos + 46 + nlen:pos + 46 + nlen + xlen])
        usize, csize, loff = _zip64_extra(extra, usize, csize, loff)
        pos += 46 + nlen + xlen + clen
        entries.append(_local(buf, base, end, loff, _zip_name(name_raw, flags), flags, method,
                              csize, usize))
    return entries


def _find_sig(buf: Buffer, start: int, limit: int, sig: bytes, rel: int) -> int:
    at = start + rel
    if start <= at <= limit - 56 and buf[at:at + 4] == sig:
        return at
    found = buf.rfind(sig, start, max(start, limit - 52))  # data before the archive; 56 bytes
    if found < 0:
        raise UnsupportedContainerError("zip64 end-of-central-directory record not found")
    return found


def _zip64_extra(extra: bytes, usize: int, csize: int, loff: int) -> tuple[int, int, int]:
    at = 0
    while at + 4 <= len(extra):
        tag, size = struct.unpack_from("<HH", extra, at)
        body = extra[at + 4:at + 4 + size]
        if tag == 1:
            vals = [struct.unpack_from("<Q", body, i)[0] for i in range(0, len(body) - 7, 8)]
            if usize == 0xFFFFFFFF and vals:
                usize = vals.pop(0)
            if csize == 0xFFFFFFFF and vals:
                csize = vals.pop(0)
            if loff == 0xFFFFFFFF and vals:
                loff = vals.pop(0)
        at += 4 + size
    return usize, csize, loff


def _zip_name(raw: bytes, flags: int) -> str:
    return raw.decode("utf-8" if flags & 0x800 else "cp437", "replace")


def _local(buf: Buffer, base: int, end: int, loff: int, name: str, flags: int, method: int,
           csize: int, usize: int) -> ZipEntry:
    at = base + loff
    if at + 30 > end or buf[at:at + 4] != b"PK\x03\x04":
        raise UnsupportedContainerError(f"zip entry {name!r}: no local header at byte {at}")
    nlen, xlen = _u("<HH", buf, at + 26)
    data = at + 30 + nlen + xlen
    if data + csize > end:
        raise UnsupportedContainerError(f"zip entry {name!r} runs past the end of the archive")
    local_name = _zip_name(bytes(buf[at + 30:at + 30 + nlen]), flags)
    return ZipEntry(name, local_name, flags, method, data, csize, usize)


def tar_members(buf: Buffer, start: int, end: int, max_entries: int
                ) -> Iterator[tuple[str, int, int]]:
    """(name, data start, size) of each regular member of a ustar/GNU tar."""
    pos = start
    long_name: str | None = None
    for _ in range(max_entries):
        if pos + 512 > end:
            return
        header = bytes(buf[pos:pos + 512])
        if header == bytes(512):
            return
        size = _tar_number(header[124:136])
        data = pos + 512
        if size < 0 or data + size > end:
            raise UnsupportedContainerError(f"tar member at byte {pos} runs past the end")
        kind = header[156:157]
        prefix = header[345:500].rstrip(b"\0") if header[257:262] == b"ustar" else b""
        raw = header[:100].rstrip(b"\0")
        name = long_name or (prefix + b"/" + raw if prefix else raw).decode("utf-8", "replace")
        long_name = None
        if kind == b"L":
            long_name = bytes(buf[data:data + min(size, 4096)]).rstrip(b"\0").decode(
                "utf-8", "replace")
        elif kind in (b"0", b"\0", b"7"):
            yield name, data, size
        pos = data + (size + 511) // 512 * 512
    raise ScanLimitError(f"tar archive has more than {max_entries} members")


def _tar_number(field_: bytes) -> int:
    if field_[:1] in (b"\x80", b"\xff"):  # GNU base-256
        return int.from_bytes(field_[1:], "big", signed=field_[:1] == b"\xff")
    text = field_.rstrip(b"\0 ").lstrip(b" ")
    try:
        return int(text or b"0", 8)
    except ValueError:
        return -1


def npy_header(buf: Buffer, start: int, end: int) -> tuple[dict[str, object], int]:
    """Parse an ``.npy`` header: (header dict, offset where the data starts)."""
    import ast

    if end - start < 10:
        raise UnsupportedContainerError("npy file too short")
    major = buf[start + 6]
    if major == 1:
        (hlen,) = _u("<H", buf, start + 8)
        hstart = start + 10
    elif major in (2, 3):
        if end - start < 12:
            raise UnsupportedContainerError("npy file too short")
        (hlen,) = _u("<I", buf, start + 8)
        hstart = start + 12
    else:
        raise UnsupportedContainerError(f"npy format version {major} is not supported")
    if hlen > 1 << 20 or hstart + hlen > end:
        raise UnsupportedContainerError("npy header length is out of range")
    text = bytes(buf[hstart:hstart + hlen]).decode("latin-1")
    try:
        header = ast.literal_eval(text)  # literals only: no names, calls or attributes
    except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError) as exc:
        # Only the exception type: ast's messages quote object addresses, and
        # the same file must always give the same report.
        raise UnsupportedContainerError(
            f"npy header is not a literal dict ({type(exc).__name__})") from None
    if not isinstance(header, dict):
        raise UnsupportedContainerError("npy header is not a dict")
    return header, hstart + hlen


def _is_object_descr(descr: object, depth: int = 0) -> bool:
    if depth > 32:
        return True
    if isinstance(descr, str):
        return descr.lstrip("<>|=").startswith("O")
    if isinstance(descr, (list, tuple)):
        return any(_is_object_descr(d, depth + 1) for d in descr
                   if not isinstance(d, (str, int)) or (isinstance(d, str) and d[:1] in "<>|=O"))
    return False


def sniff(head: bytes) -> str | None:
    """What ``head`` (the first bytes of something) is: 'zip', 'npy', 'tar', an archive name."""
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    if head[257:262] == b"ustar":
        return "tar"
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
        if policy.dropped:
            findings.append(Finding(verdict, f"{policy.dropped} further findings not listed"))
        self.streams.append(StreamReport(
            location, start, verdict, findings, list(policy.globals),
            None if result.error is None else str(result.error)))
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
            self.blob(payload, 0, len(payload), location, depth, "top")
        elif isinstance(payload, BytesRef):
            self.blob(payload.buf, payload.start, payload.stop, location, depth, "top")
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
            self.blob(data, 0, len(data), location, depth, "top")
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
        if kind is None and role == "top" and find_eocd(buf, start, end) >= 0:
            # Data before the archive: zip readers find it from the end, but
            # torch.load sees no PK header and unpickles from byte 0.
            if head[:1] and head[0] in OPCODE_BYTES:
                self.pickles(buf, start, end, location, depth)
            kind = "zip"
        try:
            if kind == "zip":
                return self.zip(buf, start, end, location, depth)
            if kind == "npy":
                return self.npy(buf, start, end, location, depth)
            if kind == "tar":
                return self.tar(buf, start, end, location, depth)
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
            if ran is None or ran[0].error is not None:
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
            if ran[0].error is not None:
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
        entries = zip_entries(buf, start, end, self.limits.max_entries)
        kind = "zip"
        before = len(self.streams)
        readable = 0
        seen: set[tuple[int, int, int]] = set()
        pickles: list[tuple[ZipEntry, str, dict[str, tuple[int, int, str]]]] = []
        for entry in entries:
            span = (entry.data_start, entry.comp_size, entry.method)
            if span in seen:  # several central entries sharing one body (a zip-bomb trick)
                continue
            seen.add(span)
            loc = _inside(location, entry.name)
            if entry.local_name != entry.name:
                loc += f" (local header says {entry.local_name!r})"
            must_pickle = any(n.endswith(".pkl") for n in (entry.name, entry.local_name))
            if entry.name.endswith("data.pkl"):
                kind = "torch-zip"
            parts = entry.name.split("/")
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
        header, data = npy_header(buf, start, end)
        if _is_object_descr(header.get("descr")):
            self.pickles(buf, data, end, location, depth)
        return "npy"

    def tar(self, buf: Buffer, start: int, end: int, location: str, depth: int) -> str:
        kind = "tar"
        for name, data, size in tar_members(buf, start, end, self.limits.max_entries):
            loc = _inside(location, name)
            if name in ("storages", "tensors"):
                kind = "torch-tar"
                self.tar_records(buf, data, data + size, loc, depth, name == "storages")
            elif name in ("sys_info", "pickle"):
                kind = "torch-tar" if name == "pickle" else kind
                self.pickles(buf, data, data + size, loc, depth, key_pids=True)
            else:
                self.blob(buf, data, data + size, loc, depth + 1, "record")
        return kind

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
