"""Listing and hashing the files of a model (the bottom layer of signing).

A model is one file or a folder. Every regular file in it is hashed (SHA-256,
as OMS v1.0 defaults to; BLAKE3 on request); for ``.safetensors`` files the
same pass also hashes the header bytes and each tensor's bytes, so a single
tensor can later be checked without hashing the rest of the file
(spec/SIGNING.md, "tensorfile extension"). Those part digests are BLAKE3 by
default (SHA-256 on request): see :data:`ALGORITHMS`.

Speed: one SHA-256 is sequential, so parallelism comes from hashing different
files on different threads, and, for tensor digests, different tensors of the
same file (:func:`hash_contents`); one BLAKE3 digest of a big tensor is itself
spread over every core. :mod:`hashlib` and ``blake3`` release the GIL for
large updates. Files are read with ``pread`` into a small buffer per thread
(or, for a BLAKE3 digest spread over every core, sliced from a mapping in
multi-megabyte chunks), so nothing is copied into Python objects and every
core hashes at full speed.
"""

from __future__ import annotations

import contextlib
import hashlib
import mmap
import os
import stat
import threading
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

from tensorfile._io.atomic import looks_like_temp_file
from tensorfile._io.files import hf_cache_blobs, open_regular, pread_into
from tensorfile._io.headers import read_header
from tensorfile._progress import Progress
from tensorfile._progress import ProgressCallback as ProgressCallback
from tensorfile.errors import FormatError, ModelPathError, UnsupportedAlgorithmError

#: Ignored in every model folder, as model-signing does (the signature file is added).
DEFAULT_IGNORED: tuple[str, ...] = (".git", ".gitattributes", ".github", ".gitignore")
#: Resource name of the only file of a single-file model (OMS v1.0).
SINGLE_FILE_NAME = "."
#: Bytes handed to one hash update: big enough that the GIL is rarely taken.
CHUNK_SIZE = 16 << 20
SAFETENSORS_SUFFIX = ".safetensors"



#: Digest algorithms, for file digests (the OMS ``hash_type``) and for the
#: header and tensor digests of tensorfile's extension. BLAKE3 is the default
#: for the extension: on a machine with SHA extensions it hashes about twice
#: as fast per core as SHA-256, and it is a tree hash, so one digest of a big
#: tensor runs on every core (SHA-256 of one tensor is one core's work).
#: File digests default to SHA-256, which every OMS verifier accepts
#: (model-signing verifies BLAKE3 ones too). SHA-256 stays available for
#: tensors, for policies that accept only FIPS digests.
ALGORITHMS: tuple[str, ...] = ("blake3", "sha256")
DEFAULT_TENSOR_ALGORITHM = "blake3"
DEFAULT_FILE_ALGORITHM = "sha256"
#: A BLAKE3 digest of at least this many bytes spreads over every core.
PARALLEL_DIGEST_BYTES = 64 << 20


class Hasher(Protocol):
    """What :func:`new_hasher` returns (``hashlib`` and ``blake3`` objects both fit)."""

    def update(self, data: bytes | memoryview, /) -> object: ...

    def hexdigest(self) -> str: ...


def check_algorithm(algorithm: str, what: str = "digest") -> str:
    """``algorithm`` if it is one of :data:`ALGORITHMS`, else :class:`UnsupportedAlgorithmError`."""
    if algorithm not in ALGORITHMS:
        raise UnsupportedAlgorithmError(
            f"{what} algorithm {algorithm!r} is not supported (use one of {', '.join(ALGORITHMS)})"
        )
    return algorithm


def spread(algorithm: str, size: int) -> bool:
    """Whether one digest of ``size`` bytes is computed on every core."""
    return algorithm == "blake3" and size >= PARALLEL_DIGEST_BYTES


def new_hasher(algorithm: str, size_hint: int = 0) -> Hasher:
    """A streaming hasher for one of :data:`ALGORITHMS` that will be fed
    about ``size_hint`` bytes."""
    if check_algorithm(algorithm) == "blake3":
        from blake3 import blake3  # imported on first use: most imports of tensorfile never hash

        return blake3(max_threads=blake3.AUTO if spread(algorithm, size_hint) else 1)
    return hashlib.sha256()


