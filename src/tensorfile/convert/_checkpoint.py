"""Reading a torch checkpoint for the converter: a container becomes an object graph.

The first floor of :func:`tensorfile.pickles.convert.convert`. :func:`load_checkpoint`
scans the file (anything but ``safe`` is refused, within what ``key`` and
salvage allow), opens it as an :class:`~tensorfile._io.sources.Image` (read
where looked at, never mapped: :class:`Source`, whose SHA-256 is computed on
a background thread while the tensors are written) and turns its container
into the object stream's value graph (:class:`~._extract.ObjectGraph`) with a
:class:`~._builder.CheckpointBuilder` that finds each storage's record:

- torch's zip format: ``<prefix>/data.pkl``, records ``<prefix>/data/<key>``
  read in place (stored, never compressed);
- the legacy format (magic, protocol, sys_info, objects, storage keys, then
  the records, found by walking the storage section) and a raw pickle;
  ``pickle.dumps(tensor)`` nests a legacy stream, built strictly;
- torch < 0.4's tar: members ``storages``, ``tensors`` (binary geometry) and
  ``pickle``.

What is built of the graph, and how it is named, is :mod:`._flatten`'s job.
The container parsers themselves (zip directory, tar headers, legacy records)
are the scanner's, in :mod:`.containers`.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from tensorfile._io.sources import ByteSource, FileSource, Image, unpack_from
from tensorfile._picklevm._materialize import materialize
from tensorfile._picklevm.machine import Observer, StreamResult, run_stream
from tensorfile._picklevm.opcodes import OPCODE_BYTES, Buffer
from tensorfile._picklevm.policy import STORAGE_TYPES
from tensorfile._report import FileReport, Verdict
from tensorfile.convert._builder import (
    UNSUPPORTED_REBUILDS,
    CheckpointBuilder,
    ConvertObserver,
    RecordSource,
    Storage,
    StorageType,
    check_hashing,
    check_view,
)
from tensorfile.convert._extract import KNOWN_KINDS, Flagged, GraphObserver, ObjectGraph
from tensorfile.errors import (
    ConversionError,
    MalformedCheckpointError,
    NotAPickleError,
    PickleError,
    ScanError,
    TensorfileError,
    UnsafePickleError,
    UnsupportedCheckpointError,
)
from tensorfile.scan.pickle._tar import tar_members
from tensorfile.scan.pickle._zip import zip_entries
from tensorfile.scan.pickle.containers import (
    LEGACY_MAGIC,
    legacy_storage_records,
    scan_image,
    sniff,
)

_MAX_ZIP_ENTRIES = 1_000_000
#: pickle.dumps(tensor) nests one stream; the scanner gives up deeper than 8.
_MAX_NESTING = 4
_HASH_CHUNK = 8 << 20


@dataclass(frozen=True, slots=True)
class Mode:
    """What the user asked for: a sub-tree (``--key``) and/or salvage."""

    key: str | None = None
    salvage: bool = False




class Source:
    """One checkpoint (a local file or any :class:`~tensorfile._io.sources.ByteSource`),
    read through an :class:`~tensorfile._io.sources.Image`, and its digest.

    Never a memory map: a file cut short or failing while it is converted is a
    :class:`~tensorfile.errors.TruncatedFileError` or
    :class:`~tensorfile.errors.FileReadError`, not a ``SIGBUS``. The digest is
    computed on a background thread (:func:`hash_in_background`) once every
    input is accepted, so a refusal never waits for it, while the tensors are
    written; it reads the source in chunks, never through the image.
    """

    def __init__(self, path: Path | str, source: ByteSource | None = None) -> None:
        self.path = path
        self._source = source if source is not None else FileSource(path)
        self.size = self._source.size
        if self.size == 0:
            self._source.close()
            raise MalformedCheckpointError(f"{path}: empty file")
        try:
            self.buf = Image(self._source)
        except BaseException:
            self._source.close()
            raise
        self._digest: str | None = None
        self._error: Exception | None = None
        self._stop = threading.Event()
        self._done = threading.Event()
        self._queued = False

    def fileno(self) -> int | None:
        """The open local file's descriptor (read with explicit offsets only), or
        None for a source that is not a local file."""
        return self._source.fileno() if isinstance(self._source, FileSource) else None

    def compute_digest(self) -> None:
        """Hash the file (on the hashing thread); stops early once :meth:`close` is called."""
        h = hashlib.sha256()
        chunk = memoryview(bytearray(_HASH_CHUNK))
        done = 0
        try:
            while done < self.size:
                if self._stop.is_set():
                    raise ConversionError(f"{self.path}: conversion stopped before the digest")
                n = min(_HASH_CHUNK, self.size - done)
                self._source.read_into(done, chunk[:n])
                h.update(chunk[:n])
                done += n
            self._digest = h.hexdigest()
        except (TensorfileError, OSError) as exc:  # typed: cut short, I/O error, remote
            self._error = exc
        finally:
            self._done.set()

    def sha256(self) -> str:
        """The file's SHA-256 (hashed now if no background thread was started)."""
        if not self._queued:
            self._queued = True
            self.compute_digest()
        self._done.wait()
        if self._error is not None:
            raise self._error.with_traceback(None)
        assert self._digest is not None
        return self._digest

    def close(self) -> None:
        """Stop hashing, drop the image and close the source."""
        self._stop.set()
        if self._queued:
            self._done.wait()
        self.buf.close()


