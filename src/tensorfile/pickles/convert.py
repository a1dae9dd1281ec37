"""Convert torch pickle checkpoints to safetensors without executing them.

``torch.load`` followed by ``save_file`` runs the very pickle a user wants to
get rid of. :func:`convert` never does: it is the scanner's interpreter with a
builder attached (:mod:`.builder`), not a second parser, and it needs neither
torch nor :mod:`pickle`.

For each input file:

1. **Refuse before writing.** The whole file is scanned first
   (:func:`~tensorfile.pickles.containers.scan_file`: every stream, every zip
   entry, payloads after STOP, nested archives). Anything but ``safe`` stops
   the conversion with :class:`~tensorfile.errors.UnsafePickleError` naming the
   global, the stream and the byte offset; an unreadable file raises
   :class:`~tensorfile.errors.MalformedCheckpointError`. Known but
   unconvertible tensor kinds (``_rebuild_qtensor``, sparse) raise
   :class:`~tensorfile.errors.UnsupportedCheckpointError`. With ``key`` an
   ``unknown`` object stream is let through to step 3; ``salvage_tensors``
   skips the scan.
2. **Read.** The object stream is run through the scanner's machine with the
   policy not strict (:class:`~.extract.GraphObserver`): its value graph and
   the nodes the policy flagged. Storages are windows over the records (zip
   entries memory-mapped in place; the legacy format's records found by
   walking its storage section; torch < 0.4's tar members; storages nested by
   ``pickle.dumps(tensor)``), looked up through :class:`~.builder.CheckpointBuilder`.
3. **Build and flatten.** By default the whole graph, which must have no
   flagged node; with ``key`` the selected sub-tree, when
   :func:`~.extract.check_subtree` proves no flagged node could reach it (the
   rest is never built and is listed in the report with why it was left);
   with ``salvage_tensors`` every literal tensor, named by its path
   (:func:`~.extract.salvage`). Every view is bounds-checked, so a malformed
   file is refused before any output exists. Tensors get their dotted
   state-dict names (``model_state.layer.weight``). Names that denote the
   same view of the same storage (tied weights) are written once; the others
   are recorded in ``__metadata__`` as ``{alias: kept}``, the way the
   reference ``save_model`` does, so ``load_model`` restores them. Plain
   values are kept as JSON text in ``__metadata__`` under their dotted name,
   leaf by leaf (:mod:`.metadata`); tensors safetensors cannot hold
   (complex128, complex32) are listed, the rest written.
4. **Write** through :func:`tensorfile._io.writer.save_stream`, atomically,
   one tensor at a time straight from its record: a contiguous little-endian
   tensor (nearly all of them) is copied file to file inside the kernel
   (``os.copy_file_range``, with a buffered fallback where the kernel
   refuses), a non-contiguous or big-endian view is read through the map and
   materialized alone, its pages released after it is written: peak memory
   stays near the largest tensor. The source's SHA-256 is computed on a
   second thread meanwhile, for the report (the only pass that reads the
   source into this process).

Folders in the Hugging Face layout (``pytorch_model.bin``, or shards plus
``pytorch_model.bin.index.json``) become ``model.safetensors`` (or shards plus
``model.safetensors.index.json``, through :mod:`tensorfile.sharded`); every
shard is checked before the first output is written, and the index is
written last. The report says what was done with every other file (a
Trainer checkpoint's ``optimizer.pt`` and ``training_args.bin`` are scanned,
never copied into a new output folder).

The rules of ``key`` and salvage are in spec/SCANNING.md ("Converting").

The function is :func:`convert` in this module (``tensorfile.pickles.convert``
is the module's own name, so the package does not re-export the function
under it).
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import reprlib
import struct
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tensorfile._format.header import MAX_HEADER_SIZE, METADATA_KEY, Entry, canonical_order
from tensorfile._io.files import open_regular
from tensorfile._io.writer import KERNEL_COPY, FileSpan, save_stream
from tensorfile.errors import (
    ConversionError,
    MalformedCheckpointError,
    PickleError,
    ScanError,
    SerializationError,
    UnsafePickleError,
    UnsupportedCheckpointError,
)
from tensorfile.pickles.builder import (
    UNSUPPORTED_REBUILDS,
    CheckpointBuilder,
    ConvertObserver,
    LeftTensor,
    RecordSource,
    Storage,
    StorageType,
    TensorView,
    Unbuilt,
    check_hashing,
    check_view,
)
from tensorfile.pickles.containers import (
    LEGACY_MAGIC,
    legacy_storage_records,
    scan_file,
    sniff,
    tar_members,
    zip_entries,
)
from tensorfile.pickles.extract import (
    KNOWN_KINDS,
    Flagged,
    GraphObserver,
    ObjectGraph,
    check_subtree,
    known_kind,
    left_beside,
    salvage,
    select,
    whole,
)
from tensorfile.pickles.extract import key_part as _key_text
from tensorfile.pickles.folders import FileAction, other_files
from tensorfile.pickles.machine import StreamResult, materialize, run_stream
from tensorfile.pickles.metadata import JsonValues
from tensorfile.pickles.opcodes import OPCODE_BYTES, Buffer
from tensorfile.pickles.policy import STORAGE_TYPES
from tensorfile.pickles.report import FileReport, Verdict
from tensorfile.sharded import save_sharded_iter, write_order

PathLike = str | os.PathLike[str]
#: ``progress(bytes_done, bytes_total)`` over the tensor bytes written.
ProgressCallback = Callable[[int, int], None]

#: The Hugging Face names this converter reads and writes.
PT_WEIGHTS = "pytorch_model.bin"
PT_INDEX = "pytorch_model.bin.index.json"
ST_WEIGHTS = "model.safetensors"

#: Names one checkpoint may flatten to: tensors, aliases, plain and dropped values.
#: The memo lets a 1 KB pickle share one container under itself 40 times over,
#: which would name a tensor 2**40 ways, so the names are counted (in time
#: linear in the distinct containers) before any is made. Real state dicts hold
#: 10**3 to 10**5 tensors (a 671B mixture-of-experts model about 10**5), a few
#: times that with optimizer state; every name kept lands in the output's
#: header, where 10**6 entries of ~100 bytes already fill most of its 100 MB.
MAX_NAMES = 1_000_000
#: Characters of those names, separators included: the output header's own
#: limit (names longer in total cannot be written). Flattening does work
#: proportional to this, so it also bounds the time of deep nesting.
MAX_NAME_TEXT = MAX_HEADER_SIZE
#: Views that repeat bytes (zero strides, overlaps) may not grow the output past
#: this many times the source size (plus :data:`_EXPANSION_SLACK`).
MAX_EXPANSION = 4
_EXPANSION_SLACK = 1 << 30
_MAX_ZIP_ENTRIES = 1_000_000
#: pickle.dumps(tensor) nests one stream; the scanner gives up deeper than 8.
_MAX_NESTING = 4
_HASH_CHUNK = 8 << 20


# ---------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class DroppedValue:
    """A value of the checkpoint that is not in the output, and why."""

    name: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        """JSON-ready form."""
        return {"name": self.name, "reason": self.reason}


@dataclass(slots=True)
class ConversionReport:
    """What :func:`convert` wrote.

    ``tensors`` are the names written (in file order per output), ``aliases``
    maps each tied name that was not written to the name that holds its bytes,
    ``values`` names the plain values kept as JSON in ``__metadata__``,
    ``dropped`` lists everything else (single leaves of a kept value too, as
    ``config.device``). ``tensors_left`` lists tensors safetensors cannot hold
    (or, salvaging, whose storage or view is not determined); ``left`` (with
    ``key``) every value beside the path to it and why it was left;
    ``not_performed`` (salvage) every import, call and effect outside the
    allowlist, ``not_listed`` counting those past the first 10,000; ``files``
    (folders) what was done with each top-level file. ``source_sha256`` is the
    digest of every source file read; ``outputs`` every file written (shards,
    then the index).
    """

    source: str
    format: str
    outputs: list[str] = field(default_factory=list)
    tensors: list[str] = field(default_factory=list)
    aliases: dict[str, str] = field(default_factory=dict)
    values: list[str] = field(default_factory=list)
    dropped: list[DroppedValue] = field(default_factory=list)
    source_sha256: dict[str, str] = field(default_factory=dict)
    bytes_written: int = 0
    signature: str | None = None
    tensors_left: list[DroppedValue] = field(default_factory=list)
    left: list[DroppedValue] = field(default_factory=list)
    salvage: bool = False
    not_performed: list[dict[str, object]] = field(default_factory=list)
    not_listed: int = 0
    files: list[FileAction] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (what ``tensorfile convert --json`` prints)."""
        return {
            "source": self.source,
            "format": self.format,
            "outputs": list(self.outputs),
            "tensors": list(self.tensors),
            "aliases": dict(self.aliases),
            "values": list(self.values),
            "dropped": [d.to_dict() for d in self.dropped],
            "tensors_left": [d.to_dict() for d in self.tensors_left],
            "left": [d.to_dict() for d in self.left],
            "salvage": self.salvage,
            "not_performed": [dict(n) for n in self.not_performed],
            "not_listed": self.not_listed,
            "files": [f.to_dict() for f in self.files],
            "source_sha256": dict(self.source_sha256),
            "bytes_written": self.bytes_written,
            "signature": self.signature,
        }


