"""The converter against torch as the oracle: every benign checkpoint kind.

Each converted file must hold, under the state-dict names, tensors equal bit
for bit to ``torch.load(path, weights_only=True)`` (torch is only the oracle
here; the converter never imports it) and must load in the reference
``safetensors``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tensorfile.pickles.convert import convert

torch = pytest.importorskip("torch")
# torch's weights-only loader warns about protocol 3 files it then reads fine.
pytestmark = pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
st_torch = pytest.importorskip("safetensors.torch")
safe_open = pytest.importorskip("safetensors").safe_open


import torch_pickle_kit as kit  # noqa: E402  (on sys.path through conftest.py)

ALL_DTYPES = [
    torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int8, torch.uint8,
    torch.int16, torch.int32, torch.int64, torch.bool, torch.complex64, torch.uint16,
    torch.uint32, torch.uint64, torch.float8_e4m3fn, torch.float8_e5m2, torch.float8_e4m3fnuz,
    torch.float8_e5m2fnuz, torch.float8_e8m0fnu, torch.float4_e2m1fn_x2,
]


def _sample(dtype: Any, shape: tuple[int, ...] = (3, 5), seed: int = 0) -> Any:
    """Distinct bytes per element for any dtype (built through uint8, no arithmetic)."""
    g = torch.Generator().manual_seed(seed)
    probe = torch.empty(0, dtype=dtype)
    n = int(np.prod(shape)) * probe.element_size()
    raw = torch.randint(0, 256, (n,), dtype=torch.uint8, generator=g)
    if dtype == torch.bool:
        raw = raw % 2
    elif dtype == torch.float8_e8m0fnu:
        raw = raw.clamp(max=254)  # 255 is its NaN: keep values comparable
    return raw.view(dtype).reshape(shape)


def _bits(t: Any) -> Any:
    """The raw bytes of ``t`` (as_strided: a contiguous tensor may still carry odd
    strides on size-1 dimensions, which .view() refuses)."""
    if t.numel() == 0:
        return torch.empty(0, dtype=torch.uint8)
    # The values torch.load returns: its negative and conjugate bits resolved.
    flat = t.detach().resolve_neg().resolve_conj().contiguous()
    return flat.as_strided((t.numel(),), (1,)).view(torch.uint8)


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """The oracle's naming: dotted keys through dicts and lists, tensors only."""
    out: dict[str, Any] = {}
    if isinstance(obj, torch.Tensor):
        out[prefix or "tensor"] = obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            out.update(_flatten(v, f"{prefix}.{i}" if prefix else str(i)))
    return out


