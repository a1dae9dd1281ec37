"""The candidate cold-cache strategy measured by bench_cold.py: concurrent ``pread`` into one buffer.

Kept in bench/, not the library: on the machine it was measured on it lost
to tensorfile's mmap path (see bench_cold.py's docstring and the README), so
``load_file`` does not use it. The reasoning it was built on:

A whole-model load from a cold page cache is bound by the disk, and a disk
(NVMe, a virtual disk, a network volume) delivers its speed only with several
requests in flight. Faulting a mapping in page by page keeps one request in
flight at a time, beyond the kernel's read-ahead; here ``readers`` threads
``pread`` consecutive ``block``-byte blocks of the data region straight into
one private buffer (``os.preadv`` releases the GIL), whose slices become the
tensors: each byte is copied once, from the kernel to its final place.
numpy allocates a buffer this large with transparent huge pages where the
kernel allows it, so its first touch costs one fault per 2 MiB, not per 4 KiB.

"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from tensorfile._format.header import Header
from tensorfile._frameworks import numpy_view, torch_view
from tensorfile._io.files import PathLike, open_regular, pread_exact
from tensorfile._io.headers import read_header

#: Reader threads: requests kept in flight at once (bench/bench_cold.py).
READERS = 4
#: Bytes per ``pread``: big enough to amortise a system call, small enough
#: that every reader has work until the end.
BLOCK = 16 << 20


def read_region(fd: int, offset: int, nbytes: int, *, readers: int = READERS,
                block: int = BLOCK) -> np.ndarray[Any, Any]:
    """Bytes ``[offset, offset + nbytes)`` of ``fd`` in a new private array,
    read by ``readers`` threads in ``block``-byte pieces."""
    if readers < 1 or block < 1:
        raise ValueError(f"readers and block must be positive, got {readers} and {block}")
    out = np.empty(nbytes, dtype=np.uint8)
    starts = range(0, nbytes, block)
    if readers == 1 or len(starts) < 2:
        pread_exact(fd, nbytes, offset, out)
        return out

    def one(lo: int) -> None:
        hi = min(nbytes, lo + block)
        pread_exact(fd, hi - lo, offset + lo, out[lo:hi])

    with ThreadPoolExecutor(min(readers, len(starts))) as pool:
        for _ in pool.map(one, starts):  # re-raises the first reader's error
            pass
    return out


def load_whole(path: PathLike, framework: str = "np", *, readers: int = READERS,
               block: int = BLOCK) -> dict[str, Any]:
    """Every tensor of the safetensors file at ``path`` (``framework`` ``"np"``
    or ``"pt"``, CPU), read by :func:`read_region`: the tensors share one
    private, writable buffer, freed when the last of them is."""
    fd, size = open_regular(path)
    try:
        header, _ = read_header(fd, size)
        data = read_region(fd, header.data_offset, size - header.data_offset,
                           readers=readers, block=block)
    finally:
        os.close(fd)
    return views(header, data, framework)


def views(header: Header, data: np.ndarray[Any, Any], framework: str) -> dict[str, Any]:
    """The tensors of ``header`` over ``data`` (the file's data region)."""
    out: dict[str, Any] = {}
    for info in header.tensors.values():
        if framework == "np":
            out[info.name] = numpy_view(data, info.start, info.dtype, info.shape)
        else:
            out[info.name] = torch_view(data, info.start, info.dtype, info.shape, info.nbytes)
    return out
