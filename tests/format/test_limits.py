"""Resource limits of the safetensors reader on hostile headers.

Every case ends with a correct result or a typed error, inside a stated time
and memory bound:

* Lengths that cannot be satisfied (a header length over the 100,000,000-byte
  limit or past the end of the file, tensor bytes past the end) are refused
  before anything of that size is allocated: tracemalloc's peak stays under
  ``SMALL`` (64 KiB).
* Large but legal headers (exactly at the limit, millions of entries, very
  deep nesting, a million dimensions) are opened in a fresh subprocess whose
  address space is capped (``RLIMIT_AS``) and whose peak resident memory
  (``getrusage``) and wall time are compared with the bound each test states.

The default sizes keep each test to a few seconds on two cores. Set
``TENSORFILE_LIMITS_FULL=1`` to also open a full 100 MB header made of
1.7 million tensor entries (about 15 s and 1.3 GB).
"""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tensorfile import load, safe_open
from tensorfile._format import header as hdr
from tensorfile._format.header import MAX_HEADER_SIZE
from tensorfile.errors import (
    FrameworkError,
    HeaderTooLargeError,
    InvalidHeaderError,
    InvalidOffsetsError,
    InvalidShapeError,
    TruncatedFileError,
)

SMALL = 64 * 1024
MB = 1024 * 1024
FULL = os.environ.get("TENSORFILE_LIMITS_FULL") == "1"


def _file(path: Path, text: bytes, data: bytes = b"", length: int | None = None) -> Path:
    n = len(text) if length is None else length
    path.write_bytes(struct.pack("<Q", n) + text + data)
    return path


def _entry(dtype: str, shape: list[int], start: int, end: int) -> dict[str, Any]:
    return {"dtype": dtype, "shape": shape, "data_offsets": [start, end]}


def _peak_bytes(fn: Callable[[], object]) -> int:
    """Peak bytes Python allocated while ``fn`` ran (it is expected to raise)."""
    tracemalloc.start()
    try:
        fn()
    except Exception:
        pass
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return peak


_CHILD = r"""
import json, resource, sys, time
cap = int(sys.argv[3])
resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
import numpy as np
from tensorfile import safe_open
from tensorfile.errors import TensorfileError

def status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)

with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the peak-RSS mark (VmHWM) to the current RSS
before = status("VmRSS")
t0 = time.perf_counter()
out = {}
try:
    with safe_open(sys.argv[1], sys.argv[2]) as f:
        keys = f.keys()
        out["keys"] = len(keys)
        out["metadata"] = len(f.metadata() or {})
        if keys:
            t = f.get_tensor(keys[-1])
            first = np.asarray(t.reshape(-1)[:8]).tobytes().hex()
            out["last"] = [keys[-1], list(t.shape), first]
except TensorfileError as e:
    out["error"] = type(e).__name__
    out["message"] = str(e)[:300]
out["seconds"] = time.perf_counter() - t0
out["peak_delta"] = status("VmHWM") - before
print(json.dumps(out))
"""

needs_proc = pytest.mark.skipif(
    not Path("/proc/self/clear_refs").exists(), reason="measures peak memory through Linux /proc"
)


def _open_in_child(path: Path, framework: str = "np", cap: int = 3 << 30) -> dict[str, Any]:
    """Open ``path`` in a fresh interpreter with its address space capped at ``cap``.

    Returns what it read (or the error's type), the wall time of the open and
    reads, and how far the peak resident memory (VmHWM, reset after imports)
    rose above the resident memory after imports.
    """
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path), framework, str(cap)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result: dict[str, Any] = json.loads(proc.stdout)
    print(f"{path.name} ({framework}): {result.get('error', 'read')}, {result['seconds']:.2f} s, "
          f"peak +{result['peak_delta'] / MB:.0f} MB")  # shown with pytest -s
    return result


# --------------------------------------------------------------------------
# Lengths that cannot be satisfied: refused before allocating
# --------------------------------------------------------------------------


@pytest.mark.parametrize("n", [MAX_HEADER_SIZE + 1, 2**32, 2**63, 2**64 - 1])
def test_length_prefix_over_the_limit_is_refused_before_reading(tmp_path: Path, n: int) -> None:
    path = _file(tmp_path / "big.safetensors", b"{}" + b" " * 14, length=n)
    with pytest.raises(HeaderTooLargeError, match="limit"):
        safe_open(path)
    with pytest.raises(HeaderTooLargeError):
        load(path.read_bytes())
    assert _peak_bytes(lambda: safe_open(path)) < SMALL


