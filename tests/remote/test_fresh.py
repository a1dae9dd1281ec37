"""Remote reads into fresh memory (``RemoteFile.read(fresh=True)``, what a
whole-model load does): a helper thread faults the pages in, request by
request, beside the transfers. Every byte lands, even where two requests
share a page; a request is sent only once its memory is resident; and a read
returns, failed or not, only after the helper has stopped."""

from __future__ import annotations

import ctypes
import itertools
import mmap
import threading
import time
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from remote_kit import Model
from servers import Nginx

from tensorfile._io import fresh as fresh_memory
from tensorfile._io.fresh import fresh_buffer
from tensorfile._io.remote import RemoteFile, RemoteOptions
from tensorfile.errors import RemoteRangeError

SIZE = 600_000
_libc = ctypes.CDLL(None, use_errno=True)


@pytest.fixture(scope="module")
def blob(nginx: Nginx, model: Model) -> tuple[str, bytes]:
    # No zero byte: a zero that the fault-in wrote over landed bytes would show.
    data = np.random.default_rng(5).integers(1, 256, size=SIZE, dtype=np.uint8).tobytes()
    (model.root / "fresh.bin").write_bytes(data)
    return nginx.url("fresh.bin"), data


def _resident(view: memoryview) -> bool:
    """Whether every page under ``view`` is in memory (``mincore``)."""
    addr = np.frombuffer(view, np.uint8).ctypes.data
    lo = addr - addr % mmap.PAGESIZE
    n = addr + len(view) - lo
    vec = (ctypes.c_ubyte * (-(-n // mmap.PAGESIZE)))()
    if _libc.mincore(ctypes.c_void_p(lo), ctypes.c_size_t(n), vec) != 0:
        raise OSError(ctypes.get_errno(), "mincore")
    return all(b & 1 for b in vec)


def _jobs(buf: np.ndarray[Any, Any], spans: list[tuple[int, int]]) -> list[tuple[int, memoryview, None]]:
    """One job per ``(offset, length)`` of the file, laid end to end in
    ``buf``: neighbouring jobs, and so requests, share pages."""
    out, at = [], 0
    for offset, length in spans:
        out.append((offset, memoryview(buf)[at : at + length], None))
        at += length
    return out


@st.composite
def spans(draw: st.DrawFn) -> list[tuple[int, int]]:
    cuts = sorted(draw(st.sets(st.integers(0, SIZE), min_size=2, max_size=12)))
    pairs = [(a, b - a) for a, b in itertools.pairwise(cuts)]
    return [p for p in pairs if draw(st.booleans())] or pairs[:1]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spans=spans(), block=st.integers(300, 40_000))
def test_every_byte_lands_where_requests_share_pages(
    blob: tuple[str, bytes], spans: list[tuple[int, int]], block: int
) -> None:
    url, data = blob
    f = RemoteFile(url, RemoteOptions(block_size=block, concurrency=4, merge_gap=0))
    buf = fresh_buffer(sum(n for _, n in spans))
    jobs = _jobs(buf, spans)
    f.read(jobs, fresh=True)
    for offset, view, _ in jobs:
        assert bytes(view) == data[offset : offset + len(view)]


@pytest.mark.parametrize("fresh", [True, False])
def test_a_request_is_sent_once_its_memory_is_resident(
    blob: tuple[str, bytes], monkeypatch: pytest.MonkeyPatch, fresh: bool
) -> None:
    url, data = blob
    f = RemoteFile(url, RemoteOptions(block_size=64 << 10, concurrency=2))
    real = fresh_memory.fault_in  # slowed down: the requests would overtake it
    monkeypatch.setattr(fresh_memory, "fault_in", lambda loop, batches, *a: real(loop, _slow(batches, []), *a))
    seen: list[bool] = []
    fetch = f._fetcher.fetch

    async def probing(start: int, end: int, sink: Any) -> None:
        seen.append(all(_resident(v) for v in sink._views))
        await fetch(start, end, sink)

    monkeypatch.setattr(f._fetcher, "fetch", probing)
    buf = fresh_buffer(SIZE - 1000)
    f.read(_jobs(buf, [(1000, SIZE - 1000)]), fresh=fresh)
    assert bytes(buf) == data[1000:]
    assert len(seen) >= 8
    # Without the helper the first request's memory is untouched: the probe
    # can tell, so its "all resident" with the helper means something.
    assert all(seen) if fresh else not seen[0]


def _slow(batches: list[list[memoryview]], touched: list[int]) -> list[list[memoryview]]:
    class Slow(list):  # type: ignore[type-arg]
        def __iter__(self) -> Any:
            for b in list.__iter__(self):
                time.sleep(0.02)
                touched.append(1)
                yield b

    return Slow(batches)


def _helpers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "tensorfile-fault-in" and t.is_alive()]


def test_a_failed_read_returns_only_after_the_helper_stopped(
    blob: tuple[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, _ = blob
    f = RemoteFile(url, RemoteOptions(block_size=4096, concurrency=2))
    touched: list[int] = []
    real = fresh_memory.fault_in
    monkeypatch.setattr(fresh_memory, "fault_in", lambda loop, batches, *a: real(loop, _slow(batches, touched), *a))

    async def refused(start: int, end: int, sink: Any) -> None:
        raise RemoteRangeError("refused on purpose")

    monkeypatch.setattr(f._fetcher, "fetch", refused)
    buf = fresh_buffer(SIZE)
    with pytest.raises(RemoteRangeError, match="on purpose"):
        f.read(_jobs(buf, [(0, SIZE)]), fresh=True)
    assert _helpers() == []
    assert 0 < len(touched) < SIZE // 4096 // 2  # stopped early, not run to its end


def test_a_helper_that_fails_leaves_the_faults_to_the_loop(
    blob: tuple[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, data = blob
    f = RemoteFile(url, RemoteOptions(block_size=16 << 10, concurrency=2))
    errors: list[Any] = []
    monkeypatch.setattr(threading, "excepthook", errors.append)
    real = fresh_memory.fault_in

    def broken(loop: Any, batches: list[list[memoryview]], *a: Any) -> None:
        real(loop, [batches[0], None, *batches[2:]], *a)  # type: ignore[list-item]

    monkeypatch.setattr(fresh_memory, "fault_in", broken)
    buf = fresh_buffer(SIZE)
    f.read(_jobs(buf, [(0, SIZE)]), fresh=True)
    assert bytes(buf) == data
    assert len(errors) == 1 and isinstance(errors[0].exc_value, TypeError)
    assert _helpers() == []