def assert_matches_oracle(src: Path, out: Path, report: Any, key: str | None = None,
                          saved: Any = None) -> None:
    """Every tensor torch loads is in ``out`` (directly or via an alias), bit for bit.

    ``saved`` replaces ``torch.load`` where torch's weights-only unpickler
    cannot read its own file (protocol 4 and 5 frames: "Unsupported operand 149").
    """
    loaded = torch.load(src, weights_only=True, map_location="cpu") if saved is None else saved
    expected = _flatten(loaded[key] if key else loaded)
    got = st_torch.load_file(out)  # the reference reader
    with safe_open(out, "pt") as f:
        meta = f.metadata() or {}
    assert set(expected) == set(got) | set(report.aliases)
    for name, want in expected.items():
        kept = report.aliases.get(name, name)
        assert meta.get(name, kept) == kept  # aliases recorded as {alias: kept}
        have = got[kept]
        assert have.dtype == want.dtype, name
        assert have.shape == want.shape, name
        assert torch.equal(_bits(have), _bits(want)), name


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_protocols_and_formats(tmp_path: Path, protocol: int, legacy: bool) -> None:
    base = _sample(torch.float32, (4, 6), seed=protocol)
    sd = {
        "plain": base,
        "param": torch.nn.Parameter(_sample(torch.float16, (3,), seed=1)),
        "half_rows": base[1:3],                 # a view with an offset
        "transposed": base.t(),                 # non-contiguous
        "strided": base[:, ::2],                # non-contiguous with gaps
        "scalar": torch.tensor(3.5),            # 0-d
        "empty": torch.empty(0, 4),             # numel 0
        "long": torch.arange(7),
    }
    src = tmp_path / "ck.pt"
    torch.save(sd, src, pickle_protocol=protocol, _use_new_zipfile_serialization=not legacy)
    out = tmp_path / "ck.safetensors"
    report = convert(src, out)
    assert report.format == ("torch-legacy" if legacy else "torch-zip")
    assert_matches_oracle(src, out, report, saved=sd if protocol >= 4 else None)
    assert report.aliases == {}  # different views of one storage are separate tensors


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=str)
def test_every_dtype(tmp_path: Path, dtype: Any) -> None:
    t = _sample(dtype, (4, 6))
    sd = {"full": t, "view": t[1:], "transposed": t.t(), "zero_d": t[0, 0].clone()}
    if dtype == torch.float4_e2m1fn_x2:
        del sd["zero_d"]  # packed fp4 has no 0-d form in safetensors
    src = tmp_path / "dt.pt"
    torch.save(sd, src)
    out = tmp_path / "dt.safetensors"
    report = convert(src, out)
    assert_matches_oracle(src, out, report)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.int64, torch.bool,
                                   torch.complex64, torch.float16, torch.uint8],
                         ids=str)
def test_every_legacy_storage_type(tmp_path: Path, dtype: Any) -> None:
    """The legacy format with each typed storage (torch cannot reload v3 dtypes from it)."""
    t = _sample(dtype, (5, 3))
    src = tmp_path / "legacy.pt"
    torch.save({"t": t, "tt": t.t(), "row": t[2]}, src, _use_new_zipfile_serialization=False)
    out = tmp_path / "legacy.safetensors"
    assert_matches_oracle(src, out, convert(src, out))


def test_tied_weights_written_once_and_load_model_restores(tmp_path: Path) -> None:
    class Tied(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = torch.nn.Embedding(10, 4)
            self.head = torch.nn.Linear(4, 10, bias=False)
            self.head.weight = self.emb.weight

    model = Tied()
    src = tmp_path / "pytorch_model.bin"
    torch.save(model.state_dict(), src)
    report = convert(src)
    out = tmp_path / "model.safetensors"
    assert report.outputs == [str(out)]
    assert report.aliases == {"head.weight": "emb.weight"}
    assert report.tensors == ["emb.weight"]
    assert_matches_oracle(src, out, report)
    for loader in (st_torch.load_model, __import__("tensorfile.torch").torch.load_model):
        fresh = Tied()
        torch.nn.init.zeros_(fresh.emb.weight)
        loader(fresh, out)
        assert torch.equal(fresh.head.weight, model.emb.weight)
        assert fresh.head.weight.data_ptr() == fresh.emb.weight.data_ptr()


def test_shared_storage_distinct_tensor_objects(tmp_path: Path) -> None:
    """Two tensor objects with the same view of one storage are one tensor plus an alias."""
    base = torch.arange(12, dtype=torch.float32)
    sd = {"a": base.view(3, 4), "b": base.view(3, 4), "c": base.view(4, 3), "d": base[4:]}
    src = tmp_path / "shared.pt"
    torch.save(sd, src)
    out = tmp_path / "shared.safetensors"
    report = convert(src, out)
    assert report.aliases == {"b": "a"}
    assert sorted(report.tensors) == ["a", "c", "d"]
    assert_matches_oracle(src, out, report)


def _training_checkpoint() -> dict[str, Any]:
    """What a training loop saves (the optimizer state spelled out: importing
    torch.optim costs seconds)."""
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    params = list(model.parameters())
    optimizer = {
        "state": {i: {"step": torch.tensor(1.0), "exp_avg": torch.full_like(p, 0.1),
                      "exp_avg_sq": torch.full_like(p, 0.01)} for i, p in enumerate(params)},
        "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0,
                          "amsgrad": False, "foreach": None, "params": [0, 1, 2, 3]}],
    }
    return {"model_state": model.state_dict(), "optimizer_state": optimizer, "step": 3,
            "config": {"name": "tiny", "layers": [3, 4, 2], "dropout": None}}


