"""tensorfile as a drop-in for safetensors 0.8.0: names, signatures, errors,
file objects, raw-memory serialization, verify= and the compat import hook."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import io
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tensorfile
import tensorfile.numpy as tnp
from tensorfile import compat
from tensorfile.errors import (
    DigestMismatchError,
    NotSignedError,
    SliceIndexError,
    TensorfileError,
)
from tensorfile.integrity import TrustPolicy, generate_key, sign

safetensors = pytest.importorskip("safetensors")
import safetensors.numpy as snp  # noqa: E402


def _public(module: Any) -> set[str]:
    return {n for n in vars(module) if not n.startswith("__")} - {
        # imports of the reference's own modules, not API
        "os", "sys", "np", "torch", "defaultdict", "Any", "Dict", "List", "Optional", "Set",
        "Tuple", "Union", "numpy",
    }


@pytest.fixture
def aliased() -> Iterator[None]:
    was = compat.installed()
    compat.install()
    yield
    if not was:
        compat.uninstall()


# ------------------------------------------------------------------ names and signatures


@pytest.mark.parametrize("module", ["", ".numpy", ".torch"])
def test_every_reference_name_exists_with_its_parameters(module: str) -> None:
    if module == ".torch":
        pytest.importorskip("torch")
    ref = importlib.import_module("safetensors" + module)
    ours = importlib.import_module("tensorfile" + module)
    # What safetensors' Rust core and Python modules hold, minus helpers no
    # one outside imports (their code-path twins here have other names).
    internal = {"_safetensors_rust", "_flatten", "_flatten_as_ptr", "_filter_shared_not_shared",
                "_evaluate_tensors_for_save", "_view2torch", "_view2np",
                "_is_little_endian", "_float8_e4m3fn", "_float8_e4m3fnuz", "_float8_e5m2",
                "_float8_e5m2fnuz", "_float8_e8m0", "_float4_e2m1_x2", "_TYPES", "_getdtype",
                "__version__"}
    if module == ".torch":
        internal -= {"_TYPES", "_getdtype"}
    missing = sorted(n for n in _public(ref) - internal if not hasattr(ours, n))
    assert not missing
    for name in _public(ref) - internal:
        theirs = getattr(ref, name)
        if not inspect.isfunction(theirs):
            continue
        mine = inspect.signature(getattr(ours, name)).parameters
        want = inspect.signature(theirs).parameters
        # Same names, kinds and defaults; tensorfile may add keyword-only ones (verify=).
        assert list(mine)[: len(want)] == list(want), name
        for p in want.values():
            assert mine[p.name].kind == p.kind, (name, p.name)
            assert mine[p.name].default == p.default, (name, p.name)
        for extra in list(mine)[len(want):]:
            assert mine[extra].kind == inspect.Parameter.KEYWORD_ONLY, (name, extra)


@pytest.mark.parametrize(
    ("module", "framework"),
    [("flax", "jax"), ("tensorflow", "tensorflow"), ("paddle", "paddle"), ("mlx", "mlx.core")],
)
def test_framework_modules_have_the_reference_functions(module: str, framework: str) -> None:
    pytest.importorskip(framework)
    ref = importlib.import_module(f"safetensors.{module}")
    ours = importlib.import_module(f"tensorfile.{module}")
    public = [n for n, v in vars(ref).items()
              if inspect.isfunction(v) and v.__module__ == ref.__name__ and not n.startswith("_")]
    assert sorted(public) == sorted(ours.__all__)
    for name in public:
        want = inspect.signature(getattr(ref, name)).parameters
        mine = inspect.signature(getattr(ours, name)).parameters
        assert list(mine)[: len(want)] == list(want), name
        assert [mine[n].default for n in want] == [p.default for p in want.values()], name


def test_a_framework_module_without_its_framework_is_an_import_error() -> None:
    """As safetensors.flax & co.: code probing ``import safetensors.flax`` gets ImportError."""
    missing = [(m, f) for m, f in (("flax", "jax"), ("tensorflow", "tensorflow"),
                                   ("paddle", "paddle"), ("mlx", "mlx"))
               if importlib.util.find_spec(f) is None]
    if not missing:
        pytest.skip("every framework is installed here")
    for module, framework in missing:
        sys.modules.pop(f"tensorfile.{module}", None)
        with pytest.raises(ImportError, match=f"needs {framework}"):
            importlib.import_module(f"tensorfile.{module}")


def test_safetensor_error_catches_every_typed_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\0\0\0\0\0\0\0{}")
    with pytest.raises(tensorfile.SafetensorError):
        tensorfile.safe_open(bad, "np")
    assert tensorfile.SafetensorError is TensorfileError


# ------------------------------------------------------------------ errors are builtins too


def test_errors_are_the_builtins_the_reference_raises(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    import safetensors.torch as st

    import tensorfile.torch as tt

    a = torch.arange(6.0)
    cases: list[tuple[Any, type[BaseException]]] = [
        (lambda m: m.save({"a": a, "b": a[:2]}), RuntimeError),  # shared memory
        (lambda m: m.save({"a": {"x": 1}}), ValueError),  # a dict where a tensor belongs
        (lambda m: m.save("notadict"), ValueError),
        (lambda m: m.save({"a": torch.zeros(2, device="meta")}), RuntimeError),
    ]
    for call, builtin in cases:
        with pytest.raises(builtin) as theirs:
            call(st)
        with pytest.raises(builtin) as ours:
            call(tt)
        assert isinstance(ours.value, TensorfileError), ours.value
        assert not isinstance(theirs.value, TensorfileError)
    path = tmp_path / "a.safetensors"
    tt.save_file({"a": a}, path)
    for framework in ("np", "pt"):
        with tensorfile.safe_open(path, framework) as f:
            with pytest.raises(IndexError) as e:
                f.get_slice("a")[20]
            assert isinstance(e.value, SliceIndexError)
            assert "'a'" in str(e.value) and "[6]" in str(e.value)


# ------------------------------------------------------------------ file objects and bytes


def test_safe_open_reads_file_objects(tmp_path: Path) -> None:
    arrays = {"a": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.ones(3, np.int8)}
    path = tmp_path / "m.safetensors"
    tnp.save_file(arrays, path)
    blob = path.read_bytes()
    with open(path, "rb") as raw:
        raw.seek(5)  # its position is neither used nor moved
        with tensorfile.safe_open(raw, "np") as f:
            np.testing.assert_array_equal(f.get_tensor("a"), arrays["a"])
        assert raw.tell() == 5
    with open(path) as text:  # what safetensors' own handle test passes
        with tensorfile._safe_open_handle(text, "np") as f:
            assert f.keys() == ["a", "b"]
    with tensorfile.safe_open(io.BytesIO(blob), "np") as f:
        np.testing.assert_array_equal(f.get_tensor("b"), arrays["b"])
        np.testing.assert_array_equal(f.get_slice("a")[1:, 2], arrays["a"][1:, 2])
    with pytest.raises(TypeError, match="binary mode"):
        tensorfile.safe_open(io.StringIO("not bytes"), "np")
    with pytest.raises(tensorfile.FormatError):
        tensorfile.safe_open(io.BytesIO(blob[:40]), "np")


def test_raw_memory_serialize_matches_the_reference() -> None:
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.array([True, False])

    def specs(mod: Any) -> dict[str, Any]:
        return {
            "a": mod.TensorSpec(dtype="float32", shape=[2, 3], data_ptr=a.ctypes.data, data_len=24),
            "b": mod.TensorSpec(dtype="bool", shape=[2], data_ptr=b.ctypes.data, data_len=2),
        }

    ours = tensorfile.serialize(specs(tensorfile), metadata={"k": "v"})
    assert ours == safetensors.serialize(specs(safetensors), metadata={"k": "v"})
    # The reference lists tensors in hash-map order; tensorfile in file order.
    assert dict(tensorfile.deserialize(ours)) == dict(safetensors.deserialize(ours))
    spec = tensorfile.TensorSpec(dtype="float4_e2m1fn_x2", shape=[3, 2], data_ptr=a.ctypes.data,
                                 data_len=6)
    assert (spec.dtype, spec.shape) == ("F4", [3, 4])  # the logical shape, as the reference
    with pytest.raises(tensorfile.SafetensorError, match="Unknown dtype"):
        tensorfile.TensorSpec(dtype="F32", shape=[1], data_ptr=0, data_len=4)
    with pytest.raises(TypeError):
        tensorfile.serialize({"a": {"dtype": "float32", "shape": [1], "data_ptr": 0, "data_len": 0}})
    short = tensorfile.TensorSpec(dtype="float32", shape=[2, 3], data_ptr=a.ctypes.data, data_len=20)
    with pytest.raises(tensorfile.SerializationError, match="needs 24 bytes"):
        tensorfile.serialize({"a": short})


def test_serialize_file_writes_what_the_reference_reads(tmp_path: Path) -> None:
    a = np.arange(5, dtype=np.int64)
    spec = tensorfile.TensorSpec(dtype="int64", shape=[5], data_ptr=a.ctypes.data, data_len=40)
    tensorfile.serialize_file({"a": spec}, tmp_path / "a.safetensors")
    np.testing.assert_array_equal(snp.load_file(tmp_path / "a.safetensors")["a"], a)


# ------------------------------------------------------------------ verify=


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A two-shard model folder signed with a fresh P-256 key; its public key."""
    root = tmp_path_factory.mktemp("signed")
    keys = generate_key(root / "key.pem")
    model = root / "model"
    model.mkdir()
    rng = np.random.default_rng(0)
    tnp.save_file({"weight": rng.standard_normal((4, 4)).astype(np.float32)},
                  model / "model-00001-of-00002.safetensors")
    tnp.save_file({"v": np.arange(8, dtype=np.int32)}, model / "model-00002-of-00002.safetensors")
    sign(model, keys.private_key)
    return model, Path(keys.public_key)