def digest_hex(algorithm: str, data: bytes | memoryview) -> str:
    """Lowercase hex digest of ``data`` with ``algorithm`` (see :func:`new_hasher`)."""
    h = new_hasher(algorithm, len(data))
    h.update(data)
    return h.hexdigest()


def resource_sort_key(name: str) -> tuple[str, ...]:
    """Order resources as model-signing does (``PurePosixPath`` comparison:
    by path components), so both tools compute the same root digest."""
    return tuple(name.split("/"))


@dataclass(frozen=True)
class HashOptions:
    """How a model is hashed, passed down as one object (as model-signing passes
    its hashing config): which files are listed, what is digested, with which
    algorithms, on how many threads, in what chunks."""

    #: Paths left out of a model folder (relative to it, ``/``-separated), besides the git files.
    ignore_paths: tuple[str, ...] = ()
    #: Leave out ``.git``, ``.gitattributes``, ``.github`` and ``.gitignore`` (model-signing's default).
    ignore_git_paths: bool = True
    #: Follow symlinks that stay inside the model (or into its Hugging Face cache blobs).
    allow_symlinks: bool = False

    #: Header and per-tensor digests of ``.safetensors`` files, besides the file digest.
    tensors: bool = True
    #: One of :data:`ALGORITHMS`, for header and tensor digests.
    tensor_algorithm: str = DEFAULT_TENSOR_ALGORITHM
    #: One of :data:`ALGORITHMS`, for file digests (the OMS ``hash_type``).
    file_algorithm: str = DEFAULT_FILE_ALGORITHM
    #: Threads (or processes) hashing at once; None: one per core.
    workers: int | None = None
    #: Bytes handed to one hash update.
    chunk_size: int = CHUNK_SIZE

    def __post_init__(self) -> None:
        # A list is accepted (and copied): the options stay frozen and hashable.
        object.__setattr__(self, "ignore_paths", tuple(self.ignore_paths))


#: The defaults: tensor digests with BLAKE3, file digests with SHA-256, one thread per core.
DEFAULT_HASH_OPTIONS = HashOptions()


@dataclass(frozen=True)
class ModelFile:
    """One file to hash: its resource name and where its bytes are."""

    #: Path relative to the model folder with ``/``; ``"."`` for a single-file model.
    name: str
    #: Where to read it (the target, for an allowed symlink).
    path: Path
    size: int


@dataclass(frozen=True)
class SafetensorsDigests:
    """Digests of the parts of one safetensors file."""

    #: Digest of bytes ``[0, 8 + N)``: the length prefix and the JSON header.
    header: str
    #: Tensor name to the digest of its bytes, in file order.
    tensors: Mapping[str, str]
    #: One of :data:`ALGORITHMS`, for the header and every tensor.
    algorithm: str = DEFAULT_TENSOR_ALGORITHM


@dataclass(frozen=True)
class FileDigest:
    """The digest of one model file (and of its tensors, for safetensors)."""

    name: str
    #: Hex digest of the whole file, with ``algorithm``.
    digest: str
    size: int | None = None
    safetensors: SafetensorsDigests | None = None
    #: One of :data:`ALGORITHMS` (a resource's ``algorithm`` in OMS).
    algorithm: str = DEFAULT_FILE_ALGORITHM


def _is_ignored(rel: str, ignored: Iterable[str]) -> bool:
    return any(rel == p or rel.startswith(p + "/") for p in ignored)


def _check_name(name: str, where: Path) -> None:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise ModelPathError(f"{where}: file name is not valid UTF-8") from None


def _inside(target: str, root: str) -> bool:
    return target == root or target.startswith(root.rstrip(os.sep) + os.sep)


