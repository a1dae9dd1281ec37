"""Reading a sharded model: one lazy mapping of tensor names over every shard.

:func:`open_sharded` opens a model folder, its index, or a single
``.safetensors`` file as one mapping of names to :class:`LazyTensor`. Every
shard's header is read and cross-checked against the index at open (a small
``pread`` per shard; nothing is mapped); a shard is opened only when one of
its tensors is touched. A shard whose file was replaced or changed since
the model was opened is refused at read time; :meth:`ShardedOpen.close` is
safe while other threads read.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import numpy as np

from tensorfile._format.dtypes import DType
from tensorfile._format.header import TensorInfo
from tensorfile._frameworks import import_torch, numpy_view, torch_view
from tensorfile._io.files import PathLike
from tensorfile._io.headers import read_path_header
from tensorfile._io.reader import SafeOpen, TensorSlice
from tensorfile._io.remote import RemoteOptions, is_url
from tensorfile._io.verifier import FileVerifier, Verifier
from tensorfile._verifying import verifier_of
from tensorfile.errors import (
    ClosedFileError,
    DigestMismatchError,
    PartitionError,
    ShardIndexError,
    TensorNotFoundError,
)
from tensorfile.sharded._blocks import (
    DEFAULT_STAGING_BYTES,
    Block,
    BlockSource,
    Staging,
    fill_block,
    to_device,
    whole_block,
)
from tensorfile.sharded._index import (
    DEFAULT_PREFIX,
    INDEX_SUFFIX,
    SAFETENSORS_SUFFIX,
    RemoteIndex,
    ShardIndex,
    check_shard,
    check_total_size,
    file_identity,
    find_index,
    read_index,
    read_shard_header,
)
from tensorfile.sharded._remote import RemoteShards, names_one_file

if TYPE_CHECKING:
    from tensorfile.integrity.onload import VerifyWith


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


class LocalShards:
    """A model on the local disk: its index and every shard's header, read and
    cross-checked at open, with each shard file's identity (device, inode,
    size, modification time) taken with its header."""

    def __init__(self, path: PathLike, allow_external_symlinks: bool = False) -> None:
        p = Path(path)
        index_path = p if p.name.endswith(INDEX_SUFFIX) else (find_index(p) if p.is_dir() else None)
        if index_path is not None:
            self.index = read_index(index_path, allow_external_symlinks=allow_external_symlinks)
            read = {s: read_shard_header(self.path_of(s)) for s in self.index.shard_files}
            headers = {s: h for s, (h, _) in read.items()}
            identities = {s: ident for s, (_, ident) in read.items()}
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
            header, ident = read_shard_header(single)
            self.index = ShardIndex(
                single.parent, {n: single.name for n in header.tensors}, {}, None
            )
            headers = {single.name: header}
            identities = {single.name: ident}
        self.headers = headers
        #: Each shard's file as it was when its header was read: a shard
        #: replaced or changed since is refused at read time (spec/FORMAT.md 6).
        self._identities = identities

    @property
    def label(self) -> str:
        return str(self.index.folder)

    def path_of(self, shard: str) -> Path:
        return self.index.folder.joinpath(*PurePosixPath(shard).parts)

    def location(self, shard: str) -> str:
        return str(self.path_of(shard))

    def local_path(self, shard: str) -> Path | None:
        return self.path_of(shard)

    def size(self, shard: str) -> int:
        return self._identities[shard][2]

    def open(self, shard: str, framework: str, device: str, backend: str,
             verify: Verifier | None) -> SafeOpen:
        f = SafeOpen(self.path_of(shard), framework, device, backend=backend, verify=verify)
        try:
            if f.header.tensors != self.headers[shard].tensors:
                raise ShardIndexError(f"shard {shard} changed since the model was opened")
        except BaseException:
            f.close()
            raise
        return f

    def check_unchanged(self, shard: str) -> None:
        try:
            now = file_identity(os.stat(self.path_of(shard)))
        except OSError as e:
            raise ShardIndexError(
                f"shard {shard} of {self.index.folder} is gone since the model was opened "
                f"({e.strerror})"
            ) from None
        if now != self._identities[shard]:
            raise ShardIndexError(
                f"shard {shard} of {self.index.folder} was replaced or changed since the model "
                "was opened (another save?); open the model again"
            )

    def file_verifier(self, shard: str, verify: Verifier) -> FileVerifier:
        """The shard's verifier, checked against its raw header as it is on disk now."""
        path = self.path_of(shard)
        v = verify.for_file(path)
        header, raw = read_path_header(path)
        v.check_header(raw)
        if header.tensors != self.headers[shard].tensors:
            raise DigestMismatchError(f"{shard}: changed while it was being verified")
        return v


