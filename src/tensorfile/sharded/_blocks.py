"""Reading parts of tensors into host memory or onto a device.

A :class:`Block` is the part of one tensor a reader wants: the whole tensor,
or indices ``[lo, hi)`` along one dimension (a tensor-parallel rank's part).
:func:`fill_block` copies exactly its bytes out of a shard through a
:class:`BlockSource` (which checks whole tensors when a verifier is given),
and :class:`Staging` carries them to a device through pinned host buffers,
reads overlapping copies.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tensorfile._format.header import TensorInfo
from tensorfile._frameworks import import_torch, torch_dtype
from tensorfile._io.files import open_regular
from tensorfile._io.reader import SafeOpen
from tensorfile._io.verifier import FileVerifier

#: Bytes of each pinned staging buffer for device loads.
DEFAULT_STAGING_BYTES = 64 << 20


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


def whole_block(info: TensorInfo) -> Block:
    """The block that is the whole tensor."""
    return Block(info, None, 0, 0)


class BlockSource:
    """Reads bytes of one shard's tensors: straight, or through verified whole tensors.

    Verified bytes are read into private memory (never a map another process
    could change after the check) and each tensor is checked once; only the
    last tensor is kept, which suffices because a block's runs are read in
    increasing file order.
    """

    def __init__(self, f: SafeOpen, verifier: FileVerifier | None, path: Path | None = None) -> None:
        self.f = f
        self.verifier = verifier
        self._path = path
        self._last: tuple[str, bytearray] | None = None

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
        fd, _size = open_regular(self._path)
        try:
            span = (block.outer - 1) * block.stride + block.run
            os.posix_fadvise(fd, start + block.first, span, os.POSIX_FADV_WILLNEED)
        finally:
            os.close(fd)

    def read_pieces(self, name: str, pieces: list[tuple[int, memoryview]]) -> None:
        """Fill each ``(start, out)`` with the tensor's bytes from ``start``."""
        if self.verifier is None:
            self.f.read_pieces(name, pieces)
            return
        data = self._verified(self.f.info(name))
        for start, out in pieces:
            out[:] = data[start : start + len(out)]

    def _verified(self, info: TensorInfo) -> bytearray:
        """The whole tensor, read and checked (a digest covers the whole tensor)
        as its bytes arrive."""
        last = self._last
        if last is not None and last[0] == info.name:
            return last[1]
        assert self.verifier is not None
        buf = bytearray(info.nbytes)
        self.f.read_checked(info.name, buf, self.verifier.tensor_check(info.name, info.nbytes))
        self._last = (info.name, buf)
        return buf


def fill_block(source: BlockSource | SafeOpen, block: Block, start: int, out: memoryview) -> None:
    """Write bytes ``[start, start + len(out))`` of ``block`` (C order) into ``out``.

    Reads exactly those bytes from ``source`` (anything with
    ``read_pieces(name, [(start, out), ...])``, e.g. a :class:`tensorfile.SafeOpen`),
    all of its runs in one call (a remote file fetches them concurrently).
    """
    pos, n = 0, len(out)
    pieces = []
    while pos < n:
        i, off = divmod(start + pos, block.run)
        take = min(block.run - off, n - pos)
        pieces.append((block.first + i * block.stride + off, out[pos : pos + take]))
        pos += take
    source.read_pieces(block.info.name, pieces)


class Staging:
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


def to_device(staging: Staging, source: BlockSource, block: Block) -> Any:
    """``block`` as a tensor on the staging buffers' device."""
    torch = import_torch()
    info = block.info
    dst = torch.empty(block.shape, dtype=torch_dtype(info.dtype), device=staging.device)
    if block.nbytes:
        flat = dst.reshape(-1).view(torch.uint8)
        staging.copy(lambda a, out: fill_block(source, block, a, out), block.nbytes, flat)
    return dst