def hash_in_background(sources: list[Source]) -> None:
    """Hash ``sources`` one after another on one thread (beside the copy)."""
    for src in sources:
        src._queued = True

    def run() -> None:
        for src in sources:
            src.compute_digest()

    threading.Thread(target=run, daemon=True).start()


@dataclass(slots=True)
class Checkpoint:
    """A checkpoint file, scanned and read: its container format and its object graph
    (built later, in whole or in part, by :func:`~._flatten.make_plan`)."""

    source: Source
    format: str
    graph: ObjectGraph
    scan: FileReport | None = None


def refuse_unless_safe(report: FileReport) -> None:
    """Raise unless the scanner proved every stream in the file safe."""
    if report.verdict is Verdict.SAFE:
        return
    # A tensor kind the converter leaves out is named only when nothing else is wrong.
    findings = sorted(report.findings, key=lambda sf: sf[1].global_name in KNOWN_KINDS)
    for stream, finding in findings:
        if finding.verdict in (Verdict.DANGEROUS, Verdict.UNKNOWN):
            where = f" at byte {finding.offset}" if finding.offset is not None else ""
            name = finding.global_name
            message = (f"{report.path}: {stream.location}: {finding.verdict.value}: "
                       f"{finding.opcode or ''} {name or ''}{where}: {finding.reason}")
            why = UNSUPPORTED_REBUILDS.get(name or "")
            if why is not None and report.verdict is Verdict.UNKNOWN:
                raise UnsupportedCheckpointError(f"{message} ({why})")
            raise UnsafePickleError(message)
    errors = [f"{s.location}: {s.error}" for s in report.streams if s.error] + [
        f"{s.location}: {f.opcode} {f.global_name} at byte {f.offset}: {f.reason}"
        for s, f in report.findings if f.verdict is Verdict.ERROR]
    detail = errors[0] if errors else (report.error or "could not be read completely")
    raise MalformedCheckpointError(f"{report.path}: {detail}")


def _stream(buf: Buffer, start: int, end: int, what: str, observer: Observer) -> StreamResult:
    """Run one stream; one that cannot be read to its STOP makes the file malformed.

    Under :class:`~._builder.ConvertObserver` (strict) the first disallowed node
    raises; under :class:`~._extract.GraphObserver` flagged nodes are recorded.
    """
    result = run_stream(buf, start, observer, end=end)
    if result.error is not None:
        raise MalformedCheckpointError(f"{what}: {result.error}")
    return result


def build(root: object, builder: CheckpointBuilder, what: str) -> object:
    """Materialize a checked stream's value graph through the converter's builder."""
    try:
        check_hashing(root)
    except UnsupportedCheckpointError as exc:
        raise UnsupportedCheckpointError(f"{what}: {exc}") from None
    try:
        return materialize(root, builder)
    except ConversionError:
        raise
    except PickleError as exc:
        raise MalformedCheckpointError(f"{what}: {exc}") from None