def test_nested_training_checkpoint_flattened(tmp_path: Path) -> None:
    ck = _training_checkpoint()
    src = tmp_path / "train.pt"
    torch.save(ck, src)
    out = tmp_path / "train.safetensors"
    report = convert(src, out)
    assert_matches_oracle(src, out, report)
    assert "model_state.0.weight" in report.tensors
    assert "optimizer_state.state.0.exp_avg" in report.tensors
    with safe_open(out, "pt") as f:
        meta = f.metadata()
    assert meta["format"] == "pt"
    assert json.loads(meta["step"]) == 3
    assert json.loads(meta["config"]) == {"name": "tiny", "layers": [3, 4, 2], "dropout": None}
    groups = json.loads(meta["optimizer_state.param_groups"])
    assert groups[0]["lr"] == 1e-3 and groups[0]["params"] == [0, 1, 2, 3]
    assert report.dropped == []


def test_key_selects_one_sub_dict(tmp_path: Path) -> None:
    src = tmp_path / "train.pt"
    torch.save(_training_checkpoint(), src)
    out = tmp_path / "model.safetensors"
    report = convert(src, out, key="model_state")
    assert_matches_oracle(src, out, report, key="model_state")
    assert sorted(report.tensors) == ["0.bias", "0.weight", "2.bias", "2.weight"]


def test_values_without_safetensors_form_are_reported_dropped(tmp_path: Path) -> None:
    sd = {"w": torch.ones(2), "device": torch.device("cpu"), "nan": float("nan"),
          "blob": b"\x00\x01", "ok": 1.5, "dtype": torch.float16}
    src = tmp_path / "mixed.pt"
    torch.save(sd, src)
    report = convert(src, tmp_path / "mixed.safetensors")
    dropped = {d.name: d.reason for d in report.dropped}
    assert set(dropped) == {"device", "blob", "dtype"}
    assert "torch.device" in dropped["device"]
    assert "torch.float16" in dropped["dtype"]
    assert sorted(report.values) == ["nan", "ok"]  # NaN is kept, spelled "NaN"
    assert report.tensors == ["w"]
    from safetensors import safe_open

    with safe_open(tmp_path / "mixed.safetensors", "np") as f:
        meta = f.metadata()
    assert json.loads(meta["nan"]) == "NaN" and json.loads(meta["ok"]) == 1.5


def _rewrite_zip(src: Path, dst: Path, edit: Any) -> None:
    import zipfile

    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, edit(info.filename, zin.read(info.filename)))


def test_cuda_location_is_accepted(tmp_path: Path) -> None:
    """A file saved from a GPU names 'cuda:0' (crafted: the location string rewritten)."""
    src = tmp_path / "cpu.pt"
    torch.save({"w": _sample(torch.float32, (2, 3)), "b": torch.arange(4)}, src)
    cuda = tmp_path / "cuda.pt"
    old, new = kit.text("cpu"), kit.text("cuda:0")

    def edit(name: str, data: bytes) -> bytes:
        if name.endswith("data.pkl"):
            assert old in data
            return data.replace(old, new)
        return data

    _rewrite_zip(src, cuda, edit)
    assert b"cuda:0" in cuda.read_bytes()
    out = tmp_path / "cuda.safetensors"
    assert_matches_oracle(cuda, out, convert(cuda, out))


