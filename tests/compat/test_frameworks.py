"""tensorfile.flax, .tensorflow, .paddle and .mlx against safetensors' modules of
the same names, both ways. Each framework is optional: its tests skip where it
is not installed (see README, "Frameworks", for which ones CI installs)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import pytest

import tensorfile


@dataclass(frozen=True)
class Framework:
    module: str  # tensorfile.<module> and safetensors.<module>
    imports: str  # the framework's own module
    open_as: str  # safe_open's framework name
    make: Callable[[Any, np.ndarray[Any, Any]], Any]  # numpy -> framework array
    back: Callable[[Any, Any], np.ndarray[Any, Any]]  # framework array -> numpy
    dtypes: tuple[str, ...]
    #: Arrays safetensors' module cannot save (left out of the comparisons with it).
    ref_cannot: tuple[str, ...] = ()
    #: Arrays safetensors' module cannot load (left out of what it is given to load).
    ref_cannot_load: tuple[str, ...] = ()


def _paddle_back(paddle: Any, t: Any) -> np.ndarray[Any, Any]:
    if t.dtype == paddle.bfloat16:
        return np.asarray(t.view(paddle.uint16).numpy()).view(ml_dtypes.bfloat16)
    return np.asarray(t.numpy())


def _mlx_make(mx: Any, a: np.ndarray[Any, Any]) -> Any:
    if a.dtype == ml_dtypes.bfloat16:
        return mx.array(a.view(np.uint16)).view(mx.bfloat16)
    return mx.array(a)


def _mlx_back(mx: Any, t: Any) -> np.ndarray[Any, Any]:
    if t.dtype == mx.bfloat16:
        return np.asarray(t.view(mx.uint16)).view(ml_dtypes.bfloat16)
    return np.asarray(t)


FRAMEWORKS = [
    Framework("flax", "jax", "flax", lambda jax, a: jax.numpy.asarray(a),
              lambda jax, t: np.asarray(t),
              ("float32", "float16", "bfloat16", "int32", "int8", "uint8", "bool", "complex64"),
              ref_cannot_load=("t2.bfloat16",)),  # its load(bytes) has no BF16 (KeyError)
    Framework("tensorflow", "tensorflow", "tf", lambda tf, a: tf.constant(a),
              lambda tf, t: t.numpy(),
              ("float32", "float16", "bfloat16", "float64", "int64", "int32", "int8", "uint8",
               "bool", "complex64"),
              # its .numpy() of a 0-d tensor is a numpy scalar; its load(bytes) has no BF16
              ref_cannot=("scalar",), ref_cannot_load=("t2.bfloat16",)),
    Framework("paddle", "paddle", "paddle",
              lambda paddle, a: (paddle.to_tensor(a.view(np.uint16)).view(paddle.bfloat16)
                                 if a.dtype == ml_dtypes.bfloat16 else paddle.to_tensor(a)),
              _paddle_back,
              ("float32", "float16", "bfloat16", "float64", "int64", "int32", "int8", "uint8",
               "bool"),
              ref_cannot_load=("empty",)),  # paddle's view_dtype refuses a (2, 0) tensor
    Framework("mlx", "mlx.core", "mlx", _mlx_make, _mlx_back,
              ("float32", "float16", "bfloat16", "int64", "int32", "int8", "uint8", "bool",
               "complex64"),
              ref_cannot=("t2.bfloat16",)),  # numpy.asarray of an mlx bf16 array fails
]


@pytest.fixture(params=FRAMEWORKS, ids=[f.module for f in FRAMEWORKS])
def fw(request: pytest.FixtureRequest) -> tuple[Framework, Any, Any, Any]:
    spec: Framework = request.param
    lib = pytest.importorskip(spec.imports)
    if spec.imports == "jax":
        lib = importlib.import_module("jax")
    ref = pytest.importorskip(f"safetensors.{spec.module}")
    ours = importlib.import_module(f"tensorfile.{spec.module}")
    return spec, lib, ref, ours


def _arrays(dtypes: tuple[str, ...]) -> dict[str, np.ndarray[Any, Any]]:
    rng = np.random.default_rng(3)
    out = {}
    for i, name in enumerate(dtypes):
        dt = np.dtype(getattr(ml_dtypes, name, None) or name)
        if dt.kind == "b":
            a = rng.integers(0, 2, (3, 5)).astype(bool)
        elif dt.kind in "iu":
            a = rng.integers(0, 100, (3, 5)).astype(dt)
        elif dt.kind == "c":
            a = (rng.standard_normal((3, 5)) + 1j * rng.standard_normal((3, 5))).astype(dt)
        else:
            a = rng.standard_normal((3, 5)).astype(dt)
        out[f"t{i}.{name}"] = a
    out["empty"] = np.zeros((2, 0), np.float32)
    out["scalar"] = np.array(2.5, np.float32)
    return out


def _check(loaded: dict[str, Any], spec: Framework, lib: Any, arrays: dict[str, Any],
           names: dict[str, Any]) -> None:
    assert set(loaded) == set(names)
    for k in names:
        got, want = spec.back(lib, loaded[k]), arrays[k]
        assert got.dtype == want.dtype and got.shape == want.shape, k
        np.testing.assert_array_equal(got, want, err_msg=k)


def test_both_ways_with_the_reference(fw: tuple[Framework, Any, Any, Any], tmp_path: Path) -> None:
    spec, lib, ref, ours = fw
    arrays = _arrays(spec.dtypes)
    tensors = {k: spec.make(lib, v) for k, v in arrays.items()}
    meta = {"m": "1"}
    # What the reference writes, tensorfile writes byte for byte, and reads back.
    shared = {k: v for k, v in tensors.items() if k not in spec.ref_cannot}
    blob = ours.save(shared, metadata=meta)
    assert blob == ref.save(dict(shared), metadata=meta)
    ref.save_file(dict(shared), tmp_path / "ref.safetensors", metadata=meta)
    _check(ours.load_file(tmp_path / "ref.safetensors"), spec, lib, arrays, shared)
    _check(ours.load(blob), spec, lib, arrays, shared)
    # tensorfile round trips all of them.
    ours.save_file(tensors, tmp_path / "ours.safetensors", metadata=meta)
    _check(ours.load_file(tmp_path / "ours.safetensors"), spec, lib, arrays, tensors)
    # What tensorfile writes, the reference reads.
    readable = {k: v for k, v in shared.items() if k not in spec.ref_cannot_load}
    ours.save_file(readable, tmp_path / "for_ref.safetensors")
    _check(ref.load_file(tmp_path / "for_ref.safetensors"), spec, lib, arrays, readable)
    _check(ref.load(ours.save(readable)), spec, lib, arrays, readable)


def test_safe_open_hands_out_framework_arrays(
    fw: tuple[Framework, Any, Any, Any], tmp_path: Path
) -> None:
    spec, lib, _ref, ours = fw
    a = np.arange(20, dtype=np.float32).reshape(4, 5)
    ours.save_file({"a": spec.make(lib, a)}, tmp_path / "a.safetensors")
    with tensorfile.safe_open(tmp_path / "a.safetensors", spec.open_as) as f:
        whole = f.get_tensor("a")
        part = f.get_slice("a")[1:3, ::2]
    assert type(whole) is type(spec.make(lib, a)) or spec.module == "tensorflow"
    np.testing.assert_array_equal(spec.back(lib, whole), a)
    np.testing.assert_array_equal(spec.back(lib, part), a[1:3, ::2])


def test_not_an_array_is_a_typed_value_error(fw: tuple[Framework, Any, Any, Any]) -> None:
    _spec, _lib, _ref, ours = fw
    with pytest.raises(ValueError) as e:
        ours.save({"a": [1, 2, 3]})
    assert isinstance(e.value, tensorfile.TensorfileError)


def test_jax_shares_the_file_map_where_jax_allows(tmp_path: Path) -> None:
    """jax arrays are immutable, so an array whose bytes start on a 64-byte
    boundary (what jax's cpu client needs) wraps the read-only map in place;
    others are copied by jax."""
    jax = pytest.importorskip("jax")
    import tensorfile.flax as tflax

    a = np.arange(4096, dtype=np.float32)
    for pad in range(64):  # a name length that puts the data on a 64-byte boundary
        path = tmp_path / f"a{pad}.safetensors"
        tflax.save_file({"a" * (pad + 1): jax.numpy.asarray(a)}, path)
        with tensorfile.safe_open(path, "np") as f:
            start, _ = f.byte_range("a" * (pad + 1))
        if start % 64 == 0:
            break
    name = "a" * (pad + 1)
    with tensorfile.safe_open(path, "flax") as f:
        x = f.get_tensor(name)
        base = np.frombuffer(f._mapping(), np.uint8).ctypes.data
    assert base % 64 == 0 and x.unsafe_buffer_pointer() == base + start
    del f
    np.testing.assert_array_equal(np.asarray(x), a)  # the map outlives the handle
    off = tmp_path / "off.safetensors"
    tflax.save_file({name + "b": jax.numpy.asarray(a)}, off)  # 8 bytes further: a copy
    np.testing.assert_array_equal(np.asarray(tflax.load_file(off)[name + "b"]), a)