def _run(buf: Buffer, start: int, end: int, builder: CheckpointBuilder, what: str, *,
         key_pids: bool = False) -> tuple[object, int]:
    """Check and build one stream; returns its value and where it ended."""
    result = _stream(buf, start, end, what, ConvertObserver(key_pids=key_pids))
    return build(result.root, builder, what), result.end


def _graph(buf: Buffer, start: int, end: int, builder: CheckpointBuilder, what: str, *,
           key_pids: bool = False) -> tuple[ObjectGraph, int]:
    """Run the object stream under the policy, not strict: its value graph and the
    nodes the policy flagged (what may be built of it is decided by :func:`~._flatten.make_plan`),
    and where the stream ended."""
    observer = GraphObserver(key_pids=key_pids)
    result = _stream(buf, start, end, what, observer)
    return (ObjectGraph(result.root, observer.flagged, builder, what, observer.overflow),
            result.end)


def _header(buf: Buffer, start: int, end: int, what: str, salvage: bool,
            flagged: dict[int, Flagged], overflow: list[int]) -> tuple[object, int]:
    """One of the legacy format's small header pickles (protocol, sys_info, storage keys).

    Built under the strict policy; when salvaging, run without building and its
    root used only if it is a literal (its flagged nodes join ``flagged``, the count
    of those not kept ``overflow``).
    """
    if not salvage:
        return _run(buf, start, end, CheckpointBuilder(_no_records), what)
    observer = GraphObserver()
    result = _stream(buf, start, end, what, observer)
    flagged.update(observer.flagged)
    overflow.append(observer.overflow)
    root = result.root
    if isinstance(root, list):
        root = [x if isinstance(x, str) else None for x in root]
    return (root if isinstance(root, (int, list)) else None), result.end


@contextmanager
def errors_as(caught: type[Exception], raised: type[ConversionError], where: object
              ) -> Iterator[None]:
    """A ``caught`` error from the block raised as the converter's ``raised``, naming
    ``where``: the container readers' :class:`~tensorfile.errors.ScanError` speaks
    for the scanner, the writer's ``SerializationError`` for a save call."""
    try:
        yield
    except caught as exc:
        raise raised(f"{where}: {exc}") from None


def _no_records(key: str) -> tuple[Buffer, int, int]:
    raise MalformedCheckpointError(f"storage {key!r} is named where no storage records exist")


def _zip_checkpoint(src: Source) -> Checkpoint:
    """torch's zip format: ``<prefix>/data.pkl`` and ``<prefix>/data/<key>`` records."""
    buf = src.buf
    with errors_as(ScanError, MalformedCheckpointError, src.path):
        entries = zip_entries(buf, 0, src.size, _MAX_ZIP_ENTRIES)
    prefix = entries[0].name.split("/", 1)[0] + "/" if entries else ""  # torch: first entry
    # miniz looks records up ignoring ASCII case (zip_entries has refused names
    # that collide so): torch reads ARCHIVE/BYTEORDER as the byteorder record.
    by_name = {_ascii_lower(entry.name): entry for entry in entries}
    if _ascii_lower(prefix + "data.pkl") not in by_name:
        raise UnsupportedCheckpointError(
            f"{src.path}: zip archive is not a torch checkpoint (no {prefix or '<folder>/'}data.pkl)")

    def stored(name: str) -> tuple[int, int]:
        entry = by_name.get(_ascii_lower(prefix + name))
        if entry is None:
            raise MalformedCheckpointError(f"{src.path}: zip entry {prefix + name!r} is missing")
        if entry.method != 0:
            raise UnsupportedCheckpointError(
                f"{src.path}: zip entry {entry.name!r} is compressed (torch.save never "
                "compresses; records must be stored to be mapped)")
        return entry.data_start, entry.comp_size

    big = False
    if _ascii_lower(prefix + "byteorder") in by_name:
        start, length = stored("byteorder")
        # torch.load compares the whole record with b"little" and b"big" (no strip).
        order = bytes(buf[start:start + min(length, 16)])
        if length > 16 or order not in (b"little", b"big"):
            raise MalformedCheckpointError(
                f"{src.path}: byteorder record says {order!r} (torch.load reads only "
                "b'little' or b'big')")
        big = order == b"big"

    def records(key: str) -> tuple[Buffer, int, int]:
        start, length = stored("data/" + key)
        return buf, start, length

    start, length = stored("data.pkl")
    builder = CheckpointBuilder(records, big_endian=big)
    graph, _ = _graph(buf, start, start + length, builder, f"{src.path}: {prefix}data.pkl")
    return Checkpoint(src, "torch-zip", graph)