# ---------------------------------------------------------------------------
# Reading a checkpoint: container -> object stream + storage records
# ---------------------------------------------------------------------------

class _Source:
    """One checkpoint file, memory-mapped read-only, and its digest.

    The digest is computed on a background thread (:func:`_hash_in_background`)
    once every input is accepted, so a refusal never waits for it, while the
    tensors are written. It reads the same open file rather than through the
    map, so hashing does not add the whole file to this process's resident
    memory.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        fd, self.size = open_regular(path)
        self._file = os.fdopen(fd, "rb")
        if self.size == 0:
            self._file.close()
            raise MalformedCheckpointError(f"{path}: empty file")
        self.buf = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
        self._digest: str | None = None
        self._error: OSError | None = None
        self._stop = threading.Event()
        self._done = threading.Event()
        self._queued = False

    def fileno(self) -> int:
        """The open file's descriptor (read with explicit offsets only)."""
        return self._file.fileno()

    def compute_digest(self) -> None:
        """Hash the file (on the hashing thread); stops early once :meth:`close` is called."""
        h = hashlib.sha256()
        chunk = memoryview(bytearray(_HASH_CHUNK))
        done = 0
        try:
            # The same open file (nothing else uses its position: the map does not).
            with os.fdopen(os.dup(self._file.fileno()), "rb", buffering=0) as f:
                f.seek(0)
                while done < self.size:
                    if self._stop.is_set():
                        raise OSError(f"{self.path}: conversion stopped before the digest")
                    n = f.readinto(chunk)
                    if not n:
                        raise OSError(f"{self.path}: file shrank while being converted")
                    h.update(chunk[:n])
                    done += n
            self._digest = h.hexdigest()
        except (OSError, ValueError) as exc:
            self._error = OSError(str(exc))
        finally:
            self._done.set()

    def sha256(self) -> str:
        """The file's SHA-256 (hashed now if no background thread was started)."""
        if not self._queued:
            self._queued = True
            self.compute_digest()
        self._done.wait()
        if self._error is not None:
            raise self._error
        assert self._digest is not None
        return self._digest

    def close(self) -> None:
        """Stop hashing, unmap and close."""
        self._stop.set()
        if self._queued:
            self._done.wait()
        try:
            self.buf.close()
        except BufferError:  # a caller still holds a view; the map goes with it
            pass
        self._file.close()


