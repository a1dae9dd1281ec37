"""Writing a model one tensor at a time: bigger than memory, atomic, digests on the way.

:class:`StreamWriter` is a context manager that takes tensors one by one
(``w.write(name, tensor)``); :func:`save_streaming` takes an iterable of
``(name, tensor)`` pairs or a function ``produce(name) -> tensor``. Both write
one safetensors file, or a sharded folder (``max_shard_size``) laid out as
:func:`tensorfile.sharded.save_sharded` lays it out (the index last), with the bytes
:func:`tensorfile.save_file` would write for the same tensors.

The header comes first in a safetensors file, so every tensor's name, dtype
and shape is announced up front (``entries``), and the bytes follow in the
file's canonical order (widest dtype first, then by name: :attr:`StreamWriter.order`).
Each tensor is written, and released by the writer, before the next is taken:
peak memory is one tensor plus a constant. Every file goes through the same
atomic writer as ``save_file`` (temporary file, fsync, rename; a sharded
folder's index written last): an exception in the producer or in the
``with`` body, or a kill, never leaves a partial file: the file being
written is not renamed into place, and an old one stays intact.

With ``digests`` set, the header digest and each tensor's digest (BLAKE3 by
default) and each file's SHA-256 are computed from the tensors in memory as
they are written, on a second thread while the bytes go to disk:
:attr:`StreamWriter.digests` holds them in the form signing records, and
:func:`tensorfile.integrity.sign` takes them (``written=``) so that signing
right after a save does not read the model again.

This is a typed facade over the internal streaming writers
(:func:`tensorfile._io.writer.save_stream` and
:func:`tensorfile.sharded._writer.save_sharded_iter`): the bytes, the
atomicity and the shard layout are theirs.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Generator, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any

from tensorfile._format.header import Entry, canonical_order, encode
from tensorfile._io.files import PathLike
from tensorfile._io.writer import announced_view
from tensorfile.errors import SerializationError
from tensorfile.integrity.hashing import (
    DEFAULT_FILE_ALGORITHM,
    DEFAULT_TENSOR_ALGORITHM,
    SINGLE_FILE_NAME,
    FileDigest,
    Hasher,
    SafetensorsDigests,
    check_algorithm,
    new_hasher,
    resource_sort_key,
)
from tensorfile.integrity.manifest import FileHint, Manifest, model_name_of, stat_hint
from tensorfile.sharded._index import DEFAULT_PREFIX, SAFETENSORS_SUFFIX, ShardIndex
from tensorfile.sharded._writer import (
    as_dtype,
    as_entries,
    parse_size,
    plan_shards,
    save_file_iter,
    save_sharded_iter,
    shard_name,
)

#: Announced tensors: ``{name: (dtype, shape)}``, ``{name: tensor_like}`` (anything
#: with ``.dtype`` and ``.shape``: an array, a torch tensor on the meta device,
#: a ``jax.ShapeDtypeStruct``), or :class:`~tensorfile._format.header.Entry` items.
Announced = Mapping[str, Any] | Iterable[Entry]

__all__ = ["Announced", "StreamWriter", "save_streaming"]


def _entries(entries: Announced) -> list[Entry]:
    if not isinstance(entries, Mapping):
        return as_entries(entries)
    out = []
    for name, spec in entries.items():
        if not isinstance(name, str):
            raise SerializationError(f"tensor names must be str, got {name!r}")
        if hasattr(spec, "dtype") and hasattr(spec, "shape"):
            dtype, shape = spec.dtype, spec.shape
        elif isinstance(spec, tuple) and len(spec) == 2:
            dtype, shape = spec
        else:
            raise SerializationError(
                f"tensor {name!r}: announce a (dtype, shape) pair or an object with "
                f".dtype and .shape, got {type(spec).__name__}"
            )
        try:
            dims = tuple(int(d) for d in shape)
        except (TypeError, ValueError):
            raise SerializationError(f"tensor {name!r}: not a shape: {shape!r}") from None
        if any(d < 0 for d in dims):
            raise SerializationError(f"tensor {name!r}: negative dimension in {list(dims)}")
        out.append(Entry(name, as_dtype(dtype), dims))
    return out


class _Digester:
    """Digests of the files being written, fed with each tensor's bytes in file order.

    Hashing runs on one helper thread while the writer writes the same bytes
    (``hashlib`` and ``blake3`` release the GIL); :meth:`take` waits for the
    previous tensor's hashing before the next tensor is taken, so no more
    than one tensor is ever held."""

    def __init__(self, files: list[tuple[str, list[Entry]]], metadata: Mapping[str, str] | None,
                 tensor_algorithm: str) -> None:
        self._files = files
        self._metadata = metadata
        self._algorithm = tensor_algorithm
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="tensorfile-digest")
        self._pending: Future[None] | None = None
        self._file_index = -1
        self._left = 0
        self._whole: Hasher | None = None
        self._header = ""
        self._tensors: dict[str, str] = {}
        self._size = 0
        self.done: list[FileDigest] = []
        self._next_file()

    def _next_file(self) -> None:
        while True:
            self._file_index += 1
            if self._file_index >= len(self._files):
                return
            _, group = self._files[self._file_index]
            head, _ = encode(group, self._metadata)
            self._whole = new_hasher(DEFAULT_FILE_ALGORITHM)
            self._whole.update(head)
            header = new_hasher(self._algorithm, len(head))
            header.update(head)
            self._header = header.hexdigest()
            self._tensors = {}
            self._size = len(head)
            self._left = len(group)
            if self._left:
                return
            self._finish_file()

    def _finish_file(self) -> None:
        assert self._whole is not None
        name = self._files[self._file_index][0]
        parts = SafetensorsDigests(self._header, dict(self._tensors), self._algorithm)
        self.done.append(FileDigest(name, self._whole.hexdigest(), self._size, parts,
                                    DEFAULT_FILE_ALGORITHM))

    def _hash(self, name: str, view: memoryview) -> None:
        assert self._whole is not None
        data = view.cast("B") if view.format != "B" or view.ndim != 1 else view
        self._whole.update(data)
        tensor = new_hasher(self._algorithm, data.nbytes)
        tensor.update(data)
        self._tensors[name] = tensor.hexdigest()
        self._size += data.nbytes
        self._left -= 1
        if self._left == 0:
            self._finish_file()
            self._next_file()

    def take(self, name: str, view: memoryview) -> None:
        """Start hashing ``view`` (the bytes of tensor ``name``, next in file order)."""
        self.wait()
        self._pending = self._pool.submit(self._hash, name, view)

    def wait(self) -> None:
        """Wait for the tensor being hashed (re-raising what its hashing raised)."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def close(self) -> None:
        self._pending = None
        self._pool.shutdown(wait=True)