def _ascii_lower(name: str) -> str:
    """``name`` with ASCII letters lowered only (miniz's ``MZ_TOLOWER``)."""
    return name.translate(_ASCII_LOWER)


_ASCII_LOWER: Final = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _pickle_checkpoint(src: Source, salvage: bool) -> Checkpoint:
    """A raw pickle, or the legacy format."""
    fmt, graph = _pickles(src.buf, 0, src.size, str(src.path), 0, salvage=salvage)
    assert isinstance(graph, ObjectGraph)
    return Checkpoint(src, fmt, graph)


def _pickles(buf: Buffer, start: int, end: int, where: str, depth: int, *,
             salvage: bool = False) -> tuple[str, object]:
    """``buf[start:end]`` as torch.load reads it without a zip: a raw pickle, or the
    legacy format (magic, protocol, sys_info, objects, storage keys, records).

    At depth 0 the object stream is returned as an :class:`ObjectGraph`; a
    nested stream (``pickle.dumps(tensor)``, depth > 0) is built strictly.
    """
    def nested(data: Buffer, lo: int, hi: int, at: int) -> object:
        # pickle.dumps(tensor) nests a legacy torch.save of the storage.
        if depth >= _MAX_NESTING:
            raise UnsupportedCheckpointError(f"{where}: streams nested deeper than {_MAX_NESTING}")
        return _pickles(data, lo, hi, f"{where}: nested stream at byte {at}", depth + 1)[1]

    def builder(records: RecordSource = _no_records) -> CheckpointBuilder:
        return CheckpointBuilder(records, nested=nested)

    def done(fmt: str, graph: ObjectGraph) -> tuple[str, object]:
        if depth == 0:
            return fmt, graph
        if graph.flagged:  # never for a stream the scanner called safe
            hit = next(iter(graph.flagged.values()))
            raise UnsafePickleError(f"{graph.what}: {hit.describe()}")
        return fmt, build(graph.root, graph.builder, graph.what)

    head, pos = _graph(buf, start, end, builder(), f"{where}: pickle")
    if type(head.root) is not int or head.root != LEGACY_MAGIC:
        return done("pickle", head)
    flagged: dict[int, Flagged] = dict(head.flagged) if salvage else {}
    overflow = [head.overflow if salvage else 0]
    protocol, pos = _header(buf, pos, end, f"{where}: protocol", salvage, flagged, overflow)
    if protocol != 1001:
        raise MalformedCheckpointError(f"{where}: legacy protocol version {protocol!r}")
    # sys_info records the writer's native byte order, but torch wrote every
    # legacy record little-endian whatever the machine (writeFileRaw converts).
    _, pos = _header(buf, pos, end, f"{where}: sys_info", salvage, flagged, overflow)
    # The object stream is built after the records are located (they follow it).
    observer = GraphObserver()
    what = f"{where}: legacy object pickle"
    objects = _stream(buf, pos, end, what, observer)
    keys, pos = _header(buf, objects.end, end, f"{where}: storage keys", salvage, flagged,
                        overflow)
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise MalformedCheckpointError(f"{where}: legacy storage keys are not a list of str")
    with errors_as(ScanError, MalformedCheckpointError, where):
        located, _ = legacy_storage_records(buf, pos, end, keys, observer.policy.storages)

    def records(key: str) -> tuple[Buffer, int, int]:
        if key not in located:
            raise MalformedCheckpointError(f"{where}: storage record {key!r} is missing")
        at, length = located[key]
        return buf, at, length

    flagged.update(observer.flagged)
    return done("torch-legacy", ObjectGraph(objects.root, flagged, builder(records), what,
                                            observer.overflow + sum(overflow)))


