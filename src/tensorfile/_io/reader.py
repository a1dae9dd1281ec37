"""Reading safetensors files: memory-mapped (zero copy) or by positional reads.

Backends
--------
``mmap`` (default)
    numpy arrays are read-only views of a shared read-only map of the file;
    torch tensors are views of a private copy-on-write map (writing to one
    changes only this process's copy, never the file). Only pages touched are
    read from disk. Only whole tensors on the cpu are handed out this way:
    slices, :meth:`SafeOpen.read_into`, verified reads and device copies are
    copies anyway and read with ``pread``, so the library itself does not
    touch a mapped page that could fault (a conversion to jax, tf, ... may
    copy from the map, after the same size check). Before a
    view is handed out, the open file's size is checked against the tensor's
    end; a file that cannot be mapped (``ENODEV``) is read with ``pread``.
``pread``
    Each tensor is read with ``os.pread`` into its own private buffer. Use it
    on network file systems where page faults are slow, or when the file may
    change underneath the reader (the SIGBUS-safe mode: a file cut short or
    failing is a :class:`TruncatedFileError` or :class:`FileReadError`).
    ``load_file`` issues the reads from a thread pool so several are in
    flight at once.

Verified reads (``verify=``) copy into private memory by ``pread`` too, each
byte hashed as it lands. In ``pread`` mode, where the page cache does not
hold the bytes, big tensors are read straight from the disk into their
memory (``O_DIRECT``, see tensorfile._io.direct) rather than through the
cache.

The header is always read with ``pread`` and validated against the file's
real size before anything is mapped or allocated.
"""

from __future__ import annotations

import mmap
import os
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

import numpy as np

from tensorfile._format import header as hdr
from tensorfile._format.dtypes import DType, numpy_dtype
from tensorfile._format.header import Header, TensorInfo
from tensorfile._frameworks import (
    VIA_NUMPY,
    carrier_view,
    check_device,
    device_name,
    from_numpy,
    import_framework,
    numpy_view,
    torch_from_carrier,
    torch_view,
)
from tensorfile._io.direct import ALIGN, DIRECT_BLOCK, MIN_DIRECT, DirectReads, empty_like_file
from tensorfile._io.files import open_file_object, open_regular, pread_exact
from tensorfile._io.fresh import fresh_buffer
from tensorfile._io.headers import read_header
from tensorfile._io.remote import RemoteFile
from tensorfile._io.verifier import FileVerifier, TensorCheck, Verifier
from tensorfile.errors import (
    ClosedFileError,
    FileReadError,
    FrameworkError,
    SliceIndexError,
    TensorNameTypeError,
    TensorNotFoundError,
    TruncatedFileError,
)

FRAMEWORKS = ("np", "numpy", "pt", "torch")
BACKENDS = ("mmap", "pread")


def _norm_framework(framework: str) -> str:
    fw = {"numpy": "np", "torch": "pt", "pytorch": "pt"}.get(framework, framework)
    if fw not in ("np", "pt"):
        raise FrameworkError(
            f"unknown framework {framework!r}; use 'np', 'pt', 'flax', 'tf', 'paddle' or 'mlx'"
        )
    return fw


def row_window(index: Any, shape: tuple[int, ...]) -> tuple[int, int, Any] | None:
    """The rows ``[lo, hi)`` of the first axis that a basic index reaches, and
    the index rewritten for the array of just those rows; None when the first
    axis is not selected by an integer or a slice (or the selection is empty or
    out of range: indexing the whole tensor then decides, or raises)."""
    if not shape or shape[0] == 0:
        return None
    parts = index if isinstance(index, tuple) else (index,)
    if not parts:
        return None
    first, rest, n = parts[0], parts[1:], shape[0]
    if isinstance(first, (int, np.integer)) and not isinstance(first, (bool, np.bool_)):
        i = int(first) + (n if first < 0 else 0)
        return (i, i + 1, (0, *rest)) if 0 <= i < n else None
    if isinstance(first, slice):
        rows = range(*first.indices(n))
        if not rows:
            return None
        lo, hi = min(rows[0], rows[-1]), max(rows[0], rows[-1]) + 1
        end = rows[-1] - lo + (1 if rows.step > 0 else -1)
        return lo, hi, (slice(rows[0] - lo, None if end < 0 else end, rows.step), *rest)
    return None