def test_big_endian_byteorder_is_converted(tmp_path: Path) -> None:
    """byteorder 'big': records hold big-endian elements (complex: each half swapped)."""
    sd = {"f": _sample(torch.float32, (2, 3)), "c": _sample(torch.complex64, (2,)),
          "h": _sample(torch.bfloat16, (3, 2)).t(), "i": torch.arange(5), "b": torch.ones(2) > 0}
    src = tmp_path / "little.pt"
    torch.save(sd, src)
    swap_width = {"f": 4, "c": 4, "h": 2, "i": 8, "b": 1}
    keys = {}
    with __import__("zipfile").ZipFile(src) as z:
        pkl = z.read("little/data.pkl")
    for name in sd:  # which storage key holds which tensor: keys are assigned in order
        keys[str(len(keys))] = name

    def edit(name: str, data: bytes) -> bytes:
        if name.endswith("/byteorder"):
            return b"big"
        if "/data/" in name:
            width = swap_width[keys[name.rsplit("/", 1)[1]]]
            return np.frombuffer(data, dtype=f"<u{width}").byteswap().tobytes()
        return data

    big = tmp_path / "big.pt"
    _rewrite_zip(src, big, edit)
    assert b"_rebuild_tensor_v2" in pkl
    loaded = torch.load(big, weights_only=True)
    for name, t in sd.items():  # the oracle reads the big-endian file as the original
        assert torch.equal(_bits(loaded[name]), _bits(t))
    out = tmp_path / "big.safetensors"
    assert_matches_oracle(big, out, convert(big, out))


def test_negative_and_conjugate_views_are_resolved(tmp_path: Path) -> None:
    """Issue 27: torch.save keeps a view's neg and conj bits as metadata; the
    values torch.load returns are -x and conj(x), not the stored bytes."""
    x = torch.tensor([1 + 2j, -3.5 - 0.25j, 0j, float("inf") - 1j], dtype=torch.complex64)
    i = torch.tensor([1, -2, 127, -128], dtype=torch.int8)
    sd = {"x": x, "conj": x.conj(), "neg": torch._neg_view(x),
          "both": torch._neg_view(x.conj()), "i": i, "neg_i": torch._neg_view(i),
          "neg_f": torch._neg_view(torch.tensor([0.0, -0.0, 1.5, float("-inf")]))}
    # a float view of a complex storage: saved alone (torch refuses two dtypes per storage)
    imag = {"neg_imag": x.clone().conj().imag}
    assert imag["neg_imag"].is_neg() and sd["conj"].is_conj()
    for name, saved in (("views", sd), ("imag", imag)):
        src = tmp_path / f"{name}.pt"
        torch.save(saved, src)
        assert b"neg" in src.read_bytes() or b"conj" in src.read_bytes()
        out = tmp_path / f"{name}.safetensors"
        report = convert(src, out)
        assert not report.aliases  # same bytes, other values: never tied to "x"
        assert_matches_oracle(src, out, report)


def _v3_tensor(pid: bytes, dtype: str, size: tuple[int, ...], metadata: bytes = b"") -> bytes:
    """``_rebuild_tensor_v3(storage, 0, size, stride, False, hooks, torch.<dtype>[, metadata])``."""
    hooks = kit.glob("collections", "OrderedDict") + kit.EMPTY_TUPLE + kit.REDUCE
    stride = tuple(int(np.prod(size[i + 1:])) for i in range(len(size)))
    return kit.glob("torch._utils", "_rebuild_tensor_v3") + kit.tup(
        [pid, kit.integer(0), kit.ints(size), kit.ints(stride), kit.NEWFALSE, hooks,
         kit.glob("torch", dtype), *([metadata] if metadata else [])]) + kit.REDUCE


def _metadata(**bits: bytes) -> bytes:
    return kit.EMPTY_DICT + kit.MARK + b"".join(
        kit.text(k) + v for k, v in bits.items()) + kit.SETITEMS


TRUE, NONE = b"\x88", b"N"


