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
from tensorfile._io.direct import (
    ALIGN,
    MIN_DIRECT,
    empty_like_file,
    mostly_cached,
    open_twin,
    read_directly,
    worth_reading_directly,
)
from tensorfile._io.files import pread_exact
from tensorfile.errors import TruncatedFileError

SIZE = 3 * MIN_DIRECT + 12_345
Evict = Callable[[str | os.PathLike[str]], None]


@pytest.fixture
def data_file(tmp_path: Path) -> Iterator[tuple[Path, bytes, int, int]]:
    """A file of random bytes, a descriptor on it and its O_DIRECT twin
    (skipped where this file system has none)."""
    path = tmp_path / "data.bin"
    data = np.random.default_rng(7).integers(0, 256, SIZE, dtype=np.uint8).tobytes()
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    twin = open_twin(fd)
    if twin is None:
        os.close(fd)
        pytest.skip("no O_DIRECT here (not Linux, or the file system refuses it)")
    yield path, data, fd, twin
    os.close(fd)
    os.close(twin)


def test_twin_is_the_open_file_not_the_path(data_file: tuple[Path, bytes, int, int]) -> None:
    """The twin reads the file the caller opened, even after another file
    took its name."""
    path, data, fd, _ = data_file
    other = path.with_name("other")
    other.write_bytes(b"\0" * SIZE)
    os.replace(other, path)
    twin = open_twin(fd)
    assert twin is not None
    buf = empty_like_file(ALIGN, 0)
    try:
        assert direct.pread_into(twin, memoryview(buf), 0) == ALIGN
        assert buf.tobytes() == data[:ALIGN]
    finally:
        os.close(twin)


def test_cold_range_is_read_directly(data_file: tuple[Path, bytes, int, int], evict: Evict) -> None:
    """A cold range is worth reading directly and comes straight from the
    disk: right bytes, and the page cache still cold afterwards. A buffered
    read of it fills the cache (so the check can fail), and then it is no
    longer worth it."""
    path, data, fd, twin = data_file
    evict(path)
    offset = 100
    buf = empty_like_file(SIZE - offset, offset)
    assert worth_reading_directly(fd, memoryview(buf), offset)
    read_directly(fd, twin, memoryview(buf), offset)
    assert buf.tobytes() == data[offset:]
    assert not mostly_cached(fd, ALIGN, SIZE - 2 * ALIGN)
    pread_exact(fd, len(buf), offset, memoryview(buf))
    assert mostly_cached(fd, ALIGN, SIZE - 2 * ALIGN)
    assert not worth_reading_directly(fd, memoryview(buf), offset)


def test_not_worth_it_unplaced_or_short(data_file: tuple[Path, bytes, int, int], evict: Evict) -> None:
    """A buffer not placed as the file (O_DIRECT would refuse it), or a
    range too short to pay: read buffered, even cold."""
    path, _, fd, _ = data_file
    evict(path)
    placed = empty_like_file(SIZE, 0)
    assert worth_reading_directly(fd, memoryview(placed), 0)
    assert not worth_reading_directly(fd, memoryview(placed)[1:], 0)
    assert not worth_reading_directly(fd, memoryview(placed)[: MIN_DIRECT - 1], 0)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    offset=st.integers(0, 3 * ALIGN),
    size=st.integers(0, SIZE - 3 * ALIGN),
    placed=st.booleans(),
    cold=st.booleans(),
)
def test_same_bytes_as_the_file(
    data_file: tuple[Path, bytes, int, int], evict: Evict,
    offset: int, size: int, placed: bool, cold: bool,
) -> None:
    """Any range, cold or warm, in a buffer placed for direct reads or not
    (then the twin refuses, and the rest is read buffered)."""
    path, data, fd, twin = data_file
    if cold:
        evict(path)
    buf = empty_like_file(size, offset) if placed else empty_like_file(size + 1, offset)[1:]
    read_directly(fd, twin, memoryview(buf), offset)
    assert buf.tobytes() == data[offset : offset + size]


def test_refused_direct_reads_fall_back(
    data_file: tuple[Path, bytes, int, int], evict: Evict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file system that refuses the direct read (EINVAL) mid-range: the
    rest is read buffered, the bytes are the same."""
    path, data, fd, twin = data_file
    evict(path)
    real = direct.pread_into
    calls = {"twin": 0}

    def refusing(f: int, view: Any, offset: int) -> int:
        if f == twin:
            calls["twin"] += 1
            raise OSError(errno.EINVAL, "simulated refusal")
        return real(f, view, offset)

    monkeypatch.setattr(direct, "pread_into", refusing)
    buf = empty_like_file(SIZE, 0)
    read_directly(fd, twin, memoryview(buf), 0)
    assert calls["twin"] == 1
    assert buf.tobytes() == data


def test_cut_short_after_open_is_a_typed_error(
    data_file: tuple[Path, bytes, int, int], evict: Evict
) -> None:
    """The file truncated mid-range after it was opened: TruncatedFileError,
    whether the direct read or the buffered tail meets the end."""
    path, _, fd, twin = data_file
    evict(path)
    os.truncate(path, 2 * MIN_DIRECT + 100)
    buf = empty_like_file(SIZE, 0)
    with pytest.raises(TruncatedFileError, match="file ended at byte"):
        read_directly(fd, twin, memoryview(buf), 0)


def test_unmappable_descriptor_counts_as_cached() -> None:
    """Where the cache cannot be asked (a pipe), the answer is 'read buffered'."""
    r, w = os.pipe()
    try:
        assert mostly_cached(r, 0, 2 * MIN_DIRECT)
    finally:
        os.close(r)
        os.close(w)
