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
A signature covers whole tensors, so a rank that must verify what it loads
reads each tensor it needs a part of whole (with ``pread``, into private
memory), checks it, then keeps only its block.

Devices
-------
``device="cuda"`` (or any torch device) reads each result through two pinned
host buffers in turn: while one is copied to the device asynchronously on a
side stream, the next bytes are read into the other.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any

from tensorfile._format.header import TensorInfo
from tensorfile._io.files import PathLike
from tensorfile._io.remote import RemoteOptions
from tensorfile._verifying import verifier_of
from tensorfile.errors import DigestMismatchError, NotSignedError, PartitionError
from tensorfile.integrity.hashing import (
    DEFAULT_HASH_OPTIONS,
    FileDigest,
    HashOptions,
    ModelFile,
    hash_file,
)
from tensorfile.sharded._blocks import DEFAULT_STAGING_BYTES, Block
from tensorfile.sharded._reader import ShardedOpen, load_blocks, open_sharded

if TYPE_CHECKING:
    from tensorfile.integrity.onload import VerifyWith



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
    verify: VerifyWith | None = None,
    staging_bytes: int = DEFAULT_STAGING_BYTES,
    storage_options: Mapping[str, Any] | None = None,
    remote: RemoteOptions | None = None,
) -> dict[str, Any]:
    """This rank's part of every tensor (or of ``names``) of a model.

    ``source`` is a model folder, an index, a file, or an open
    :class:`~tensorfile.sharded.ShardedOpen` (whose ``framework`` and
    ``backend`` then apply; its ``bytes_read`` tells what was read). Split
    tensors come back with the split dimension narrowed to this rank's block;
    replicated ones whole. Only the bytes of this rank's blocks are read.

    ``source`` may be a URL (an index, a folder or a file; see
    :func:`tensorfile.sharded.open_sharded`, which takes ``storage_options``
    and ``remote`` as here): each rank then fetches only its blocks' byte
    ranges, the runs of a block split along a later dimension together in
    one batch of concurrent requests.

    ``verify``: what ``safe_open(verify=...)`` takes (a key or trust policy
    of :mod:`tensorfile.integrity`). Each shard's header is checked, then each
    tensor this rank needs a part of, whole; bytes are read with ``pread``.
    """
    verifier = verifier_of(verify)
    owned = not isinstance(source, ShardedOpen)
    model = (
        ShardedOpen(source, framework, "cpu", backend="pread" if verifier is not None else backend,
                    storage_options=storage_options, remote=remote)
        if not isinstance(source, ShardedOpen)
        else source
    )
    try:
        return load_blocks(
            model, lambda info: block_for(info, plan, rank, world_size), names=names,
            device=device, verify=verifier, staging_bytes=staging_bytes,
        )
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
    its own bytes from the shared file system or the remote store (a URL);
    no tensor data goes over the process group.
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


def hash_files_processes(
    files: Sequence[ModelFile], options: HashOptions = DEFAULT_HASH_OPTIONS
) -> list[FileDigest]:
    """:func:`tensorfile.integrity.hashing.hash_file` of each file, spread over processes.

    One process per core by default (``options.workers=1`` hashes in this process);
    biggest files first so the workers finish together. The result is in the
    order of ``files``.
    """
    n = max(1, min(options.workers or os.cpu_count() or 1, len(files)))
    if n == 1:
        return [hash_file(f, options) for f in files]
    order = sorted(range(len(files)), key=lambda i: -files[i].size)
    import multiprocessing

    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    with ProcessPoolExecutor(n, mp_context=ctx) as pool:
        futures = {i: pool.submit(hash_file, files[i], options) for i in order}
        return [futures[i].result() for i in range(len(files))]


def verify_shards(
    path: PathLike,
    expected: Mapping[str, str],
    options: HashOptions = DEFAULT_HASH_OPTIONS,
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
    digests = hash_files_processes(files, replace(options, tensors=False))
    for d in digests:
        if d.digest != expected[d.name]:
            raise DigestMismatchError(f"{d.name}: shard differs from its trusted digest")
    return digests


__all__ = [
    "Block",
    "PartitionPlan",
    "block_for",
    "hash_files_processes",
    "load_partition",
    "load_partition_distributed",
    "partition_bounds",
    "plan_from_patterns",
    "verify_shards",
]