def test_header_length_past_the_end_of_the_file_allocates_nothing(tmp_path: Path) -> None:
    path = _file(tmp_path / "short.safetensors", b"{}", length=MAX_HEADER_SIZE)
    with pytest.raises(TruncatedFileError, match=f"declares {MAX_HEADER_SIZE} bytes"):
        safe_open(path)
    assert _peak_bytes(lambda: safe_open(path)) < SMALL
    assert _peak_bytes(lambda: hdr.parse(path.read_bytes())) < SMALL


@pytest.mark.parametrize(
    "shape, end",
    [
        ([2**40], 2**40),  # a terabyte declared, 4 bytes present
        ([2**30, 2**30], 2**60),
        ([2**61 - 1], 2**61 - 1),  # the largest byte size whose bit count fits in u64
    ],
)
@pytest.mark.parametrize("backend", ["mmap", "pread"])
def test_tensor_bytes_past_the_end_of_the_file_allocate_nothing(
    tmp_path: Path, shape: list[int], end: int, backend: str
) -> None:
    text = json.dumps({"t": _entry("U8", shape, 0, end)}).encode()
    path = _file(tmp_path / "t.safetensors", text, b"\x01\x02\x03\x04")
    with pytest.raises(TruncatedFileError, match="after the header"):
        safe_open(path, backend=backend)
    assert _peak_bytes(lambda: safe_open(path, backend=backend)) < SMALL
    assert _peak_bytes(lambda: load(path.read_bytes())) < SMALL + path.stat().st_size


def test_shape_whose_size_overflows_is_refused(tmp_path: Path) -> None:
    text = json.dumps({"t": _entry("F64", [2**32, 2**32, 2**32], 0, 8)}).encode()
    path = _file(tmp_path / "o.safetensors", text, b"\0" * 8)
    start = time.perf_counter()
    with pytest.raises(InvalidShapeError, match="overflows"):
        safe_open(path)
    assert time.perf_counter() - start < 1.0


