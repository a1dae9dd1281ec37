"""Streaming, atomic safetensors writer.

The header is computed from shapes and dtypes alone, then each tensor's bytes
are written straight from its own memory, one tensor at a time: the file is
never assembled in memory, so peak memory is the caller's tensors plus one
tensor's worth of copy at most (for non-contiguous or big-endian inputs).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO

from tensorfile._format.header import Entry, TensorInfo, encode
from tensorfile._frameworks import tensor_entry
from tensorfile._io.atomic import WriteBehindFile, atomic_write, write_scratch_file, write_views
from tensorfile._io.files import pread_into
from tensorfile.errors import FileReadError, SerializationError

_CHUNK = 64 << 20  # bound single write() calls (Linux caps one write at ~2 GiB)


def write_all(f: BinaryIO, data: memoryview) -> None:
    """Write every byte of ``data`` (raw file objects may write partially)."""
    data = data.cast("B") if data.format != "B" or data.ndim != 1 else data
    pos, end = 0, len(data)
    while pos < end:
        n = f.write(data[pos : min(end, pos + _CHUNK)])
        if n is None or n <= 0:
            raise OSError(f"short write at byte {pos}")
        pos += n


#: Below this many bytes a file's header and tensors are written together.
_GATHER_BYTES = 4 << 20


def _flat(views: list[memoryview]) -> list[memoryview]:
    return [v if v.format == "B" and v.ndim == 1 else v.cast("B") for v in views]


@dataclass(frozen=True, slots=True)
class FileSpan:
    """A tensor's bytes as ``length`` bytes of the open file ``fd`` from ``offset``.

    What a producer of :func:`save_stream` hands over when the bytes already
    lie, contiguous and in file order, in another file (a converter copying
    from a checkpoint's storage records): they are then copied file to file
    inside the kernel (:func:`os.copy_file_range`), never passing through this
    process's memory. ``fd`` is read with explicit offsets, so its position is
    neither used nor moved.
    """

    fd: int
    offset: int
    length: int


#: Whether this platform copies file to file in the kernel (Linux); where it
#: does not, a :class:`FileSpan` is still written, through a buffer.
KERNEL_COPY = hasattr(os, "copy_file_range")
#: copy_file_range failures that mean "not here" (old kernel, another
#: filesystem, a file kind it does not handle), not a broken file: the copy
#: goes on through a buffer from where the kernel stopped.
_NO_KERNEL_COPY = frozenset({errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP,
                             errno.EINVAL, errno.EPERM, errno.ETXTBSY})
_SPAN_BUFFER = 8 << 20
#: Bytes per kernel copy call: small enough that writeback starts as they arrive.
_KERNEL_COPY_STEP = 64 << 20


def copy_span(f: BinaryIO, span: FileSpan) -> None:
    """Append ``span``'s bytes to ``f`` at its position: in the kernel where the
    platform and filesystems allow, otherwise (or for what is left) by ``pread``
    into one buffer and writing it. The bytes written are the same either way."""
    out = f.fileno()
    f.flush()  # the kernel copy writes at the descriptor's position
    # A durable file starts writeback as bytes arrive; tell it about these.
    arrived = f.written_elsewhere if isinstance(f, WriteBehindFile) else None
    done = 0
    if KERNEL_COPY:
        try:
            while done < span.length:
                n = os.copy_file_range(span.fd, out, min(span.length - done, _KERNEL_COPY_STEP),
                                       span.offset + done)
                if n <= 0:
                    break  # end of the source: the buffered path reports it
                done += n
                if arrived is not None:
                    arrived(n)
        except OSError as exc:
            if exc.errno not in _NO_KERNEL_COPY:
                raise
    if done < span.length:
        buf = bytearray(min(_SPAN_BUFFER, span.length - done))
        view = memoryview(buf)
        while done < span.length:
            at = span.offset + done
            try:
                n = pread_into(span.fd, view[: span.length - done], at)
            except OSError as exc:
                raise FileReadError(exc.errno or errno.EIO, f"cannot read the source at byte "
                                    f"{at}: {exc.strerror or exc}") from None
            if n <= 0:
                raise FileReadError(errno.EIO, f"source file ends {span.length - done} bytes "
                                    f"before the span does (at byte {at}: changed or cut "
                                    "short while it was copied)")
            write_all(f, view[:n])
            done += n


def _prepare(
    tensors: Mapping[str, Any], metadata: Mapping[str, str] | None
) -> tuple[bytes, list[tuple[TensorInfo, memoryview]]]:
    if not isinstance(tensors, Mapping):
        raise SerializationError(
            f"expected a mapping of names to tensors, got {type(tensors).__name__}"
        )
    views: dict[str, memoryview] = {}
    entries: list[Entry] = []
    for name, value in tensors.items():
        if not isinstance(name, str):
            raise SerializationError(f"tensor names must be str, got {name!r}")
        entry, view = tensor_entry(name, value)
        entries.append(entry)
        views[name] = view
    head, infos = encode(entries, metadata)
    return head, [(info, views[info.name]) for info in infos]


def save(tensors: Mapping[str, Any], metadata: Mapping[str, str] | None = None) -> bytes:
    """Serialize ``tensors`` (numpy arrays or torch tensors) to safetensors bytes."""
    head, parts = _prepare(tensors, metadata)
    total = len(head) + sum(info.nbytes for info, _ in parts)
    out = bytearray(total)
    out[: len(head)] = head
    pos = len(head)
    for info, view in parts:
        out[pos : pos + info.nbytes] = view.cast("B") if view.format != "B" else view
        pos += info.nbytes
    return bytes(out)


def save_file(
    tensors: Mapping[str, Any],
    filename: str | os.PathLike[str],
    metadata: Mapping[str, str] | None = None,
    *,
    durable: bool = True,
) -> None:
    """Write ``tensors`` to ``filename`` atomically, streaming tensor by tensor.

    ``durable`` (the default) syncs the file and its folder entry before
    returning, so a power cut cannot leave an empty or partial file under the
    name; ``durable=False`` skips both syncs (the reference's speed for many
    small scratch files) and stays all-or-nothing against a crash or a kill.
    """
    head, parts = _prepare(tensors, metadata)
    if sum(info.nbytes for info, _view in parts) < _GATHER_BYTES:
        # Header and tensors in one writev call: many small files then cost
        # one system call each for their bytes, not one a tensor.
        views = _flat([memoryview(head), *(view for _info, view in parts)])
        if not durable:
            write_scratch_file(filename, views)
            return
        with atomic_write(filename, durable=True) as f:
            write_views(f.fileno(), views, f.written_elsewhere
                        if isinstance(f, WriteBehindFile) else None)
        return
    with atomic_write(filename, durable=durable) as f:
        write_all(f, memoryview(head))
        for _info, view in parts:
            write_all(f, view)


def save_stream(
    entries: Iterable[Entry],
    produce: Iterator[tuple[str, Any]],
    filename: str | os.PathLike[str],
    metadata: Mapping[str, str] | None = None,
    *,
    durable: bool = True,
) -> list[TensorInfo]:
    """Write tensors produced one at a time, each in canonical order, atomically.

    ``entries`` announces every tensor's name, dtype and shape up front (the
    header comes first in the file); ``produce`` then yields ``(name, value)``
    pairs in the order :func:`tensorfile._format.header.canonical_order` gives,
    each value released by the caller after it is written. Peak memory is one
    tensor. Values may be arrays, tensors, bytes-like objects, or a
    :class:`FileSpan` of another file (copied by :func:`copy_span`).
    """
    with atomic_write(filename, durable=durable) as f:
        return write_stream(f, entries, produce, metadata)


def announced_view(name: str, value: Any, dtype: Any, shape: tuple[int, ...],
                   nbytes: int) -> memoryview:
    """The bytes of tensor ``name`` produced for a file whose header already
    announced its ``dtype``, ``shape`` and size: raw bytes are taken as they
    are, a tensor must match what was announced."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        view = memoryview(value)
    else:
        entry, view = tensor_entry(name, value)
        if entry.dtype != dtype or entry.shape != shape:
            raise SerializationError(
                f"tensor {name!r}: produced {entry.dtype.name}{list(entry.shape)}, "
                f"announced {dtype.name}{list(shape)}"
            )
    if view.nbytes != nbytes:
        raise SerializationError(f"tensor {name!r}: produced {view.nbytes} bytes, expected {nbytes}")
    return view


def write_stream(
    f: BinaryIO,
    entries: Iterable[Entry],
    produce: Iterator[tuple[str, Any]],
    metadata: Mapping[str, str] | None = None,
) -> list[TensorInfo]:
    """The body of :func:`save_stream`: write into the open file ``f`` (a
    sharded save writes each shard so, into a temporary file it publishes later)."""
    head, infos = encode(entries, metadata)
    f.write(head)
    for info in infos:
        try:
            name, value = next(produce)
        except StopIteration:
            raise SerializationError(f"producer stopped before tensor {info.name!r}") from None
        if name != info.name:
            raise SerializationError(
                f"producer gave tensor {name!r} where {info.name!r} was expected"
            )
        if isinstance(value, FileSpan):
            if value.length != info.nbytes:
                raise SerializationError(
                    f"tensor {name!r}: produced {value.length} bytes, expected {info.nbytes}"
                )
            copy_span(f, value)
            continue
        view = announced_view(name, value, info.dtype, info.shape, info.nbytes)
        write_all(f, view)
        # Release this tensor before the producer makes the next one:
        # otherwise two tensors are alive at once and peak memory doubles.
        del value, view
    return infos