def _symlink_target(link: Path, real_root: str, blobs: str | None) -> str:
    """Where an allowed symlink in the model leads: a regular file inside the
    model folder or, in a Hugging Face cache snapshot, a blob of the same
    cache repository. Anything else raises :class:`ModelPathError`."""
    target = os.path.realpath(link)
    in_blobs = blobs is not None and os.path.dirname(target) == blobs
    if not (_inside(target, real_root) or in_blobs):
        where = (f"the model folder or {blobs}" if blobs is not None
                 else "the model folder (or, in a Hugging Face cache snapshot, its blobs/ folder)")
        raise ModelPathError(f"{link}: symlink points outside {where}: {target}")
    try:
        tst = os.stat(target)
    except OSError as e:
        raise ModelPathError(f"{link}: broken symlink: {e.strerror}") from None
    if not stat.S_ISREG(tst.st_mode):
        raise ModelPathError(
            f"{link}: symlink target is not a regular file (folders are not followed)"
        )
    return target


def list_model_files(
    path: str | os.PathLike[str],
    *,
    ignore_paths: Iterable[str] = DEFAULT_IGNORED,
    allow_symlinks: bool = False,
) -> list[ModelFile]:
    """Every file of the model at ``path``, in resource order.

    ``ignore_paths`` are relative to the model folder (``/``-separated); a path
    is skipped with everything under it. Symlinks raise :class:`ModelPathError`
    unless ``allow_symlinks``; even then a symlink must point to a regular file
    inside the model folder or, for a snapshot of a Hugging Face cache, to a
    file in the ``blobs/`` folder of the same cache repository (symlinked
    folders are never followed). As model-signing does, a symlink is listed
    under its own name with its target's bytes. Sockets, FIFOs and devices
    always raise.
    """
    root = Path(path)
    try:
        st = os.lstat(root)
    except OSError as e:
        raise ModelPathError(f"{root}: cannot read model: {e.strerror}") from None
    if stat.S_ISLNK(st.st_mode):
        if not allow_symlinks:
            raise ModelPathError(f"{root}: is a symlink (pass allow_symlinks to follow it)")
        blobs = hf_cache_blobs(root.parent)
        if blobs is not None:  # a file of a cache snapshot: only into that repository's blobs
            _symlink_target(root, os.path.realpath(root.parent), blobs)
        st = os.stat(root)
        root = Path(os.path.realpath(root))
    if stat.S_ISREG(st.st_mode):
        return [ModelFile(SINGLE_FILE_NAME, root, st.st_size)]
    if not stat.S_ISDIR(st.st_mode):
        raise ModelPathError(f"{root}: not a regular file or folder")

    ignored = [p.strip("/") for p in ignore_paths]
    real_root = os.path.realpath(root)
    blobs = hf_cache_blobs(root) if allow_symlinks else None
    files: list[ModelFile] = []
    stack: list[tuple[Path, str]] = [(root, "")]
    while stack:
        folder, prefix = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError as e:
            raise ModelPathError(f"{folder}: cannot list folder: {e.strerror}") from None
        for entry in entries:
            rel = prefix + entry.name
            full = folder / entry.name
            _check_name(entry.name, full)
            if _is_ignored(rel, ignored) or looks_like_temp_file(entry.name):
                continue  # a temporary file is a write in progress or a dead one's leftover
            if entry.is_symlink():
                if not allow_symlinks:
                    raise ModelPathError(
                        f"{full}: is a symlink (pass allow_symlinks to hash its target)"
                    )
                target = _symlink_target(full, real_root, blobs)
                files.append(ModelFile(rel, Path(target), os.stat(target).st_size))
            elif entry.is_dir(follow_symlinks=False):
                stack.append((full, rel + "/"))
            elif entry.is_file(follow_symlinks=False):
                files.append(
                    ModelFile(rel, full, entry.stat(follow_symlinks=False).st_size)
                )
            else:
                raise ModelPathError(f"{full}: not a regular file (socket, FIFO or device)")
    files.sort(key=lambda f: resource_sort_key(f.name))
    return files


