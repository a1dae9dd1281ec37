"""Tensor-parallel loading: each process reads only its slice of each tensor.

A :class:`PartitionPlan` says which tensors are split across ranks and along
which dimension; every other tensor is replicated (each rank loads it whole).
Rank ``r`` of ``w`` gets the contiguous block ``partition_bounds(n, r, w)`` of
a split dimension of size ``n`` (sizes differ by at most one, as
``torch.tensor_split``)::

    plan = plan_from_patterns({"*.q_proj.weight": 0, "*.o_proj.weight": 1})
    shard = load_partition("model/", plan, rank, world_size)         # or, with a
    shard = load_partition_distributed("model/", plan)               # process group

Reading only a slice
--------------------
With ``backend="mmap"`` a slice is taken with ``get_slice`` on the mapped
bytes, so only the pages under the slice are touched. With ``backend="pread"``
the slice's byte runs (one per outer index when the split dimension is not
the first) are read with ``pread`` and nothing else; the handle's
``bytes_read`` counts them exactly.

Verify-on-load with slices
--------------------------
A whole-tensor digest can only be checked against the whole tensor, so a rank
that must verify what it loads would have to read everything. Instead the
signer can record *chunk digests*: SHA-256 of each ``chunk_size`` bytes of a
tensor (the last chunk short). A rank then reads, verifies and slices only the
chunks that cover its bytes: for a split along the first dimension that is
its own bytes plus at most two partial chunks per tensor; for a split along a
later dimension, whose runs are shorter than a chunk, it is most of the
tensor (chunks cannot follow a plan the signer did not know). The verifier is any
object with the :class:`RangeVerifier` methods; :class:`ChunkDigests` is the
reference implementation (what a signer records, and its checks). Verifiers
without chunk digests (``tensorfile.integrity``'s :class:`LoadVerifier` as it
stands) still work: the whole tensor is read and checked, then sliced.

Devices
-------
``device="cuda"`` (or any torch device) reads each result through two pinned
host buffers in turn: while one is copied to the device asynchronously on a
side stream, the next bytes are read into the other.
"""

from __future__ import annotations

import hashlib
import math
import mmap
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from tensorfile._format.header import TensorInfo
from tensorfile._frameworks import import_torch, numpy_view, torch_dtype, torch_view
from tensorfile._io import reader
from tensorfile.errors import DigestMismatchError, NotSignedError, PartitionError
from tensorfile.integrity.hashing import FileDigest, ModelFile, hash_file
from tensorfile.sharded import ShardedOpen, open_sharded

PathLike = str | os.PathLike[str]
#: Default bytes per chunk digest: a 1 MiB granularity costs 32 bytes of digest per MiB.
DEFAULT_CHUNK_SIZE = 1 << 20
#: Bytes of each pinned staging buffer for device loads.
DEFAULT_STAGING_BYTES = 64 << 20


# --------------------------------------------------------------------------
# Plans
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class PartitionPlan:
    """Which tensors are split across ranks, and along which dimension.

    ``rules`` are ``(glob pattern, dim)`` pairs tried in order, the first
    matching name wins; ``dim=None`` means replicated. Names no rule matches
    get ``default`` (replicated unless set). Negative dims count from the end.
    """

    rules: tuple[tuple[str, int | None], ...] = ()
    default: int | None = None

    def dim_for(self, name: str) -> int | None:
        """The split dimension of tensor ``name`` as written in the plan (``None``: replicated)."""
        for pattern, dim in self.rules:
            if fnmatchcase(name, pattern):
                return dim
        return self.default


def plan_from_patterns(
    patterns: Mapping[str, int | None] | Iterable[tuple[str, int | None]],
    default: int | None = None,
) -> PartitionPlan:
    """A plan from glob patterns: ``{"*.q_proj.weight": 0, "*.o_proj.weight": 1, "*.norm.*": None}``."""
    items = patterns.items() if isinstance(patterns, Mapping) else patterns
    rules = []
    for pattern, dim in items:
        if not isinstance(pattern, str) or not (dim is None or type(dim) is int):
            raise PartitionError(f"plan rule must be (str pattern, int or None), got {(pattern, dim)!r}")
        rules.append((pattern, dim))
    if not (default is None or type(default) is int):
        raise PartitionError(f"default must be an int or None, got {default!r}")
    return PartitionPlan(tuple(rules), default)


