"""Writing sharded models, and files written one tensor at a time.

:func:`save_sharded` splits tensors into shards of at most ``max_shard_size``
bytes of tensor data (a bigger tensor gets a shard of its own; a tensor is
never split), named ``model-00001-of-0000N.safetensors`` like transformers
does, plus the index; a single ``model.safetensors`` and no index when
everything fits. The whole save is atomic: the shards are written as
temporary files and published by the index (:mod:`tensorfile.sharded._switch`),
so a reader sees the old model or the new one, never a mix.

:func:`save_file_iter` and :func:`save_sharded_iter` write tensors produced
one at a time from announced names, dtypes and shapes, so a model bigger than
memory can be saved: peak memory is a constant plus the largest tensor.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from tensorfile._format.dtypes import DType, dtype_from_name, dtype_from_numpy
from tensorfile._format.header import Entry, canonical_order
from tensorfile._frameworks import is_torch_tensor, tensor_entry, torch_dtype_table
from tensorfile._io import writer
from tensorfile._io.atomic import TempFile, signals_deferred, sweep_once
from tensorfile._io.files import PathLike
from tensorfile._storage import shared_groups
from tensorfile.errors import FormatError, SerializationError
from tensorfile.sharded._index import (
    DEFAULT_MAX_SHARD_SIZE,
    DEFAULT_PREFIX,
    SAFETENSORS_SUFFIX,
    ShardIndex,
)
from tensorfile.sharded._switch import Publisher

#: A dtype as a header name ("F32"), a :class:`DType`, a numpy or a torch dtype.
DTypeLike = Any
#: Tensors announced before their bytes: ``{name: (dtype, shape)}`` or :class:`Entry` items.
EntriesLike = Mapping[str, tuple[DTypeLike, Iterable[int]]] | Iterable[Entry]
#: Where tensor values come from: ``produce(name)``, or ``(name, value)`` pairs in write order.
Producer = Callable[[str], Any] | Iterable[tuple[str, Any]]


_UNITS = {
    "": 1, "B": 1,
    "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
    "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40,
}


def parse_size(size: int | str) -> int:
    """Bytes in ``size``: an int, or a string such as ``"5GB"`` (10^9) or ``"512MiB"`` (2^20).

    Decimal and binary units follow transformers' ``max_shard_size``.
    """
    if isinstance(size, bool):
        raise SerializationError(f"not a size: {size!r}")
    if isinstance(size, int):
        if size <= 0:
            raise SerializationError(f"size must be positive, got {size}")
        return size
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", str(size))
    unit = m.group(2).upper() if m else ""
    if m is None or unit not in _UNITS:
        raise SerializationError(f"not a size: {size!r} (use bytes or e.g. '5GB', '500MiB')")
    value = int(float(m.group(1)) * _UNITS[unit])
    if value <= 0:
        raise SerializationError(f"size must be positive, got {size!r}")
    return value


def as_dtype(dtype: DTypeLike) -> DType:
    """A :class:`DType` from a header name, numpy dtype or torch dtype."""
    if isinstance(dtype, DType):
        return dtype
    if isinstance(dtype, str):
        try:
            return dtype_from_name(dtype)
        except FormatError:
            pass
    if type(dtype).__module__.startswith("torch"):
        found = torch_dtype_table().get(dtype)
        if found is None:
            raise SerializationError(f"torch dtype {dtype} has no safetensors equivalent")
        return found
    try:
        npdt = np.dtype(dtype)
    except TypeError:
        raise SerializationError(f"not a dtype: {dtype!r}") from None
    return dtype_from_numpy(npdt)


def as_entries(entries: EntriesLike) -> list[Entry]:
    """Announced tensors as :class:`Entry` items (see :data:`EntriesLike`)."""
    if isinstance(entries, Mapping):
        return [
            Entry(name, as_dtype(dt), tuple(int(d) for d in shape))
            for name, (dt, shape) in entries.items()
        ]
    out = []
    for e in entries:
        if not isinstance(e, Entry):
            raise SerializationError(f"expected Entry items, got {type(e).__name__}")
        out.append(e)
    return out


def write_order(entries: EntriesLike) -> list[str]:
    """The order a producer must yield tensors in (the canonical file order)."""
    return [e.name for e in canonical_order(as_entries(entries))]


def _pairs(entries: list[Entry], produce: Producer) -> Iterator[tuple[str, Any]]:
    if callable(produce):
        return ((e.name, produce(e.name)) for e in canonical_order(entries))
    return iter(produce)


def save_file_iter(
    entries: EntriesLike,
    produce: Producer,
    filename: PathLike,
    metadata: Mapping[str, str] | None = None,
    *,
    durable: bool = True,
) -> None:
    """Write one file from tensors produced one at a time (bigger than memory).

    ``entries`` announces each tensor's dtype and shape (the header comes
    first); ``produce`` is either a function ``produce(name) -> tensor``,
    called in file order, or an iterable of ``(name, tensor)`` pairs in the
    order :func:`write_order` gives. Each tensor is written and released
    before the next is asked for: peak memory is a constant plus the largest
    tensor. Atomic (and ``durable``) like :func:`tensorfile.save_file`; the
    bytes are identical.
    """
    ents = as_entries(entries)
    writer.save_stream(ents, _pairs(ents, produce), filename, metadata, durable=durable)


def plan_shards(entries: Iterable[Entry], max_bytes: int) -> list[list[Entry]]:
    """Assign tensors, in canonical order, to shards of at most ``max_bytes`` of data.

    Greedy like transformers: a tensor goes to the current shard if it fits,
    otherwise it starts a new one; a tensor bigger than ``max_bytes`` is
    alone in its shard. Tensors are never split.
    """
    shards: list[list[Entry]] = []
    used = 0
    for e in canonical_order(entries):
        nbytes = e.dtype.nbytes(math.prod(e.shape))
        if not shards or (used + nbytes > max_bytes and shards[-1]):
            shards.append([])
            used = 0
        shards[-1].append(e)
        used += nbytes
    return shards


def shard_name(prefix: str, i: int, n: int) -> str:
    """``model-00001-of-00003.safetensors`` (1-based ``i``)."""
    return f"{prefix}-{i:05d}-of-{n:05d}{SAFETENSORS_SUFFIX}"


def save_sharded_iter(
    entries: EntriesLike,
    produce: Producer,
    folder: PathLike,
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
    metadata: Mapping[str, str] | None = None,
    prefix: str = DEFAULT_PREFIX,
    *,
    durable: bool = True,
) -> ShardIndex:
    """Write a sharded model from tensors produced one at a time.

    Same shard layout as :func:`save_sharded`; ``entries`` and ``produce``
    as in :func:`save_file_iter` (one tensor in memory at a time). All or
    nothing: the folder holds the old model until the new one is complete
    (see :mod:`tensorfile.sharded._switch`).
    """
    if not prefix or "/" in prefix or "\\" in prefix or prefix in (".", ".."):
        raise SerializationError(f"prefix must be a plain file name, got {prefix!r}")
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    sweep_once(out)
    ents = as_entries(entries)
    shards = plan_shards(ents, parse_size(max_shard_size))
    pairs = _pairs(ents, produce)
    single = len(shards) <= 1
    weight_map: dict[str, str] = {}
    staged: dict[str, TempFile] = {}
    total = sum(e.dtype.nbytes(math.prod(e.shape)) for e in ents)
    publisher = Publisher(out, prefix, staged, weight_map, total, durable=durable)
    try:
        for i, group in enumerate(shards or [[]], 1):
            name = prefix + SAFETENSORS_SUFFIX if single else shard_name(prefix, i, len(shards))
            with signals_deferred():  # a Ctrl-C now raises with the file in ``staged``
                tmp = staged[name] = TempFile(out / name, durable=durable)
            writer.write_stream(tmp.file, group, pairs, metadata)
            weight_map.update((e.name, name) for e in group)
        leftover = next(pairs, None)
        if leftover is not None:
            raise SerializationError(
                f"producer gave tensor {leftover[0]!r}, which was not announced"
            )
        index_path = publisher.publish()
    except BaseException:
        publisher.abandon()
        raise
    if index_path is None:
        return ShardIndex(out, weight_map, {}, None)
    return ShardIndex(out, weight_map, {"total_size": total}, index_path)


def save_sharded(
    tensors: Mapping[str, Any],
    folder: PathLike,
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
    metadata: Mapping[str, str] | None = None,
    prefix: str = DEFAULT_PREFIX,
    *,
    durable: bool = True,
) -> ShardIndex:
    """Save ``tensors`` (numpy arrays or torch tensors) as a sharded model in ``folder``.

    Shards hold at most ``max_shard_size`` bytes of tensor data (an int, or
    ``"5GB"``-style), tensors assigned in canonical order and never split;
    ``metadata`` goes into every shard. One ``{prefix}.safetensors`` and no
    index when everything fits. All or nothing: a crash, a kill or an
    exception leaves the folder's old model or the complete new one, never a
    mix (:mod:`tensorfile.sharded._switch`); files of an earlier save under
    the same prefix that this one does not use are removed after the switch.
    ``durable`` syncs the shards once at the end, before the switch, and the
    folder after it; ``durable=False`` skips the syncs (still all or nothing
    against a crash, not against a power cut).
    Torch tensors that share memory are refused, as by ``save_file``.
    """
    if not isinstance(tensors, Mapping):
        raise SerializationError(
            f"expected a mapping of names to tensors, got {type(tensors).__name__}"
        )
    if any(is_torch_tensor(v) for v in tensors.values()):
        groups = shared_groups(dict(tensors))
        if groups:
            raise SerializationError(
                f"some tensors share memory: {groups}; storing them separately would lose the "
                "sharing. Drop the aliases or .clone() them."
            )
    entries = []
    for name, value in tensors.items():
        if not isinstance(name, str):
            raise SerializationError(f"tensor names must be str, got {name!r}")
        entries.append(tensor_entry(name, value)[0])
    return save_sharded_iter(entries, tensors.__getitem__, folder, max_shard_size, metadata, prefix,
                             durable=durable)