def _safetensors_layout(fd: int, size: int, where: Path) -> tuple[list[str], list[tuple[int, int]]]:
    """Tensor names in file order, and the absolute byte ranges of the header
    followed by each tensor's bytes (together they cover the whole file)."""
    try:
        hdr, _ = read_header(fd, size)
    except FormatError as e:
        raise type(e)(f"{where}: {e}") from None
    base = hdr.data_offset
    spans = [(0, base)] + [(base + t.start, base + t.end) for t in hdr.tensors.values()]
    return list(hdr.tensors), spans


def _open_regular(file: ModelFile) -> tuple[int, int]:
    """An fd on ``file`` and its size: nothing but a regular file, and no symlink
    (listed paths are never symlinks, allowed ones being listed as their
    resolved target, so a symlink found at open time was swapped in)."""
    try:
        return open_regular(file.path, follow_symlinks=False)
    except OSError as e:
        raise ModelPathError(f"{file.path}: cannot open: {e.strerror}") from None


def _layout(file: ModelFile) -> tuple[list[str], list[tuple[int, int]], int]:
    """:func:`_safetensors_layout` of ``file``, and its size."""
    fd, size = _open_regular(file)
    try:
        return (*_safetensors_layout(fd, size, file.path), size)
    finally:
        os.close(fd)


def _hash_spans(
    file: ModelFile,
    size: int,
    *,
    whole: bool,
    spans: Sequence[tuple[int, int]],
    chunk_size: int,
    progress: Callable[[int], None] | None,
    algorithm: str,
    file_algorithm: str,
) -> tuple[str | None, list[str]]:
    """One pass over ``file``: its digest with ``file_algorithm`` (if
    ``whole``) and each span's digest with ``algorithm``.

    ``size`` is what the file measured when it was listed or its spans were
    planned; a file that has another size now, or changes size while hashed,
    is an error.
    """
    fd, now = _open_regular(file)
    try:
        if now != size:
            raise ModelPathError(f"{file.path}: file changed size while it was hashed")
        return hash_open_file(
            fd, size, file.path, whole=whole, spans=spans, chunk_size=chunk_size,
            progress=progress, algorithm=algorithm, file_algorithm=file_algorithm,
        )
    finally:
        os.close(fd)


def hash_open_file(
    fd: int,
    size: int,
    where: Path,
    *,
    whole: bool,
    spans: Sequence[tuple[int, int]],
    chunk_size: int = CHUNK_SIZE,
    progress: Callable[[int], None] | None = None,
    algorithm: str = DEFAULT_TENSOR_ALGORITHM,
    file_algorithm: str = DEFAULT_FILE_ALGORITHM,
    mapped: bool = True,
) -> tuple[str | None, list[str]]:
    """:func:`_hash_spans` over a descriptor the caller holds (a reader's own,
    so the bytes hashed are the bytes it reads). ``mapped=False`` reads with
    ``pread`` only: a file truncated meanwhile is then an error, never a SIGBUS."""
    hashers = [new_hasher(algorithm, e - s) for s, e in spans]
    file_hasher = new_hasher(file_algorithm, size) if whole else None
    lo, hi = (0, size) if whole or not spans else (spans[0][0], spans[-1][1])
    if hi > lo:
        big = any(spread(algorithm, e - s) for s, e in spans) or (
            whole and spread(file_algorithm, size)
        )
        if big and mapped:
            # A hasher that spreads each update over every core wants big
            # updates from memory it need not copy first: the mapping.
            with _mapped_chunks(fd, where, size, lo, hi, chunk_size) as chunks:
                _feed(chunks, file_hasher, spans, hashers, progress)
        else:
            step = chunk_size if big else min(chunk_size, READ_SIZE)
            _feed(_read_chunks(fd, where, lo, hi, step), file_hasher, spans, hashers, progress)
    if os.fstat(fd).st_size != size:
        raise ModelPathError(f"{where}: file changed size while it was hashed")
    return (file_hasher.hexdigest() if file_hasher else None), [h.hexdigest() for h in hashers]