def _tar_checkpoint(src: Source) -> Checkpoint:
    """torch < 0.4: tar members ``storages``, ``tensors`` (binary headers) and ``pickle``."""
    buf = src.buf
    with errors_as(ScanError, MalformedCheckpointError, src.path):
        members = {name: (data, data + size) for name, data, size
                   in tar_members(buf, 0, src.size, _MAX_ZIP_ENTRIES)}
    for needed in ("storages", "tensors", "pickle"):
        if needed not in members:
            raise MalformedCheckpointError(f"{src.path}: tar member {needed!r} is missing")
    objects = _TarObjects(src, members["storages"])
    objects.tensors(members["tensors"])
    start, end = members["pickle"]
    builder = CheckpointBuilder(_no_records, objects=objects.by_key)
    graph, _ = _graph(buf, start, end, builder, f"{src.path}: pickle", key_pids=True)
    return Checkpoint(src, "torch-tar", graph)


class _TarObjects:
    """Storages and tensors of the tar format, by the string keys its pickle uses."""

    def __init__(self, src: Source, span: tuple[int, int]) -> None:
        self.src = src
        self.by_key: dict[str, object] = {}
        self._storages: dict[str, Storage] = {}
        buf, (pos, end) = src.buf, span
        located: dict[str, tuple[int, int]] = {}

        def records(key: str) -> tuple[Buffer, int, int]:
            if key not in located:
                raise MalformedCheckpointError(f"{src.path}: tar storage {key!r} has no record")
            return buf, *located[key]

        self._builder = CheckpointBuilder(records)
        count, pos = self._count(pos, end, "storage")
        for _ in range(count):
            head, pos = _run(buf, pos, end, self._builder, "storage header")
            if not (isinstance(head, tuple) and len(head) == 3
                    and isinstance(head[0], (int, str)) and isinstance(head[2], StorageType)):
                raise MalformedCheckpointError(f"{src.path}: tar storage header is malformed")
            key, stype = str(head[0]), head[2].qualname
            size = STORAGE_TYPES[stype]
            found, pos = self._walk(pos, end, key, size)
            located.update(found)
            numel = found[key][1] // size
            self._storages[key] = self._builder.storage(key, stype, numel, pos)
        views, pos = _run(buf, pos, end, self._builder, "storage views")
        for view in views if isinstance(views, list) else []:
            self._view(view)

    def _count(self, pos: int, end: int, what: str) -> tuple[int, int]:
        """The pickled count that starts the ``storages`` and ``tensors`` members."""
        count, pos = _run(self.src.buf, pos, end, CheckpointBuilder(_no_records), f"{what}s count")
        if type(count) is not int or count < 0:
            raise MalformedCheckpointError(f"{self.src.path}: tar {what} count is not an int")
        return count, pos

    def _walk(self, pos: int, end: int, key: str, size: int
              ) -> tuple[dict[str, tuple[int, int]], int]:
        with errors_as(ScanError, MalformedCheckpointError, self.src.path):
            return legacy_storage_records(self.src.buf, pos, end, [key], {key: size})

    def _view(self, view: object) -> None:
        if not (isinstance(view, tuple) and len(view) == 4):
            raise MalformedCheckpointError(f"{self.src.path}: tar storage view is malformed")
        target, root, offset, numel = view
        base = self._storages.get(str(root))
        if base is None or type(offset) is not int or type(numel) is not int:
            raise MalformedCheckpointError(f"{self.src.path}: tar storage view names no storage")
        window = self._builder.window(base, str(target), offset, numel, 0)
        assert isinstance(window, Storage)  # a Storage's window is one
        self._storages[str(target)] = window

    def tensors(self, span: tuple[int, int]) -> None:
        """Read the ``tensors`` member: per tensor a pickled header and binary geometry."""
        buf, (pos, end) = self.src.buf, span
        count, pos = self._count(pos, end, "tensor")
        for _ in range(count):
            head, pos = _run(buf, pos, end, self._builder, "tensor header")
            if not (isinstance(head, tuple) and len(head) == 3):
                raise MalformedCheckpointError(f"{self.src.path}: tar tensor header is malformed")
            key, storage_id = str(head[0]), str(head[1])
            storage = self._storages.get(storage_id)
            if storage is None or storage.dtype is None or pos + 8 > end:
                raise MalformedCheckpointError(f"{self.src.path}: tar tensor {key!r} is malformed")
            (ndim,) = unpack_from("<i", buf, pos)
            need = 8 + 16 * max(ndim, 0) + 8
            if ndim < 0 or pos + need > end:
                raise MalformedCheckpointError(f"{self.src.path}: tar tensor {key!r} is truncated")
            nums = unpack_from(f"<{2 * ndim + 1}q", buf, pos + 8)
            shape, stride, offset = nums[:ndim], nums[ndim:2 * ndim], nums[-1]
            self.by_key[key] = check_view(storage, storage.dtype, offset, shape, stride, pos)
            pos += need