class TensorSlice:
    """Lazy handle on one tensor: shape and dtype without reading, data on indexing.

    ``handle[...]`` accepts numpy basic indexing: integers (negative too),
    slices with steps (negative too), ``...`` and ``None``. Only the bytes the
    selection covers are touched.
    """

    def __init__(self, owner: SafeOpen, info: TensorInfo) -> None:
        self._owner = owner
        self._info = info

    def get_shape(self) -> list[int]:
        return list(self._info.shape)

    def get_dtype(self) -> str:
        return self._info.dtype.name

    @property
    def shape(self) -> tuple[int, ...]:
        return self._info.shape

    @property
    def dtype(self) -> DType:
        return self._info.dtype

    def __len__(self) -> int:
        if not self._info.shape:
            raise TypeError("len() of a 0-d tensor")
        return self._info.shape[0]

    def __getitem__(self, index: Any) -> Any:
        return self._owner._slice(self._info, index)


class SafeOpen:
    """An open safetensors file. Use :func:`safe_open` to create one."""

    def __init__(
        self,
        filename: str | os.PathLike[str] | IO[Any] | RemoteFile,
        framework: str = "np",
        device: str | int | None = "cpu",
        *,
        backend: str = "mmap",
        verify: Verifier | None = None,
    ) -> None:
        #: jax, tensorflow, paddle or mlx: read as numpy, then converted.
        self._convert = VIA_NUMPY.get(framework)
        if self._convert is not None:
            import_framework(self._convert)  # not installed: say so now, not at the first read
        self._framework = "np" if self._convert else _norm_framework(framework)
        if backend not in BACKENDS:
            raise FrameworkError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
        self._device = device_name(device)
        if self._device != "cpu" and self._convert is None:
            if self._framework == "np":
                raise FrameworkError(f"numpy arrays live on the cpu; device {device!r} needs framework='pt'")
            check_device(self._device)
        # The map pays only where its pages are handed out as they are
        # (jax may wrap an aligned view too): tensors moved to a device are
        # copies anyway, and pread copies without a map that could fault.
        self._mode = backend if self._device == "cpu" or self._convert is not None else "pread"
        self._lock = threading.Lock()
        # Closed until the descriptor exists, so a failed open leaves nothing
        # for __del__ to release.
        self._closed = True
        self._inflight = 0
        self._map: mmap.mmap | None = None
        #: pread mode: cold bytes read straight into private memory (tensorfile._io.direct).
        self._direct_reads: DirectReads | None = None
        #: Bytes copied out of the file by this handle: ``pread`` reads and
        #: :meth:`read_into` copies (zero-copy views of the map are not counted).
        self.bytes_read = 0
        #: A URL's object (see tensorfile._io.remote): read by checked ranges, never mapped.
        self._remote: RemoteFile | None = None
        if isinstance(filename, RemoteFile):
            self._remote = filename
            self._path = Path(filename.label)
            self._label = filename.label
            self._fd, self._size = -1, filename.size
            self._mode = "pread"
        elif isinstance(filename, (str, os.PathLike)):
            self._path = Path(filename)
            self._fd, self._size = open_regular(
                self._path,
                folder_hint=": open a sharded model with tensorfile.sharded.open_sharded, "
                "or read every tensor with load_file",
            )
        else:  # a file object (safetensors' _safe_open_handle)
            label, self._fd, self._size = open_file_object(filename)
            self._path = Path(label)
        if self._remote is None:
            self._label = str(self._path)
        self._closed = False
        try:
            if self._remote is not None:
                self._header, raw_header = self._remote.read_header()
            else:
                self._header, raw_header = read_header(self._fd, self._size)
            self._verifier: FileVerifier | None = None
            #: The data section of a file signed only whole, copied and checked at open.
            self._whole: np.ndarray[Any, Any] | None = None
            #: Verified tensor bytes by name, released when the handle closes.
            self._verified: dict[str, Any] = {}
            if verify is not None:
                if not isinstance(verify, Verifier):
                    raise TypeError(
                        "SafeOpen(verify=...) takes a Verifier; pass keys, certificates, "
                        "trust policies or pins to tensorfile.safe_open(verify=...)"
                    )
                self._verifier = verify.for_file(self._path)
                # Verified bytes must be the bytes handed out: read them into
                # private memory, through this descriptor, rather than through
                # a map (or a second open of the path) that another process
                # could change between the check and the use.
                self._mode = "pread"
            if self._mode == "pread" and self._fd >= 0:
                self._direct_reads = DirectReads.open(self._fd, self._size)
            if self._verifier is not None:
                whole = self._verifier.check_open(raw_header, self._size)
                if whole is not None:
                    self._whole = self._read_whole(whole, raw_header)
                if self._verifier.eager:
                    for info in self._header.tensors.values():
                        self._tensor_bytes(info)
        except BaseException:
            self._closed = True
            self._release()
            raise

    # -- context manager -------------------------------------------------
    def __enter__(self) -> SafeOpen:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the file. Arrays already handed out stay valid."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._verified = {}
            self._whole = None
            # Arrays handed out keep the map alive through their buffer; the
            # map itself is unmapped when the last of them is collected.
            self._map = None
            # A read in flight on another thread closes the descriptor when it
            # finishes: closing it now could let a new file reuse the number
            # under that read.
            if self._inflight == 0:
                self._release()

    def _release(self) -> None:
        """Close the descriptors (the caller holds the lock, or is the only user)."""
        if self._direct_reads is not None:
            self._direct_reads.close()
        if self._fd >= 0:
            os.close(self._fd)
        self._fd, self._direct_reads = -1, None

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedFileError(f"{self._label}: the file was closed; open it again to read")

    # -- header ---------------------------------------------------------------
    @property
    def header(self) -> Header:
        return self._header

    @property
    def file_size(self) -> int:
        """The file's size in bytes (a remote object's, from the server's answer)."""
        return self._size

    @property
    def remote(self) -> RemoteFile | None:
        """The remote object this handle reads (a URL was opened), or None."""
        return self._remote

    def keys(self) -> list[str]:
        """Tensor names, sorted (as the reference returns them)."""
        self._check_open()
        return sorted(self._header.tensors)

    def offset_keys(self) -> list[str]:
        """Tensor names in the order their bytes sit in the file."""
        self._check_open()
        return list(self._header.tensors)

    def metadata(self) -> dict[str, str] | None:
        self._check_open()
        m = self._header.metadata
        return None if m is None else dict(m)

    def __contains__(self, name: object) -> bool:
        return name in self._header.tensors

    def __len__(self) -> int:
        return len(self._header.tensors)

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def info(self, name: str) -> TensorInfo:
        self._check_open()
        try:
            return self._header.tensors[name]
        except KeyError:
            if not isinstance(name, str):
                raise TensorNameTypeError(
                    f"tensor names are str, got {type(name).__name__} {name!r}"
                ) from None
            raise TensorNotFoundError(f"no tensor named {name!r} in {self._label}") from None

    def byte_range(self, name: str) -> tuple[int, int]:
        """Absolute ``[start, end)`` file offsets of the tensor's bytes."""
        info = self.info(name)
        base = self._header.data_offset
        return base + info.start, base + info.end

    # -- data -------------------------------------------------------------------
    def _mapping(self, info: TensorInfo | None = None, end: int = 0) -> mmap.mmap | None:
        """The map, once the file is seen to still hold ``info``'s bytes; None
        where the file cannot be mapped (FUSE ``direct_io``, some network file
        systems: ``ENODEV``), and reads fall back to ``pread`` for good.

        A page of a map that lies past the end of the file raises SIGBUS on
        first touch, which kills the process: so the file's size is checked
        before a view is handed out (:func:`_cut_short`: against ``info``'s
        end, or an absolute ``end`` checked once for many tensors). A file cut short
        *after* that, while a zero-copy array is held, can still fault: see
        spec/FORMAT.md, "Reading a file that changes"."""
        with self._lock:
            self._check_open()
            if info is not None:
                self._cut_short(self._header.data_offset + info.end, f"tensor {info.name!r}")
            elif end:
                self._cut_short(end, "its last tensor")
            if self._map is None:
                # numpy views get a shared read-only map (a write raises);
                # torch needs a writable buffer, so it gets a private
                # copy-on-write map whose writes never reach the file.
                access = mmap.ACCESS_READ if self._framework == "np" else mmap.ACCESS_COPY
                try:
                    self._map = mmap.mmap(self._fd, 0, access=access)
                except (OSError, ValueError):
                    self._mode = "pread"
                    return None
            return self._map

    def _cut_short(self, end: int, what: str) -> None:
        """Raise :class:`TruncatedFileError` if the open file now ends before byte ``end``."""
        try:
            now = os.fstat(self._fd).st_size
        except OSError as e:
            raise FileReadError(f"{self._path}: cannot stat the open file: {e.strerror or e}") from None
        if now < end:
            raise TruncatedFileError(
                f"{self._path}: the file is now {now:,} bytes, but {what} ends at "
                f"byte {end:,}: it was cut short after it was opened"
            )

    def _pread_local(self, size: int, offset: int, into: Any, direct: bool) -> Any:
        try:
            if direct and self._direct_reads is not None:
                self._direct_reads.read(into, offset)
                return into
            return pread_exact(self._fd, size, offset, into)
        except TruncatedFileError as e:
            raise TruncatedFileError(f"{self._path}: {e} (it was cut short after it was opened)") from None
        except OSError as e:
            raise FileReadError(
                f"{self._path}: cannot read bytes [{offset:,}, {offset + size:,}): {e.strerror or e}"
            ) from None

    def _pread(self, size: int, offset: int, into: Any = None, *, direct: bool = False) -> Any:
        """``size`` bytes at ``offset``, into ``into`` or a new buffer (``direct``:
        ``into`` is a view placed for :meth:`DirectReads.read`, and it is used)."""
        with self._lock:
            self._check_open()
            self._inflight += 1
        try:
            if self._remote is not None:
                buf = self._remote.pread(size, offset, into)
            else:
                buf = self._pread_local(size, offset, into, direct)
        finally:
            with self._lock:
                self._inflight -= 1
                self.bytes_read += size
                if self._closed and self._inflight == 0:
                    self._release()
        return buf

    def _tensor_bytes(self, info: TensorInfo, into: Any = None, sized: bool = False) -> tuple[Any, int]:
        """A buffer holding the tensor and the tensor's offset in it (``sized``:
        the file was just seen to hold it: no second size check)."""
        if self._mode == "mmap":
            mapped = self._mapping(None if sized else info)
            if mapped is not None:
                return mapped, self._header.data_offset + info.start
        if self._verifier is None:
            buf: Any = self._empty(info.nbytes, self._header.data_offset + info.start) if into is None else into
            with memoryview(buf).cast("B") as view:
                self._fill(view[: info.nbytes], self._header.data_offset + info.start, None)
            return buf, 0
        if self._whole is not None:
            return self._whole, info.start
        # Verified bytes are kept and handed out again: reading the file a
        # second time would return bytes nobody checked (the file may have
        # changed since), and hashing them again would cost a full pass.
        cached = self._verified.get(info.name)
        if cached is None:
            buf = self._read_checked(info, into)
            with self._lock:
                cached = self._verified.setdefault(info.name, buf)
        return cached, 0

    def _read_checked(self, info: TensorInfo, into: Any = None) -> Any:
        """The tensor's bytes in private memory (``into``, or a new array),
        hashed as they are read: each chunk is digested right after its copy,
        while still in the CPU's cache, so a verified read costs about one pass
        of hashing, not a copy and then a second trip through memory."""
        # numpy's allocator asks for transparent huge pages for big arrays:
        # far fewer page faults on first touch than a bytearray.
        buf = self._empty(info.nbytes, self._header.data_offset + info.start) if into is None else into
        assert self._verifier is not None
        self.read_checked(info.name, buf, self._verifier.tensor_check(info.name, info.nbytes))
        return buf

    def _empty(self, size: int, offset: int) -> np.ndarray[Any, Any]:
        """A new buffer for the file's bytes ``[offset, offset + size)``,
        placed for direct reads where :meth:`_direct` says so."""
        if self._direct(size, offset):
            return empty_like_file(size, offset)
        return np.empty(size, dtype=np.uint8)

    def _direct(self, size: int, offset: int) -> bool:
        """Whether the file's bytes ``[offset, offset + size)`` go into memory
        at ``offset`` modulo ALIGN, to be read straight from the disk where
        they are not cached (tensorfile._io.direct): with direct reads, for
        big ranges whose offset keeps 8-byte alignment in memory."""
        return self._direct_reads is not None and size >= MIN_DIRECT and offset % 8 == 0

    def read_checked(self, name: str, out: Any, check: TensorCheck) -> None:
        """Read the whole tensor ``name`` into ``out``, feeding ``check`` its
        bytes in order as they arrive; raises unless ``check`` passes (then
        ``out`` must not be used)."""
        info = self.info(name)
        if self._remote is not None:
            # Fetched concurrently by blocks; the check is fed in order as they land.
            self._remote_read([(info, out, check)])
            return
        with memoryview(out).cast("B") as view:
            self._fill(view[: info.nbytes], self._header.data_offset + info.start, check)
        check.finish()

    def _read_whole(self, check: TensorCheck, raw_header: bytes) -> np.ndarray[Any, Any]:
        """The data section, copied into private memory through this
        descriptor, every byte hashed (after ``raw_header``, the header
        parsed) as it is copied; raises unless the whole file matches."""
        check.update(memoryview(raw_header))
        buf = self._empty(self._size - len(raw_header), len(raw_header))
        with memoryview(buf.data) as view:
            self._fill(view, len(raw_header), check)
        check.finish()
        return buf

    def _fill(self, view: memoryview, offset: int, check: TensorCheck | None) -> None:
        """Fill ``view`` from file offset ``offset`` on, feeding ``check`` (if
        any) the bytes in order. Blocks after the first start on an aligned
        file offset; a cold block is read straight from the disk whole (long
        reads keep the device busy), a cached one by ``check``'s chunks, each
        hashed right after its copy while still in the CPU's cache."""
        step = max(1, check.chunk_size) if check is not None else DIRECT_BLOCK
        direct = self._direct_reads
        block = max(step, DIRECT_BLOCK) if direct is not None else step
        a, b = 0, min(len(view), block + -offset % ALIGN)  # the first block ends aligned
        while a < len(view):
            part = view[a:b]
            if direct is not None and direct.worth_it(part, offset + a):
                self._pread(len(part), offset + a, part, direct=True)
                if check is not None:
                    check.update(part)
            else:
                for c in range(0, len(part), step):
                    chunk = part[c : c + step]
                    self._pread(len(chunk), offset + a + c, chunk)
                    if check is not None:
                        check.update(chunk)
            a, b = b, min(len(view), b + block)

    def read_into(self, name: str, start: int, out: Any) -> None:
        """Copy bytes ``[start, start + len(out))`` of a tensor's data into ``out``.

        Only those bytes are read (with ``pread``, whatever the backend), for partial
        loads such as tensor-parallel slices whose rows are strided; they are
        counted in :attr:`bytes_read`. With ``verify`` the whole tensor is read
        and checked first (its digest covers all of it).
        """
        info = self.info(name)
        view = memoryview(out).cast("B")
        n = len(view)
        if start < 0 or start + n > info.nbytes:
            raise ValueError(f"tensor {name!r}: bytes [{start}, {start + n}) outside its {info.nbytes}")
        if self._verifier is not None:
            buf, off = self._tensor_bytes(info)
            view[:] = memoryview(buf)[off + start : off + start + n]
        else:
            # A copy either way: pread makes it without touching the map, so
            # a file cut short meanwhile is an error here, never a SIGBUS.
            self._pread(n, self._header.data_offset + info.start + start, view)

    def read_pieces(self, name: str, pieces: Sequence[tuple[int, memoryview]]) -> None:
        """:meth:`read_into` of several ``(start, out)`` pieces of one tensor.
        Unverified pieces of a remote file are fetched together (concurrent
        range requests, neighbours merged), not one round trip each: a
        tensor-parallel rank's strided runs."""
        if self._remote is None or self._verifier is not None:
            for start, out in pieces:
                self.read_into(name, start, out)
            return
        info = self.info(name)
        jobs = []
        for start, out in pieces:
            if start < 0 or start + len(out) > info.nbytes:
                raise ValueError(
                    f"tensor {name!r}: bytes [{start}, {start + len(out)}) outside its {info.nbytes}"
                )
            jobs.append((self._header.data_offset + info.start + start, out, None))
        with self._lock:
            self._check_open()
        self._remote.read(jobs)
        with self._lock:
            self.bytes_read += sum(len(out) for _, out in pieces)

    def get_tensor(self, name: str) -> Any:
        """The whole tensor: a numpy array or a torch tensor, without copying in mmap mode."""
        return self._get(name)

    def _get(self, name: str, into: Any = None, sized: bool = False) -> Any:
        """:meth:`get_tensor`, verified bytes read into ``into`` if given."""
        info = self.info(name)
        buf, off = self._tensor_bytes(info, into, sized)
        return self._wrap(info, buf, off)

    def _wrap(self, info: TensorInfo, buf: Any, off: int) -> Any:
        """The tensor (of the handle's framework and device) over ``buf[off:]``."""
        if self._framework == "np":
            return self._out(numpy_view(buf, off, info.dtype, info.shape))
        t = torch_view(buf, off, info.dtype, info.shape, info.nbytes)
        return t if self._device == "cpu" else t.to(self._device)

    def _out(self, arr: np.ndarray[Any, Any]) -> Any:
        return arr if self._convert is None else from_numpy(self._convert, arr, self._device)

    def get_slice(self, name: str) -> TensorSlice:
        return TensorSlice(self, self.info(name))

    def _slice(self, info: TensorInfo, index: Any) -> Any:
        shape, asked = info.shape, index
        if self._verifier is not None:
            # A slice of unverified bytes could be tampered: verify the whole
            # tensor once (its digest covers all of it), then slice the copy.
            buf, off = self._tensor_bytes(info)
        elif not info.dtype.sub_byte and (window := row_window(index, shape)) is not None:
            # Read only the rows the index reaches, then index within them.
            lo, hi, index = window
            row = info.nbytes // shape[0]
            buf, off = self._pread((hi - lo) * row, self._header.data_offset + info.start + lo * row), 0
            shape = (hi - lo, *shape[1:])
        else:
            # Copied out either way (never through the map: see read_into).
            buf, off = self._pread(info.nbytes, self._header.data_offset + info.start), 0
        if info.dtype.sub_byte:
            arr = numpy_view(buf, off, info.dtype, info.shape)[index]
            if self._framework == "pt":
                raise FrameworkError(f"tensor {info.name!r}: slicing {info.dtype.name} into torch is not supported")
            return self._out(np.array(arr))
        carrier = carrier_view(buf, off, info.dtype, shape)
        try:
            picked = np.array(carrier[index])  # a copy of just the selected elements
        except IndexError as e:
            raise SliceIndexError(
                f"tensor {info.name!r} of shape {list(info.shape)}: index {asked!r} is out of "
                f"range ({e})"
            ) from None
        if self._framework == "np":
            return self._out(picked.view(numpy_dtype(info.dtype)))
        t = torch_from_carrier(picked, info.dtype, picked.shape)
        return t if self._device == "cpu" else t.to(self._device)

    def get_tensors(self) -> dict[str, Any]:
        """Every tensor, keyed by name (as the reference's ``get_tensors``)."""
        return self.tensors()

    def tensors(self, names: list[str] | None = None, *, threads: int | None = None) -> dict[str, Any]:
        """Every tensor (or ``names``), keyed by name, in file order.

        In pread mode reads run ``threads`` at a time (default: CPU count, at
        most 8, or twice that from a cold page cache), which keeps a network
        file system or a disk busy.
        """
        # Each name once: two reads of one tensor must not share an arena slot.
        wanted = list(self._header.tensors) if names is None else list(dict.fromkeys(names))
        if self._remote is not None and len(wanted) > 1:
            return self._remote_tensors(wanted)
        if self._mode == "pread" and len(wanted) > 1:
            slots = self._arena(wanted) if self._verifier is not None and self._whole is None else {}
            workers = threads or self._workers(wanted)
            with ThreadPoolExecutor(workers) as pool:
                values = list(pool.map(lambda n: self._get(n, slots.get(n)), wanted))
            return dict(zip(wanted, values, strict=True))
        if self._mode == "mmap" and wanted:
            # One size check for all (an fstat per tiny tensor adds up).
            last = max(self.info(n).end for n in wanted)
            if self._mapping(end=self._header.data_offset + last) is not None:
                return {n: self._get(n, sized=True) for n in wanted}
        return {n: self.get_tensor(n) for n in wanted}

    def _workers(self, names: list[str]) -> int:
        """How many reads of a whole load run at once: one per core (at most
        8), twice that where most of the bytes are not cached and will be
        read straight from the disk, as each such read leaves its core idle
        while it waits (2 GiB on 2 cores, verified, cold: 1.6-1.8 s with 4,
        1.8-2.4 s with 2). Out of the cache, more jobs than cores only fight
        over page faults (unverified, warm: 2.7-2.9 s with 4, 1.3-1.6 s with 2)."""
        cores = min(8, os.cpu_count() or 1)
        probe = self._direct_reads  # once: a close on another thread drops it
        if probe is None:
            return cores
        infos = [self.info(n) for n in names]
        lo = self._header.data_offset + min(i.start for i in infos)
        hi = self._header.data_offset + max(i.end for i in infos)
        return cores if hi <= lo or probe.mostly_cached(lo, hi - lo) else min(8, 2 * cores)

    def _remote_read(self, jobs: list[tuple[TensorInfo, Any, Any]], *, fresh: bool = False) -> None:
        """Fetch each ``(info, buffer, check or None)`` tensor of a remote file
        into its buffer, all at once (see :meth:`RemoteFile.read`)."""
        assert self._remote is not None
        with self._lock:
            self._check_open()
        base = self._header.data_offset
        self._remote.read(
            [(base + info.start, memoryview(buf).cast("B")[: info.nbytes], check)
             for info, buf, check in jobs],
            fresh=fresh,
        )
        with self._lock:
            self.bytes_read += sum(info.nbytes for info, _, _ in jobs)

    def _remote_tensors(self, wanted: list[str]) -> dict[str, Any]:
        """Every tensor of ``wanted`` from a remote file: one allocation, one
        concurrent fetch straight into it; with ``verify`` each tensor is
        checked as its bytes land, and none is returned unless all passed."""
        slots = self._arena(wanted, always=True)
        todo = [self.info(n) for n in slots]
        checks = [self._verifier.tensor_check(i.name, i.nbytes) if self._verifier else None
                  for i in todo]
        # The arena is fresh: its pages are faulted in beside the transfers.
        self._remote_read([(i, slots[i.name], c) for i, c in zip(todo, checks, strict=True)],
                          fresh=True)
        if self._verifier is None:
            return {n: self._wrap(self.info(n), slots[n], 0) for n in wanted}
        with self._lock:
            for info in todo:
                self._verified.setdefault(info.name, slots[info.name])
        return {n: self._get(n) for n in wanted}

    def _arena(self, names: list[str], *, always: bool = False) -> dict[str, Any]:
        """One allocation for the verified tensors about to be read, a slice
        for each (64-byte aligned, or placed for direct reads: :meth:`_direct`).
        Read locally, one big array gets transparent huge pages throughout, so
        first-touch page faults (and the kernel's page zeroing around them)
        drop from one per 4 KiB to one per 2 MiB: for a whole model they cost
        more than the hashing otherwise. Read remotely, its pages are faulted
        in beside the transfers, in ordinary pages (tensorfile._io.fresh).
        The memory is freed when the last of these tensors is."""
        todo = [self.info(n) for n in dict.fromkeys(names) if n not in self._verified]
        if len(todo) < 2 and not always:
            return {}
        placed = {info.name for info in todo
                  if self._direct(info.nbytes, self._header.data_offset + info.start)}
        size = sum(info.nbytes + 64 for info in todo) + ALIGN * len(placed)
        arena = fresh_buffer(size) if self._remote is not None else empty_like_file(size, 0)
        offsets, total = {}, 0
        for info in todo:
            total += -total % 64
            if info.name in placed:
                total += (self._header.data_offset + info.start - total) % ALIGN
            offsets[info.name] = total
            total += info.nbytes
        return {info.name: arena[offsets[info.name] : offsets[info.name] + info.nbytes]
                for info in todo}


def load_bytes(data: bytes | bytearray | memoryview, framework: str = "np") -> dict[str, Any]:
    """Every tensor of in-memory safetensors bytes, unverified (copies out of ``data``)."""
    fw = _norm_framework(framework)
    buf = bytearray(data)  # private, writable: the arrays own their memory
    header = hdr.parse(buf)
    out: dict[str, Any] = {}
    for info in header.tensors.values():
        off = header.data_offset + info.start
        if fw == "np":
            out[info.name] = numpy_view(buf, off, info.dtype, info.shape)
        else:
            out[info.name] = torch_view(buf, off, info.dtype, info.shape, info.nbytes)
    return out