@pytest.mark.parametrize(("stype", "dtype", "metadata", "refused"), [
    ("FloatStorage", "float32", _metadata(conj=TRUE), "conjugate bit on a F32"),
    ("FloatStorage", "float32", _metadata(neg=kit.NEWFALSE), "'neg' is False"),
    ("FloatStorage", "float32", _metadata(neg=NONE), "'neg' is None"),
    ("BoolStorage", "bool", _metadata(neg=TRUE), "negative bit on a BOOL"),
    ("FloatStorage", "float32", _metadata(other=TRUE), None),  # torch ignores other keys
    ("IntStorage", "int32", _metadata(neg=TRUE), None),
    ("ByteStorage", "uint8", _metadata(neg=TRUE), None),  # wraps: 256 - x
], ids=["conj-float", "neg-false", "neg-none", "neg-bool", "other-key", "neg-int", "neg-uint8"])
def test_crafted_tensor_metadata_is_applied_or_refused(tmp_path: Path, stype: str, dtype: str,
                                                       metadata: bytes,
                                                       refused: str | None) -> None:
    from tensorfile.errors import UnsupportedCheckpointError

    size = 4 * torch.empty(0, dtype=getattr(torch, dtype)).element_size()
    body = kit.dict_of([("w", _v3_tensor(kit.storage("0", stype, numel=4), dtype, (4,),
                                         metadata))])
    src = tmp_path / "meta.pt"
    src.write_bytes(kit.Checkpoint(kit.stream(body), {"0": bytes(range(1, size + 1))}).zip_bytes())
    out = tmp_path / "meta.safetensors"
    if refused is None:
        assert_matches_oracle(src, out, convert(src, out))
        return
    with pytest.raises(UnsupportedCheckpointError, match=refused):
        convert(src, out)
    assert not out.exists()


def _big_endian(src: Path, dst: Path, name: str = "byteorder", order: bytes = b"big",
                width: int = 4) -> None:
    """``src`` with its byteorder record named ``name`` saying ``order``, records swapped by ``width``."""
    def edit(entry: str, data: bytes) -> bytes:
        if "/data/" in entry and width > 1:
            return np.frombuffer(data, dtype=f"<u{width}").byteswap().tobytes()
        return data

    import zipfile

    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            if info.filename.endswith("/byteorder"):
                zout.writestr(info.filename.rsplit("/", 1)[0] + "/" + name, order)
            else:
                zout.writestr(info.filename, edit(info.filename, zin.read(info.filename)))


def test_byteorder_record_is_found_ignoring_case(tmp_path: Path) -> None:
    # torch's miniz looks records up ignoring case: ARCHIVE/BYTEORDER is the record.
    src = tmp_path / "little.pt"
    torch.save({"w": _sample(torch.float32, (2, 3))}, src)
    big = tmp_path / "big.pt"
    _big_endian(src, big, name="BYTEORDER")
    out = tmp_path / "big.safetensors"
    assert_matches_oracle(big, out, convert(big, out))
    assert torch.equal(st_torch.load_file(out)["w"], torch.load(src, weights_only=True)["w"])


@pytest.mark.parametrize("order", [b"big\n", b" big", b"BIG", b"little\x00"])
def test_byteorder_values_torch_refuses_are_refused(tmp_path: Path, order: bytes) -> None:
    from tensorfile.errors import MalformedCheckpointError

    src = tmp_path / "little.pt"
    torch.save({"w": torch.ones(2)}, src)
    bad = tmp_path / "bad.pt"
    _big_endian(src, bad, order=order, width=1)
    with pytest.raises(ValueError, match="Unknown endianness"):
        torch.load(bad, weights_only=True)
    with pytest.raises(MalformedCheckpointError, match="byteorder"):
        convert(bad, tmp_path / "bad.safetensors")