def partition_bounds(size: int, rank: int, world_size: int) -> tuple[int, int]:
    """``[lo, hi)`` of rank ``rank``: contiguous blocks whose sizes differ by at most one."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise PartitionError(f"rank {rank} is not in a world of {world_size}")
    base, extra = divmod(size, world_size)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (1 if rank < extra else 0)


@dataclass(frozen=True)
class Block:
    """The part of one tensor a rank loads: indices ``[lo, hi)`` along ``dim``.

    A replicated tensor is the block ``dim=None`` (everything). In the file
    the block is ``outer`` runs of ``run`` bytes, ``stride`` bytes apart,
    starting ``first`` bytes into the tensor.
    """

    info: TensorInfo
    dim: int | None
    lo: int
    hi: int
    shape: tuple[int, ...] = field(init=False)
    outer: int = field(init=False)
    run: int = field(init=False)
    stride: int = field(init=False)
    first: int = field(init=False)

    def __post_init__(self) -> None:
        info = self.info
        if self.dim is None:
            shape, outer, run, stride, first = info.shape, 1, info.nbytes, info.nbytes, 0
        else:
            d = self.dim
            inner = math.prod(info.shape[d + 1 :]) * info.dtype.itemsize
            shape = (*info.shape[:d], self.hi - self.lo, *info.shape[d + 1 :])
            outer = math.prod(info.shape[:d])
            run, stride, first = (self.hi - self.lo) * inner, info.shape[d] * inner, self.lo * inner
            if run == stride or outer <= 1:  # the runs are one contiguous range
                run, stride, outer = run * outer, run * outer, 1
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "outer", outer)
        object.__setattr__(self, "run", run)
        object.__setattr__(self, "stride", stride)
        object.__setattr__(self, "first", first)

    @property
    def nbytes(self) -> int:
        return self.outer * self.run

    def index(self) -> tuple[slice, ...]:
        """The numpy index selecting this block (for ``get_slice``)."""
        if self.dim is None:
            return ()
        return (*(slice(None),) * self.dim, slice(self.lo, self.hi))


def block_for(info: TensorInfo, plan: PartitionPlan, rank: int, world_size: int) -> Block:
    """The block of tensor ``info`` that rank ``rank`` of ``world_size`` loads."""
    dim = plan.dim_for(info.name)
    if dim is None or world_size == 1:
        return Block(info, None, 0, 0)
    ndim = len(info.shape)
    d = dim + ndim if dim < 0 else dim
    if not 0 <= d < ndim:
        raise PartitionError(
            f"tensor {info.name!r} has shape {list(info.shape)}: no dimension {dim} to split"
        )
    if info.dtype.sub_byte:
        raise PartitionError(f"tensor {info.name!r}: packed {info.dtype.name} cannot be split")
    lo, hi = partition_bounds(info.shape[d], rank, world_size)
    return Block(info, d, lo, hi)


# --------------------------------------------------------------------------
# Verification of parts of tensors
# --------------------------------------------------------------------------


class RangeVerifier(Protocol):
    """Checks one file's header and tensor bytes against trusted digests.

    ``check_header`` and ``check_tensor`` are those of
    :class:`tensorfile.integrity.onload.LoadVerifier`. A verifier that also
    has ``chunk_size(name) -> int | None`` and
    ``check_chunk(name, index, data)`` lets a rank verify only the chunks it
    reads (``None``: no chunk digests for that tensor, check it whole).
    """

    def check_header(self, raw_header: bytes) -> None: ...

    def check_tensor(self, name: str, data: memoryview) -> None: ...


@dataclass(frozen=True)
class ChunkDigests:
    """Per-chunk SHA-256 digests of every tensor of a model (what a signer records).

    ``files`` maps each shard (relative ``/`` path, as in the index) to
    ``{"header": hex, "tensors": {name: [hex, ...]}}``; chunk ``i`` of a
    tensor covers its bytes ``[i * chunk_size, (i + 1) * chunk_size)``.
    These digests are only as trustworthy as what carries them: in use they
    belong in the signed manifest (see the module docstring).
    """

    chunk_size: int
    files: Mapping[str, Mapping[str, Any]]

    @classmethod
    def compute(cls, path: PathLike, chunk_size: int = DEFAULT_CHUNK_SIZE) -> ChunkDigests:
        """Hash every shard of the model at ``path`` (folder, index or file) in chunks."""
        if chunk_size <= 0:
            raise PartitionError(f"chunk_size must be positive, got {chunk_size}")
        files: dict[str, Any] = {}
        with open_sharded(path) as model:
            for shard in model.index.shard_files:
                files[shard] = _chunk_file(model.path_of(shard), chunk_size)
        return cls(chunk_size, files)

    def to_json(self) -> dict[str, Any]:
        return {"chunk_size": self.chunk_size, "files": {k: dict(v) for k, v in self.files.items()}}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> ChunkDigests:
        return cls(int(doc["chunk_size"]), dict(doc["files"]))

    def verifier_for(self, shard: str) -> _ChunkFileVerifier:
        entry = self.files.get(shard)
        if entry is None:
            raise NotSignedError(f"{shard}: no chunk digests recorded for this file")
        return _ChunkFileVerifier(shard, self.chunk_size, entry)


def _chunk_file(path: Path, chunk_size: int) -> dict[str, Any]:
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        header, raw = reader.read_header(fd, size)
        tensors: dict[str, list[str]] = {}
        with mmap.mmap(fd, size, access=mmap.ACCESS_READ) as mm, memoryview(mm) as mv:
            for info in header.tensors.values():
                a = header.data_offset + info.start
                tensors[info.name] = [
                    hashlib.sha256(mv[a + i : a + min(i + chunk_size, info.nbytes)]).hexdigest()
                    for i in range(0, max(info.nbytes, 1), chunk_size)
                ]
    finally:
        os.close(fd)
    return {"header": hashlib.sha256(raw).hexdigest(), "tensors": tensors}


class _ChunkFileVerifier:
    """The :class:`RangeVerifier` of one file, from :class:`ChunkDigests`."""

    def __init__(self, shard: str, chunk_size: int, entry: Mapping[str, Any]) -> None:
        self._shard = shard
        self._chunk_size = chunk_size
        self._entry = entry

    def check_header(self, raw_header: bytes) -> None:
        if hashlib.sha256(raw_header).hexdigest() != self._entry["header"]:
            raise DigestMismatchError(f"{self._shard}: header differs from the recorded header")

    def chunk_size(self, name: str) -> int | None:
        return self._chunk_size

    def _digests(self, name: str) -> Sequence[str]:
        found = self._entry["tensors"].get(name)
        if found is None:
            raise NotSignedError(f"{self._shard}: tensor {name!r} has no recorded digests")
        return found  # type: ignore[no-any-return]

    def check_chunk(self, name: str, index: int, data: memoryview) -> None:
        digests = self._digests(name)
        if not 0 <= index < len(digests) or hashlib.sha256(data).hexdigest() != digests[index]:
            raise DigestMismatchError(
                f"{self._shard}: tensor {name!r} bytes [{index * self._chunk_size}, "
                f"{index * self._chunk_size + len(data)}) differ from the recorded chunk"
            )

    def check_tensor(self, name: str, data: memoryview) -> None:
        for i in range(0, max(len(data), 1), self._chunk_size):
            self.check_chunk(name, i // self._chunk_size, data[i : i + self._chunk_size])


class _Source:
    """Reads bytes of a shard's tensors: straight, or through verified chunks.

    Verified bytes are read into private memory (never a map another process
    could change after the check) and each chunk is checked once; only the
    last chunk is kept, which suffices because a block's runs are read in
    increasing file order.
    """

    def __init__(self, f: reader.SafeOpen, verifier: Any, path: Path | None = None) -> None:
        self.f = f
        self.verifier = verifier
        self._path = path
        self._last: tuple[str, int, bytearray] | None = None

    def prefetch(self, block: Block) -> None:
        """Ask the kernel to read a strided block's whole span ahead, in big requests.

        Many small ``pread`` calls ``stride`` apart defeat the kernel's
        sequential readahead, which on a cold cache costs one disk request
        per run. The hint fills the page cache asynchronously; this process
        still copies (and counts) only its own bytes.
        """
        if self._path is None or block.outer <= 1 or not hasattr(os, "posix_fadvise"):
            return
        start, _ = self.f.byte_range(block.info.name)
        fd = os.open(self._path, os.O_RDONLY)
        try:
            span = (block.outer - 1) * block.stride + block.run
            os.posix_fadvise(fd, start + block.first, span, os.POSIX_FADV_WILLNEED)
        finally:
            os.close(fd)

    def read_into(self, name: str, start: int, out: memoryview) -> None:
        if self.verifier is None:
            self.f.read_into(name, start, out)
            return
        info = self.f.info(name)
        chunking = getattr(self.verifier, "chunk_size", None)
        size = chunking(name) if chunking is not None else None
        pos = 0
        while pos < len(out):
            index, off = divmod(start + pos, size or max(info.nbytes, 1))
            chunk = self._chunk(info, index, size)
            take = min(len(chunk) - off, len(out) - pos)
            out[pos : pos + take] = chunk[off : off + take]
            pos += take

    def _chunk(self, info: TensorInfo, index: int, size: int | None) -> bytearray:
        """Chunk ``index`` of a tensor, read and verified (``size=None``: the whole tensor)."""
        last = self._last
        if last is not None and last[0] == info.name and last[1] == index:
            return last[2]
        a = index * size if size else 0
        buf = bytearray(min(size, info.nbytes - a) if size else info.nbytes)
        self.f.read_into(info.name, a, buf)
        if size is None:
            self.verifier.check_tensor(info.name, memoryview(buf))
        else:
            self.verifier.check_chunk(info.name, index, memoryview(buf))
        self._last = (info.name, index, buf)
        return buf


def fill_block(source: Any, block: Block, start: int, out: memoryview) -> None:
    """Write bytes ``[start, start + len(out))`` of ``block`` (C order) into ``out``.

    Reads exactly those bytes from ``source`` (anything with
    ``read_into(name, start, out)``, e.g. a :class:`tensorfile.SafeOpen`).
    """
    pos, n = 0, len(out)
    while pos < n:
        i, off = divmod(start + pos, block.run)
        take = min(block.run - off, n - pos)
        source.read_into(block.info.name, block.first + i * block.stride + off, out[pos : pos + take])
        pos += take


# --------------------------------------------------------------------------
# Devices: pinned staging buffers, reads overlapped with copies
# --------------------------------------------------------------------------


class _Staging:
    """Host buffers cycled between reads and copies to a device.

    On CUDA the buffers are pinned and the copies asynchronous on a side
    stream: buffer ``k`` is refilled only after its previous copy's event has
    completed, so a read into one buffer overlaps the copy out of the other.
    Elsewhere copies are synchronous.
    """

    def __init__(self, device: Any, size: int = DEFAULT_STAGING_BYTES, count: int = 2) -> None:
        torch = import_torch()
        self._torch = torch
        self.device = device
        cuda = device.type == "cuda" and torch.cuda.is_available()
        self.buffers = [torch.empty(size, dtype=torch.uint8, pin_memory=cuda) for _ in range(count)]
        self._views = [memoryview(b.numpy()) for b in self.buffers]
        self._stream = torch.cuda.Stream(device) if cuda else None
        self._events: list[Any] = [None] * count
        self._next = 0

    def copy(self, fill: Callable[[int, memoryview], None], nbytes: int, dst: Any) -> None:
        """Fill ``dst`` (a flat uint8 device tensor) with ``fill(start, view)``, chunk by chunk."""
        torch = self._torch
        size = len(self._views[0])
        if self._stream is not None:
            # dst came from the current stream's allocator: order the copies after it.
            self._stream.wait_stream(torch.cuda.current_stream(self.device))
        for a in range(0, nbytes, size):
            n = min(size, nbytes - a)
            k = self._next
            self._next = (k + 1) % len(self.buffers)
            if self._events[k] is not None:
                self._events[k].synchronize()
            fill(a, self._views[k][:n])
            if self._stream is None:
                dst[a : a + n].copy_(self.buffers[k][:n])
                continue
            with torch.cuda.stream(self._stream):
                dst[a : a + n].copy_(self.buffers[k][:n], non_blocking=True)
                event = torch.cuda.Event()
                event.record(self._stream)
            self._events[k] = event

    def finish(self) -> None:
        """Wait for every copy in flight."""
        if self._stream is not None:
            self._stream.synchronize()


def _to_device(staging: _Staging, source: Any, block: Block) -> Any:
    torch = import_torch()
    info = block.info
    dst = torch.empty(block.shape, dtype=torch_dtype(info.dtype), device=staging.device)
    if block.nbytes:
        flat = dst.reshape(-1).view(torch.uint8)
        staging.copy(lambda a, out: fill_block(source, block, a, out), block.nbytes, flat)
    return dst


# --------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------


def _verifier_for(verify: object, model: ShardedOpen, shard: str) -> Any:
    """The per-file verifier of ``shard``, checked against its raw header."""
    if hasattr(verify, "verifier_for"):
        v = verify.verifier_for(shard)
    else:
        from tensorfile.integrity.onload import load_verifier

        v = load_verifier(verify, model.path_of(shard))
    path = model.path_of(shard)
    fd = os.open(path, os.O_RDONLY)
    try:
        header, raw = reader.read_header(fd, os.fstat(fd).st_size)
    finally:
        os.close(fd)
    v.check_header(raw)
    if header.tensors != model.shard(shard).header.tensors:
        raise DigestMismatchError(f"{shard}: changed while it was being verified")
    return v


def load_partition(
    source: PathLike | ShardedOpen,
    plan: PartitionPlan,
    rank: int,
    world_size: int,
    *,
    framework: str = "pt",
    device: str = "cpu",
    backend: str = "mmap",
    names: Iterable[str] | None = None,
    verify: object = None,
    staging_bytes: int = DEFAULT_STAGING_BYTES,
) -> dict[str, Any]:
    """This rank's part of every tensor (or of ``names``) of a model.

    ``source`` is a model folder, an index, a file, or an open
    :class:`~tensorfile.sharded.ShardedOpen` (whose ``framework`` and
    ``backend`` then apply; its ``bytes_read`` tells what was read). Split
    tensors come back with the split dimension narrowed to this rank's block;
    replicated ones whole. Only the bytes of this rank's blocks are read.

    ``verify``: a :class:`ChunkDigests`, or what ``safe_open(verify=...)``
    takes (a key or trust policy of :mod:`tensorfile.integrity`). Each shard's
    header is checked, then only the chunks covering this rank's bytes (whole
    tensors where no chunk digests exist); bytes are read with ``pread``.
    """
    owned = not isinstance(source, ShardedOpen)
    model = (
        open_sharded(source, framework, "cpu", backend="pread" if verify is not None else backend)
        if not isinstance(source, ShardedOpen)
        else source
    )
    torch_device = None
    if str(device) != "cpu":
        if model.framework != "pt":
            raise PartitionError(f"device {device!r} needs framework='pt'")
        torch_device = import_torch().device(device)
    try:
        wanted = model.keys() if names is None else list(names)
        staging = _Staging(torch_device, staging_bytes) if torch_device is not None else None
        sources: dict[str, _Source] = {}
        out: dict[str, Any] = {}
        reads: list[tuple[str, Block, _Source]] = []
        for name in wanted:
            handle = model[name]
            f = model.shard(handle.shard)
            block = block_for(handle.info, plan, rank, world_size)
            src = sources.get(handle.shard)
            if src is None:
                v = _verifier_for(verify, model, handle.shard) if verify is not None else None
                src = sources[handle.shard] = _Source(f, v, model.path_of(handle.shard))
            if staging is not None and not handle.dtype.sub_byte:
                src.prefetch(block)
                out[name] = _to_device(staging, src, block)
            elif src.verifier is None and model.backend == "mmap":
                value = handle.load() if block.dim is None else handle[block.index()]
                out[name] = value if torch_device is None else value.to(torch_device)
            else:
                reads.append((name, block, src))
        if staging is not None:
            staging.finish()

        def read(job: tuple[str, Block, _Source]) -> Any:
            _, block, src = job
            # np.empty: untouched pages the reads fill once (bytearray would zero them first)
            buf = np.empty(block.nbytes, np.uint8)
            src.prefetch(block)
            fill_block(src, block, 0, buf.data)
            if model.framework == "np":
                return numpy_view(buf, 0, block.info.dtype, block.shape)
            value = torch_view(buf, 0, block.info.dtype, block.shape, block.nbytes)
            return value if torch_device is None else value.to(torch_device)

        # pread releases the GIL: several reads in flight keep a disk (or a network
        # file system) busy, as SafeOpen.tensors does. Verified reads stay in order:
        # each shard's source keeps the last verified chunk.
        verified = any(src.verifier is not None for _, _, src in reads)
        workers = 1 if verified or len(reads) < 2 else min(8, os.cpu_count() or 1)
        if workers == 1:
            out.update((job[0], read(job)) for job in reads)
        else:
            with ThreadPoolExecutor(workers) as pool:
                out.update(zip((job[0] for job in reads), pool.map(read, reads), strict=True))
        return {name: out[name] for name in wanted}
    finally:
        if owned:
            model.close()


def load_partition_distributed(
    source: PathLike | ShardedOpen,
    plan: PartitionPlan,
    *,
    group: Any = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """:func:`load_partition` with rank and world size from an initialised ``torch.distributed`` group.

    Keyword arguments are those of :func:`load_partition`. Each process reads
    its own bytes from the shared file system; no tensor data goes over the
    process group.
    """
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_initialized():
        raise PartitionError("torch.distributed is not initialised (call init_process_group first)")
    return load_partition(
        source, plan, dist.get_rank(group), dist.get_world_size(group), **kwargs
    )


# --------------------------------------------------------------------------
# Hashing many shards across processes
# --------------------------------------------------------------------------


def _hash_one(file: ModelFile, tensors: bool) -> FileDigest:
    return hash_file(file, tensors=tensors)


def hash_files_processes(
    files: Sequence[ModelFile], *, workers: int | None = None, tensors: bool = True
) -> list[FileDigest]:
    """:func:`tensorfile.integrity.hashing.hash_file` of each file, spread over processes.

    One process per core by default (``workers=1`` hashes in this process);
    biggest files first so the workers finish together. The result is in the
    order of ``files``.
    """
    n = max(1, min(workers or os.cpu_count() or 1, len(files)))
    if n == 1:
        return [hash_file(f, tensors=tensors) for f in files]
    order = sorted(range(len(files)), key=lambda i: -files[i].size)
    import multiprocessing

    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    with ProcessPoolExecutor(n, mp_context=ctx) as pool:
        futures = {i: pool.submit(_hash_one, files[i], tensors) for i in order}
        return [futures[i].result() for i in range(len(files))]


def verify_shards(
    path: PathLike,
    expected: Mapping[str, str],
    *,
    workers: int | None = None,
) -> list[FileDigest]:
    """Check every shard of the model at ``path`` against ``expected`` SHA-256 digests.

    ``expected`` maps each shard's name (as in the index) to its trusted
    digest, e.g. from a verified manifest. Shards are hashed in parallel
    processes; the first mismatch or missing digest raises.
    """
    with open_sharded(path) as model:
        files = [
            ModelFile(s, model.path_of(s), os.stat(model.path_of(s)).st_size)
            for s in model.index.shard_files
        ]
    for f in files:
        if f.name not in expected:
            raise NotSignedError(f"{f.name}: no trusted digest for this shard")
    digests = hash_files_processes(files, workers=workers, tensors=False)
    for d in digests:
        if d.digest != expected[d.name]:
            raise DigestMismatchError(f"{d.name}: shard differs from its trusted digest")
    return digests


__all__ = [
    "Block",
    "ChunkDigests",
    "PartitionPlan",
    "RangeVerifier",
    "block_for",
    "fill_block",
    "hash_files_processes",
    "load_partition",
    "load_partition_distributed",
    "partition_bounds",
    "plan_from_patterns",
    "verify_shards",
]