class ShardedOpen(Mapping[str, LazyTensor]):
    """A sharded model (or a single file) as one mapping of names to :class:`LazyTensor`.

    Use :func:`open_sharded` to create one. ``get_tensor``, ``get_slice``,
    ``keys`` and ``metadata`` behave as on :class:`tensorfile.SafeOpen`.
    ``path`` may be a URL (an index, a folder or a ``.safetensors`` file, see
    :mod:`tensorfile.sharded._remote`), read with fsspec's ``storage_options``
    and ``remote`` (a :class:`~tensorfile.remote.RemoteOptions`).
    """

    def __init__(
        self,
        path: PathLike,
        framework: str = "np",
        device: str = "cpu",
        *,
        backend: str = "mmap",
        verify: Verifier | None = None,
        allow_external_symlinks: bool = False,
        storage_options: Mapping[str, Any] | None = None,
        remote: RemoteOptions | None = None,
    ) -> None:
        self._store: LocalShards | RemoteShards
        if is_url(path):
            options = remote or RemoteOptions()
            if storage_options is not None:
                options = dataclasses.replace(options, storage_options=dict(storage_options))
            self._store = RemoteShards(str(path), options)
            backend = RemoteShards.backend
        else:
            self._store = LocalShards(path, allow_external_symlinks)
        #: The model's index (a remote model's: a :class:`RemoteIndex`, URLs in place of paths).
        self.index: ShardIndex | RemoteIndex = self._store.index
        self._framework = framework
        self._device = device
        self._backend = backend
        self._verify = verify
        self._open: dict[str, SafeOpen] = {}
        self._closed = False
        # Opening a shard and close() take it: close() never meets a dict being
        # filled, and no shard opens after close() returned.
        self._lock = threading.Lock()
        self._headers = self._store.headers
        self._handles = {
            name: LazyTensor(self, shard, info)
            for shard, h in self._headers.items()
            for name, info in h.tensors.items()
        }

    @property
    def is_remote(self) -> bool:
        """Whether the model was opened from a URL."""
        return isinstance(self._store, RemoteShards)

    def path_of(self, shard: str) -> Path:
        """Where a shard (a name from the index) is on disk (a remote model's
        shards have URLs: see :meth:`location`)."""
        if not isinstance(self._store, LocalShards):  # the store of a URL
            raise ValueError(f"{self._store.label} is remote: its shards have URLs (location())")
        return self._store.path_of(shard)

    def location(self, shard: str) -> str:
        """A shard's path, or its URL for a remote model."""
        return self._store.location(shard)

    def shard_size(self, shard: str) -> int:
        """A shard file's size in bytes, as it was when the model opened."""
        return self._store.size(shard)

    def shard_verifier(self, shard: str, verify: Verifier) -> FileVerifier:
        """``verify``'s checker of one shard, checked against the shard's raw header."""
        return self._store.file_verifier(shard, verify)

    @property
    def framework(self) -> str:
        return self._framework

    @property
    def backend(self) -> str:
        return self._backend

    @property
    def verifier(self) -> Verifier | None:
        """What each shard is checked against when opened (None: nothing is verified)."""
        return self._verify

    # -- mapping ------------------------------------------------------------------
    def __getitem__(self, name: str) -> LazyTensor:
        try:
            return self._handles[name]
        except KeyError:
            raise TensorNotFoundError(f"no tensor named {name!r} in {self._store.label}") from None

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
    def shard(self, shard: str) -> SafeOpen:
        """The open handle of one shard, opening (not yet mapping) it on first use.

        Raises :class:`ShardIndexError` if the shard's file was replaced or
        changed since the model was opened (its identity: device, inode,
        size, modification time), checked on every call; a remote shard's
        identity (ETag, size) is checked by every request instead (a
        :class:`~tensorfile.errors.RemoteChangedError`).
        """
        with self._lock:
            if self._closed:
                raise ClosedFileError(
                    f"{self._store.label}: the model was closed; open it again to read"
                )
            f = self._open.get(shard)
            if f is None:
                self._store.check_unchanged(shard)
                f = self._store.open(shard, self._framework, self._device, self._backend,
                                     self._verify)
                try:
                    self._store.check_unchanged(shard)
                except BaseException:
                    f.close()
                    raise
                self._open[shard] = f
                return f
        self._store.check_unchanged(shard)
        return f

    def _opened(self) -> list[SafeOpen]:
        with self._lock:
            return list(self._open.values())

    @property
    def opened_shards(self) -> list[str]:
        """Shards opened so far (each only when one of its tensors was touched)."""
        with self._lock:
            return sorted(self._open)

    @property
    def bytes_read(self) -> int:
        """Bytes copied out of the shards so far (see :attr:`SafeOpen.bytes_read`)."""
        return sum(f.bytes_read for f in self._opened())

    def get_tensor(self, name: str) -> Any:
        return self[name].load()

    def get_slice(self, name: str) -> TensorSlice:
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
        with self._lock:
            self._closed = True
            opened = list(self._open.values())
            self._open.clear()
        for f in opened:
            f.close()

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
    verify: VerifyWith | None = None,
    allow_external_symlinks: bool = False,
    storage_options: Mapping[str, Any] | None = None,
    remote: RemoteOptions | None = None,
) -> ShardedOpen:
    """Open a sharded model folder, its index file, or a single file, lazily.

    ``framework``, ``device``, ``backend`` and ``verify`` are passed to
    :func:`tensorfile.safe_open` for each shard when it is first touched.
    Raises :class:`ShardIndexError` if the index is malformed or disagrees
    with the shards.

    ``path`` may be a URL: an index, a ``.safetensors`` file, or a folder
    (any other URL), with fsspec's ``storage_options`` and ``remote``
    (concurrency, block size, retries); shards are read by checked range
    requests (``backend`` is then ``"pread"``).
    """
    return ShardedOpen(
        path, framework, device, backend=backend, verify=verifier_of(verify),
        allow_external_symlinks=allow_external_symlinks, storage_options=storage_options,
        remote=remote,
    )