def test_big_endian_storages_swap_by_the_storage_dtype(tmp_path: Path) -> None:
    """torch.load swaps a big-endian storage by its own dtype: an UntypedStorage
    (what torch.save writes for uint16, float8...) not at all, and a typed
    storage viewed as another dtype by the storage's width."""
    src = tmp_path / "untyped.pt"
    torch.save({"u": _sample(torch.uint16, (5,)), "h": _sample(torch.float8_e4m3fn, (3,))}, src)
    assert b"UntypedStorage" in src.read_bytes()
    big = tmp_path / "untyped-big.pt"
    _big_endian(src, big, width=1)  # torch swaps nothing: the records stay as they are
    out = tmp_path / "untyped.safetensors"
    assert_matches_oracle(big, out, convert(big, out))

    body = kit.dict_of([("w", _v3_tensor(kit.storage("0", "FloatStorage", numel=4), "int16",
                                         (2, 4)))])
    typed = tmp_path / "typed.pt"
    typed.write_bytes(kit.Checkpoint(kit.stream(body), {"0": bytes(range(16))},
                                     byteorder="big").zip_bytes())
    out = tmp_path / "typed.safetensors"
    assert_matches_oracle(typed, out, convert(typed, out))


def test_hand_built_legacy_storage_views(tmp_path: Path) -> None:
    """Legacy persistent ids with view metadata: a storage that is a window of another."""
    data = np.arange(8, dtype="<f4").tobytes()
    view_meta = kit.tup([kit.text("v1"), kit.integer(2), kit.integer(4)])
    body = kit.dict_of([
        ("whole", kit.tensor_v1(kit.storage("root", numel=8, legacy_view=kit.NONE), 0, (8,),
                                (1,))),
        ("window", kit.tensor_v1(kit.storage("root", numel=8, legacy_view=view_meta),
                                 1, (2,), (1,))),
    ])
    ck = kit.Checkpoint(kit.stream(body), {"root": data})
    src = tmp_path / "views.pt"
    src.write_bytes(ck.legacy_bytes({"root": 4}))
    out = tmp_path / "views.safetensors"
    assert_matches_oracle(src, out, convert(src, out))
    assert st_torch.load_file(out)["window"].tolist() == [3.0, 4.0]


def test_tar_format_of_old_torch(tmp_path: Path) -> None:
    """torch < 0.4's tar layout (torch 2.x refuses it with weights_only, so no oracle)."""
    src = tmp_path / "old.pt"
    src.write_bytes(kit.tar_checkpoint({"a": [1.0, 2.0, 3.0], "b": [4.5]}))
    out = tmp_path / "old.safetensors"
    report = convert(src, out)
    assert report.format == "torch-tar"
    got = st_torch.load_file(out)
    assert got["a"].tolist() == [1.0, 2.0, 3.0] and got["b"].tolist() == [4.5]


def test_bare_tensor_and_list_roots(tmp_path: Path) -> None:
    for root in (torch.arange(3.0), [torch.ones(2), {"x": torch.zeros(1)}]):
        src = tmp_path / "root.pt"
        torch.save(root, src)
        out = tmp_path / "root.safetensors"
        assert_matches_oracle(src, out, convert(src, out, overwrite=True))  # same name each round


def test_progress_reports_bytes_and_digest(tmp_path: Path) -> None:
    import hashlib

    sd = {f"w{i}": torch.ones(100 * (i + 1)) for i in range(4)}
    src = tmp_path / "p.pt"
    torch.save(sd, src)
    calls: list[tuple[int, int]] = []
    report = convert(src, tmp_path / "p.safetensors", progress=lambda d, t: calls.append((d, t)))
    total = sum(t.numel() * 4 for t in sd.values())
    assert calls[-1] == (total, total) and len(calls) == 4
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    assert report.bytes_written == total
    assert report.source_sha256 == {str(src): hashlib.sha256(src.read_bytes()).hexdigest()}
    assert report.to_dict()["tensors"] == report.tensors


