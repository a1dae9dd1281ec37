"""Image.prefetch: scattered reads a parser knows it will make, asked for at once.

A remote source answers ``read_many`` with concurrent range requests, so a
zip's local headers (one per entry) cost a few rounds of requests rather than
one round trip each. These tests count the calls a source gets.
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from pathlib import Path

import pytest

from tensorfile._io.sources import PAGE, FileSource, Image
from tensorfile.scan.pickle._zip import zip_entries


class CountingSource(FileSource):
    """A local file that records every read it is asked for."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.singles: list[tuple[int, int]] = []
        self.batches: list[list[tuple[int, int]]] = []

    def read_into(self, offset: int, view: memoryview) -> None:
        self.singles.append((offset, len(view)))
        super().read_into(offset, view)

    def read_many(self, jobs: Sequence[tuple[int, memoryview]]) -> None:
        self.batches.append([(o, len(v)) for o, v in jobs])
        for offset, view in jobs:
            FileSource.read_into(self, offset, view)


@pytest.fixture
def data(tmp_path: Path) -> tuple[Path, bytes]:
    raw = bytes(range(256)) * (40 * PAGE // 256) + b"tail"
    path = tmp_path / "data.bin"
    path.write_bytes(raw)
    return path, raw


def test_prefetch_reads_each_missing_run_once_in_one_batch(data: tuple[Path, bytes]) -> None:
    path, raw = data
    src = CountingSource(path)
    with Image(src) as image:
        image[PAGE * 3 + 5]  # page 3 is already there: not read again
        src.singles.clear()
        image.prefetch([(PAGE * 10 + 1, PAGE * 10 + 2), (0, 1), (PAGE * 2, PAGE * 5),
                        (PAGE * 11, PAGE * 12), (len(raw) - 1, len(raw) + 99)])
        assert src.batches == [[(0, PAGE), (PAGE * 2, PAGE), (PAGE * 4, PAGE),
                                (PAGE * 10, 2 * PAGE), (PAGE * 40, 4)]]
        assert src.singles == []
        # Everything prefetched reads without another call to the source.
        assert image[0:PAGE] == raw[:PAGE]
        assert image[PAGE * 2:PAGE * 5] == raw[PAGE * 2:PAGE * 5]
        assert image[PAGE * 10:PAGE * 12] == raw[PAGE * 10:PAGE * 12]
        assert image[len(raw) - 4:] == b"tail"
        assert src.singles == []
        image.prefetch([(0, PAGE), (PAGE * 40, PAGE * 41), (5, 5), (len(raw) + 10, len(raw) + 20)])
        assert len(src.batches) == 1  # nothing missing: no call at all


def test_a_failed_prefetch_leaves_the_pages_missing(data: tuple[Path, bytes]) -> None:
    path, raw = data

    class Failing(CountingSource):
        def read_many(self, jobs: Sequence[tuple[int, memoryview]]) -> None:
            raise OSError("network down")

    with Image(Failing(path)) as image:
        with pytest.raises(OSError, match="network down"):
            image.prefetch([(0, PAGE * 3)])
        assert image[0:PAGE * 3] == raw[:PAGE * 3]  # read again, one by one


def test_zip_local_headers_are_asked_for_in_one_batch(tmp_path: Path) -> None:
    path = tmp_path / "many.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for i in range(300):
            z.writestr(f"archive/data/{i}", bytes([i % 256]) * 5000)
    src = CountingSource(path)
    with Image(src) as image:
        entries = zip_entries(image, 0, image.size, max_entries=10_000)
    assert [e.name for e in entries] == [f"archive/data/{i}" for i in range(300)]
    with zipfile.ZipFile(path) as z:
        assert [e.data_start for e in entries] == [
            i.header_offset + 30 + len(i.filename) for i in z.infolist()]
    # One batch holds a page for each of the 300 local headers (neighbours share
    # pages); the single reads are the end record and central directory, not
    # one per entry as before.
    assert len(src.batches) == 1
    batched = {p for o, n in src.batches[0] for p in range(o // PAGE, -(-(o + n) // PAGE))}
    single = {p for o, n in src.singles for p in range(o // PAGE, -(-(o + n) // PAGE))}
    headers = {e.header // PAGE for e in entries}
    assert headers <= batched | single
    assert len(headers - single) > 250  # most came in the batch
    assert len(src.singles) < 10, src.singles