def _tampered(model: Path, tmp_path: Path, shard: str) -> Path:
    """A copy of ``model`` whose ``shard`` has its last data byte flipped."""
    import shutil

    copy = tmp_path / "tampered"
    shutil.copytree(model, copy)
    data = bytearray((copy / shard).read_bytes())
    data[-1] ^= 0x01
    (copy / shard).write_bytes(bytes(data))
    return copy


def test_numpy_load_file_verifies(signed: tuple[Path, Path], tmp_path: Path) -> None:
    model, pub = signed
    shard = "model-00002-of-00002.safetensors"
    got = tnp.load_file(model / shard, verify=pub)
    np.testing.assert_array_equal(got["v"], np.arange(8, dtype=np.int32))
    with pytest.raises(DigestMismatchError):
        tnp.load_file(_tampered(model, tmp_path, shard) / shard, verify=pub)
    with pytest.raises(NotSignedError):  # bytes have no folder to find model.sig in
        tnp.load((model / shard).read_bytes(), verify=pub)


def test_torch_load_file_load_model_verify(signed: tuple[Path, Path], tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    import tensorfile.torch as tt

    model, pub = signed
    shard = "model-00001-of-00002.safetensors"
    w = tt.load_file(model / shard, verify=pub)["weight"]
    lin = torch.nn.Linear(4, 4, bias=False)
    assert tt.load_model(lin, model / shard, verify=pub) == (set(), [])
    torch.testing.assert_close(lin.weight.detach(), w)
    bad = _tampered(model, tmp_path, shard) / shard
    with pytest.raises(DigestMismatchError):
        tt.load_file(bad, verify=pub)
    with pytest.raises(DigestMismatchError):
        tt.load_model(torch.nn.Linear(4, 4, bias=False), bad, verify=pub)
    assert tt.load_file(bad)["weight"].shape == (4, 4)  # unverified loads still read it


def test_load_bytes_verified_against_a_single_file_signature(tmp_path: Path) -> None:
    keys = generate_key(tmp_path / "key.pem")
    path = tmp_path / "one" / "w.safetensors"
    path.parent.mkdir()
    tnp.save_file({"x": np.arange(3, dtype=np.float64)}, path)
    sign(path, keys.private_key, tmp_path / "w.sig")
    policy = TrustPolicy(key=keys.public_key, signature=tmp_path / "w.sig")
    np.testing.assert_array_equal(tnp.load(path.read_bytes(), verify=policy)["x"], np.arange(3.0))
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x40
    with pytest.raises(DigestMismatchError):
        tnp.load(bytes(data), verify=policy)


# ------------------------------------------------------------------ the compat hook


def test_install_aliases_safetensors_and_uninstall_restores() -> None:
    real = sys.modules.get("safetensors")
    compat.install()
    try:
        import safetensors as alias
        import safetensors.numpy as alias_np

        assert alias.safe_open is tensorfile.safe_open
        assert alias.SafetensorError is TensorfileError
        assert alias_np.load_file is tnp.load_file
        assert alias_np.safe_open is tensorfile.safe_open  # paddle imports it from here
    finally:
        compat.uninstall()
    import safetensors as again

    assert again is real or "_safetensors_rust" in repr(again.SafetensorError)
    assert not compat.installed()


def test_install_verify_is_the_default_of_every_loader(
    signed: tuple[Path, Path], tmp_path: Path
) -> None:
    model, pub = signed
    shard = "model-00002-of-00002.safetensors"
    bad = _tampered(model, tmp_path, shard) / shard
    compat.install(verify=pub)
    try:
        import safetensors as alias
        import safetensors.numpy as alias_np

        assert alias_np.load_file(model / shard)["v"].tolist() == list(range(8))
        with pytest.raises(DigestMismatchError):
            alias_np.load_file(bad)
        with alias.safe_open(bad, "np") as f, pytest.raises(DigestMismatchError):
            f.get_tensor("v")
        with open(bad, "rb") as fo, alias._safe_open_handle(fo, "np") as f:
            with pytest.raises(DigestMismatchError):
                f.get_tensor("v")
        assert isinstance(alias.SafeOpen, type)  # classes are not wrapped
        assert alias_np.load_file(bad, verify=None)["v"].shape == (8,)  # explicit wins
        unsigned = tmp_path / "unsigned.safetensors"
        alias_np.save_file({"x": np.zeros(2)}, unsigned)
        with pytest.raises(NotSignedError):
            alias_np.load_file(unsigned)
    finally:
        compat.uninstall()


def test_overlap_is_grouped_through_a_third_view() -> None:
    """spec/FORMAT.md P5: the reference splits A[0:100], A[10:20], A[30:40] in two."""
    torch = pytest.importorskip("torch")
    import safetensors.torch as st

    import tensorfile.torch as tt

    base = torch.zeros(100)
    views = {"a": base[0:100], "b": base[10:20], "c": base[30:40]}
    assert tt._find_shared_tensors(views) == [{"a", "b", "c"}]
    assert st._find_shared_tensors(views) == [{"a", "b"}, {"c"}]
    with pytest.raises(RuntimeError):
        tt.save(views)


# ------------------------------------------------------------------ gaps real libraries hit


def test_device_none_is_the_cpu_as_in_the_reference(tmp_path: Path) -> None:
    """huggingface_hub up to 1.28 passes ``device=None`` (load_state_dict_from_file)."""
    torch = pytest.importorskip("torch")
    import safetensors.torch as st

    import tensorfile.torch as tt

    path = tmp_path / "a.safetensors"
    tt.save_file({"a": torch.arange(3.0)}, path)
    for loaded in (tt.load_file(path, device=None), st.load_file(path, device=None)):
        assert loaded["a"].device.type == "cpu"
    with tensorfile.safe_open(path, "pt", device=None) as f:  # type: ignore[arg-type]
        assert f.get_tensor("a").device.type == "cpu"
    lin = torch.nn.Linear(3, 1, bias=False)
    tt.save_file({"weight": torch.ones(1, 3)}, path)
    assert tt.load_model(lin, path, device=None) == st.load_model(lin, path, device=None)
    # Beyond the reference (spec/FORMAT.md P7): torch.device and "cpu:0" and "meta".
    assert tt.load_file(path, device=torch.device("cpu"))["weight"].device.type == "cpu"  # type: ignore[arg-type]
    assert tt.load_file(path, device="cpu:0")["weight"].device.type == "cpu"
    assert tt.load_file(path, device="meta")["weight"].device.type == "meta"


def test_to_ndarray_gives_the_reference_bytes() -> None:
    """diffusers' prepare_encode/prepare_decode send ``_to_ndarray(t)[0].tobytes()``."""
    torch = pytest.importorskip("torch")
    import safetensors.torch as st

    import tensorfile.torch as tt

    base = torch.arange(24, dtype=torch.float32).reshape(2, 3, 4)
    for t in (base, base.to(torch.bfloat16), base[0], torch.tensor(7, dtype=torch.int64),
              torch.zeros(0, 3), torch.zeros(4, dtype=torch.bool)):
        ours, theirs = tt._to_ndarray(t), st._to_ndarray(t)
        assert ours[0].tobytes() == theirs[0].tobytes()
        assert ours[0].dtype == theirs[0].dtype and type(ours[1]) is type(theirs[1])
    arr, owner = tt._to_ndarray(base)
    assert arr.ctypes.data == base.data_ptr() and owner is not None  # a view, not a copy
    # A non-contiguous tensor gives its values (the reference reads raw memory).
    assert tt._to_ndarray(base.transpose(0, 2))[0].tobytes() == (
        base.transpose(0, 2).contiguous().numpy().tobytes()
    )
    for m in (tt, st):  # a meta tensor has no bytes: torch's error, in both
        with pytest.raises(NotImplementedError):
            m._to_ndarray(torch.zeros(3, device="meta"))


def test_writer_type_errors_are_type_errors() -> None:
    torch = pytest.importorskip("torch")
    import safetensors.torch as st

    import tensorfile.torch as tt

    for bad in ({"k": 1}, {1: "v"}, {"k": None}, "k=v"):
        with pytest.raises(TypeError):
            st.save({"a": torch.zeros(1)}, metadata=bad)  # type: ignore[arg-type]
        with pytest.raises(TypeError) as e:
            tt.save({"a": torch.zeros(1)}, metadata=bad)  # type: ignore[arg-type]
        assert isinstance(e.value, TensorfileError)
        with pytest.raises(TypeError):
            tnp.save({"a": np.zeros(1)}, metadata=bad)  # type: ignore[arg-type]


def test_load_model_and_remove_duplicate_names_return_the_reference_types(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    import safetensors.torch as st

    import tensorfile.torch as tt

    path = tmp_path / "w.safetensors"
    tt.save_file({"weight": torch.ones(2, 3), "extra": torch.zeros(1)}, path)
    for mod in (st, tt):
        missing, unexpected = mod.load_model(torch.nn.Linear(3, 2), path, strict=False)
        assert (type(missing), type(unexpected)) == (set, list)
        assert (missing, unexpected) == ({"bias"}, ["extra"])
    emb = torch.nn.Embedding(4, 2)
    tied = {"a.weight": emb.weight, "b.weight": emb.weight, "c": torch.zeros(1)}
    ours, theirs = tt._remove_duplicate_names(tied), st._remove_duplicate_names(tied)
    assert type(ours) is type(theirs) and ours == theirs == {"a.weight": ["b.weight"]}
    assert ours["not there"] == []  # a defaultdict(list), as callers rely on