def _open_checkpoint(src: Source, salvage: bool) -> Checkpoint:
    head = bytes(src.buf[:512])
    kind = sniff(head)
    if kind == "zip":
        return _zip_checkpoint(src)
    if kind == "tar":
        return _tar_checkpoint(src)
    if kind is None and head[0] in OPCODE_BYTES:
        return _pickle_checkpoint(src, salvage)
    raise UnsupportedCheckpointError(
        f"{src.path}: not a torch checkpoint ({kind or 'unknown content'})")


def load_checkpoint(path: Path | str, mode: Mode, source: ByteSource | None = None
                    ) -> Checkpoint:
    """Scan, then read: raises before anything is written.

    The whole file must scan ``safe``; with ``--key``, ``unknown`` findings in the
    object stream alone are let through to :func:`~._flatten.make_plan`, which builds the selected
    value only if they cannot reach it. Salvage reads any file.

    ``source`` reads the checkpoint when it is not the local file ``path`` (a
    remote object). The scan and the reading go through one
    :class:`~tensorfile._io.sources.Image`: the pickles converted are the
    bytes that were scanned, even if the file is replaced meanwhile.
    """
    src = Source(path, source)
    try:
        if source is not None:  # a local file was checked before its outputs were
            refuse_safetensors(src.buf, path)
        scan = None
        if not mode.salvage:
            scan = scan_image(src.buf, str(path), raise_read_errors=True)
            if not (_only_object_stream_unknown(scan)
                    and (mode.key is not None or _only_known_kinds(scan))):
                refuse_unless_safe(scan)
        ck = _open_checkpoint(src, mode.salvage)
    except BaseException:
        src.close()
        raise
    ck.scan = scan
    return ck


def refuse_safetensors(image: Image, where: object) -> None:
    """Raise :class:`~tensorfile.errors.NotAPickleError` for a file that is already
    safetensors (saying so, rather than what the unpickler trips on)."""
    from tensorfile.scan.safetensors import check_safetensors

    if check_safetensors(image, named=False) == "":
        raise NotAPickleError(
            f"{where}: already a safetensors file (whatever its name says), not a pickle: "
            "there is nothing to convert; load it as it is, or rename it to .safetensors"
        )


def _only_known_kinds(scan: FileReport) -> bool:
    """Whether every finding is about a tensor kind safetensors cannot hold that torch
    rebuilds with its own code (``_rebuild_qtensor``...; see :data:`~._extract.KNOWN_KINDS`)."""
    return all(f.global_name in KNOWN_KINDS for _, f in scan.findings)


def _only_object_stream_unknown(scan: FileReport) -> bool:
    """Whether the file's findings are all ``unknown`` and in one stream (checked to be
    the object stream by :func:`~._flatten.make_plan`: the one whose graph has flagged nodes)."""
    if scan.verdict is not Verdict.UNKNOWN:
        return False
    return sum(s.verdict is not Verdict.SAFE for s in scan.streams) == 1