def _hash_in_background(sources: list[_Source]) -> None:
    """Hash ``sources`` one after another on one thread (beside the copy)."""
    for src in sources:
        src._queued = True

    def run() -> None:
        for src in sources:
            src.compute_digest()

    threading.Thread(target=run, daemon=True).start()


def _release(buf: mmap.mmap, start: int, stop: int) -> None:
    """Drop the mapped pages of ``[start, stop)`` from this process (they stay cached)."""
    if stop <= start or not hasattr(mmap, "MADV_DONTNEED"):
        return
    page = start - start % mmap.PAGESIZE
    try:
        buf.madvise(mmap.MADV_DONTNEED, page, stop - page)
    except (OSError, ValueError):
        pass


@dataclass(slots=True)
class _Checkpoint:
    """A checkpoint file, scanned and read: its container format and its object graph
    (built later, in whole or in part, by :func:`_plan`)."""

    source: _Source
    format: str
    graph: ObjectGraph
    scan: FileReport | None = None


def _refuse_unless_safe(report: FileReport) -> None:
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


def _stream(buf: Buffer, start: int, end: int, what: str, observer: ConvertObserver
            ) -> StreamResult:
    """Run one stream under the strict policy (raises on the first disallowed node)."""
    result = run_stream(buf, start, observer, end=end)
    if result.error is not None:
        raise MalformedCheckpointError(f"{what}: {result.error}")
    return result


def _build(root: object, builder: CheckpointBuilder, what: str) -> object:
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
    return _build(result.root, builder, what), result.end


def _graph(buf: Buffer, start: int, end: int, builder: CheckpointBuilder, what: str, *,
           key_pids: bool = False) -> tuple[ObjectGraph, int]:
    """Run the object stream under the policy, not strict: its value graph and the
    nodes the policy flagged (what may be built of it is decided by :func:`_plan`),
    and where the stream ended."""
    observer = GraphObserver(key_pids=key_pids)
    result = run_stream(buf, start, observer, end=end)
    if result.error is not None:
        raise MalformedCheckpointError(f"{what}: {result.error}")
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
    result = run_stream(buf, start, observer, end=end)
    if result.error is not None:
        raise MalformedCheckpointError(f"{what}: {result.error}")
    flagged.update(observer.flagged)
    overflow.append(observer.overflow)
    root = result.root
    if isinstance(root, list):
        root = [x if isinstance(x, str) else None for x in root]
    return (root if isinstance(root, (int, list)) else None), result.end


def _no_records(key: str) -> tuple[Buffer, int, int]:
    raise MalformedCheckpointError(f"storage {key!r} is named where no storage records exist")


def _zip_checkpoint(src: _Source) -> _Checkpoint:
    """torch's zip format: ``<prefix>/data.pkl`` and ``<prefix>/data/<key>`` records."""
    buf = src.buf
    try:
        entries = zip_entries(buf, 0, src.size, _MAX_ZIP_ENTRIES)
    except ScanError as exc:
        raise MalformedCheckpointError(f"{src.path}: {exc}") from None
    prefix = entries[0].name.split("/", 1)[0] + "/" if entries else ""  # torch: first entry
    if not any(e.name == prefix + "data.pkl" for e in entries):
        raise UnsupportedCheckpointError(
            f"{src.path}: zip archive is not a torch checkpoint (no {prefix or '<folder>/'}data.pkl)")
    by_name = {}
    for entry in entries:
        if entry.name in by_name:
            raise MalformedCheckpointError(f"{src.path}: zip entry {entry.name!r} appears twice")
        by_name[entry.name] = entry

    def stored(name: str) -> tuple[int, int]:
        entry = by_name.get(prefix + name)
        if entry is None:
            raise MalformedCheckpointError(f"{src.path}: zip entry {prefix + name!r} is missing")
        if entry.method != 0:
            raise UnsupportedCheckpointError(
                f"{src.path}: zip entry {entry.name!r} is compressed (torch.save never "
                "compresses; records must be stored to be mapped)")
        return entry.data_start, entry.comp_size

    big = False
    if prefix + "byteorder" in by_name:
        start, length = stored("byteorder")
        order = bytes(buf[start:start + min(length, 16)]).strip()
        if order not in (b"little", b"big"):
            raise MalformedCheckpointError(f"{src.path}: byteorder record says {order!r}")
        big = order == b"big"

    def records(key: str) -> tuple[Buffer, int, int]:
        start, length = stored("data/" + key)
        return buf, start, length

    start, length = stored("data.pkl")
    builder = CheckpointBuilder(records, big_endian=big)
    graph, _ = _graph(buf, start, start + length, builder, f"{src.path}: {prefix}data.pkl")
    return _Checkpoint(src, "torch-zip", graph)


