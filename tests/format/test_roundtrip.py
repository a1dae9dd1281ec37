"""Property tests: every dtype, shape and metadata round-trips, numpy and torch."""

from __future__ import annotations

from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tensorfile
from tensorfile._format.dtypes import DTYPES, numpy_dtype

# Byte-sized dtypes numpy can hold (F4/F6 are packed; covered separately).
NP_DTYPES = [d for d in DTYPES.values() if not d.sub_byte]

names = st.text(min_size=1, max_size=12).filter(lambda s: s != "__metadata__" and "\ud800" not in s)
shapes = st.lists(st.integers(0, 4), min_size=0, max_size=6).map(tuple)
metadata = st.none() | st.dictionaries(st.text(max_size=10), st.text(max_size=20), max_size=4)


@st.composite
def arrays(draw: st.DrawFn) -> np.ndarray:
    dt = draw(st.sampled_from(NP_DTYPES))
    shape = draw(shapes)
    npdt = numpy_dtype(dt)
    n = int(np.prod(shape)) * npdt.itemsize
    raw = draw(st.binary(min_size=n, max_size=n))
    arr = np.frombuffer(raw, dtype=np.uint8).view(npdt).reshape(shape)
    if draw(st.booleans()) and arr.ndim:
        # a non-contiguous view of a bigger array must be written as its values
        arr = np.repeat(arr, 2, axis=-1)[..., ::2]
    return arr


tensor_dicts = st.dictionaries(names, arrays(), max_size=6)


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tensors=tensor_dicts, meta=metadata)
def test_numpy_bytes_roundtrip(tensors: dict[str, np.ndarray], meta: dict[str, str] | None) -> None:
    data = tensorfile.save(tensors, metadata=meta)
    back = tensorfile.load(data)
    assert set(back) == set(tensors)
    for k, v in tensors.items():
        assert _same(back[k], np.ascontiguousarray(v).reshape(v.shape)), k


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tensors=tensor_dicts, meta=metadata)
def test_numpy_file_roundtrip_all_backends(
    tmp_path: Path, tensors: dict[str, np.ndarray], meta: dict[str, str] | None
) -> None:
    path = tmp_path / "m.safetensors"
    tensorfile.save_file(tensors, path, metadata=meta)
    for backend in ("mmap", "pread"):
        with tensorfile.safe_open(path, "np", backend=backend) as f:
            assert f.metadata() == (None if meta is None else dict(meta))
            assert sorted(f.keys()) == sorted(tensors)
            for k, v in tensors.items():
                assert _same(f.get_tensor(k), np.ascontiguousarray(v).reshape(v.shape)), (backend, k)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tensors=tensor_dicts)
def test_torch_roundtrip(tmp_path: Path, tensors: dict[str, np.ndarray]) -> None:
    torch = pytest.importorskip("torch")
    from tensorfile._format.dtypes import dtype_from_numpy
    from tensorfile._frameworks import torch_dtype

    tt = {}
    for k, v in tensors.items():
        dt = dtype_from_numpy(v.dtype)
        raw = torch.from_numpy(np.ascontiguousarray(v).reshape(-1).view(np.uint8).copy())
        tt[k] = raw.view(torch_dtype(dt)).reshape(v.shape) if raw.numel() else torch.empty(
            v.shape, dtype=torch_dtype(dt)
        )
    path = tmp_path / "t.safetensors"
    tensorfile.save_file(tt, path)
    # bytes are identical whichever library produced the arrays
    assert path.read_bytes() == tensorfile.save(
        {k: np.ascontiguousarray(v).reshape(v.shape) for k, v in tensors.items()}
    )
    back = tensorfile.load_file(path, "pt")
    for k, v in tt.items():
        assert back[k].dtype == v.dtype and back[k].shape == v.shape
        assert back[k].contiguous().view(-1).view(torch.uint8).tolist() == v.contiguous().view(-1).view(
            torch.uint8
        ).tolist() or v.numel() == 0


def test_large_rank_and_scalars(tmp_path: Path) -> None:
    tensors = {
        "rank12": np.arange(2**12, dtype=np.int32).reshape((2,) * 12),
        "scalar": np.array(7.5, dtype=np.float64),
        "empty": np.zeros((3, 0, 2), dtype=np.float32),
        "empty2": np.zeros((0,), dtype=np.uint8),
        "bf16": np.arange(6, dtype=np.float32).astype(ml_dtypes.bfloat16).reshape(2, 3),
    }
    path = tmp_path / "x.safetensors"
    tensorfile.save_file(tensors, path)
    back = tensorfile.load_file(path)
    for k, v in tensors.items():
        assert _same(back[k], v), k
    assert back["scalar"].shape == ()


def test_f4_unpacks_low_nibble_first(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    packed = torch.tensor([[0x21, 0x43]], dtype=torch.uint8).view(torch.float4_e2m1fn_x2)
    path = tmp_path / "f4.safetensors"
    tensorfile.save_file({"q": packed}, path)
    with tensorfile.safe_open(path, "np") as f:
        assert f.info("q").shape == (1, 4)  # logical elements, as the reference writes
        assert f.get_tensor("q").astype(np.float32).tolist() == [[0.5, 1.0, 1.5, 2.0]]
    with tensorfile.safe_open(path, "pt") as f:
        got = f.get_tensor("q")
        assert got.dtype == torch.float4_e2m1fn_x2 and got.shape == (1, 2)
        assert got.view(torch.uint8).tolist() == [[0x21, 0x43]]


def test_f4_numpy_arrays_round_trip_packed(tmp_path: Path) -> None:
    values = np.array([[0.5, -1.0, 6.0, 0.0], [1.5, 2.0, -0.5, 3.0]], dtype=np.float32)
    arr = values.astype(ml_dtypes.float4_e2m1fn)
    path = tmp_path / "f4np.safetensors"
    tensorfile.save_file({"q": arr}, path)
    with tensorfile.safe_open(path, "np") as f:
        assert f.info("q").nbytes == 4  # 8 values, 4 bits each
        np.testing.assert_array_equal(f.get_tensor("q").astype(np.float32), values)
    with pytest.raises(tensorfile.SerializationError, match="whole bytes"):
        tensorfile.save({"odd": arr.reshape(-1)[:3]})