class _Aborted(Exception):
    """Raised inside the writer thread when the ``with`` body failed."""


_DONE = object()


class StreamWriter:
    """Write tensors one at a time into a safetensors file or a sharded folder.

    ::

        entries = {name: (t.dtype, t.shape) for name, t in meta_state_dict.items()}
        with StreamWriter("model.safetensors", entries, digests=True) as w:
            for name in w.order:
                w.write(name, make_tensor(name))
        w.digests  # per file: SHA-256, header and per-tensor BLAKE3

    ``entries`` announces every tensor (see :data:`Announced`); tensors must
    then be written in :attr:`order`, each exactly once, with the announced
    dtype and shape (:class:`~tensorfile.errors.SerializationError` otherwise,
    and nothing is written). :meth:`write` returns once the tensor's bytes
    are written: the caller may then free or reuse it.

    ``path`` is the file to write or, with ``max_shard_size`` (bytes, or
    ``"5GB"``-style), the folder of a sharded model: shards
    ``{prefix}-0000i-of-0000N.safetensors`` and the index, written last (one
    ``{prefix}.safetensors`` and no index when everything fits). ``metadata``
    goes into every file's header.

    A single file is renamed into place as soon as its last tensor is
    written; a sharded folder's index is written by :meth:`close`, so an
    exception in the ``with`` block before then leaves no index naming the
    new shards.

    ``digests`` computes, while writing, what signing records of each file
    (:attr:`digests`); ``tensor_algorithm`` is ``"blake3"`` (default) or
    ``"sha256"`` for the header and tensor digests. Files are complete and in
    place once the ``with`` block (or :meth:`close`) has returned; an
    exception in the block removes the file being written.
    """

    def __init__(
        self,
        path: PathLike,
        entries: Announced,
        *,
        metadata: Mapping[str, str] | None = None,
        max_shard_size: int | str | None = None,
        prefix: str = DEFAULT_PREFIX,
        digests: bool = False,
        tensor_algorithm: str = DEFAULT_TENSOR_ALGORITHM,
    ) -> None:
        self._path = Path(path)
        self._entries = _entries(entries)
        names = [e.name for e in self._entries]
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise SerializationError(f"tensors announced twice: {dup}")
        self._metadata = metadata
        self._max = None if max_shard_size is None else parse_size(max_shard_size)
        self._prefix = prefix
        self._algorithm = check_algorithm(tensor_algorithm, "tensor digest")
        self._digests = digests
        #: Names in the order their tensors must be written (the file order).
        self.order: tuple[str, ...] = tuple(e.name for e in canonical_order(self._entries))
        self._by_name = {e.name: e for e in self._entries}
        self._inbox: queue.Queue[Any] = queue.Queue(maxsize=1)
        self._taken = threading.Semaphore(0)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._index: ShardIndex | None = None
        self._digester: _Digester | None = None
        self._written = 0
        self._closed = False
        self.digests: tuple[FileDigest, ...] = ()
        self._hints: dict[str, FileHint] = {}

    # -- the files this writer makes, in the order it writes them
    def _files(self) -> list[tuple[str, list[Entry]]]:
        if self._max is None:
            return [(SINGLE_FILE_NAME, self._entries)]
        shards = plan_shards(self._entries, self._max)
        if len(shards) <= 1:
            return [(self._prefix + SAFETENSORS_SUFFIX, list(self._entries))]
        return [(shard_name(self._prefix, i, len(shards)), group)
                for i, group in enumerate(shards, 1)]

    def __enter__(self) -> StreamWriter:
        if self._thread is not None or self._closed:
            raise SerializationError("a StreamWriter is used once")
        if self._digests:
            self._digester = _Digester(self._files(), self._metadata, self._algorithm)
        self._thread = threading.Thread(target=self._run, name="tensorfile-stream-writer",
                                        daemon=True)
        self._thread.start()
        return self

    def _pairs(self) -> Generator[tuple[str, Any], None, None]:
        """What the internal writer pulls: each tensor put by :meth:`write`."""
        while True:
            item = self._inbox.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
            # Resumed: the writer has written this tensor and asks for the next.
            self._taken.release()

    def _run(self) -> None:
        pairs = self._pairs()
        try:
            if self._max is None:
                save_file_iter(self._entries, pairs, self._path, self._metadata)
            else:
                self._index = save_sharded_iter(self._entries, pairs, self._path, self._max,
                                                self._metadata, self._prefix)
        except BaseException as exc:  # handed to the caller's thread
            self._error = exc
        finally:
            pairs.close()
            # The last tensor of a single file is not followed by a request for
            # another, and on an error none comes: wake a waiting write() either way.
            self._taken.release()

    def _check_alive(self) -> None:
        if self._error is not None:
            raise self._error
        if self._thread is None:
            raise SerializationError("StreamWriter.write called outside its 'with' block")
        if self._closed:
            raise SerializationError("StreamWriter is closed")

    def write(self, name: str, value: Any) -> None:
        """Write tensor ``name`` (an array, a torch tensor, or bytes of its exact size).

        Returns when its bytes are written (and hashed, with ``digests``)."""
        self._check_alive()
        if self._written >= len(self.order):
            raise SerializationError(f"tensor {name!r} was not announced (or is written twice)")
        expected = self.order[self._written]
        if name != expected:
            why = "was not announced" if name not in self._by_name else "is out of order"
            raise SerializationError(
                f"tensor {name!r} {why}: the next tensor in file order is {expected!r} "
                "(write in StreamWriter.order)"
            )
        view = self._view(name, value)
        if self._digester is not None:
            self._digester.take(name, view)
        self._written += 1
        self._inbox.put((name, view))
        self._taken.acquire()
        if self._digester is not None:
            self._digester.wait()  # the caller may reuse the tensor once write() returns
        if self._error is not None:
            raise self._error

    def _view(self, name: str, value: Any) -> memoryview:
        info = self._by_name[name]
        return announced_view(name, value, info.dtype, info.shape,
                              info.dtype.nbytes(_prod(info.shape)))

    def close(self) -> None:
        """Finish: every announced tensor must have been written. Files are in place after."""
        if self._closed:
            return
        self._check_alive()
        if self._written < len(self.order):
            missing = self.order[self._written]
            exc = SerializationError(
                f"StreamWriter closed before tensor {missing!r} "
                f"({len(self.order) - self._written} of {len(self.order)} not written)"
            )
            self._finish(exc)  # the writer raises it and removes its temporary file
            raise exc
        self._finish(_DONE)
        if self._error is not None:
            raise self._error
        if self._digester is not None:
            self.digests = tuple(self._digester.done) + self._index_digest()
            # Taken now, so that a later change to a file stops its digest's reuse.
            self._hints = {d.name: h for d in self.digests
                           if (h := stat_hint(self._file_path(d.name))) is not None}

    def _file_path(self, name: str) -> Path:
        return self._path if name == SINGLE_FILE_NAME else self._path / name

    def manifest(self) -> Manifest:
        """The digests of the files written, as a partial manifest for
        :func:`tensorfile.integrity.sign` (``written=``), which reuses each
        digest while its file's size, times and inode are those seen at
        :meth:`close`. Needs ``digests=True`` and a closed writer."""
        if not self.digests:
            raise SerializationError(
                "no digests: open the StreamWriter with digests=True and close it first"
            )
        files = tuple(sorted(self.digests, key=lambda d: resource_sort_key(d.name)))
        return Manifest(model_name_of(self._path), files, hints=dict(self._hints))

    def _index_digest(self) -> tuple[FileDigest, ...]:
        if self._index is None or self._index.path is None:
            return ()
        data = self._index.path.read_bytes()  # a few kB, written by this writer
        h = new_hasher(DEFAULT_FILE_ALGORITHM)
        h.update(data)
        return (FileDigest(self._index.path.name, h.hexdigest(), len(data), None,
                           DEFAULT_FILE_ALGORITHM),)

    def _finish(self, item: object) -> None:
        self._closed = True
        if self._thread is None:
            return
        while self._thread.is_alive():  # a writer that died takes nothing more
            try:
                self._inbox.put(item, timeout=0.05)
                break
            except queue.Full:
                continue
        self._thread.join()
        if self._digester is not None:
            try:
                if self._error is None:
                    self._digester.wait()
            finally:
                self._digester.close()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc is None:
            self.close()
        elif not self._closed:
            # The writer removes its temporary file when its producer raises.
            self._finish(_Aborted(f"the with block raised {exc_type.__name__ if exc_type else ''}"))

    @property
    def index(self) -> ShardIndex | None:
        """The sharded model written (after :meth:`close`, with ``max_shard_size``)."""
        return self._index

    @property
    def path(self) -> Path:
        return self._path