def is_sharded_path(path: PathLike) -> bool:
    """Whether ``path`` names a model folder or an index rather than one file
    (a URL: whether it does not end in ``.safetensors``)."""
    if is_url(path):
        return not names_one_file(str(path))
    return os.path.isdir(path) or os.fspath(path).endswith(INDEX_SUFFIX)


def load_sharded(
    path: PathLike,
    framework: str = "np",
    device: str = "cpu",
    *,
    backend: str = "mmap",
    verify: VerifyWith | None = None,
    storage_options: Mapping[str, Any] | None = None,
    remote: RemoteOptions | None = None,
) -> dict[str, Any]:
    """Every tensor of a sharded model (what ``load_file`` returns for a folder).

    On a device other than the cpu, tensors are read through pinned host
    buffers with reads overlapping the copies (as
    :func:`tensorfile.parallel.load_partition` does with an empty plan).
    ``path`` may be a URL (see :func:`open_sharded`).
    """
    verifier = verifier_of(verify)
    if str(device) != "cpu":
        backend = "pread" if verifier is not None else backend
        with ShardedOpen(path, framework, "cpu", backend=backend, storage_options=storage_options,
                         remote=remote) as model:
            return load_blocks(model, whole_block, device=device, verify=verifier)
    with ShardedOpen(path, framework, device, backend=backend, verify=verifier,
                     storage_options=storage_options, remote=remote) as model:
        return model.tensors()


def load_blocks(
    model: ShardedOpen,
    block_of: Callable[[TensorInfo], Block],
    *,
    names: Iterable[str] | None = None,
    device: str = "cpu",
    verify: Verifier | None = None,
    staging_bytes: int = DEFAULT_STAGING_BYTES,
) -> dict[str, Any]:
    """``block_of(info)`` of every tensor (or of ``names``) of ``model``, read
    with ``model``'s framework onto ``device``; only the blocks' bytes are read.

    With ``verify`` each shard's header is checked, then each tensor whole
    before its block is cut from it (bytes are read with ``pread``).
    """
    torch_device = None
    if str(device) != "cpu":
        if model.framework != "pt":
            raise PartitionError(f"device {device!r} needs framework='pt'")
        torch_device = import_torch().device(device)
    wanted = model.keys() if names is None else list(names)
    staging = Staging(torch_device, staging_bytes) if torch_device is not None else None
    sources: dict[str, BlockSource] = {}
    out: dict[str, Any] = {}
    reads: list[tuple[str, Block, BlockSource]] = []
    for name in wanted:
        handle = model[name]
        f = model.shard(handle.shard)
        block = block_of(handle.info)
        src = sources.get(handle.shard)
        if src is None:
            v = model.shard_verifier(handle.shard, verify) if verify is not None else None
            src = sources[handle.shard] = BlockSource(f, v, model._store.local_path(handle.shard))
        if staging is not None and not handle.dtype.sub_byte:
            src.prefetch(block)
            out[name] = to_device(staging, src, block)
        elif src.verifier is None and model.backend == "mmap":
            value = handle.load() if block.dim is None else handle[block.index()]
            out[name] = value if torch_device is None else value.to(torch_device)
        else:
            reads.append((name, block, src))
    if staging is not None:
        staging.finish()

    def read(job: tuple[str, Block, BlockSource]) -> Any:
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
    # each shard's source keeps the last verified tensor.
    verified = any(src.verifier is not None for _, _, src in reads)
    workers = 1 if verified or len(reads) < 2 else min(8, os.cpu_count() or 1)
    if workers == 1:
        out.update((job[0], read(job)) for job in reads)
    else:
        with ThreadPoolExecutor(workers) as pool:
            out.update(zip((job[0] for job in reads), pool.map(read, reads), strict=True))
    return {name: out[name] for name in wanted}