def _pickle_checkpoint(src: _Source, salvage: bool) -> _Checkpoint:
    """A raw pickle, or the legacy format."""
    fmt, graph = _pickles(src.buf, 0, src.size, str(src.path), 0, salvage=salvage)
    assert isinstance(graph, ObjectGraph)
    return _Checkpoint(src, fmt, graph)


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
        return fmt, _build(graph.root, graph.builder, graph.what)

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
    objects = run_stream(buf, pos, observer, end=end)
    if objects.error is not None:
        raise MalformedCheckpointError(f"{what}: {objects.error}")
    keys, pos = _header(buf, objects.end, end, f"{where}: storage keys", salvage, flagged,
                        overflow)
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise MalformedCheckpointError(f"{where}: legacy storage keys are not a list of str")
    try:
        located, _ = legacy_storage_records(buf, pos, end, keys, observer.policy.storages)
    except ScanError as exc:
        raise MalformedCheckpointError(f"{where}: {exc}") from None

    def records(key: str) -> tuple[Buffer, int, int]:
        if key not in located:
            raise MalformedCheckpointError(f"{where}: storage record {key!r} is missing")
        at, length = located[key]
        return buf, at, length

    flagged.update(observer.flagged)
    return done("torch-legacy", ObjectGraph(objects.root, flagged, builder(records), what,
                                            observer.overflow + sum(overflow)))


def _tar_checkpoint(src: _Source) -> _Checkpoint:
    """torch < 0.4: tar members ``storages``, ``tensors`` (binary headers) and ``pickle``."""
    buf = src.buf
    try:
        members = {name: (data, data + size) for name, data, size
                   in tar_members(buf, 0, src.size, _MAX_ZIP_ENTRIES)}
    except ScanError as exc:
        raise MalformedCheckpointError(f"{src.path}: {exc}") from None
    for needed in ("storages", "tensors", "pickle"):
        if needed not in members:
            raise MalformedCheckpointError(f"{src.path}: tar member {needed!r} is missing")
    objects = _TarObjects(src, members["storages"])
    objects.tensors(members["tensors"])
    start, end = members["pickle"]
    builder = CheckpointBuilder(_no_records, objects=objects.by_key)
    graph, _ = _graph(buf, start, end, builder, f"{src.path}: pickle", key_pids=True)
    return _Checkpoint(src, "torch-tar", graph)


class _TarObjects:
    """Storages and tensors of the tar format, by the string keys its pickle uses."""

    def __init__(self, src: _Source, span: tuple[int, int]) -> None:
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
        count, pos = _run(buf, pos, end, CheckpointBuilder(_no_records), "storages count")
        if type(count) is not int or count < 0:
            raise MalformedCheckpointError(f"{src.path}: tar storage count is not an int")
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

    def _walk(self, pos: int, end: int, key: str, size: int
              ) -> tuple[dict[str, tuple[int, int]], int]:
        try:
            return legacy_storage_records(self.src.buf, pos, end, [key], {key: size})
        except ScanError as exc:
            raise MalformedCheckpointError(f"{self.src.path}: {exc}") from None

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
        count, pos = _run(buf, pos, end, CheckpointBuilder(_no_records), "tensors count")
        if type(count) is not int or count < 0:
            raise MalformedCheckpointError(f"{self.src.path}: tar tensor count is not an int")
        for _ in range(count):
            head, pos = _run(buf, pos, end, self._builder, "tensor header")
            if not (isinstance(head, tuple) and len(head) == 3):
                raise MalformedCheckpointError(f"{self.src.path}: tar tensor header is malformed")
            key, storage_id = str(head[0]), str(head[1])
            storage = self._storages.get(storage_id)
            if storage is None or storage.dtype is None or pos + 8 > end:
                raise MalformedCheckpointError(f"{self.src.path}: tar tensor {key!r} is malformed")
            (ndim,) = struct.unpack_from("<i", buf, pos)
            need = 8 + 16 * max(ndim, 0) + 8
            if ndim < 0 or pos + need > end:
                raise MalformedCheckpointError(f"{self.src.path}: tar tensor {key!r} is truncated")
            nums = struct.unpack_from(f"<{2 * ndim + 1}q", buf, pos + 8)
            shape, stride, offset = nums[:ndim], nums[ndim:2 * ndim], nums[-1]
            self.by_key[key] = check_view(storage, storage.dtype, offset, shape, stride, pos)
            pos += need


def _open_checkpoint(src: _Source, salvage: bool) -> _Checkpoint:
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


def _load(path: Path, mode: _Mode) -> _Checkpoint:
    """Scan, then read: raises before anything is written.

    The whole file must scan ``safe``; with ``--key``, ``unknown`` findings in the
    object stream alone are let through to :func:`_plan`, which builds the selected
    value only if they cannot reach it. Salvage reads any file.
    """
    scan = None
    if not mode.salvage:
        scan = scan_file(path)
        if not (_only_object_stream_unknown(scan)
                and (mode.key is not None or _only_known_kinds(scan))):
            _refuse_unless_safe(scan)
    src = _Source(path)
    try:
        ck = _open_checkpoint(src, mode.salvage)
    except BaseException:
        src.close()
        raise
    ck.scan = scan
    return ck


def _only_known_kinds(scan: FileReport) -> bool:
    """Whether every finding is about a tensor kind safetensors cannot hold that torch
    rebuilds with its own code (``_rebuild_qtensor``...; see :data:`~.extract.KNOWN_KINDS`)."""
    return all(f.global_name in KNOWN_KINDS for _, f in scan.findings)


def _only_object_stream_unknown(scan: FileReport) -> bool:
    """Whether the file's findings are all ``unknown`` and in one stream (checked to be
    the object stream by :func:`_plan`: the one whose graph has flagged nodes)."""
    if scan.verdict is not Verdict.UNKNOWN:
        return False
    return sum(s.verdict is not Verdict.SAFE for s in scan.streams) == 1


