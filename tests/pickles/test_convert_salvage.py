"""``salvage_tensors``: numbers out of any checkpoint, nothing executed.

Benign torch-written files are compared with ``torch.load(weights_only=False)``
(trusted: the test wrote them); hostile hand-assembled ones with the bytes
their records hold, and a canary file proves their payload never ran.
"""

from __future__ import annotations

import argparse
import datetime
from pathlib import Path

import numpy as np
import pytest
import torch_pickle_kit as kit  # on sys.path through conftest.py

from tensorfile.errors import UnsafePickleError, UnsupportedCheckpointError
from tensorfile.pickles.convert import convert

torch = pytest.importorskip("torch")
st_torch = pytest.importorskip("safetensors.torch")


def test_salvage_a_lightning_checkpoint_names_tensors_by_path(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    src = tmp_path / "last.ckpt"
    torch.save({"state_dict": model.state_dict(), "optimizer_states": [opt.state_dict()],
                "callbacks": {"EarlyStopping": {"best_score": torch.tensor(0.5),
                                                "patience": datetime.timedelta(1)}},
                "hyper_parameters": argparse.Namespace(lr=0.1, bias=torch.ones(2))}, src)
    with pytest.raises(UnsafePickleError):
        convert(src, tmp_path / "x.safetensors")
    out = tmp_path / "salvaged.safetensors"
    report = convert(src, out, salvage_tensors=True)
    ck = torch.load(src, weights_only=False)  # trusted: written above
    expected = {f"state_dict.{k}": v for k, v in ck["state_dict"].items()}
    for i, state in ck["optimizer_states"][0]["state"].items():
        expected[f"optimizer_states.0.state.{i}.momentum_buffer"] = state["momentum_buffer"]
    expected["callbacks.EarlyStopping.best_score"] = ck["callbacks"]["EarlyStopping"]["best_score"]
    # Namespace(...) pickles as NEWOBJ + BUILD(state): the tensor sits in its state.
    expected["hyper_parameters.__state__.bias"] = ck["hyper_parameters"].bias
    got = st_torch.load_file(out)
    assert set(got) == set(expected)
    for name, tensor in expected.items():
        assert torch.equal(got[name], tensor), name
    assert report.salvage and report.values == [] and report.tensors_left == []
    performed = {(n["opcode"], n["global"]) for n in report.not_performed}
    assert ("NEWOBJ", "argparse.Namespace") in performed
    assert ("GLOBAL", "datetime.timedelta") in performed
    assert any(n["at"] == "hyper_parameters" for n in report.not_performed)
    from safetensors import safe_open

    with safe_open(out, "np") as f:
        assert f.metadata() == {"format": "pt"}  # numbers only: no plain values


def _canary_payload(canary: Path) -> bytes:
    return kit.glob("posix", "system") + kit.tup([kit.text(f"touch {canary}")]) + kit.REDUCE


def test_salvage_a_hostile_file_runs_nothing(tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    weights = np.arange(8, dtype="<f4")
    plain = kit.tensor_v2(kit.storage("0", numel=8), 0, (2, 2), (2, 1))
    # A tensor whose backward hooks hold the payload: the view is still literal.
    hooked = kit.glob("torch._utils", "_rebuild_tensor_v2") + kit.tup([
        kit.storage("0", numel=8), kit.integer(4), kit.ints((4,)), kit.ints((1,)),
        kit.NEWFALSE, _canary_payload(canary)]) + kit.REDUCE
    # A tensor handed to a custom class, and one whose storage is computed by a call.
    wrapped = kit.glob("mylib.nn", "Wrapper") + kit.tup([plain]) + kit.REDUCE
    computed = kit.glob("torch._utils", "_rebuild_tensor_v2") + kit.tup([
        kit.glob("mylib", "make_storage") + kit.EMPTY_TUPLE + kit.REDUCE, kit.integer(0),
        kit.ints((1,)), kit.ints((1,)), kit.NEWFALSE, kit.NONE]) + kit.REDUCE
    body = kit.stream(kit.dict_of([("model", kit.dict_of([("w", plain), ("h", hooked)])),
                                   ("run", _canary_payload(canary)), ("wrapped", wrapped),
                                   ("odd", computed)]))
    src = tmp_path / "hostile.pt"
    src.write_bytes(kit.Checkpoint(body, {"0": weights.tobytes()}).zip_bytes())
    with pytest.raises(UnsafePickleError, match=r"posix\.system"):
        convert(src, tmp_path / "refused.safetensors")
    out = tmp_path / "out.safetensors"
    report = convert(src, out, salvage_tensors=True)
    assert not canary.exists()
    got = st_torch.load_file(out)
    assert sorted(got) == ["model.h", "model.w"]
    np.testing.assert_array_equal(got["model.w"].numpy(), weights[:4].reshape(2, 2))
    np.testing.assert_array_equal(got["model.h"].numpy(), weights[4:])
    assert report.aliases == {"wrapped.__args__.0": "model.w"}  # the same view, tied
    assert [d.name for d in report.tensors_left] == ["odd"]
    assert "not determined" in report.tensors_left[0].reason
    dangerous = [n for n in report.not_performed if n["verdict"] == "dangerous"]
    assert {n["global"] for n in dangerous} == {"posix.system"}
    assert {n["at"] for n in dangerous if n["opcode"] == "REDUCE"} == {"run", "model.h.__args__.5"}


def test_salvage_with_nothing_to_salvage_writes_nothing(tmp_path: Path) -> None:
    src = tmp_path / "p.pkl"
    src.write_bytes(kit.stream(_canary_payload(tmp_path / "canary")))
    with pytest.raises(UnsupportedCheckpointError, match="no tensor"):
        convert(src, tmp_path / "out.safetensors", salvage_tensors=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.pkl"]


def test_salvage_a_legacy_file_with_a_hostile_header(tmp_path: Path) -> None:
    """torch < 1.6 layout, the payload in sys_info: the records are still found."""
    canary = tmp_path / "canary"
    records = {"0": np.arange(4, dtype="<f4").tobytes()}
    legacy_pid = kit.storage("0", numel=4, legacy_view=kit.NONE)
    objects = kit.stream(kit.dict_of([("w", kit.tensor_v2(legacy_pid, 0, (4,), (1,)))]))
    data = kit.Checkpoint(objects, records).legacy_bytes({"0": 4})
    sys_info = kit.stream(kit.dict_of([("protocol_version", kit.integer(1001)),
                                       ("little_endian", b"\x88")]))
    hostile = kit.stream(kit.dict_of([("protocol_version", _canary_payload(canary))]))
    assert data.count(sys_info) == 1
    src = tmp_path / "old.pt"
    src.write_bytes(data.replace(sys_info, hostile))
    with pytest.raises(UnsafePickleError):
        convert(src, tmp_path / "out.safetensors")
    report = convert(src, tmp_path / "out.safetensors", salvage_tensors=True)
    assert report.format == "torch-legacy" and report.tensors == ["w"]
    np.testing.assert_array_equal(st_torch.load_file(tmp_path / "out.safetensors")["w"].numpy(),
                                  np.arange(4, dtype="<f4"))
    assert any(n["global"] == "posix.system" for n in report.not_performed)
    assert not canary.exists()


def test_salvage_keeps_safe_files_exact(tmp_path: Path) -> None:
    """On a safe checkpoint salvage gives the same tensors as a plain conversion."""
    torch.manual_seed(1)
    t = torch.randn(4, 6)
    sd = {"a": t, "b": t.t(), "c": t[1:3, ::2], "tied": t, "n": torch.arange(3),
          "half": torch.randn(5).half(), "scalar": torch.tensor(2.5)}
    src = tmp_path / "views.pt"
    torch.save(sd, src)
    plain = convert(src, tmp_path / "plain.safetensors")
    salvaged = convert(src, tmp_path / "salvaged.safetensors", salvage_tensors=True)
    assert plain.tensors == salvaged.tensors and plain.aliases == salvaged.aliases
    got = st_torch.load_file(tmp_path / "salvaged.safetensors")
    for name in salvaged.tensors:
        assert torch.equal(got[name], sd[name]), name


def test_salvage_survives_cycles_and_deep_ids(tmp_path: Path) -> None:
    """A dict holding itself, an object whose BUILD state holds it back, a storage id
    nested 10,000 tuples deep: named, listed or left, never a crash."""
    put, get = (lambda i: b"q" + bytes([i])), (lambda i: b"h" + bytes([i]))
    deep = kit.MARK * 10_000 + kit.text("storage") + b"t" * 10_000 + kit.BINPERSID
    odd = kit.glob("torch._utils", "_rebuild_tensor_v2") + kit.tup([
        deep, kit.integer(0), kit.ints((1,)), kit.ints((1,)), kit.NEWFALSE, kit.NONE]) + kit.REDUCE
    body = (kit.EMPTY_DICT + put(0) + kit.MARK
            + kit.text("w") + kit.tensor_v2(kit.storage("0"), 0, (4,), (1,))
            + kit.text("me") + get(0)
            + kit.text("hp") + kit.glob("mylib", "Obj") + kit.EMPTY_TUPLE + kit.REDUCE + put(1)
            + kit.dict_of([("back", get(1)), ("root", get(0))]) + b"b"
            + kit.text("odd") + odd
            + kit.SETITEMS)
    src = tmp_path / "cyclic.pt"
    src.write_bytes(kit.Checkpoint(kit.stream(body), {"0": bytes(16)}).zip_bytes())
    report = convert(src, tmp_path / "out.safetensors", salvage_tensors=True)
    assert report.tensors == ["w"]
    assert [d.name for d in report.tensors_left] == ["odd"]
    with pytest.raises(UnsafePickleError, match="rebuild all of it"):
        convert(src, tmp_path / "k.safetensors", key="me")  # the dict itself holds "hp"


def test_flagged_nodes_past_the_bound_are_counted_and_key_refuses(tmp_path: Path) -> None:
    """A stream that flags more nodes than the converter keeps: salvage counts the rest,
    --key refuses rather than reason about nodes it did not keep."""
    from tensorfile.convert import _extract as extract

    many = (kit.glob("mylib", "f") + b"0") * (extract.MAX_FLAGGED + 5)  # GLOBAL, POP
    body = many + kit.dict_of([("w", kit.tensor_v2(kit.storage("0"), 0, (4,), (1,)))])
    src = tmp_path / "many.pt"
    src.write_bytes(kit.Checkpoint(kit.stream(body), {"0": bytes(16)}).zip_bytes())
    report = convert(src, tmp_path / "out.safetensors", salvage_tensors=True)
    assert report.tensors == ["w"]
    assert len(report.not_performed) == extract.MAX_LISTED
    assert len(report.not_performed) + report.not_listed == extract.MAX_FLAGGED + 5
    with pytest.raises(UnsupportedCheckpointError, match="more than 100,000"):
        convert(src, tmp_path / "k.safetensors", key="w")