#: Bytes one ``pread`` brings in for a single-threaded hasher: small enough to
#: stay in a core's L2 cache between the copy and the hash, which beats
#: hashing straight from a mapping (page faults, 4 KiB-page TLB misses) by
#: 5-10% for BLAKE3 and breaks even for SHA-256.
READ_SIZE = 1 << 20
_buffers = threading.local()


def _read_chunks(fd: int, where: Path, lo: int, hi: int, size: int) -> Iterator[tuple[int, memoryview]]:
    """``(offset, bytes)`` for ``[lo, hi)`` of ``fd``, read with ``pread`` into
    one buffer per thread (each chunk is overwritten by the next). A short
    read means the file shrank while hashed."""
    buf: bytearray | None = getattr(_buffers, "buf", None)
    if buf is None or len(buf) < size:
        buf = _buffers.buf = bytearray(size)
    view = memoryview(buf)
    try:
        for a in range(lo, hi, size):
            want = min(size, hi - a)
            got = pread_into(fd, view[:want], a)
            if got != want:
                raise ModelPathError(f"{where}: file changed size while it was hashed")
            yield a, view[:want]
    finally:
        view.release()


@contextlib.contextmanager
def _mapped_chunks(
    fd: int, where: Path, size: int, lo: int, hi: int, chunk: int
) -> Iterator[Iterator[tuple[int, memoryview]]]:
    """``(offset, bytes)`` for ``[lo, hi)`` of ``fd``, sliced from a read-only mapping."""
    mm = mmap.mmap(fd, size, access=mmap.ACCESS_READ)
    view = memoryview(mm)

    def chunks() -> Generator[tuple[int, memoryview], None, None]:
        for a in range(lo, hi, chunk):
            b = min(a + chunk, hi)
            # A mapped page past the end of the file raises SIGBUS, which
            # kills the process: a file cut short while hashed is an error
            # at the next chunk. (A cut racing this check can still fault:
            # the window is one chunk, not the whole file.)
            if os.fstat(fd).st_size < b:
                raise ModelPathError(f"{where}: file changed size while it was hashed")
            # Released as soon as the consumer is done with it (or fails).
            piece = view[a:b]
            try:
                yield a, piece
            finally:
                piece.release()
            if hasattr(mmap, "MADV_DONTNEED"):
                # Drop the hashed pages from this process (they stay in the
                # page cache): resident memory stays one chunk, whatever the
                # file size. madvise wants a page-aligned start; a page shared
                # with the next chunk is simply read again from the cache.
                start = a - a % mmap.PAGESIZE
                with contextlib.suppress(OSError):
                    mm.madvise(mmap.MADV_DONTNEED, start, b - start)

    gen = chunks()
    try:
        yield gen
    except BaseException:
        # A chunk may still be held by the traceback (a progress callback
        # that raised to cancel): closing the map now would raise
        # BufferError over the caller's own exception. The map is closed
        # when its last view goes.
        with contextlib.suppress(BufferError):
            gen.close()
            view.release()
            mm.close()
        raise
    gen.close()
    view.release()
    mm.close()


def is_safetensors(file: ModelFile) -> bool:
    """Whether tensor digests are recorded for this file (by its name, as signed)."""
    return file.path.name.endswith(SAFETENSORS_SUFFIX) or file.name.endswith(SAFETENSORS_SUFFIX)


def hash_file(
    file: ModelFile,
    options: HashOptions = DEFAULT_HASH_OPTIONS,
    progress: Callable[[int], None] | None = None,
) -> FileDigest:
    """Hash one file in a single pass over its bytes.

    For a ``.safetensors`` file (when ``tensors``), each chunk is fed to the
    file hasher (``file_algorithm``) and, sliced, to the hasher
    (``tensor_algorithm``) of the header or tensor it belongs to: the bytes are
    read once. The file must keep its size while hashed.
    """
    names: list[str] = []
    spans: list[tuple[int, int]] = []
    size = file.size
    if options.tensors and is_safetensors(file):
        names, spans, size = _layout(file)
    digest, parts = _hash_spans(
        file, size, whole=True, spans=spans, chunk_size=options.chunk_size, progress=progress,
        algorithm=options.tensor_algorithm, file_algorithm=options.file_algorithm,
    )
    assert digest is not None
    return FileDigest(
        file.name, digest, size,
        _parts(names, parts, options.tensor_algorithm) if spans else None, options.file_algorithm,
    )