def test_legacy_records_are_little_endian_whatever_sys_info_says(tmp_path: Path) -> None:
    """torch wrote legacy records little-endian on every machine (sys_info only records
    the writer's native order), so a big-endian sys_info changes nothing."""
    pid = kit.storage("0", numel=3, legacy_view=kit.NONE)
    body = kit.stream(kit.dict_of([("w", kit.tensor_v2(pid, 0, (3,), (1,)))]))
    ck = kit.Checkpoint(body, {"0": np.array([1.5, -2.0, 3.25], dtype="<f4").tobytes()})
    src = tmp_path / "be.pt"
    src.write_bytes(ck.legacy_bytes({"0": 4}, little_endian=False))
    out = tmp_path / "be.safetensors"
    assert_matches_oracle(src, out, convert(src, out))
    assert st_torch.load_file(out)["w"].tolist() == [1.5, -2.0, 3.25]


@pytest.mark.parametrize("protocol", [2, 4])
def test_pickle_dumps_of_tensors_nested_streams(tmp_path: Path, protocol: int) -> None:
    """pickle.dumps(state_dict): each storage is a legacy torch stream nested in
    ``torch.storage._load_from_bytes`` (torch.load cannot read the file: the
    saved objects are the oracle)."""
    import pickle

    base = _sample(torch.float32, (3, 4))
    sd = {"w": base, "t": base.t(), "b": _sample(torch.bfloat16, (5,), seed=2), "step": 7}
    src = tmp_path / "dumps.pkl"
    src.write_bytes(pickle.dumps(sd, protocol=protocol))
    out = tmp_path / "dumps.safetensors"
    report = convert(src, out)
    assert report.format == "pickle"
    assert report.values == ["step"]
    assert_matches_oracle(src, out, report, saved=sd)


