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
* zip archives (torch's format, ``.npz``, a zip inside a zip), read by
  :mod:`tensorfile.scan.pickle._zip` as torch's miniz reads them (the central directory where the
  end record says, names matched ignoring case, data after the local header)
  and compared with :mod:`zipfile`'s reading;
* tar (torch < 0.4: ``storages``, ``tensors``, ``pickle``) whenever
  :mod:`tarfile` accepts the first header (a valid checksum, no ``ustar``
  magic needed), with tarfile's own member list (:mod:`tensorfile.scan.pickle._tar`);
* numpy ``.npy`` (object arrays are pickles: numpy's own header reader decides);
* nested ``torch.storage._load_from_bytes`` payloads found by the policy, read
  as ``torch.load(io.BytesIO(b))`` reads them (zip or pickles, never tar).

7z, gzip and other archives torch cannot read give ``error`` (never safe), as
does anything that cannot be read to the end. Storage records and other
non-pickle entries are only *sniffed* (their first bytes): if they look like
a pickle or an archive they are scanned, otherwise they are skipped, so the
scan time does not depend on the size of the weights. Files are read through
an :class:`~tensorfile._io.sources.Image` (copied in where read, never mapped:
a file cut short or failing mid-scan is an ``error``, not a ``SIGBUS``); only
compressed zip entries are decompressed, within a budget (zip bombs).
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Final, NamedTuple

from tensorfile._io.sources import Image, open_image, prefetch
from tensorfile._picklevm._allowed import AllowingPolicy
from tensorfile._picklevm._joblib import array_skip
from tensorfile._picklevm.machine import Call, Limits, StreamResult, run_stream
from tensorfile._picklevm.opcodes import (
    OPCODE_BYTES,
    AmbiguousPickleError,
    BigText,
    Buffer,
    BytesRef,
    OpcodeReader,
    frame_by_frame,
    looks_like_binary_pickle,
)
from tensorfile._picklevm.policy import STORAGE_TYPES, StreamPolicy, call_of
from tensorfile._report import FileReport, Finding, StreamReport, Verdict
from tensorfile.errors import (
    MalformedPickleError,
    ScanError,
    ScanLimitError,
    TruncatedFileError,
    UnsupportedContainerError,
)
from tensorfile.scan.joblib import decompress, joblib_compression
from tensorfile.scan.npy import read_npy_header
from tensorfile.scan.pickle._tar import _tar_target, tar_checksum_ok, tar_listing
from tensorfile.scan.pickle._zip import (
    _CDH,
    _MAX_ALTERNATIVES,
    _MAX_PROBLEMS,
    ZipEntry,
    _u,
    _zipfile_eocd,
    zip_layout,
)

#: First pickle of the legacy torch format (``torch.serialization.MAGIC_NUMBER``).
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C

_SNIFF = 512
#: Archives torch cannot load; joblib.load reads these compressions.
_ARCHIVE_NAMES: Final = frozenset({"gzip", "bzip2", "xz"})
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
    #: A deflated zip entry may declare at most this many times its compressed
    #: size (or ``max_inflate``): loaders allocate the declared size at once.
    max_inflate_ratio: int = 100
    #: What a joblib file may decompress to (``joblib.load`` inflates it all).
    max_decompressed: int = 256 << 20
    machine: Limits = Limits()



def npy_pickle_start(buf: Buffer, start: int, end: int) -> int | None:
    """Where ``numpy.load(allow_pickle=True)`` would start unpickling this ``.npy``, or None.

    The header is read by :func:`~tensorfile.scan.npy.read_npy_header` (a
    bounded parser of numpy's header dict, never ``literal_eval``); "object
    array" means what it means to numpy: ``dtype.hasobject`` (``'object'``,
    ``'b1,O'``, ``[('a', 'O')]``, ...).
    """
    header = read_npy_header(buf, start, end)
    return header.data if header.has_objects else None


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

    def __init__(self, limits: ScanLimits, extra_allowed: Mapping[str, str] | None = None
                 ) -> None:
        self.limits = limits
        self.extra_allowed = extra_allowed
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
               tentative: bool = False, key_pids: bool = False, joblib: bool = False
               ) -> tuple[StreamResult, StreamPolicy] | None:
        """Run one stream; None when ``tentative`` and it turned out not to be a pickle.

        ``joblib``: read it as ``joblib.load``'s ``NumpyUnpickler`` does, stepping
        over the array bytes after each array wrapper. Without it, a stream that
        holds joblib array wrappers is read both ways (pickle.load and torch.load
        stop at the first array's bytes, joblib.load reads on).
        """
        if len(self.streams) >= self.limits.max_streams:
            raise ScanLimitError(f"more than {self.limits.max_streams} pickle streams")
        policy = (AllowingPolicy(self.extra_allowed, key_pids) if self.extra_allowed
                  else StreamPolicy(key_pids=key_pids))
        limits = self.limits.machine
        hook = None
        if joblib:
            def hook(obj: object, reader: OpcodeReader) -> None:
                array_skip(obj, reader, lambda at: run_stream(buf, at, policy, end=end,
                                                              limits=limits))
        result = run_stream(buf, start, policy, end=end, limits=limits, after_build=hook)
        self.limited = self.limited or isinstance(result.error, ScanLimitError)
        self.claims.append(policy.storage_nbytes)
        if tentative and result.error is not None and not policy.findings and not policy.globals:
            return None  # raw data that merely starts with an opcode byte
        verdict = policy.verdict
        error = None if result.error is None else str(result.error)
        joblib_too = bool(policy.joblib_arrays) and not joblib
        if joblib_too and type(result.error) is MalformedPickleError and (
                result.error.offset or 0) > policy.joblib_arrays[0]:
            # The C unpickler stops at the array bytes that joblib reads outside
            # the pickle: not an error of the file, the joblib reading decides.
            error = (f"{result.error} (pickle.load and torch.load stop at the joblib array "
                     "data; joblib.load reads on: next stream)")
        elif result.error is not None:
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
        self.streams.append(StreamReport(location, start, verdict, findings,
                                         list(policy.globals), error))
        if joblib_too:
            self.stream(buf, start, end, _part(location, "(as joblib.load reads it)"), depth,
                        key_pids=key_pids, joblib=True)
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
        compression = joblib_compression(head) if role == "top" else None
        if compression is not None and self.joblib(buf, start, end, location, depth,
                                                   compression):
            if kind is None and head[0] in OPCODE_BYTES:
                # pickle.load and torch.load read the compressed bytes as opcodes
                # (']' of lzma, 'B' of bz2); they count only if they import or call.
                self.pickles(buf, start, end, location, depth, tentative=True)
            if kind is None or kind in _ARCHIVE_NAMES:
                return f"joblib-{compression}"
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
                tentative: bool = False, key_pids: bool = False, joblib: bool = False) -> str:
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
                              key_pids=key_pids, joblib=joblib)
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
        # Each entry's first bytes are sniffed below: asked for at once, which a
        # remote checkpoint fetches concurrently (as _zip does for local headers).
        prefetch(buf, [(e.data_start, e.data_start + min(_SNIFF, e.comp_size))
                       for e in entries if e.data_start >= 0])
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
        if entry.method and entry.size > max(self.limits.max_inflate,
                                             self.limits.max_inflate_ratio * entry.comp_size):
            # torch.load (miniz) and numpy.load allocate the declared size whole.
            self.fail(loc, start, f"deflated entry declares {entry.size} bytes from "
                      f"{entry.comp_size} compressed (zip bomb bound: "
                      f"{self.limits.max_inflate_ratio}x, or {self.limits.max_inflate} bytes): "
                      "the loader allocates it whole")
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

    # -- joblib --------------------------------------------------------------------------
    def joblib(self, buf: Buffer, start: int, end: int, location: str, depth: int,
               compression: str) -> bool:
        """Scan what ``joblib.load`` unpickles from a compressed file; False if nothing.

        The decompressed data is read as joblib's ``NumpyUnpickler`` reads it
        (array bytes after each array wrapper). Corrupt data is an ``error``, and
        what came out before the fault is scanned (joblib reads it as it comes).
        """
        loc = _inside(location, f"({compression})")
        try:
            data = decompress(buf, start, end, compression, self.limits.max_decompressed)
            fault = None
        except ScanLimitError as exc:
            self.fail(loc, start, str(exc))
            return True
        except UnsupportedContainerError as exc:
            data = getattr(exc, "partial", b"")
            fault = str(exc)
            if not data:
                return False  # joblib.load fails before unpickling anything
        before, limited = len(self.streams), self.limited
        self.pickles(data, 0, len(data), loc, depth + 1, tentative=True, joblib=True)
        if self.limited and not limited and len(self.streams) == before:
            self.fail(loc, 0, "stopped by a scanner bound")
        if len(self.streams) == before and fault is None:
            return False  # decompresses to data that is no pickle: joblib fails at once
        if fault is not None:
            self.fail(loc, len(data), fault)
        return True

    # -- numpy and tar ---------------------------------------------------------------
    def npy(self, buf: Buffer, start: int, end: int, location: str, depth: int) -> str:
        header = read_npy_header(buf, start, end)
        if header.has_objects:
            self.pickles(buf, header.data, end, location, depth)
            return "npy"
        count = 1
        for n in header.shape:
            count *= n
        if count < 0 or count * header.itemsize > end - header.data:
            # numpy.load allocates the whole array before it reads (fromfile, ndarray).
            self.fail(location, start, f"npy array of shape {header.shape} needs "
                      f"{count * header.itemsize} bytes but {end - header.data} follow the "
                      "header: numpy.load allocates it before reading (resource bound)")
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


