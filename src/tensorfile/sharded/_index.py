"""The index of a sharded model: which file holds each tensor, validated.

A sharded model is a folder with ``model.safetensors.index.json`` (the Hugging
Face convention)::

    {"metadata": {"total_size": 13476839424},
     "weight_map": {"lm_head.weight": "model-00002-of-00002.safetensors", ...}}

The index is validated strictly (JSON, document shape, every shard path)
before anything else happens; :func:`check_shard` and
:func:`check_total_size` cross-check it against the shards' headers.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from tensorfile._format.header import MAX_HEADER_SIZE, Header
from tensorfile._format.strict_json import loads_strict
from tensorfile._io.files import PathLike, hf_cache_blobs, open_regular, read_bounded
from tensorfile._io.headers import read_header
from tensorfile.errors import FormatError, ShardIndexError

INDEX_SUFFIX = ".safetensors.index.json"
SAFETENSORS_SUFFIX = ".safetensors"
DEFAULT_PREFIX = "model"
#: transformers' default ``max_shard_size``.
DEFAULT_MAX_SHARD_SIZE = "5GB"



class IndexFields:
    """What every index says, local or remote: which shard holds each tensor."""

    #: Tensor name to shard file (relative to the folder, ``/``-separated).
    weight_map: Mapping[str, str]
    #: The index's ``"metadata"`` object (``{"total_size": N}`` by convention).
    metadata: Mapping[str, Any]

    @property
    def shard_files(self) -> list[str]:
        """Shard file names, each once, sorted."""
        return sorted(set(self.weight_map.values()))

    @property
    def total_size(self) -> int | None:
        """Declared bytes of tensor data over all shards, if the index says."""
        size = self.metadata.get("total_size")
        return size if isinstance(size, int) else None


@dataclass(frozen=True)
class ShardIndex(IndexFields):
    """Which file holds each tensor of a model, validated.

    A single-file model is an index with one shard and no ``path``.
    """

    #: The folder every shard path is relative to.
    folder: Path
    weight_map: Mapping[str, str]
    metadata: Mapping[str, Any]
    #: The index file; ``None`` for a single-file model.
    path: Path | None = None


@dataclass(frozen=True)
class RemoteIndex(IndexFields):
    """A remote model's :class:`ShardIndex`: its folder and index are URLs."""

    #: The folder's URL: every shard is ``folder + "/" + shard``.
    folder: str
    weight_map: Mapping[str, str]
    metadata: Mapping[str, Any]
    #: The index's URL; ``None`` for a single-file model.
    path: str | None = None


def find_index(path: PathLike) -> Path | None:
    """The index file of a model folder, or ``None`` when it has none.

    ``model.safetensors.index.json`` wins; otherwise the folder's only
    ``*.safetensors.index.json`` (other prefixes, such as diffusers'
    ``diffusion_pytorch_model``). Several candidates are an error: pass the
    one meant.
    """
    folder = Path(path)
    preferred = folder / (DEFAULT_PREFIX + INDEX_SUFFIX)
    if preferred.is_file():
        return preferred
    found = sorted(p for p in folder.glob("*" + INDEX_SUFFIX) if p.is_file())
    if len(found) > 1:
        raise ShardIndexError(
            f"{folder} has several indexes ({', '.join(p.name for p in found)}); open one of them"
        )
    return found[0] if found else None


def check_relative(rel: object, name: str) -> PurePosixPath:
    """A ``weight_map`` value as a relative, ``/``-separated path that cannot
    leave the index's folder (no absolute path, drive, backslash, NUL or
    ``..``): the rule for local and remote models alike."""
    if not isinstance(rel, str) or not rel:
        raise ShardIndexError(f"tensor {name!r}: shard must be a non-empty string, got {rel!r:.80}")
    pure = PurePosixPath(rel)
    if ("\0" in rel or "\\" in rel or pure.is_absolute() or re.match(r"^[A-Za-z]:", rel)
            or "://" in rel):
        raise ShardIndexError(f"tensor {name!r}: shard path {rel!r} must be relative to the folder")
    if ".." in pure.parts:
        raise ShardIndexError(f"tensor {name!r}: shard path {rel!r} leaves the model folder")
    return pure


