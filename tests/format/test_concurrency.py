"""Many threads reading one file: separate handles, a shared handle, and a close mid-read.

Every read is compared with the expected bytes, so a race that returned
another tensor's bytes, a torn buffer or a different file's data fails the
test, as does any exception other than ``ClosedFileError`` after a close.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tensorfile import ClosedFileError, safe_open, save_file

THREADS = 8
BACKENDS = ["mmap", "pread"]


def _tensors() -> dict[str, np.ndarray[Any, Any]]:
    rng = np.random.default_rng(7)
    out: dict[str, np.ndarray[Any, Any]] = {}
    for i in range(24):
        dtype = [np.float32, np.int64, np.uint8, np.float16][i % 4]
        out[f"t{i:02d}"] = (rng.integers(0, 100, size=(64, 128 + i)) + i).astype(dtype)
    return out


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray[Any, Any]]]:
    tensors = _tensors()
    path = tmp_path_factory.mktemp("concurrency") / "model.safetensors"
    save_file(tensors, path)
    return path, tensors


def _in_threads(work: Callable[[int], None], n: int = THREADS) -> list[BaseException]:
    """Run ``work(i)`` on ``n`` threads started together; return what they raised."""
    barrier = threading.Barrier(n)
    errors: list[BaseException] = []
    lock = threading.Lock()

    def run(i: int) -> None:
        barrier.wait()
        try:
            work(i)
        except BaseException as e:  # collected, re-raised by the test
            with lock:
                errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
        assert not t.is_alive(), "a reader thread hung"
    return errors


@pytest.mark.parametrize("backend", BACKENDS)
def test_threads_with_separate_handles(model: Any, backend: str) -> None:
    path, expected = model
    names = sorted(expected)

    def work(i: int) -> None:
        for rep in range(5):
            with safe_open(path, "np", backend=backend) as f:
                for name in names[i % 3 :: 2]:
                    np.testing.assert_array_equal(f.get_tensor(name), expected[name])
                    rows = f.get_slice(name)[rep : rep + 3, ::-2]
                    np.testing.assert_array_equal(rows, expected[name][rep : rep + 3, ::-2])

    assert _in_threads(work) == []


@pytest.mark.parametrize("backend", BACKENDS)
def test_threads_sharing_one_handle(model: Any, backend: str) -> None:
    path, expected = model
    names = sorted(expected)
    with safe_open(path, "np", backend=backend) as f:

        def work(i: int) -> None:
            for rep in range(10):
                name = names[(i * 7 + rep) % len(names)]
                np.testing.assert_array_equal(f.get_tensor(name), expected[name])
                np.testing.assert_array_equal(f.get_slice(name)[-1], expected[name][-1])
            got = f.tensors(names[i::THREADS])
            for name, arr in got.items():
                np.testing.assert_array_equal(arr, expected[name])

        assert _in_threads(work) == []


def test_threads_sharing_one_torch_handle(model: Any) -> None:
    torch = pytest.importorskip("torch")
    path, expected = model
    names = sorted(expected)
    with safe_open(path, "pt") as f:

        def work(i: int) -> None:
            for rep in range(10):
                name = names[(i + rep) % len(names)]
                t = f.get_tensor(name)
                assert torch.equal(t, torch.from_numpy(expected[name]))

        assert _in_threads(work) == []


def _close_during_reads(
    path: Path, expected: dict[str, Any], backend: str, delay: float
) -> tuple[int, int]:
    """Start THREADS readers on one handle, close it ``delay`` seconds after
    the first read returned; check every outcome.

    Reader 0 waits after its first read until the close is done, so every
    round has a read before and a read after the close whatever the machine's
    load; the others race the close freely.

    Returns (reads that returned data, reads refused with ClosedFileError).
    """
    names = sorted(expected)
    f = safe_open(path, "np", backend=backend)
    kept: list[tuple[str, Any]] = []
    closed = [0]
    lock = threading.Lock()
    first_read, close_done = threading.Event(), threading.Event()

    def work(i: int) -> None:
        for rep in range(50):
            if i == 0 and rep == 1:
                first_read.set()
                assert close_done.wait(60), "the handle was never closed"
            name = names[(i + rep) % len(names)]
            try:
                arr = f.get_tensor(name) if rep % 2 else f.get_slice(name)[1:3]
            except ClosedFileError:
                with lock:
                    closed[0] += 1
                return
            np.testing.assert_array_equal(arr, expected[name] if rep % 2 else expected[name][1:3])
            with lock:
                kept.append((name, arr))

    def close() -> None:
        assert first_read.wait(60), "no read ever returned"
        time.sleep(delay)
        f.close()
        close_done.set()

    closer = threading.Thread(target=close)
    errors = _in_threads(lambda i: closer.start() if i == THREADS else work(i), THREADS + 1)
    closer.join()
    assert errors == [], errors
    with pytest.raises(ClosedFileError):
        f.get_tensor(names[0])
    for name, arr in kept:  # what was handed out stays valid after the close
        whole = arr.shape == expected[name].shape
        np.testing.assert_array_equal(arr, expected[name] if whole else expected[name][1:3])
    return len(kept), closed[0]


@pytest.mark.parametrize("backend", BACKENDS)
def test_close_while_other_threads_read(model: Any, backend: str) -> None:
    """Each read during or after ``close`` returns the right data or raises
    ClosedFileError; nothing else, and arrays handed out stay valid."""
    path, expected = model
    rng = random.Random(42)
    rounds = [_close_during_reads(path, expected, backend, rng.uniform(0, 0.004)) for _ in range(12)]
    assert all(data > 0 and closed > 0 for data, closed in rounds), rounds


def test_close_mid_read_never_reads_another_file(tmp_path: Path) -> None:
    """pread mode: closing while reads are in flight must not free the descriptor
    under them; files opened right after the close (which may get the same
    descriptor number) must never be read by the old handle's threads."""
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    big_a = {f"x{i}": np.full((256, 1024), 1, dtype=np.uint8) for i in range(8)}
    save_file(big_a, a)
    save_file({k: np.full_like(v, 2) for k, v in big_a.items()}, b)
    for _round in range(20):
        f = safe_open(a, "np", backend="pread")
        seen_wrong: list[str] = []
        go = threading.Event()

        def work(i: int, f: Any = f, go: Any = go, seen_wrong: Any = seen_wrong) -> None:
            go.wait()
            for rep in range(50):
                try:
                    arr = f.get_tensor(f"x{(i + rep) % 8}")
                except ClosedFileError:
                    return
                if int(arr.min()) != 1 or int(arr.max()) != 1:
                    seen_wrong.append(f"thread {i} read {np.unique(arr)}")

        threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        go.set()
        f.close()
        others = [safe_open(b, "np", backend="pread") for _ in range(4)]
        for t in threads:
            t.join(timeout=60)
        for o in others:
            o.close()
        assert seen_wrong == []
