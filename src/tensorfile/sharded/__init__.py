"""Models split over several safetensors files, and files written one tensor at a time.

Reading: :func:`open_sharded` opens a model folder (``model.safetensors.index.json``,
the Hugging Face convention), its index, or one file as a single lazy mapping of
tensor names; :func:`load_sharded` reads every tensor. Writing:
:func:`save_sharded` splits tensors into ``model-0000i-of-0000N.safetensors``
shards plus the index; :func:`save_file_iter` and :func:`save_sharded_iter`
write tensors produced one at a time (a model bigger than memory).

The index format is in :mod:`tensorfile.sharded._index`, the reader in
:mod:`tensorfile.sharded._reader` (a remote model's shards, opened from a URL,
in :mod:`tensorfile.sharded._remote`), the writers in
:mod:`tensorfile.sharded._writer`.
"""

from __future__ import annotations

from tensorfile.sharded._index import RemoteIndex, ShardIndex, read_index
from tensorfile.sharded._reader import (
    LazyTensor,
    ShardedOpen,
    is_sharded_path,
    load_sharded,
    open_sharded,
)
from tensorfile.sharded._writer import (
    parse_size,
    save_file_iter,
    save_sharded,
    save_sharded_iter,
    write_order,
)

__all__ = [
    "LazyTensor",
    "RemoteIndex",
    "ShardIndex",
    "ShardedOpen",
    "is_sharded_path",
    "load_sharded",
    "open_sharded",
    "parse_size",
    "read_index",
    "save_file_iter",
    "save_sharded",
    "save_sharded_iter",
    "write_order",
]