def test_random_views_round_trip(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Random shapes, permutations, steps and offsets over random dtypes, each saved as a
    view of a bigger storage: the converted bytes equal torch's, element for element."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    folder = tmp_path_factory.mktemp("views")
    dims = st.lists(st.integers(0, 4), min_size=0, max_size=4)

    @settings(max_examples=40, deadline=None, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.sampled_from([d for d in ALL_DTYPES if d != torch.float4_e2m1fn_x2]), dims,
           st.data())
    def check(dtype: Any, shape: list[int], data: Any) -> None:
        base = _sample(dtype, tuple(d + 2 for d in shape), seed=len(shape))
        view = base
        for axis in range(len(shape)):  # a strided window along every axis
            start = data.draw(st.integers(0, 1))
            step = data.draw(st.integers(1, 2))
            view = view.narrow(axis, start, shape[axis] + 1 - start)[
                (slice(None),) * axis + (slice(None, None, step),)]
        perm = data.draw(st.permutations(range(len(shape))))
        view = view.permute(*perm) if shape else view
        src, out = folder / "v.pt", folder / "v.safetensors"
        torch.save({"view": view, "base": base}, src)
        report = convert(src, out, overwrite=True)  # same name each example
        assert_matches_oracle(src, out, report)

    check()


def test_tensors_safetensors_cannot_hold_are_left_and_the_rest_converted(
        tmp_path: Path) -> None:
    """complex128 (ComplexDoubleStorage) and complex32 (_rebuild_tensor_v3 with
    torch.complex32) have no safetensors dtype: listed, the rest written."""
    import warnings

    with warnings.catch_warnings():  # torch warns once per process: ComplexHalf is experimental
        warnings.simplefilter("ignore", UserWarning)
        c32 = torch.zeros(3, dtype=torch.complex32)
    sd = {"w": torch.randn(2, 3), "c128": torch.randn(2, dtype=torch.complex128), "c32": c32,
          "c64": torch.randn(2, dtype=torch.complex64), "step": 4}
    src = tmp_path / "mixed.pt"
    torch.save(sd, src)
    report = convert(src, tmp_path / "out.safetensors")
    assert sorted(report.tensors) == ["c64", "w"]
    left = {d.name: d.reason for d in report.tensors_left}
    assert set(left) == {"c128", "c32"}
    assert "ComplexDoubleStorage" in left["c128"] and "torch.complex32" in left["c32"]
    got = st_torch.load_file(tmp_path / "out.safetensors")
    assert torch.equal(got["w"], sd["w"]) and torch.equal(got["c64"], sd["c64"])
    assert report.values == ["step"]


def test_a_file_of_only_unconvertible_tensors_is_refused(tmp_path: Path) -> None:
    from tensorfile.errors import UnsupportedCheckpointError

    src = tmp_path / "c.pt"
    torch.save({"c": torch.ones(2, dtype=torch.complex128)}, src)
    with pytest.raises(UnsupportedCheckpointError, match=r"nothing to convert.*ComplexDouble"):
        convert(src, tmp_path / "out.safetensors")
    assert not (tmp_path / "out.safetensors").exists()


def test_metadata_drops_a_non_json_leaf_alone(tmp_path: Path) -> None:
    """A 75-entry config with a torch.device and an inf inside keeps 74 entries plus
    inf as "Infinity"; the device is named alone."""
    config = {f"k{i}": i for i in range(72)}
    config.update(device=torch.device("cpu"), max_norm=float("inf"),
                  layers=[64, torch.float16, 32], nested={"eps": float("-inf"), "nan": float("nan")})
    src = tmp_path / "ck.pt"
    torch.save({"model": {"w": torch.ones(2)}, "config": config}, src)
    report = convert(src, tmp_path / "out.safetensors")
    assert {d.name for d in report.dropped} == {"config.device", "config.layers.1"}
    from safetensors import safe_open

    with safe_open(tmp_path / "out.safetensors", "np") as f:
        kept = json.loads(f.metadata()["config"])
    assert len(kept) == 75 and "device" not in kept
    assert kept["max_norm"] == "Infinity" and kept["layers"] == [64, None, 32]
    assert kept["nested"] == {"eps": "-Infinity", "nan": "NaN"}
    assert kept["k71"] == 71


def test_quantized_tensors_are_left_and_the_rest_converted(tmp_path: Path) -> None:
    """torch.save writes quantized tensors with _rebuild_qtensor (not allowlisted: the
    file scans unknown); torch's own rebuild is known, so those tensors are listed
    and the rest written. Anything else not allowlisted still refuses the file."""
    import argparse
    import warnings

    from tensorfile.errors import UnsafePickleError
    from tensorfile.scan.pickle.containers import scan_file

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # quantize_* is deprecated in torch
        q = torch.quantize_per_tensor(torch.ones(3), 0.1, 0, torch.qint8)
        qc = torch.quantize_per_channel(torch.ones(2, 3), torch.tensor([0.1, 0.2]),
                                        torch.tensor([0, 0]), 0, torch.qint8)
    sd = {"q": q, "qc": qc, "w": torch.arange(3.0), "b": torch.ones(2, dtype=torch.bfloat16)}
    src = tmp_path / "q.pt"
    torch.save(sd, src)
    assert scan_file(src).verdict.value == "unknown"
    report = convert(src, tmp_path / "out.safetensors")
    assert sorted(report.tensors) == ["b", "w"]
    assert {d.name for d in report.tensors_left} == {"q", "qc"}
    assert all("quantized" in d.reason for d in report.tensors_left)
    got = st_torch.load_file(tmp_path / "out.safetensors")
    assert torch.equal(got["w"], sd["w"]) and torch.equal(got["b"], sd["b"])
    torch.save({**sd, "hp": argparse.Namespace(lr=1)}, src)
    with pytest.raises(UnsafePickleError, match="argparse"):
        convert(src, tmp_path / "out2.safetensors")
    assert not (tmp_path / "out2.safetensors").exists()
    report = convert(src, tmp_path / "out2.safetensors", key="w")  # --key still works beside
    assert report.tensors == ["tensor"]