def _parts(names: Sequence[str], digests: Sequence[str], algorithm: str) -> SafetensorsDigests:
    """Header digest first, then one per tensor, as :func:`_safetensors_layout` orders them."""
    return SafetensorsDigests(
        header=digests[0], tensors=dict(zip(names, digests[1:], strict=True)), algorithm=algorithm
    )


def _feed(
    chunks: Iterable[tuple[int, memoryview]],
    whole: Hasher | None,
    spans: Sequence[tuple[int, int]],
    hashers: Sequence[Hasher],
    progress: Callable[[int], None] | None,
) -> None:
    """Feed each ``(offset, bytes)`` chunk, in file order, to ``whole`` and,
    sliced, to the hasher of each span (sorted, disjoint) that it overlaps."""
    i = 0  # first span that may still overlap the current chunk
    for a, chunk in chunks:
        b = a + len(chunk)
        if whole is not None:
            whole.update(chunk)
        while i < len(spans) and spans[i][1] <= a:
            i += 1
        j = i
        while j < len(spans) and spans[j][0] < b:
            s, e = spans[j]
            lo_, hi_ = max(s, a), min(e, b)
            if lo_ < hi_:
                hashers[j].update(chunk[lo_ - a : hi_ - a])
            j += 1
        if progress is not None:
            progress(b - a)


@dataclass(frozen=True)
class Contents:
    """What :func:`hash_contents` computed for one file."""

    #: Digest of the whole file, if asked for.
    digest: str | None
    #: Header and tensor digests, if asked for (safetensors files only).
    safetensors: SafetensorsDigests | None
    size: int


#: Tensor digests are computed in jobs of consecutive tensors of about this
#: many bytes, so that one file's tensors spread over every thread.
PART_JOB_BYTES = 4 * CHUNK_SIZE