# ---------------------------------------------------------------------------
# Flattening: tensors by dotted name, plain values as JSON, the rest dropped
# ---------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class _Mode:
    """What the user asked for: a sub-tree (``--key``) and/or salvage."""

    key: str | None = None
    salvage: bool = False


@dataclass(slots=True)
class _Plan:
    """What one output file will hold, and what of the checkpoint it will not."""

    checkpoint: _Checkpoint
    tensors: dict[str, TensorView] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)
    values: dict[str, str] = field(default_factory=dict)
    dropped: list[DroppedValue] = field(default_factory=list)
    tensors_left: list[DroppedValue] = field(default_factory=list)
    left: list[DroppedValue] = field(default_factory=list)
    not_performed: list[dict[str, object]] = field(default_factory=list)
    not_listed: int = 0

    @property
    def nbytes(self) -> int:
        return sum(v.nbytes for v in self.tensors.values())

    def metadata(self) -> dict[str, str]:
        meta = {"format": "pt"}
        meta.update(self.values)
        meta.update(self.aliases)
        return meta


#: Dropped keys are named by a short repr (a key may be a large, shared tuple).
_KEY_REPR = reprlib.Repr()
_KEY_REPR.maxlevel, _KEY_REPR.maxtuple, _KEY_REPR.maxstring = 3, 4, 40
_KEY_REPR.maxother = _KEY_REPR.maxlong = 40


def _items(container: dict[Any, Any] | list[Any] | tuple[Any, ...]
           ) -> Iterable[tuple[object, object]]:
    return container.items() if isinstance(container, dict) else enumerate(container)


def _holders(root: object) -> set[int]:
    """ids of the containers that hold a tensor somewhere below (iterative, DAG-safe)."""
    holders: set[int] = set()
    done: set[int] = set()
    work: list[tuple[object, bool]] = [(root, False)]
    while work:
        value, expanded = work.pop()
        if not isinstance(value, (dict, list, tuple)) or id(value) in done:
            continue
        kids = list(value.values()) if isinstance(value, dict) else list(value)
        if not expanded:
            work.append((value, True))
            work.extend((k, False) for k in kids)
            continue
        done.add(id(value))
        if any(isinstance(k, (TensorView, LeftTensor)) or id(k) in holders for k in kids):
            holders.add(id(value))
    return holders


def _count_names(root: object, holders: set[int]) -> tuple[int, int]:
    """(names, characters) flattening ``root`` gives, without making any name.

    Dynamic programming over the distinct containers (by identity; the graph is
    acyclic, :func:`~tensorfile.pickles.machine.materialize` refuses cycles):
    a container's count is the sum of its children's, a leaf counts one name.
    Time is linear in the containers and their items however often the memo
    shares them; counts saturate at 2**64 so that numbers stay small.
    """
    cap = 1 << 64
    counts: dict[int, tuple[int, int]] = {}
    work: list[tuple[object, bool]] = [(root, False)]
    while work:
        node, expanded = work.pop()
        if id(node) in counts:
            continue
        assert isinstance(node, (dict, list, tuple))
        if not expanded:
            work.append((node, True))
            work.extend((v, False) for _, v in _items(node)
                        if id(v) in holders and id(v) not in counts)
            continue
        names = text = 0
        for k, v in _items(node):
            part = _key_text(k)
            if part is None:  # dropped under its parent's name plus [repr]
                names, text = names + 1, text + len(_KEY_REPR.repr(k)) + 2
                continue
            n, t = counts[id(v)] if id(v) in holders else (1, 0)
            names, text = names + n, text + t + n * (len(part) + 1)
        counts[id(node)] = (min(names, cap), min(text, cap))
    return counts[id(root)]


def _refuse_flagged(graph: ObjectGraph) -> None:
    """The scanner called the file safe (or flagged only known tensor kinds), so the
    object stream has no other flagged node; if the two ever disagree, the stricter
    answer wins."""
    for hit in graph.flagged.values():
        if not known_kind(hit):
            raise UnsafePickleError(f"{graph.what}: {hit.describe()}")


def _plan(ck: _Checkpoint, mode: _Mode) -> _Plan:
    plan = _Plan(ck)
    where = str(ck.source.path)
    graph = ck.graph
    if mode.salvage:
        return _salvage_plan(plan, graph, mode.key, where)
    if ck.scan is not None and ck.scan.verdict is not Verdict.SAFE and not graph.flagged:
        _refuse_unless_safe(ck.scan)  # the unknown stream is not the object stream
    if mode.key is None:
        if not all(known_kind(hit) for hit in graph.flagged.values()):
            _refuse_flagged(graph)
        sel = whole(graph)
    else:
        sel = select(graph, mode.key, where)
    if graph.flagged:
        check_subtree(graph, sel, where)
    plan.left = [DroppedValue(n, why) for n, why in left_beside(graph, sel)]
    root = _build(sel.node, graph.builder, graph.what)
    _flatten_root(plan, root)
    if not plan.tensors and plan.tensors_left:
        raise UnsupportedCheckpointError(
            f"{where}: nothing to convert: " + "; ".join(
                f"{d.name}: {d.reason}" for d in plan.tensors_left[:5]))
    return plan