def test_huge_sparse_tensor_is_mapped_lazily(tmp_path: Path) -> None:
    """A legal 16 GiB tensor (a sparse file): with the mmap backend, opening it
    and slicing its end touch only the pages the slice covers, so memory stays
    far below the tensor's size. (The pread backend reads a sliced tensor
    whole, so it is not used here.)"""
    size = 16 << 30
    text = json.dumps({"huge": _entry("U8", [size], 0, size)}).encode()
    text += b" " * (-len(text) % 8)
    path = tmp_path / "sparse.safetensors"
    with path.open("wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        f.truncate(8 + len(text) + size)
    tracemalloc.start()
    try:
        with safe_open(path) as h:
            assert h.get_slice("huge").get_shape() == [size]
            assert h.get_tensor("huge").shape == (size,)  # a view, no copy
            assert h.get_slice("huge")[size - 4 :].tolist() == [0, 0, 0, 0]
        with safe_open(path, backend="pread") as h:
            assert h.byte_range("huge") == (8 + len(text), 8 + len(text) + size)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 * MB


# --------------------------------------------------------------------------
# Large but legal headers: correct results within stated bounds
# --------------------------------------------------------------------------


@needs_proc
def test_header_exactly_at_the_limit_is_read(tmp_path: Path) -> None:
    """Bound: a 100,000,000-byte header opens in under 10 s with under 800 MB
    of extra resident memory (about 8 copies' worth: bytes, text, JSON)."""
    head, tail = b'{"__metadata__":{"k":"', b'"}}'
    text = head + b"x" * (MAX_HEADER_SIZE - len(head) - len(tail)) + tail
    assert len(text) == MAX_HEADER_SIZE
    path = _file(tmp_path / "at.safetensors", text)
    del text
    got = _open_in_child(path)
    assert got.get("error") is None, got
    assert got["metadata"] == 1 and got["keys"] == 0
    assert got["seconds"] < 10, got
    assert got["peak_delta"] < 800 * MB, got
    # One byte more (present in the file) is over the limit.
    with path.open("r+b") as f:
        f.write(struct.pack("<Q", MAX_HEADER_SIZE + 1))
        f.seek(0, os.SEEK_END)
        f.write(b" ")
    with pytest.raises(HeaderTooLargeError):
        safe_open(path)


def _many_entries(m: int) -> bytes:
    parts = [b'"t%d":{"dtype":"U8","shape":[0],"data_offsets":[0,0]}' % i for i in range(m - 1)]
    parts.append(b'"z":{"dtype":"I16","shape":[2],"data_offsets":[0,4]}')
    return b"{" + b",".join(parts) + b"}"


@needs_proc
def test_many_tensor_entries(tmp_path: Path) -> None:
    """Bound: 150,000 entries (9 MB of header) open in under 10 s with under
    400 MB of extra resident memory; every entry is there, the data is right."""
    path = _file(tmp_path / "many.safetensors", _many_entries(150_000), b"\x01\x00\xff\x7f")
    got = _open_in_child(path)
    assert got.get("error") is None, got
    assert got["keys"] == 150_000
    assert got["last"] == ["z", [2], "0100ff7f"]
    assert got["seconds"] < 10, got
    assert got["peak_delta"] < 400 * MB, got


@needs_proc
def test_a_million_metadata_entries(tmp_path: Path) -> None:
    """Bound: 1,000,000 metadata entries (14 MB) open in under 10 s with under
    400 MB of extra resident memory, all of them returned."""
    body = b",".join(b'"k%d":"v"' % i for i in range(1_000_000))
    path = _file(tmp_path / "meta.safetensors", b'{"__metadata__":{' + body + b"}}")
    del body
    got = _open_in_child(path)
    assert got.get("error") is None, got
    assert got["metadata"] == 1_000_000 and got["keys"] == 0
    assert got["seconds"] < 10, got
    assert got["peak_delta"] < 400 * MB, got


@needs_proc
@pytest.mark.skipif(not FULL, reason="set TENSORFILE_LIMITS_FULL=1 (about 15 s, 1.3 GB)")
def test_full_size_header_of_tensor_entries(tmp_path: Path) -> None:
    """Bound: the worst legal header, 100 MB of 1.7 million tensor entries,
    opens in under 60 s with under 2.5 GB of extra resident memory."""
    text = _many_entries(1_700_000)
    assert len(text) <= MAX_HEADER_SIZE
    path = _file(tmp_path / "full.safetensors", text, b"\0\0\0\0")
    del text
    got = _open_in_child(path, cap=6 << 30)
    assert got.get("error") is None, got
    assert got["keys"] == 1_700_000
    assert got["seconds"] < 60, got
    assert got["peak_delta"] < 2560 * MB, got


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(b"[" * 10_000_000, id="10M-arrays"),
        pytest.param(b'{"a":' * 2_000_000, id="2M-objects"),
        pytest.param(b'{"__metadata__":{"k":' + b"[" * 5_000_000, id="5M-in-metadata"),
        pytest.param(
            b'{"t":{"dtype":"U8","shape":' + b"[" * 5_000_000 + b"]" * 5_000_000 + b',"data_offsets":[0,0]}}',
            id="5M-balanced-in-shape",
        ),
    ],
)
@needs_proc
def test_deep_nesting_is_a_clear_error(tmp_path: Path, text: bytes) -> None:
    """Bound: rejected in under 3 s with under 300 MB of extra resident memory,
    as InvalidHeaderError (never RecursionError or a crashed interpreter)."""
    path = _file(tmp_path / "deep.safetensors", text)
    got = _open_in_child(path)
    assert got.get("error") == InvalidHeaderError.__name__ or (
        got.get("error") in ("InvalidShapeError", "InvalidMetadataError")
    ), got
    assert got["seconds"] < 3, got
    assert got["peak_delta"] < 300 * MB, got


def test_a_hundred_thousand_dimensions(tmp_path: Path) -> None:
    """Bound: a tensor of 100,000 dimensions of size 1 is read in under 2 s;
    torch reads it, numpy (64 dimensions at most) refuses it with FrameworkError."""
    ndim = 100_000
    text = json.dumps({"t": _entry("U8", [1] * ndim, 0, 1)}, separators=(",", ":")).encode()
    path = _file(tmp_path / "dims.safetensors", text, b"\x2a")
    start = time.perf_counter()
    with safe_open(path) as f:
        assert f.get_slice("t").get_shape() == [1] * ndim
        with pytest.raises(FrameworkError):
            f.get_tensor("t")
    assert time.perf_counter() - start < 2
    torch = pytest.importorskip("torch")
    start = time.perf_counter()
    with safe_open(path, "pt") as f:
        t = f.get_tensor("t")
    assert time.perf_counter() - start < 2
    assert t.dim() == ndim and t.dtype == torch.uint8 and int(t.reshape(-1)[0]) == 42


