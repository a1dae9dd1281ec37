"""Sharded models: lazy reading across shards, strict index validation, atomic sharded writes."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tensorfile
from tensorfile._format.dtypes import DTYPES, numpy_dtype
from tensorfile._format.header import Entry, canonical_order
from tensorfile.errors import SerializationError, ShardIndexError, TensorNotFoundError
from tensorfile.sharded import (
    open_sharded,
    parse_size,
    read_index,
    save_file_iter,
    save_sharded,
    save_sharded_iter,
    write_order,
)
from tensorfile.sharded._index import INDEX_SUFFIX
from tensorfile.sharded._writer import plan_shards

SHARD_RE = re.compile(r"model-(\d{5})-of-(\d{5})\.safetensors")


def _model(n: int = 6, rows: int = 16) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(n)
    out = {f"layer{i}.weight": rng.standard_normal((rows * (i + 1), 8)).astype(np.float32) for i in range(n)}
    out["embed"] = rng.integers(0, 100, size=(40,), dtype=np.int64)
    out["scale"] = np.float16(3.5) * np.ones((3, 3), dtype=np.float16)
    return out


def _assert_same(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert sorted(got) == sorted(want)
    for k in want:
        assert got[k].dtype == want[k].dtype and got[k].shape == want[k].shape, k
        assert got[k].tobytes() == np.ascontiguousarray(want[k]).tobytes(), k


# --------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------


def test_sharded_layout_and_index(tmp_path: Path) -> None:
    tensors = _model()
    index = save_sharded(tensors, tmp_path, max_shard_size=2000, metadata={"format": "np"})
    files = sorted(os.listdir(tmp_path))
    shards = [f for f in files if SHARD_RE.fullmatch(f)]
    assert len(shards) > 2 and files == [*shards, "model.safetensors.index.json"]
    n = len(shards)
    assert all(SHARD_RE.fullmatch(s).group(2) == f"{n:05d}" for s in shards)  # type: ignore[union-attr]
    doc = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    total = sum(a.nbytes for a in tensors.values())
    assert doc["metadata"] == {"total_size": total} == dict(index.metadata)
    assert doc["weight_map"] == dict(index.weight_map)
    assert set(doc["weight_map"]) == set(tensors)
    # Tensors go to shards in canonical order, never split, each shard within the limit
    # unless it holds a single bigger tensor.
    order = [e.name for e in canonical_order(
        Entry(k, tensorfile.sharded._writer.as_dtype(v.dtype), v.shape) for k, v in tensors.items())]
    assert [doc["weight_map"][k] for k in order] == sorted(doc["weight_map"][k] for k in order)
    for shard in shards:
        with tensorfile.safe_open(tmp_path / shard) as f:
            size = sum(f.info(k).nbytes for k in f.keys())
            assert size <= 2000 or len(f.keys()) == 1
            assert f.metadata() == {"format": "np"}
    _assert_same(tensorfile.load_file(tmp_path), tensors)


def test_single_file_when_everything_fits_and_stale_files_removed(tmp_path: Path) -> None:
    tensors = _model()
    save_sharded(tensors, tmp_path, max_shard_size=1500)
    (tmp_path / "unrelated.txt").write_text("keep me")
    index = save_sharded(tensors, tmp_path)  # default 5GB: everything fits
    assert index.path is None
    assert sorted(os.listdir(tmp_path)) == ["model.safetensors", "unrelated.txt"]
    _assert_same(tensorfile.load_file(tmp_path / "model.safetensors"), tensors)
    # and back to shards: the single file goes, the index and shards appear
    save_sharded(tensors, tmp_path, max_shard_size=1500)
    names = os.listdir(tmp_path)
    assert "model.safetensors" not in names and "model.safetensors.index.json" in names
    _assert_same(tensorfile.load_file(tmp_path), tensors)


def test_reshard_to_fewer_shards_removes_old_ones(tmp_path: Path) -> None:
    tensors = _model()
    save_sharded(tensors, tmp_path, max_shard_size=1000)
    before = {f for f in os.listdir(tmp_path) if SHARD_RE.fullmatch(f)}
    save_sharded(tensors, tmp_path, max_shard_size=5000)
    after = {f for f in os.listdir(tmp_path) if SHARD_RE.fullmatch(f)}
    assert len(after) < len(before) and after == set(read_index(tmp_path).shard_files)
    _assert_same(tensorfile.load_file(tmp_path), tensors)


def test_custom_prefix(tmp_path: Path) -> None:
    tensors = _model()
    save_sharded(tensors, tmp_path, max_shard_size=2000, prefix="diffusion_pytorch_model")
    assert (tmp_path / ("diffusion_pytorch_model" + INDEX_SUFFIX)).is_file()
    _assert_same(tensorfile.load_file(tmp_path), tensors)
    with pytest.raises(SerializationError):
        save_sharded(tensors, tmp_path, prefix="../x")


@pytest.mark.parametrize(
    ("text", "value"),
    [(123, 123), ("5GB", 5 * 10**9), ("500MiB", 500 << 20), ("1.5KB", 1500), ("2 kib", 2048)],
)
def test_parse_size(text: int | str, value: int) -> None:
    assert parse_size(text) == value


@pytest.mark.parametrize("bad", [0, -1, "", "5XB", "GB", True, "-3MB"])
def test_parse_size_rejects(bad: object) -> None:
    with pytest.raises(SerializationError):
        parse_size(bad)  # type: ignore[arg-type]


def test_plan_never_splits_and_isolates_big_tensors() -> None:
    f32 = DTYPES["F32"]
    entries = [Entry("a", f32, (10,)), Entry("big", f32, (100,)), Entry("c", f32, (10,))]
    plan = plan_shards(entries, 60)
    assert [[e.name for e in s] for s in plan] == [["a"], ["big"], ["c"]]
    assert [[e.name for e in s] for s in plan_shards(entries, 1000)] == [["a", "big", "c"]]


dtypes = [d for d in DTYPES.values() if not d.sub_byte]
names = st.text(st.characters(codec="utf-8", exclude_characters="\0"), min_size=1, max_size=8).filter(
    lambda s: s != "__metadata__"
)


@st.composite
def arrays(draw: st.DrawFn) -> np.ndarray:
    npdt = numpy_dtype(draw(st.sampled_from(dtypes)))
    shape = tuple(draw(st.lists(st.integers(0, 5), max_size=3)))
    n = int(np.prod(shape)) * npdt.itemsize
    raw = draw(st.binary(min_size=n, max_size=n))
    return np.frombuffer(raw, dtype=np.uint8).view(npdt).reshape(shape)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(names, arrays(), max_size=8), st.integers(1, 400))
def test_roundtrip_any_shard_size(tmp_path_factory: pytest.TempPathFactory, tensors: dict[str, np.ndarray], limit: int) -> None:
    folder = tmp_path_factory.mktemp("m")
    index = save_sharded(tensors, folder, max_shard_size=limit)
    got = tensorfile.load_file(folder)
    _assert_same(got, tensors)
    if index.path is not None:
        assert index.total_size == sum(a.nbytes for a in tensors.values())
        assert read_index(folder).weight_map == index.weight_map
    with open_sharded(folder) as model:
        assert model.keys() == sorted(tensors)
        for k, v in tensors.items():
            assert model[k].shape == v.shape


def test_torch_roundtrip_and_load_model(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    import tensorfile.torch as tft

    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    save_sharded(sd, tmp_path, max_shard_size=1024, metadata={"format": "pt"})
    assert len(read_index(tmp_path).shard_files) >= 2
    fresh = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    missing, unexpected = tft.load_model(fresh, tmp_path)
    assert missing == set() and unexpected == []
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, sd[k])
    loaded = tft.load_file(tmp_path)
    assert all(torch.equal(loaded[k], sd[k]) for k in sd)


def test_torch_shared_tensors_refused(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    w = torch.ones(4, 4)
    with pytest.raises(SerializationError, match="share memory"):
        save_sharded({"a": w, "b": w}, tmp_path)


def test_reads_a_folder_written_by_huggingface_hub(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    hub = pytest.importorskip("huggingface_hub")
    sd = {f"w{i}": torch.arange(300 * (i + 1), dtype=torch.float32) for i in range(5)}
    hub.save_torch_state_dict(sd, tmp_path, max_shard_size=3000)
    assert (tmp_path / "model.safetensors.index.json").is_file()
    loaded = tensorfile.torch.load_file(tmp_path)
    assert all(torch.equal(loaded[k], sd[k]) for k in sd)


def test_reference_reads_our_shards(tmp_path: Path) -> None:
    st_np = pytest.importorskip("safetensors.numpy")
    tensors = _model()
    index = save_sharded(tensors, tmp_path, max_shard_size=2000)
    got: dict[str, np.ndarray] = {}
    for shard in index.shard_files:
        got.update(st_np.load_file(tmp_path / shard))
    _assert_same(got, tensors)


# --------------------------------------------------------------------------
# lazy reading
# --------------------------------------------------------------------------


def test_shards_opened_only_when_touched(tmp_path: Path) -> None:
    tensors = _model()
    index = save_sharded(tensors, tmp_path, max_shard_size=1500)
    with open_sharded(tmp_path) as model:
        assert model.opened_shards == []
        handle = model["layer0.weight"]
        assert handle.shape == tensors["layer0.weight"].shape and handle.dtype.name == "F32"
        assert model.opened_shards == []  # shape and dtype need no shard
        np.testing.assert_array_equal(handle[2:5, ::2], tensors["layer0.weight"][2:5, ::2])
        assert model.opened_shards == [index.weight_map["layer0.weight"]]
        np.testing.assert_array_equal(model.get_tensor("embed"), tensors["embed"])
        assert set(model.opened_shards) == {index.weight_map["layer0.weight"], index.weight_map["embed"]}
        with pytest.raises(TensorNotFoundError):
            model["nope"]
        assert "embed" in model and len(model) == len(tensors)
    with pytest.raises(tensorfile.ClosedFileError):
        model.get_tensor("embed")


def test_pread_backend_counts_bytes(tmp_path: Path) -> None:
    tensors = _model()
    save_sharded(tensors, tmp_path, max_shard_size=1500)
    with open_sharded(tmp_path, backend="pread") as model:
        w = model.get_tensor("layer2.weight")
        assert model.bytes_read == w.nbytes
        model["layer1.weight"][0:2]  # a slice of rows reads just those rows
        assert model.bytes_read == w.nbytes + tensors["layer1.weight"][0:2].nbytes


def test_single_file_opens_as_a_one_shard_model(tmp_path: Path) -> None:
    tensors = _model()
    tensorfile.save_file(tensors, tmp_path / "weights.safetensors")
    with open_sharded(tmp_path / "weights.safetensors") as model:
        assert model.index.shard_files == ["weights.safetensors"]
        _assert_same(model.tensors(), tensors)
    with open_sharded(tmp_path) as model:  # a folder whose only file it is
        _assert_same(model.tensors(), tensors)
    (tmp_path / "other.safetensors").write_bytes((tmp_path / "weights.safetensors").read_bytes())
    with pytest.raises(ShardIndexError, match="expected an index or one file"):
        open_sharded(tmp_path)


# --------------------------------------------------------------------------
# hostile indexes
# --------------------------------------------------------------------------


@pytest.fixture
def sharded(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    save_sharded(_model(), folder, max_shard_size=1500)
    return folder


def _edit_index(folder: Path, edit: object) -> None:
    path = folder / "model.safetensors.index.json"
    doc = json.loads(path.read_text())
    edit(doc)  # type: ignore[operator]
    path.write_text(json.dumps(doc))


def _first_shard(doc: dict) -> str:
    return sorted(doc["weight_map"].values())[0]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["weight_map"].update({"layer0.weight": "model-99999-of-99999.safetensors"}), "missing"),
        (lambda d: d["weight_map"].update({"layer0.weight": "../outside.safetensors"}), "leaves the model folder"),
        (lambda d: d["weight_map"].update({"layer0.weight": "/etc/passwd"}), "relative"),
        (lambda d: d["weight_map"].update({"layer0.weight": "C:/x.safetensors"}), "relative"),
        (lambda d: d["weight_map"].update({"layer0.weight": "a\\..\\b"}), "relative"),
        (lambda d: d["weight_map"].update({"layer0.weight": 7}), "non-empty string"),
        (lambda d: d["weight_map"].update({"layer0.weight": ""}), "non-empty string"),
        (lambda d: d["weight_map"].update({"ghost": _first_shard(d)}), "does not contain"),
        (lambda d: d["weight_map"].pop("embed"), "does not list"),
        (lambda d: d["metadata"].update({"total_size": 12}), "total_size"),
        (lambda d: d["metadata"].update({"total_size": -1}), "total_size"),
        (lambda d: d["metadata"].update({"total_size": "100"}), "total_size"),
        (lambda d: d["metadata"].update({"total_size": True}), "total_size"),
        (lambda d: d.update({"metadata": []}), "'metadata'"),
        (lambda d: d.update({"weight_map": {}}), "no tensors"),
        (lambda d: d.update({"weight_map": ["a"]}), "weight_map"),
        (lambda d: d.pop("weight_map"), "weight_map"),
    ],
)
def test_hostile_index(sharded: Path, edit: object, message: str) -> None:
    _edit_index(sharded, edit)
    with pytest.raises(ShardIndexError, match=re.escape(message)):
        open_sharded(sharded)
    with pytest.raises(ShardIndexError):
        tensorfile.load_file(sharded)


def test_tensor_moved_to_another_shard_is_a_duplicate(sharded: Path) -> None:
    doc = json.loads((sharded / "model.safetensors.index.json").read_text())
    shards = sorted(set(doc["weight_map"].values()))
    # copy one shard's tensors into another shard: same names in two shards
    a = tensorfile.load_file(sharded / shards[0])
    b = tensorfile.load_file(sharded / shards[1])
    tensorfile.save_file({**a, **b}, sharded / shards[1])
    with pytest.raises(ShardIndexError, match="in both"):
        open_sharded(sharded)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'{"weight_map": {"a": "x"}, "weight_map": {"a": "y"}}', "more than once"),
        (b'{"weight_map": {"a": "x", "a": "y"}}', "more than once"),
        (b'{"metadata": {"total_size": NaN}, "weight_map": {}}', "not valid JSON"),
        (b"\xff\xfe", "UTF-8"),
        (b"[1, 2]", "JSON object"),
        (b"{", "not valid JSON"),
        (b"[" * 100000, "JSON"),
    ],
)
def test_malformed_index_json(tmp_path: Path, raw: bytes, message: str) -> None:
    (tmp_path / "model.safetensors.index.json").write_bytes(raw)
    with pytest.raises(ShardIndexError, match=message):
        open_sharded(tmp_path)


def test_symlink_out_of_folder(sharded: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.safetensors"
    doc = json.loads((sharded / "model.safetensors.index.json").read_text())
    shard = _first_shard(doc)
    os.replace(sharded / shard, outside)
    os.symlink(outside, sharded / shard)
    with pytest.raises(ShardIndexError, match="symlink out of the model folder"):
        open_sharded(sharded)
    # the Hugging Face cache links snapshot files to blobs elsewhere: allowed on request
    with open_sharded(sharded, allow_external_symlinks=True) as model:
        assert len(model.tensors()) == len(_model())


def test_shard_that_is_a_folder(sharded: Path) -> None:
    doc = json.loads((sharded / "model.safetensors.index.json").read_text())
    shard = _first_shard(doc)
    (sharded / shard).unlink()
    (sharded / shard).mkdir()
    with pytest.raises(ShardIndexError, match="not a regular file"):
        open_sharded(sharded)


def test_shard_changed_after_open(sharded: Path) -> None:
    with open_sharded(sharded) as model:
        name = "embed"
        shard = model[name].shard
        tensorfile.save_file({"other": np.zeros(3)}, sharded / shard)
        with pytest.raises(ShardIndexError, match="changed"):
            model.get_tensor(name)


def test_several_indexes_need_a_choice(sharded: Path) -> None:
    (sharded / "model.safetensors.index.json").rename(sharded / "a.safetensors.index.json")
    (sharded / "b.safetensors.index.json").write_text((sharded / "a.safetensors.index.json").read_text())
    with pytest.raises(ShardIndexError, match="several indexes"):
        open_sharded(sharded)
    with open_sharded(sharded / "b.safetensors.index.json") as model:
        assert len(model) == len(_model())


def test_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(ShardIndexError):
        open_sharded(tmp_path)


# --------------------------------------------------------------------------
# writing tensors produced one at a time
# --------------------------------------------------------------------------


def test_save_file_iter_is_byte_identical(tmp_path: Path) -> None:
    tensors = _model()
    tensorfile.save_file(tensors, tmp_path / "a.safetensors", {"k": "v"})
    calls: list[str] = []

    def produce(name: str) -> np.ndarray:
        calls.append(name)
        return tensors[name]

    entries = {k: (v.dtype, v.shape) for k, v in tensors.items()}
    save_file_iter(entries, produce, tmp_path / "b.safetensors", {"k": "v"})
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()
    assert calls == write_order(entries)
    # the same from a generator of pairs in write order
    save_file_iter(entries, ((n, tensors[n]) for n in write_order(entries)), tmp_path / "c.safetensors", {"k": "v"})
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "c.safetensors").read_bytes()


def test_save_file_iter_dtype_spellings(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    entries = {"a": ("BF16", (2,)), "b": (torch.float16, [3]), "c": (np.int8, ()), "d": ("float32", (1,))}
    values = {"a": torch.ones(2, dtype=torch.bfloat16), "b": torch.zeros(3, dtype=torch.float16),
              "c": np.full((), 4, np.int8), "d": np.ones(1, np.float32)}
    save_file_iter(entries, values.__getitem__, tmp_path / "x.safetensors")
    with tensorfile.safe_open(tmp_path / "x.safetensors") as f:
        assert [f.info(k).dtype.name for k in "abcd"] == ["BF16", "F16", "I8", "F32"]
    with pytest.raises(SerializationError):
        save_file_iter({"a": ("NOPE", (1,))}, values.__getitem__, tmp_path / "y.safetensors")


@pytest.mark.parametrize(
    ("produce", "message"),
    [
        (lambda names, t: ((n, t[n]) for n in reversed(names)), "was expected"),
        (lambda names, t: ((n, t[n]) for n in names[:-1]), "stopped before"),
        (lambda names, t: ((n, t[n][:1]) for n in names), "announced"),
    ],
)
def test_save_file_iter_wrong_producer_leaves_nothing(tmp_path: Path, produce: object, message: str) -> None:
    tensors = _model()
    entries = {k: (v.dtype, v.shape) for k, v in tensors.items()}
    with pytest.raises(SerializationError, match=message):
        save_file_iter(entries, produce(write_order(entries), tensors), tmp_path / "x.safetensors")  # type: ignore[operator]
    assert os.listdir(tmp_path) == []


def test_save_sharded_iter_from_generator(tmp_path: Path) -> None:
    tensors = _model()
    entries = {k: (v.dtype, v.shape) for k, v in tensors.items()}
    gen = ((n, tensors[n]) for n in write_order(entries))
    save_sharded_iter(entries, gen, tmp_path / "a", max_shard_size=1500)
    save_sharded(tensors, tmp_path / "b", max_shard_size=1500)
    for f in os.listdir(tmp_path / "b"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
    extra = iter([*((n, tensors[n]) for n in write_order(entries)), ("extra", np.zeros(1))])
    with pytest.raises(SerializationError, match="not announced"):
        save_sharded_iter(entries, extra, tmp_path / "c", max_shard_size=1500)
    assert not (tmp_path / "c" / "model.safetensors.index.json").exists()


def test_verify_on_load_across_shards(tmp_path: Path) -> None:
    """A signed folder: each shard is checked against the one signature as it is read."""
    from tensorfile.errors import DigestMismatchError
    from tensorfile.integrity import generate_key, sign

    tensors = _model()
    folder = tmp_path / "model"
    index = save_sharded(tensors, folder, max_shard_size=1500)
    keys = generate_key(tmp_path / "key.pem")
    sign(folder, keys.private_key)
    _assert_same(tensorfile.load_file(folder, verify=keys.public_key), tensors)
    shard = index.weight_map["embed"]
    with tensorfile.safe_open(folder / shard) as f:
        start, _ = f.byte_range("embed")
    data = bytearray((folder / shard).read_bytes())
    data[start] ^= 0x01
    (folder / shard).write_bytes(bytes(data))
    with open_sharded(folder, verify=keys.public_key) as model:
        np.testing.assert_array_equal(model.get_tensor("layer0.weight"), tensors["layer0.weight"])
        with pytest.raises(DigestMismatchError):
            model.get_tensor("embed")


def test_load_on_cuda_through_pinned_buffers(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device on this machine")
    import tensorfile.torch as tft

    sd = {f"w{i}": torch.randn(100 + i, 7) for i in range(5)}
    save_sharded(sd, tmp_path, max_shard_size=3000)
    loaded = tft.load_file(tmp_path, device="cuda")
    for k, v in sd.items():
        assert loaded[k].device.type == "cuda" and torch.equal(loaded[k].cpu(), v)