def _salvage_plan(plan: _Plan, graph: ObjectGraph, key: str | None, where: str) -> _Plan:
    start = graph.root if key is None else select(graph, key, where).node
    found = salvage(graph, start, "")
    plan.tensors_left = [DroppedValue(n, why) for n, why in found.left]
    plan.not_performed, plan.not_listed = found.not_performed, found.not_listed
    if len(found.tensors) > MAX_NAMES:
        raise UnsupportedCheckpointError(
            f"{where}: {len(found.tensors):,} tensor names, over the limit of {MAX_NAMES:,}")
    _group_tensors(plan, found.tensors)
    if not plan.tensors:
        raise UnsupportedCheckpointError(f"{where}: no tensor whose storage and view are "
                                         "literal values of the pickle was found to salvage")
    return plan


def _flatten_root(plan: _Plan, root: object) -> None:
    """Name the built value's tensors and plain values (see the module docstring)."""
    where = plan.checkpoint.source.path
    holders = _holders(root)
    names: list[tuple[str, TensorView]] = []
    values: dict[str, object] = {}
    if id(root) not in holders:
        # torch.save(tensor) has one name; any other root is one plain value.
        leaf = "tensor" if isinstance(root, (TensorView, LeftTensor)) else "value"
        _place(plan, names, values, leaf, root)
    else:
        count, chars = _count_names(root, holders)
        if count > MAX_NAMES or chars > MAX_NAME_TEXT:
            def shown(n: int) -> str:
                return f"{n:,}" if n < 1 << 64 else "more than 2**64"
            raise UnsupportedCheckpointError(
                f"{where}: flattening would give {shown(count)} names ({shown(chars)} characters); "
                f"the converter's limits are {MAX_NAMES:,} names and {MAX_NAME_TEXT:,} characters "
                "(containers shared through the pickle memo name their tensors once per path)")
        assert isinstance(root, (dict, list, tuple))
        _flatten(plan, root, holders, names, values)
    _group_tensors(plan, names)
    texts = JsonValues()
    for name, value in values.items():
        if name in plan.tensors or name in plan.aliases:
            raise UnsupportedCheckpointError(f"{where}: two values are named {name!r}")
        if name in ("format", ""):
            plan.dropped.append(DroppedValue(name, "name is reserved in __metadata__"))
            continue
        text, why, leaves = texts.text(name, value)
        if text is None:
            plan.dropped.append(DroppedValue(name, why))
            continue
        plan.values[name] = text
        plan.dropped.extend(DroppedValue(n, w) for n, w in leaves)


def _place(plan: _Plan, names: list[tuple[str, TensorView]], values: dict[str, object],
           name: str, value: object) -> None:
    """Sort one named leaf: a tensor, a dropped value, or a plain value."""
    if isinstance(value, TensorView):
        names.append((name, value))
    elif isinstance(value, LeftTensor):
        plan.tensors_left.append(DroppedValue(name, value.reason()))
    elif isinstance(value, Unbuilt):
        plan.dropped.append(DroppedValue(name, value.reason()))
    else:
        values[name] = value


def _flatten(plan: _Plan, root: dict[Any, Any] | list[Any] | tuple[Any, ...],
             holders: set[int], names: list[tuple[str, TensorView]],
             values: dict[str, object]) -> None:
    """Name every leaf below ``root`` by its dotted path, depth first in item order.

    The path is a stack of key parts, joined once per container into the
    prefix its leaves share (and only when it has a leaf), so the work and the
    memory are those of the names themselves, which :func:`_count_names`
    bounded: nothing is rebuilt per level of a deep chain. Leading empty keys
    add nothing (``{"": {"w": t}}`` names ``w``).
    """
    parts: list[str] = []
    lead = 0  # parts[:lead] are all empty
    frames: list[tuple[Iterator[tuple[object, object]], list[str]]] = [(iter(_items(root)), [])]
    while frames:
        items, prefix = frames[-1]  # prefix: [the joined path], once a leaf needs it
        for k, v in items:
            part = _key_text(k)
            if part is not None and id(v) in holders:
                if part == "" and lead == len(parts):
                    lead += 1
                parts.append(part)
                assert isinstance(v, (dict, list, tuple))
                frames.append((iter(_items(v)), []))
                break
            if not prefix:
                prefix.append(".".join(parts[lead:]))
            if part is None:
                plan.dropped.append(DroppedValue(f"{prefix[0]}[{_KEY_REPR.repr(k)}]",
                                                 "key is not a str or an int of 64 bits"))
            else:
                _place(plan, names, values, f"{prefix[0]}.{part}" if prefix[0] else part, v)
        else:
            frames.pop()
            if parts:
                parts.pop()
                lead = min(lead, len(parts))


def _group_tensors(plan: _Plan, names: list[tuple[str, TensorView]]) -> None:
    """Write each distinct view once; other names of the same view become aliases."""
    groups: dict[tuple[Any, ...], list[str]] = {}
    views: dict[str, TensorView] = {}
    identities: dict[int, tuple[Any, ...]] = {}  # per view object: the memo shares them
    for name, view in names:
        if name in views:
            raise UnsupportedCheckpointError(
                f"{plan.checkpoint.source.path}: two tensors are named {name!r}")
        if name == METADATA_KEY:
            raise UnsupportedCheckpointError(f"a tensor is named {METADATA_KEY!r}, which "
                                             "safetensors reserves")
        views[name] = view
        identity = identities.get(id(view))
        if identity is None:
            identity = identities[id(view)] = view.identity
        groups.setdefault(identity, []).append(name)
    for group in groups.values():
        kept = min(group)  # the reference save_model keeps the first name in sorted order
        plan.tensors[kept] = views[kept]
        for alias in group:
            if alias != kept:
                plan.aliases[alias] = kept
    plan.tensors = dict(sorted(plan.tensors.items()))