def _prod(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def save_streaming(
    tensors: Iterable[tuple[str, Any]] | Callable[[str], Any],
    path: PathLike,
    entries: Announced,
    *,
    metadata: Mapping[str, str] | None = None,
    max_shard_size: int | str | None = None,
    prefix: str = DEFAULT_PREFIX,
    digests: bool = False,
    tensor_algorithm: str = DEFAULT_TENSOR_ALGORITHM,
) -> tuple[FileDigest, ...]:
    """Write ``tensors`` one at a time (see :class:`StreamWriter`); return the digests.

    ``tensors`` is an iterable of ``(name, tensor)`` pairs in file order
    (:func:`tensorfile.sharded.write_order`), or a function ``produce(name)``
    called once per tensor in that order. Returns what :attr:`StreamWriter.digests`
    holds (empty unless ``digests``). An exception raised by the producer
    leaves no file behind and propagates.
    """
    w = StreamWriter(path, entries, metadata=metadata, max_shard_size=max_shard_size,
                     prefix=prefix, digests=digests, tensor_algorithm=tensor_algorithm)
    with w:
        if callable(tensors):
            for name in w.order:
                w.write(name, tensors(name))
        else:
            it = iter(tensors)
            for name, value in it:
                w.write(name, value)
                del value  # only one tensor alive at a time
    return w.digests

