"""Reads around the page cache (tensorfile._io.direct): the same bytes as a
buffered read, whatever the alignment, the cache's state or the refusals;
cold ranges really read directly (they stay out of the cache)."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tensorfile._io.direct as direct
from tensorfile import safe_open, save_file
from tensorfile._io.direct import ALIGN, MIN_DIRECT, DirectReads, empty_like_file
from tensorfile._io.files import pread_exact
from tensorfile.errors import FileReadError, TruncatedFileError

SIZE = 3 * MIN_DIRECT + 12_345
Evict = Callable[[str | os.PathLike[str]], None]


Data = tuple[Path, bytes, int, DirectReads]


@pytest.fixture
def data_file(tmp_path: Path) -> Iterator[Data]:
    """A file of random bytes, a descriptor on it and its direct reads
    (skipped where this file system has none)."""
    path = tmp_path / "data.bin"
    data = np.random.default_rng(7).integers(0, 256, SIZE, dtype=np.uint8).tobytes()
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    direct_reads = DirectReads.open(fd, SIZE)
    if direct_reads is None:
        os.close(fd)
        pytest.skip("no O_DIRECT here (not Linux, or the file system refuses it)")
    yield path, data, fd, direct_reads
    direct_reads.close()
    os.close(fd)


def test_reads_the_open_file_not_the_path(data_file: Data, evict: Evict) -> None:
    """Direct reads read the file the caller opened, even after another
    file took its name (the twin is reopened through the descriptor).
    ``evict`` only skips where there is no posix_fadvise: the file is
    evicted through the descriptor, as its path now names another."""
    path, data, fd, _ = data_file
    other = path.with_name("other")
    other.write_bytes(bytes(SIZE))
    os.replace(other, path)
    os.fsync(fd)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    direct_reads = DirectReads.open(fd, SIZE)
    assert direct_reads is not None
    try:
        buf = empty_like_file(SIZE, 0)
        assert direct_reads.worth_it(memoryview(buf), 0)
        direct_reads.read(memoryview(buf), 0)
        assert buf.tobytes() == data
    finally:
        direct_reads.close()


def test_cold_range_is_read_directly(data_file: Data, evict: Evict) -> None:
    """A cold range is worth reading directly and comes straight from the
    disk: right bytes, and the page cache still cold afterwards. A buffered
    read of it fills the cache (so the check can fail), and then it is no
    longer worth it."""
    path, data, fd, direct_reads = data_file
    evict(path)
    offset = 100
    buf = empty_like_file(SIZE - offset, offset)
    assert direct_reads.worth_it(memoryview(buf), offset)
    direct_reads.read(memoryview(buf), offset)
    assert buf.tobytes() == data[offset:]
    assert not direct_reads.mostly_cached(ALIGN, SIZE - 2 * ALIGN)
    pread_exact(fd, len(buf), offset, memoryview(buf))
    assert direct_reads.mostly_cached(ALIGN, SIZE - 2 * ALIGN)
    assert not direct_reads.worth_it(memoryview(buf), offset)


def test_not_worth_it_unplaced_or_short(data_file: Data, evict: Evict) -> None:
    """A buffer not placed as the file (O_DIRECT would refuse it), or a
    range too short to pay: read buffered, even cold."""
    path, _, _, direct_reads = data_file
    evict(path)
    placed = empty_like_file(SIZE, 0)
    assert direct_reads.worth_it(memoryview(placed), 0)
    assert not direct_reads.worth_it(memoryview(placed)[1:], 0)
    assert not direct_reads.worth_it(memoryview(placed)[: MIN_DIRECT - 1], 0)
    assert direct_reads.mostly_cached(SIZE + ALIGN, 10)  # past the map: cannot tell


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    offset=st.integers(0, 3 * ALIGN),
    size=st.integers(0, SIZE - 3 * ALIGN),
    placed=st.booleans(),
    cold=st.booleans(),
)
def test_same_bytes_as_the_file(
    data_file: Data, evict: Evict, offset: int, size: int, placed: bool, cold: bool
) -> None:
    """Any range, cold or warm, in a buffer placed for direct reads or not
    (then the twin refuses, and the rest is read buffered)."""
    path, data, _, direct_reads = data_file
    if cold:
        evict(path)
    buf = empty_like_file(size, offset) if placed else empty_like_file(size + 1, offset)[1:]
    direct_reads.read(memoryview(buf), offset)
    assert buf.tobytes() == data[offset : offset + size]


def test_refused_direct_reads_fall_back(
    data_file: Data, evict: Evict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file system that refuses the direct read (EINVAL) mid-range: the
    rest is read buffered, the bytes are the same."""
    path, data, _, direct_reads = data_file
    evict(path)
    real = direct.pread_into
    calls = {"twin": 0}

    def refusing(f: int, view: Any, offset: int) -> int:
        if f == direct_reads._twin:
            calls["twin"] += 1
            raise OSError(errno.EINVAL, "simulated refusal")
        return real(f, view, offset)

    monkeypatch.setattr(direct, "pread_into", refusing)
    buf = empty_like_file(SIZE, 0)
    direct_reads.read(memoryview(buf), 0)
    assert calls["twin"] == 1
    assert buf.tobytes() == data