def _check_budget(plans: list[_Plan]) -> None:
    source = sum(p.checkpoint.source.size for p in plans)
    total = sum(p.nbytes for p in plans)
    if total > MAX_EXPANSION * source + _EXPANSION_SLACK:
        raise UnsupportedCheckpointError(
            f"the tensors would take {total} bytes from a {source}-byte checkpoint: views with "
            "zero or overlapping strides repeat data beyond the converter's bound")


# ---------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------

class _Progress:
    def __init__(self, total: int, callback: ProgressCallback | None) -> None:
        self.total, self.done, self.callback = total, 0, callback

    def add(self, n: int) -> None:
        self.done += n
        if self.callback is not None:
            self.callback(self.done, self.total)


class _Copier:
    """Hands the writer one tensor's bytes at a time, straight from the records.

    Called with each name in file order. A tensor whose bytes are one run of a
    source file (:meth:`~.builder.TensorView.raw_span`: contiguous,
    little-endian; almost every tensor ``torch.save`` writes) goes as a
    :class:`~tensorfile._io.writer.FileSpan`, which the writer copies file to
    file in the kernel; any other (a view, a big-endian record, a nested
    stream's bytes) is read through the map and materialized alone. Before
    handing out the next tensor it accounts for the previous one (progress)
    and drops that tensor's mapped pages from this process, so resident
    memory stays near one tensor; :meth:`finish` does the same for the last
    one once the writer returns.
    """

    def __init__(self, tensors: dict[str, TensorView], sources: list[_Source],
                 progress: _Progress) -> None:
        self._tensors = tensors
        # Which open file each map shows (the map starts at the file's byte 0).
        self._files = {id(src.buf): src.fileno() for src in sources} if KERNEL_COPY else {}
        self._progress = progress
        self._pending: TensorView | None = None

    def __call__(self, name: str) -> memoryview | FileSpan:
        self.finish()
        view = self._pending = self._tensors[name]
        fd = self._files.get(id(view.storage.buf))
        span = view.raw_span() if fd is not None else None
        if fd is not None and span is not None and span[1]:
            return FileSpan(fd, *span)
        return view.data()

    def finish(self) -> None:
        """Account for the tensor handed out last (it has been written)."""
        view, self._pending = self._pending, None
        if view is None:
            return
        if isinstance(view.storage.buf, mmap.mmap):
            _release(view.storage.buf, *view.byte_span())
        self._progress.add(view.nbytes)


def _entries(tensors: dict[str, TensorView]) -> list[Entry]:
    return [Entry(n, v.dtype, v.header_shape) for n, v in tensors.items()]


def _write(plan: _Plan, dst: Path, progress: _Progress) -> list[str]:
    """Write one output file atomically, tensor by tensor; returns the names in file order."""
    entries = _entries(plan.tensors)
    order = [e.name for e in canonical_order(entries)]
    copier = _Copier(plan.tensors, [plan.checkpoint.source], progress)
    try:
        save_stream(entries, ((n, copier(n)) for n in order), dst, plan.metadata())
    except SerializationError as exc:
        raise UnsupportedCheckpointError(f"{dst}: {exc}") from None
    copier.finish()
    return order


def _default_output(src: Path) -> Path:
    if src.name == PT_WEIGHTS:
        return src.with_name(ST_WEIGHTS)
    return src.with_suffix(".safetensors")


def _report(report: ConversionReport, plans: list[_Plan], outputs: list[Path],
            order: list[str]) -> None:
    report.outputs.extend(str(p) for p in outputs)
    report.tensors.extend(order)
    for plan in plans:
        report.aliases.update(plan.aliases)
        report.values.extend(plan.values)
        report.dropped.extend(plan.dropped)
        report.tensors_left.extend(plan.tensors_left)
        report.left.extend(plan.left)
        report.not_performed.extend(plan.not_performed)
        report.not_listed += plan.not_listed
        report.bytes_written += plan.nbytes
        src = plan.checkpoint.source
        report.source_sha256[str(src.path)] = src.sha256()


def _convert_file(src: Path, dst: Path | None, mode: _Mode,
                  progress: ProgressCallback | None) -> ConversionReport:
    out = dst if dst is not None else _default_output(src)
    if out.is_dir():
        out = out / _default_output(src).name
    if out.resolve() == src.resolve():
        raise ConversionError(f"{src}: the output would overwrite the source")
    ck = _load(src, mode)
    try:
        plan = _plan(ck, mode)
        _check_budget([plan])
        report = ConversionReport(str(src), ck.format, salvage=mode.salvage)
        out.parent.mkdir(parents=True, exist_ok=True)
        _hash_in_background([ck.source])
        order = _write(plan, out, _Progress(plan.nbytes, progress))
        _report(report, [plan], [out], order)
        return report
    finally:
        ck.source.close()