def test_a_twenty_megabyte_tensor_name(tmp_path: Path) -> None:
    name = "n" * (20 * 1000 * 1000)
    text = json.dumps({name: _entry("U8", [1], 0, 1)}).encode()
    path = _file(tmp_path / "name.safetensors", text, b"\x07")
    del text
    start = time.perf_counter()
    with safe_open(path) as f:
        assert f.keys() == [name]
        assert f.get_tensor(name).tolist() == [7]
    assert time.perf_counter() - start < 5


# --------------------------------------------------------------------------
# Cost follows the header's meaning (issue 22): ignored fields and refusals
# --------------------------------------------------------------------------


def _ignored_field_header(item: bytes, size: int) -> bytes:
    """One tensor whose unknown field holds ``size`` bytes of ``item``s."""
    head = b'{"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":['
    return head + b",".join([item] * (size // (len(item) + 1))) + b"]}}"


@pytest.mark.parametrize("item", [b"[]", b"{}"], ids=["lists", "objects"])
def test_ignored_fields_cost_a_few_passes_over_the_header(
    tmp_path: Path, item: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bound: a 2 MB unknown field of 700,000 empty lists or objects (a 99 MB
    one took 52-61 s and 5 GB, the reference 1.9 s) opens without building a
    Python object per value: never through the strict decoder, with a peak
    allocation under 8 times the header's size, in under 3 s."""
    text = _ignored_field_header(item, 2_000_000)
    path = _file(tmp_path / "ignored.safetensors", text, b"\0\0\x80\x3f")

    def strict(*_: object, **__: object) -> None:
        raise AssertionError("the strict decoder ran")

    monkeypatch.setattr(hdr, "decode_json", strict)
    start = time.perf_counter()
    tracemalloc.start()
    try:
        with safe_open(path) as f:
            assert f.keys() == ["t"] and float(f.get_tensor("t")[0]) == 1.0
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - start < 3
    assert peak < 8 * len(text), peak


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(b"[" * 126 + b"]" * 126, id="nested-too-deep"),
        pytest.param(b'[{"a":1,"a":2}]', id="duplicate-key"),
        pytest.param(b"[1e400]", id="number-over-a-double"),
        pytest.param(b"[" + b"9" * 400 + b"]", id="400-digits"),
        pytest.param(b'["\\ud800"]', id="lone-surrogate"),
        pytest.param(b'["\xff"]', id="not-utf8"),
    ],
)
def test_ignored_fields_the_reference_refuses_are_refused(tmp_path: Path, value: bytes) -> None:
    """The fast handling of unknown fields still refuses what the reference
    refuses (and tensorfile's duplicate keys), after a megabyte of plain ones."""
    plain = b",".join([b"[]"] * 300_000)
    text = b'{"t":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"x":[' + plain + b"," + value + b"]}}"
    path = _file(tmp_path / "bad.safetensors", text, b"\x01")
    with pytest.raises(InvalidHeaderError):
        safe_open(path)


def test_overlapping_tensors_are_refused_from_the_first_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """150,000 tensors all claiming bytes [0, 4) (1.5 million took 20-30 s to
    refuse) are refused with the strict path's error without decoding the
    header a second time."""
    n = 150_000
    text = b"{" + b",".join(
        b'"t%d":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}' % i for i in range(n)
    ) + b"}"
    path = _file(tmp_path / "overlap.safetensors", text, b"\0" * 4)
    expected = f"tensor 't1': data_offsets [0, 4] (file byte {8 + len(text)}) overlaps the previous tensor"

    def strict(*_: object, **__: object) -> None:
        raise AssertionError("the strict decoder ran")

    monkeypatch.setattr(hdr, "decode_json", strict)
    with pytest.raises(InvalidOffsetsError, match=re.escape(expected)):
        safe_open(path)


def test_keys_in_ignored_fields_are_not_walked_value_by_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Objects with keys in an unknown field need the strict decoder (for
    duplicate keys), but not a Python walk over every value for the rules a
    scan of the bytes already rules out (5 MB of them took 37 s)."""
    text = _ignored_field_header(b'{"a":0,"b":[1e5]}', 1_000_000)

    def walk(*_: object) -> None:
        raise AssertionError("unknown fields walked")

    monkeypatch.setattr(hdr, "_check_unknown_fields", walk)
    path = _file(tmp_path / "keys.safetensors", text, b"\0\0\x80\x3f")
    with safe_open(path) as f:
        assert f.keys() == ["t"]
    # A number the rules refuse is still found (by the walk).
    monkeypatch.undo()
    path = _file(tmp_path / "big.safetensors", text[:-3] + b',{"a":1e400}]}}', b"\0\0\x80\x3f")
    with pytest.raises(InvalidHeaderError, match="out of range"):
        safe_open(path)