def test_cut_short_after_open_is_a_typed_error(data_file: Data, evict: Evict) -> None:
    """The file truncated mid-range after it was opened: TruncatedFileError,
    whether the direct read or the buffered tail meets the end."""
    path, _, _, direct_reads = data_file
    evict(path)
    os.truncate(path, 2 * MIN_DIRECT + 100)
    buf = empty_like_file(SIZE, 0)
    with pytest.raises(TruncatedFileError, match="file ended at byte"):
        direct_reads.read(memoryview(buf), 0)


def test_none_for_what_cannot_be_read_directly(tmp_path: Path) -> None:
    """A pipe, or an empty file: no direct reads (the reader reads buffered)."""
    r, w = os.pipe()
    try:
        assert DirectReads.open(r, 2 * MIN_DIRECT) is None
    finally:
        os.close(r)
        os.close(w)
    (tmp_path / "empty").write_bytes(b"")
    fd = os.open(tmp_path / "empty", os.O_RDONLY)
    try:
        assert DirectReads.open(fd, 0) is None
    finally:
        os.close(fd)


# ------------------------------------------------------------------ through the reader


@pytest.fixture
def model(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray[Any, Any]]]:
    """Big tensors at 8-byte, odd and page-straddling offsets, and small ones."""
    rng = np.random.default_rng(11)
    tensors = {
        "a": rng.standard_normal(MIN_DIRECT // 2, dtype=np.float32),
        "odd": rng.integers(0, 255, 5, dtype=np.uint8),
        "b": rng.integers(0, 255, 3 * MIN_DIRECT + 3, dtype=np.uint8),
        "c": rng.standard_normal(MIN_DIRECT // 4 + 1).astype(np.float16),
        "d": rng.standard_normal(5 * MIN_DIRECT // 8, dtype=np.float64),
    }
    path = tmp_path / "m.safetensors"
    save_file(tensors, path)
    return path, tensors


@pytest.mark.parametrize("framework", ["np", "pt"])
def test_cold_pread_backend_load_reads_directly(
    model: tuple[Path, dict[str, np.ndarray[Any, Any]]], evict: Evict, framework: str
) -> None:
    """backend="pread" from a cold cache: the values of the file, and the
    big 8-byte-aligned tensors never went through the page cache."""
    if framework == "pt":
        pytest.importorskip("torch")
    path, tensors = model
    with safe_open(path, "np") as f:
        spans = {n: (f.header.data_offset + f.info(n).start, f.info(n).nbytes) for n in tensors}
    evict(path)
    with safe_open(path, framework, backend="pread") as f:
        probe = f._direct_reads
        if probe is None:
            pytest.skip("no O_DIRECT here")
        got = f.tensors()
        for name in ("a", "d"):
            start, n = spans[name]
            assert start % 8 == 0
            assert not probe.mostly_cached(start + ALIGN, n - 2 * ALIGN), name
    for name, value in tensors.items():
        np.testing.assert_array_equal(np.asarray(got[name]), value)


def test_cold_file_cut_short_is_a_typed_error(
    model: tuple[Path, dict[str, np.ndarray[Any, Any]]], evict: Evict
) -> None:
    """A cold file truncated after it was opened, read with pread: the
    reader's TruncatedFileError naming the file, never short data."""
    path, _ = model
    evict(path)
    with safe_open(path, "np", backend="pread") as f:
        os.truncate(path, f.header.data_offset + f.info("b").start + MIN_DIRECT + 7)
        with pytest.raises(TruncatedFileError, match="cut short after it was opened"):
            f.tensors()


def test_cold_read_error_is_a_file_read_error(
    model: tuple[Path, dict[str, np.ndarray[Any, Any]]], evict: Evict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EIO from a direct read is tried again buffered (the right values when
    that works); EIO there too is the reader's FileReadError naming the file,
    as for any buffered read."""
    import tensorfile._io.files as files

    path, tensors = model
    evict(path)
    real = files.pread_into
    with safe_open(path, "np", backend="pread") as f:
        if f._direct_reads is None:
            pytest.skip("no O_DIRECT here")
        twin = f._direct_reads._twin
        tried: list[int] = []

        def failing(fd: int, view: Any, offset: int) -> int:
            tried.append(fd)
            if fd == twin or buffered_fails:
                raise OSError(errno.EIO, "Input/output error")
            return real(fd, view, offset)

        monkeypatch.setattr(direct, "pread_into", failing)
        monkeypatch.setattr(files, "pread_into", failing)
        buffered_fails = False
        np.testing.assert_array_equal(f.get_tensor("d"), tensors["d"])
        assert twin in tried
        buffered_fails = True
        with pytest.raises(FileReadError, match=r"m\.safetensors.*Input/output error"):
            f.get_tensor("a")