def scan_file(path: Path, limits: ScanLimits | None = None, *, named: bool = True,
              extra_allowed: Mapping[str, str] | None = None) -> FileReport:
    """Scan one file and return its report. Never raises on bad content.

    ``named`` is False for files found by walking a folder. Such a file that is
    not a pickle at all (empty, or an unpickler would fail before importing or
    calling anything: JSON, safetensors, most text) is reported as format
    ``not-pickle``, verdict ``safe``: nothing in it can run. A file named
    explicitly is expected to be a checkpoint, so the same content is an ``error``.
    ``extra_allowed``: a project policy's allowed globals (:mod:`._allowed`).
    """
    try:
        image = open_image(path)
    except OSError as exc:
        return FileReport(str(path), "unreadable", Verdict.ERROR, error=f"cannot read: {exc}")
    with image:
        return scan_image(image, str(path), limits, named=named, extra_allowed=extra_allowed)


def scan_image(image: Image, name: str, limits: ScanLimits | None = None, *,
               named: bool = True, extra_allowed: Mapping[str, str] | None = None,
               raise_read_errors: bool = False) -> FileReport:
    """Scan the bytes of ``image`` (a file, a remote object) called ``name``.

    A source that fails or changes while it is read (a file cut short, an I/O
    error, a remote object replaced) ends the scan as an ``error`` naming it:
    what was scanned before stands in the report, never as ``safe``. With
    ``raise_read_errors`` (the converter) that error is raised as it is."""
    walker = _Walker(limits or ScanLimits(), extra_allowed)
    size = len(image)
    if size == 0:
        if not named:
            return FileReport(name, "not-pickle", Verdict.SAFE)
        return FileReport(name, "empty", Verdict.ERROR, error="empty file")
    try:
        fmt = walker.blob(image, 0, size, "", 0, "top")
    except ScanError as exc:
        walker.fail("", 0, str(exc))
        fmt = "unreadable"
    except (TruncatedFileError, OSError) as exc:  # FileReadError, RemoteError: OSErrors
        if raise_read_errors:
            raise
        walker.fail("", 0, f"cannot read: {exc}")
        fmt = "unreadable"
        walker.limited = True  # never "not-pickle": the rest was not seen
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
