"""Models split over several safetensors files, and files written one tensor at a time.

Reading
-------
A sharded model is a folder with ``model.safetensors.index.json`` (the Hugging
Face convention)::

    {"metadata": {"total_size": 13476839424},
     "weight_map": {"lm_head.weight": "model-00002-of-00002.safetensors", ...}}

:func:`open_sharded` opens such a folder (or a single ``.safetensors`` file)
as one mapping of tensor names to lazy handles. The index is validated
strictly before anything else happens, and every shard's header is read and
cross-checked against it (a small ``pread`` per shard; nothing is mapped).
A shard is mapped only when one of its tensors is touched.

Writing
-------
:func:`save_sharded` splits tensors into shards of at most ``max_shard_size``
bytes of tensor data (a bigger tensor gets a shard of its own; a tensor is
never split), named ``model-00001-of-0000N.safetensors`` like transformers
does, plus the index; a single ``model.safetensors`` and no index when
everything fits. Every file is written atomically and the index last, so a
reader never sees an index naming a shard that is not complete.

:func:`save_file_iter` and :func:`save_sharded_iter` write tensors produced
one at a time from announced names, dtypes and shapes, so a model bigger than
memory can be saved: peak memory is a constant plus the largest tensor.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from tensorfile._format.dtypes import DType, dtype_from_name, dtype_from_numpy
from tensorfile._format.header import MAX_HEADER_SIZE, Entry, Header, TensorInfo, canonical_order
from tensorfile._frameworks import is_torch_tensor, tensor_entry, torch_dtype_table
from tensorfile._io import reader, writer
from tensorfile._io.atomic import atomic_write
from tensorfile._io.files import hf_cache_blobs, open_regular, read_small
from tensorfile.errors import (
    FormatError,
    SerializationError,
    ShardIndexError,
    TensorNotFoundError,
)

INDEX_SUFFIX = ".safetensors.index.json"
SAFETENSORS_SUFFIX = ".safetensors"
DEFAULT_PREFIX = "model"
#: transformers' default ``max_shard_size``.
DEFAULT_MAX_SHARD_SIZE = "5GB"

PathLike = str | os.PathLike[str]
#: A dtype as a header name ("F32"), a :class:`DType`, a numpy or a torch dtype.
DTypeLike = Any
#: Tensors announced before their bytes: ``{name: (dtype, shape)}`` or :class:`Entry` items.
EntriesLike = Mapping[str, tuple[DTypeLike, Iterable[int]]] | Iterable[Entry]
#: Where tensor values come from: ``produce(name)``, or ``(name, value)`` pairs in write order.
Producer = Callable[[str], Any] | Iterable[tuple[str, Any]]


# --------------------------------------------------------------------------
# The index
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class ShardIndex:
    """Which file holds each tensor of a model, validated.

    A single-file model is an index with one shard and no ``path``.
    """

    #: The folder every shard path is relative to.
    folder: Path
    #: Tensor name to shard file (relative to ``folder``, ``/``-separated).
    weight_map: Mapping[str, str]
    #: The index's ``"metadata"`` object (``{"total_size": N}`` by convention).
    metadata: Mapping[str, Any]
    #: The index file; ``None`` for a single-file model.
    path: Path | None = None

    @property
    def shard_files(self) -> list[str]:
        """Shard file names, each once, sorted."""
        return sorted(set(self.weight_map.values()))

    @property
    def total_size(self) -> int | None:
        """Declared bytes of tensor data over all shards, if the index says."""
        size = self.metadata.get("total_size")
        return size if isinstance(size, int) else None


def _pairs_no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ShardIndexError(f"index names {k!r} more than once")
        out[k] = v
    return out


def _reject_constant(name: str) -> Any:
    raise ShardIndexError(f"index contains {name}, which is not valid JSON")


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


def _shard_path(folder: Path, rel: object, name: str, allow_external_symlinks: bool) -> Path:
    """Check one ``weight_map`` value and return the shard's path.

    A shard must be a relative path with no ``..`` component that, symlinks
    resolved, stays inside the folder or, in a Hugging Face cache snapshot,
    is a blob of the same cache repository (unless ``allow_external_symlinks``,
    which follows symlinks anywhere), and must be an existing regular file.
    """
    if not isinstance(rel, str) or not rel:
        raise ShardIndexError(f"tensor {name!r}: shard must be a non-empty string, got {rel!r:.80}")
    pure = PurePosixPath(rel)
    if "\0" in rel or "\\" in rel or pure.is_absolute() or re.match(r"^[A-Za-z]:", rel):
        raise ShardIndexError(f"tensor {name!r}: shard path {rel!r} must be relative to the folder")
    if ".." in pure.parts:
        raise ShardIndexError(f"tensor {name!r}: shard path {rel!r} leaves the model folder")
    full = folder.joinpath(*pure.parts)
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


def parse_index(
    raw: bytes, folder: Path, *, allow_external_symlinks: bool = False, where: str = "index"
) -> ShardIndex:
    """Validate index JSON bytes against the files in ``folder``.

    Checks the JSON (strict: UTF-8, no duplicate keys, no NaN), the shape of
    the document, and every shard path (see :func:`_shard_path`). Whether each
    shard really holds its tensors is checked by :func:`check_shard`.
    """
    try:
        doc = json.loads(
            raw.decode("utf-8"),
            object_pairs_hook=_pairs_no_duplicates,
            parse_constant=_reject_constant,
        )
    except UnicodeDecodeError as e:
        raise ShardIndexError(f"{where}: not valid UTF-8 (byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise ShardIndexError(f"{where}: not valid JSON at character {e.pos}: {e.msg}") from None
    except RecursionError:
        raise ShardIndexError(f"{where}: JSON nested too deeply") from None
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
    checked: dict[str, Path] = {}
    for name, rel in weight_map.items():
        if rel not in checked:
            checked[rel] = _shard_path(folder, rel, name, allow_external_symlinks)
    return ShardIndex(folder, weight_map, metadata)


def read_index(path: PathLike, *, allow_external_symlinks: bool = False) -> ShardIndex:
    """Read and validate an index file (or a folder's index)."""
    p = Path(path)
    index_path = find_index(p) if p.is_dir() else p
    if index_path is None:
        raise ShardIndexError(f"{p} has no *{INDEX_SUFFIX}")
    try:
        raw = read_small(index_path, MAX_HEADER_SIZE)
    except OSError as e:
        raise ShardIndexError(f"{index_path}: cannot open index: {e.strerror}") from None
    if len(raw) > MAX_HEADER_SIZE:
        raise ShardIndexError(f"{index_path}: index is over the {MAX_HEADER_SIZE}-byte limit")
    idx = parse_index(
        raw, index_path.parent, allow_external_symlinks=allow_external_symlinks, where=str(index_path)
    )
    return ShardIndex(idx.folder, idx.weight_map, idx.metadata, index_path)


def read_shard_header(path: Path) -> Header:
    """A shard's validated header (one small ``pread``; nothing is mapped)."""
    fd, size = open_regular(path)
    try:
        header, _raw = reader.read_header(fd, size)
    except FormatError as e:
        raise type(e)(f"{path}: {e}") from None
    finally:
        os.close(fd)
    return header


def check_shard(index: ShardIndex, shard: str, header: Header) -> None:
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


def check_total_size(index: ShardIndex, headers: Mapping[str, Header]) -> None:
    """The index's ``total_size`` must equal the tensor bytes the shards hold."""
    declared = index.total_size
    if declared is None:
        return
    actual = sum(t.nbytes for h in headers.values() for t in h.tensors.values())
    if actual != declared:
        raise ShardIndexError(
            f"index declares total_size {declared} but its shards hold {actual} bytes of tensors"
        )


# --------------------------------------------------------------------------
# Reading: one lazy mapping over every shard
# --------------------------------------------------------------------------


class LazyTensor:
    """A tensor of a sharded model: name, shape and dtype now, bytes on demand.

    ``handle.load()`` returns the whole tensor; ``handle[index]`` a slice
    (numpy basic indexing), reading only the bytes it covers. Either maps the
    shard on first use.
    """

    def __init__(self, owner: ShardedOpen, shard: str, info: TensorInfo) -> None:
        self._owner = owner
        self.shard = shard
        self.info = info

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def shape(self) -> tuple[int, ...]:
        return self.info.shape

    @property
    def dtype(self) -> DType:
        return self.info.dtype

    @property
    def nbytes(self) -> int:
        return self.info.nbytes

    def get_shape(self) -> list[int]:
        return list(self.info.shape)

    def get_dtype(self) -> str:
        return self.info.dtype.name

    def load(self) -> Any:
        """The whole tensor (zero copy in ``mmap`` mode)."""
        return self._owner.shard(self.shard).get_tensor(self.info.name)

    def __getitem__(self, index: Any) -> Any:
        return self._owner.shard(self.shard).get_slice(self.info.name)[index]

    def __repr__(self) -> str:
        return f"LazyTensor({self.name!r}, {self.dtype.name}{list(self.shape)}, shard={self.shard!r})"


class ShardedOpen(Mapping[str, LazyTensor]):
    """A sharded model (or a single file) as one mapping of names to :class:`LazyTensor`.

    Use :func:`open_sharded` to create one. ``get_tensor``, ``get_slice``,
    ``keys`` and ``metadata`` behave as on :class:`tensorfile.SafeOpen`.
    """

    def __init__(
        self,
        path: PathLike,
        framework: str = "np",
        device: str = "cpu",
        *,
        backend: str = "mmap",
        verify: object = None,
        allow_external_symlinks: bool = False,
    ) -> None:
        p = Path(path)
        self._framework = framework
        self._device = device
        self._backend = backend
        self._verify = verify
        self._open: dict[str, reader.SafeOpen] = {}
        self._closed = False
        index_path = p if p.name.endswith(INDEX_SUFFIX) else (find_index(p) if p.is_dir() else None)
        if index_path is not None:
            self.index = read_index(index_path, allow_external_symlinks=allow_external_symlinks)
            headers = {s: read_shard_header(self.path_of(s)) for s in self.index.shard_files}
            for shard, header in headers.items():
                check_shard(self.index, shard, header)
            check_total_size(self.index, headers)
        else:
            single = p / (DEFAULT_PREFIX + SAFETENSORS_SUFFIX) if p.is_dir() else p
            if p.is_dir() and not single.is_file():
                candidates = sorted(q for q in p.glob("*" + SAFETENSORS_SUFFIX) if q.is_file())
                if len(candidates) != 1:
                    raise ShardIndexError(
                        f"{p} has no {DEFAULT_PREFIX}{INDEX_SUFFIX} and "
                        f"{len(candidates)} .safetensors files; expected an index or one file"
                    )
                single = candidates[0]
            header = read_shard_header(single)
            self.index = ShardIndex(
                single.parent, {n: single.name for n in header.tensors}, {}, None
            )
            headers = {single.name: header}
        self._headers = headers
        self._handles = {
            name: LazyTensor(self, shard, info)
            for shard, h in headers.items()
            for name, info in h.tensors.items()
        }

    def path_of(self, shard: str) -> Path:
        """Where a shard (a name from the index) is on disk."""
        return self.index.folder.joinpath(*PurePosixPath(shard).parts)

    @property
    def framework(self) -> str:
        return self._framework

    @property
    def backend(self) -> str:
        return self._backend

    # -- mapping ------------------------------------------------------------------
    def __getitem__(self, name: str) -> LazyTensor:
        try:
            return self._handles[name]
        except KeyError:
            raise TensorNotFoundError(f"no tensor named {name!r} in {self.index.folder}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self._handles)

    def __contains__(self, name: object) -> bool:
        return name in self._handles

    def keys(self) -> list[str]:  # type: ignore[override]
        """Tensor names, sorted (as ``safe_open`` returns them)."""
        return sorted(self._handles)

    def metadata(self) -> dict[str, str] | None:
        """The ``__metadata__`` of the first shard (writers put the same in every shard)."""
        m = self._headers[self.index.shard_files[0]].metadata
        return None if m is None else dict(m)

    # -- shards -------------------------------------------------------------------
    def shard(self, shard: str) -> reader.SafeOpen:
        """The open handle of one shard, opening (not yet mapping) it on first use."""
        if self._closed:
            from tensorfile.errors import ClosedFileError

            raise ClosedFileError(f"{self.index.folder}: the model was closed; open it again to read")
        f = self._open.get(shard)
        if f is None:
            f = reader.safe_open(
                self.path_of(shard), self._framework, self._device,
                backend=self._backend, verify=self._verify,
            )
            if f.header.tensors != self._headers[shard].tensors:
                f.close()
                raise ShardIndexError(f"shard {shard} changed since the model was opened")
            self._open[shard] = f
        return f

    @property
    def opened_shards(self) -> list[str]:
        """Shards opened so far (each only when one of its tensors was touched)."""
        return sorted(self._open)

    @property
    def bytes_read(self) -> int:
        """Bytes copied out of the shards so far (see :attr:`SafeOpen.bytes_read`)."""
        return sum(f.bytes_read for f in self._open.values())

    def get_tensor(self, name: str) -> Any:
        return self[name].load()

    def get_slice(self, name: str) -> reader.TensorSlice:
        h = self[name]
        return self.shard(h.shard).get_slice(name)

    def tensors(self, names: Iterable[str] | None = None) -> dict[str, Any]:
        """Every tensor (or ``names``), shard by shard in file order."""
        wanted = set(self._handles) if names is None else set(names)
        for n in wanted:
            self[n]  # a clear error for an unknown name before any reading
        out: dict[str, Any] = {}
        for shard, h in self._headers.items():
            mine = [n for n in h.tensors if n in wanted]
            if mine:
                out.update(self.shard(shard).tensors(mine))
        return out

    # -- lifetime -----------------------------------------------------------------
    def close(self) -> None:
        """Close every opened shard. Tensors already handed out stay valid."""
        self._closed = True
        for f in self._open.values():
            f.close()
        self._open.clear()

    def __enter__(self) -> ShardedOpen:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_sharded(
    path: PathLike,
    framework: str = "np",
    device: str = "cpu",
    *,
    backend: str = "mmap",
    verify: object = None,
    allow_external_symlinks: bool = False,
) -> ShardedOpen:
    """Open a sharded model folder, its index file, or a single file, lazily.

    ``framework``, ``device``, ``backend`` and ``verify`` are passed to
    :func:`tensorfile.safe_open` for each shard when it is first touched.
    Raises :class:`ShardIndexError` if the index is malformed or disagrees
    with the shards.
    """
    return ShardedOpen(
        path, framework, device, backend=backend, verify=verify,
        allow_external_symlinks=allow_external_symlinks,
    )


def is_sharded_path(path: PathLike) -> bool:
    """Whether ``path`` names a model folder or an index rather than one file."""
    return os.path.isdir(path) or os.fspath(path).endswith(INDEX_SUFFIX)


def load_sharded(
    path: PathLike,
    framework: str = "np",
    device: str = "cpu",
    *,
    backend: str = "mmap",
    verify: object = None,
) -> dict[str, Any]:
    """Every tensor of a sharded model (what ``load_file`` returns for a folder).

    On a device other than the cpu, tensors are read through pinned host
    buffers with reads overlapping the copies
    (:func:`tensorfile.parallel.load_partition` with an empty plan).
    """
    if str(device) != "cpu":
        from tensorfile.parallel import PartitionPlan, load_partition

        return load_partition(
            path, PartitionPlan(), 0, 1, framework=framework, device=device,
            backend=backend, verify=verify,
        )
    with open_sharded(path, framework, device, backend=backend, verify=verify) as model:
        return model.tensors()


# --------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------

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
) -> None:
    """Write one file from tensors produced one at a time (bigger than memory).

    ``entries`` announces each tensor's dtype and shape (the header comes
    first); ``produce`` is either a function ``produce(name) -> tensor``,
    called in file order, or an iterable of ``(name, tensor)`` pairs in the
    order :func:`write_order` gives. Each tensor is written and released
    before the next is asked for: peak memory is a constant plus the largest
    tensor. Atomic like :func:`tensorfile.save_file`; the bytes are identical.
    """
    ents = as_entries(entries)
    writer.save_stream(ents, _pairs(ents, produce), filename, metadata)


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


def _remove_stale(folder: Path, prefix: str, keep: set[str]) -> None:
    """Remove files of an earlier save under ``prefix`` that the new one does not use."""
    pattern = re.compile(re.escape(prefix) + r"-\d{5,}-of-\d{5,}" + re.escape(SAFETENSORS_SUFFIX))
    for p in folder.iterdir():
        stale = pattern.fullmatch(p.name) or p.name in (
            prefix + SAFETENSORS_SUFFIX, prefix + INDEX_SUFFIX
        )
        if stale and p.name not in keep and p.is_file() and not p.is_symlink():
            p.unlink()


def _write_index(folder: Path, prefix: str, weight_map: dict[str, str], total: int) -> Path:
    path = folder / (prefix + INDEX_SUFFIX)
    doc = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    with atomic_write(path) as f:
        f.write((json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))
    return path


def save_sharded_iter(
    entries: EntriesLike,
    produce: Producer,
    folder: PathLike,
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
    metadata: Mapping[str, str] | None = None,
    prefix: str = DEFAULT_PREFIX,
) -> ShardIndex:
    """Write a sharded model from tensors produced one at a time.

    Same shard layout as :func:`save_sharded`; ``entries`` and ``produce``
    as in :func:`save_file_iter` (one tensor in memory at a time).
    """
    if not prefix or "/" in prefix or "\\" in prefix or prefix in (".", ".."):
        raise SerializationError(f"prefix must be a plain file name, got {prefix!r}")
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    ents = as_entries(entries)
    shards = plan_shards(ents, parse_size(max_shard_size))
    pairs = _pairs(ents, produce)
    single = len(shards) <= 1
    weight_map: dict[str, str] = {}
    for i, group in enumerate(shards or [[]], 1):
        name = prefix + SAFETENSORS_SUFFIX if single else shard_name(prefix, i, len(shards))
        writer.save_stream(group, pairs, out / name, metadata)
        weight_map.update((e.name, name) for e in group)
    leftover = next(pairs, None)
    if leftover is not None:
        raise SerializationError(f"producer gave tensor {leftover[0]!r}, which was not announced")
    if single:
        name = prefix + SAFETENSORS_SUFFIX
        _remove_stale(out, prefix, {name})
        return ShardIndex(out, weight_map, {}, None)
    total = sum(e.dtype.nbytes(math.prod(e.shape)) for e in ents)
    index_path = _write_index(out, prefix, weight_map, total)
    _remove_stale(out, prefix, set(weight_map.values()) | {index_path.name})
    return ShardIndex(out, weight_map, {"total_size": total}, index_path)


def save_sharded(
    tensors: Mapping[str, Any],
    folder: PathLike,
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
    metadata: Mapping[str, str] | None = None,
    prefix: str = DEFAULT_PREFIX,
) -> ShardIndex:
    """Save ``tensors`` (numpy arrays or torch tensors) as a sharded model in ``folder``.

    Shards hold at most ``max_shard_size`` bytes of tensor data (an int, or
    ``"5GB"``-style), tensors assigned in canonical order and never split;
    ``metadata`` goes into every shard. One ``{prefix}.safetensors`` and no
    index when everything fits. Files of an earlier save under the same
    prefix that this one does not use are removed after the index is written.
    Torch tensors that share memory are refused, as by ``save_file``.
    """
    if not isinstance(tensors, Mapping):
        raise SerializationError(
            f"expected a mapping of names to tensors, got {type(tensors).__name__}"
        )
    if any(is_torch_tensor(v) for v in tensors.values()):
        from tensorfile.torch import shared_groups

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
    return save_sharded_iter(entries, tensors.__getitem__, folder, max_shard_size, metadata, prefix)


__all__ = [
    "INDEX_SUFFIX",
    "LazyTensor",
    "ShardIndex",
    "ShardedOpen",
    "as_dtype",
    "check_shard",
    "check_total_size",
    "find_index",
    "is_sharded_path",
    "load_sharded",
    "open_sharded",
    "parse_index",
    "parse_size",
    "plan_shards",
    "read_index",
    "save_file_iter",
    "save_sharded",
    "save_sharded_iter",
    "shard_name",
]