def hash_contents(
    files: Sequence[ModelFile],
    *,
    whole: Sequence[bool],
    tensors: Sequence[bool],
    options: HashOptions = DEFAULT_HASH_OPTIONS,
    progress: ProgressCallback | None = None,
) -> list[Contents]:
    """Hash ``files`` on ``options.workers`` threads (default: one per core).

    For each file, compute its digest (``options.file_algorithm``) if
    ``whole[i]``, and its header and tensor digests
    (``options.tensor_algorithm``) if ``tensors[i]`` (only for safetensors
    files; ``options.tensors`` is not consulted). One SHA-256 is sequential, so:

    * a file digest is one job, and the jobs of different files run on
      different threads, largest first so they finish together;
    * tensor digests alone are independent of each other, so they are split
      into jobs of consecutive tensors (about ``PART_JOB_BYTES`` each) that
      spread even a single file over every thread;
    * a file needing both is one pass (bytes read once) when there are more
      files than threads, and two jobs otherwise.

    The result is in the order of ``files``. The first error cancels the rest
    and is raised.
    """
    tensor_algorithm = check_algorithm(options.tensor_algorithm, "tensor digest")
    file_algorithm = check_algorithm(options.file_algorithm, "file digest")
    if not files:
        return []
    n = max(1, options.workers or os.cpu_count() or 1)
    layouts: dict[int, tuple[list[str], list[tuple[int, int]]]] = {}
    sizes: dict[int, int] = {}
    # (file index, file digest?, first span, end span): spans index layouts[i].
    jobs: list[tuple[int, bool, int, int]] = []
    for i, f in enumerate(files):
        with_tensors = tensors[i] and is_safetensors(f)
        if with_tensors:
            names, spans, sizes[i] = _layout(f)
            layouts[i] = (names, spans)
        else:
            sizes[i] = f.size  # as listed; the job checks it when it opens the file
            spans = []
        if not with_tensors:
            jobs.append((i, True, 0, 0))
        elif whole[i] and len(files) >= n:
            jobs.append((i, True, 0, len(spans)))
        else:
            if whole[i]:
                jobs.append((i, True, 0, 0))
            jobs += _batches(i, spans, PART_JOB_BYTES)

    def job_bytes(job: tuple[int, bool, int, int]) -> int:
        i, w, a, b = job
        return sizes[i] if w else sum(e - s for s, e in layouts[i][1][a:b])

    jobs.sort(key=lambda j: -job_bytes(j))
    counter = Progress(sum(map(job_bytes, jobs)), progress)
    add = counter.add if progress is not None else None

    def run(job: tuple[int, bool, int, int]) -> tuple[str | None, list[str]]:
        i, w, a, b = job
        spans = layouts[i][1][a:b] if i in layouts else []
        return _hash_spans(files[i], sizes[i], whole=w, spans=spans, chunk_size=options.chunk_size,
                           progress=add, algorithm=tensor_algorithm, file_algorithm=file_algorithm)

    results = _run_jobs(run, jobs, n)
    digest: dict[int, str] = {}
    parts: dict[int, list[str | None]] = {i: [None] * len(lay[1]) for i, lay in layouts.items()}
    for (i, _, a, b), (d, part_digests) in zip(jobs, results, strict=True):
        if d is not None:
            digest[i] = d
        if b > a:
            parts[i][a:b] = part_digests
    out = []
    for i in range(len(files)):
        st_digests = None
        if i in layouts:
            got = parts[i]
            assert all(x is not None for x in got)
            st_digests = _parts(layouts[i][0], [x for x in got if x is not None], tensor_algorithm)
        out.append(Contents(digest.get(i), st_digests, sizes[i]))
    return out


def _batches(i: int, spans: Sequence[tuple[int, int]], target: int) -> list[tuple[int, bool, int, int]]:
    """Jobs over consecutive spans of file ``i``, each about ``target`` bytes or one span."""
    jobs = []
    a = acc = 0
    for k, (s, e) in enumerate(spans):
        acc += e - s
        if acc >= target:
            jobs.append((i, False, a, k + 1))
            a, acc = k + 1, 0
    if a < len(spans):
        jobs.append((i, False, a, len(spans)))
    return jobs


_T = TypeVar("_T")
_J = TypeVar("_J")


def _run_jobs(run: Callable[[_J], _T], jobs: Sequence[_J], workers: int) -> list[_T]:
    """``[run(j) for j in jobs]`` on up to ``workers`` threads; the first error
    cancels the jobs not yet started and is raised."""
    n = min(workers, len(jobs))
    if n <= 1:
        return [run(j) for j in jobs]
    with ThreadPoolExecutor(max_workers=n, thread_name_prefix="tensorfile-hash") as pool:
        futures = [pool.submit(run, j) for j in jobs]
        finished, _ = wait(futures, return_when=FIRST_EXCEPTION)
        for fut in finished:
            err = fut.exception()
            if err is not None:
                for other in futures:
                    other.cancel()
                raise err
        return [fut.result() for fut in futures]


def hash_files(
    files: Sequence[ModelFile],
    options: HashOptions = DEFAULT_HASH_OPTIONS,
    progress: ProgressCallback | None = None,
) -> list[FileDigest]:
    """The digest of each of ``files`` and, if ``options.tensors``, the header
    and tensor digests of each safetensors file (:func:`hash_contents`)."""
    got = hash_contents(
        files, whole=[True] * len(files), tensors=[options.tensors] * len(files),
        options=options, progress=progress,
    )
    out = []
    for f, c in zip(files, got, strict=True):
        assert c.digest is not None
        out.append(FileDigest(f.name, c.digest, c.size, c.safetensors, options.file_algorithm))
    return out