def _folder_inputs(folder: Path) -> tuple[list[str], Path | None]:
    """The shard files of a Hugging Face folder (from its index), or the single weights file."""
    index = folder / PT_INDEX
    if index.is_file():
        try:
            doc = json.loads(index.read_text(encoding="utf-8"))
            weight_map = doc["weight_map"]
            shards = sorted(set(weight_map.values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise MalformedCheckpointError(f"{index}: not a weight index: {exc}") from None
        for shard in shards:
            if not isinstance(shard, str) or "/" in shard or "\\" in shard or shard in (".", ".."):
                raise MalformedCheckpointError(f"{index}: shard name {shard!r} is not a file name")
            if not (folder / shard).is_file():
                raise MalformedCheckpointError(f"{index}: shard {shard!r} is missing")
        return shards, index
    if (folder / PT_WEIGHTS).is_file():
        return [PT_WEIGHTS], None
    raise ConversionError(f"{folder}: no {PT_WEIGHTS} or {PT_INDEX} to convert")


def _convert_folder(src: Path, dst: Path | None, mode: _Mode,
                    progress: ProgressCallback | None) -> tuple[ConversionReport, list[str]]:
    """Every input shard is checked, then all tensors are written through
    :func:`tensorfile.sharded.save_sharded_iter`: ``model.safetensors``, or
    ``model-0000i-of-0000n.safetensors`` shards no bigger than the largest
    input shard and ``model.safetensors.index.json``, written last."""
    shards, index = _folder_inputs(src)
    out = dst if dst is not None else src
    if out.exists() and not out.is_dir():
        raise ConversionError(f"{out}: a folder converts into a folder, not a file")
    checkpoints: list[_Checkpoint] = []
    try:
        for shard in shards:  # every shard is checked before anything is written
            checkpoints.append(_load(src / shard, mode))
        plans = [_plan(ck, mode) for ck in checkpoints]
        _check_budget(plans)
        tensors: dict[str, TensorView] = {}
        metadata: dict[str, str] = {}
        for plan in plans:
            for name, view in plan.tensors.items():
                if name in tensors:
                    raise UnsupportedCheckpointError(f"{src}: two shards hold tensor {name!r}")
                tensors[name] = view
            metadata.update(plan.metadata())
        total = sum(p.nbytes for p in plans)
        out.mkdir(parents=True, exist_ok=True)
        report = ConversionReport(str(src), "folder", salvage=mode.salvage)
        _hash_in_background([ck.source for ck in checkpoints])
        copier = _Copier(tensors, [ck.source for ck in checkpoints], _Progress(total, progress))
        entries = _entries(tensors)
        # Shards no bigger than the largest input shard (so about as many); one file
        # for one input.
        limit = max([p.nbytes for p in plans] if index is not None else [total]) or 1
        try:
            written = save_sharded_iter(entries, copier, out, limit, metadata)
        except SerializationError as exc:
            raise UnsupportedCheckpointError(f"{out}: {exc}") from None
        copier.finish()
        files = [out / f for f in written.shard_files] or [out / ST_WEIGHTS]
        if written.path is not None:
            files.append(written.path)
        _report(report, plans, files, write_order(entries))
    finally:
        for ck in checkpoints:
            ck.source.close()
    converted = [*shards, *([index.name] if index is not None else [])]
    report.files = [FileAction(name, "converted") for name in converted]
    outputs = {Path(p).name for p in report.outputs} if out.resolve() == src.resolve() else set()
    report.files += other_files(src, out, set(converted) | outputs)
    return report, converted


def convert(
    src: PathLike,
    dst: PathLike | None = None,
    *,
    key: str | None = None,
    salvage_tensors: bool = False,
    sign: Any = None,
    password: str | bytes | None = None,
    progress: ProgressCallback | None = None,
) -> ConversionReport:
    """Convert a torch checkpoint file or Hugging Face folder to safetensors, never running it.

    ``src`` is a ``.bin``/``.pt``/``.pth`` file (zip, legacy or tar format) or a
    folder with ``pytorch_model.bin`` or shards plus ``pytorch_model.bin.index.json``.
    ``dst`` defaults to ``model.safetensors`` (for ``pytorch_model.bin``) or the
    source name with a ``.safetensors`` suffix; for a folder, to the folder
    itself (other files are left alone; with a different ``dst`` they are
    copied there, pickles excepted). ``key`` selects one sub-tree of a training
    checkpoint (``"state_dict"``, dotted paths allowed): it converts when
    allowlisted operations rebuild all of it and nothing outside the
    allowlist could reach it, whatever else the file holds (``report.left``
    says what was left and why); a file with a dangerous finding is still
    refused. ``salvage_tensors`` takes every tensor whose storage and view are
    literal values of the pickle out of any file, dangerous ones included,
    executing nothing: the output holds numbers only, and
    ``report.not_performed`` lists every call that was not made. ``sign`` is a private key (path,
    PEM bytes or key object, see :func:`tensorfile.integrity.sign`) to sign the
    result with; ``progress(done, total)`` is called as tensor bytes are written.

    Raises :class:`~tensorfile.errors.UnsafePickleError` when any pickle in the
    input is not provably safe (beyond what ``key`` and ``salvage_tensors`` allow), :class:`~tensorfile.errors.MalformedCheckpointError`
    or :class:`~tensorfile.errors.UnsupportedCheckpointError` when it cannot be
    converted; in every such case nothing is written.
    """
    source = Path(src)
    target = Path(dst) if dst is not None else None
    mode = _Mode(key, salvage_tensors)
    if source.is_dir():
        report, converted = _convert_folder(source, target, mode, progress)
        model = target if target is not None else source
        ignore = converted if model.resolve() == source.resolve() else []
    elif source.is_file():
        report = _convert_file(source, target, mode, progress)
        model, ignore = Path(report.outputs[0]), []
    elif source.exists():
        raise MalformedCheckpointError(f"{source}: not a regular file or folder (FIFO, socket or device)")
    else:
        raise MalformedCheckpointError(f"{source}: no such file or folder")
    if sign is not None:
        from tensorfile.integrity import sign as sign_model

        report.signature = str(sign_model(model, sign, password=password,
                                          ignore_paths=ignore))
    return report


__all__ = ["ConversionReport", "DroppedValue", "FileAction", "ProgressCallback", "convert"]