def _shard_path(folder: Path, rel: object, name: str, allow_external_symlinks: bool) -> Path:
    """Check one ``weight_map`` value and return the shard's path.

    A shard must be a relative path with no ``..`` component (see
    :func:`check_relative`) that, symlinks
    resolved, stays inside the folder or, in a Hugging Face cache snapshot,
    is a blob of the same cache repository (unless ``allow_external_symlinks``,
    which follows symlinks anywhere), and must be an existing regular file.
    """
    full = folder.joinpath(*check_relative(rel, name).parts)
    if not allow_external_symlinks:
        real_folder = os.path.realpath(folder)
        real = os.path.realpath(full)
        if os.path.commonpath([real_folder, real]) != real_folder and (
            os.path.dirname(real) != hf_cache_blobs(folder)
        ):
            raise ShardIndexError(
                f"tensor {name!r}: shard {rel!r} is a symlink out of the model folder "
                "(and not into its Hugging Face cache repository's blobs/; "
                "pass allow_external_symlinks=True to follow it)"
            )
    try:
        st = os.stat(full)
    except FileNotFoundError:
        raise ShardIndexError(f"tensor {name!r}: shard {rel!r} is missing from {folder}") from None
    except OSError as e:
        raise ShardIndexError(f"tensor {name!r}: shard {rel!r} cannot be read: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ShardIndexError(f"tensor {name!r}: shard {rel!r} is not a regular file")
    return full


def parse_index_doc(raw: bytes, where: str = "index") -> tuple[dict[str, str], dict[str, Any]]:
    """The ``weight_map`` and ``metadata`` of index JSON bytes, checked
    (strict JSON: UTF-8, no duplicate keys, no NaN; the document's shape;
    every shard a relative path, :func:`check_relative`)."""
    if len(raw) > MAX_HEADER_SIZE:
        raise ShardIndexError(f"{where}: index is over the {MAX_HEADER_SIZE:,}-byte limit")
    doc = loads_strict(raw, where, ShardIndexError)
    if not isinstance(doc, dict):
        raise ShardIndexError(f"{where}: must be a JSON object, not {type(doc).__name__}")
    weight_map = doc.get("weight_map")
    if not isinstance(weight_map, dict):
        raise ShardIndexError(f"{where}: 'weight_map' must be an object of tensor names to files")
    if not weight_map:
        raise ShardIndexError(f"{where}: 'weight_map' names no tensors")
    metadata = doc.get("metadata", {})
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise ShardIndexError(f"{where}: 'metadata' must be an object")
    total = metadata.get("total_size")
    if total is not None and (type(total) is not int or total < 0):
        raise ShardIndexError(f"{where}: total_size must be a non-negative integer, got {total!r:.80}")
    for name, rel in weight_map.items():
        check_relative(rel, name)
    return weight_map, metadata


def parse_index(
    raw: bytes, folder: Path, *, allow_external_symlinks: bool = False, where: str = "index"
) -> ShardIndex:
    """Validate index JSON bytes against the files in ``folder``.

    Checks the document (:func:`parse_index_doc`) and that every shard is a
    file inside the folder (see :func:`_shard_path`). Whether each
    shard really holds its tensors is checked by :func:`check_shard`.
    """
    weight_map, metadata = parse_index_doc(raw, where)
    checked: set[str] = set()
    for name, rel in weight_map.items():
        if rel not in checked:
            _shard_path(folder, rel, name, allow_external_symlinks)
            checked.add(rel)
    return ShardIndex(folder, weight_map, metadata)


def read_index(path: PathLike, *, allow_external_symlinks: bool = False) -> ShardIndex:
    """Read and validate an index file (or a folder's index)."""
    p = Path(path)
    index_path = find_index(p) if p.is_dir() else p
    if index_path is None:
        raise ShardIndexError(f"{p} has no *{INDEX_SUFFIX}")
    raw = read_bounded(index_path, MAX_HEADER_SIZE, ShardIndexError, "index")
    idx = parse_index(
        raw, index_path.parent, allow_external_symlinks=allow_external_symlinks, where=str(index_path)
    )
    return ShardIndex(idx.folder, idx.weight_map, idx.metadata, index_path)


#: What tells one version of a file from another: device, inode, size and
#: modification time (nanoseconds), as ``fstat`` gives them.
FileIdentity = tuple[int, int, int, int]


def file_identity(st: os.stat_result) -> FileIdentity:
    """The :data:`FileIdentity` of a ``stat`` result."""
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def read_shard_header(path: Path) -> tuple[Header, FileIdentity]:
    """A shard's validated header (one small ``pread``; nothing is mapped) and
    the identity of the file it was read from (the same descriptor's ``fstat``)."""
    fd, size = open_regular(path)
    try:
        ident = file_identity(os.fstat(fd))
        return read_header(fd, size)[0], ident
    except FormatError as e:
        raise type(e)(f"{os.fspath(path)}: {e}") from None
    finally:
        os.close(fd)


def check_shard(index: IndexFields, shard: str, header: Header) -> None:
    """Raise :class:`ShardIndexError` unless ``shard`` holds exactly the tensors the index puts there."""
    expected = {n for n, s in index.weight_map.items() if s == shard}
    present = set(header.tensors)
    for name in sorted(expected - present):
        raise ShardIndexError(f"index puts tensor {name!r} in {shard}, which does not contain it")
    for name in sorted(present - expected):
        other = index.weight_map.get(name)
        if other is None:
            raise ShardIndexError(f"shard {shard} holds tensor {name!r}, which the index does not list")
        raise ShardIndexError(
            f"tensor {name!r} is in both {shard} and {other} (the index points to {other})"
        )


def check_total_size(index: IndexFields, headers: Mapping[str, Header]) -> None:
    """The index's ``total_size`` must equal the tensor bytes the shards hold."""
    declared = index.total_size
    if declared is None:
        return
    actual = sum(t.nbytes for h in headers.values() for t in h.tensors.values())
    if actual != declared:
        raise ShardIndexError(
            f"index declares total_size {declared} but its shards hold {actual} bytes of tensors"
        )
