"""``--key``: a sub-tree converts whatever the rest of the file holds, unless the rest
could have changed it.

Torch-written files (Lightning-shaped checkpoints with ``argparse.Namespace``
hyper-parameters, stdlib objects standing in for omegaconf, optimizer state,
callbacks) are compared tensor by tensor with ``torch.load(weights_only=False)``
of the same trusted file. Hand-assembled streams cover what ``torch.save``
cannot be asked to write: a dict handed to an unknown call before it is filled,
a BUILD that gives the selected dict to an unknown object, a key object made
by a call, a finding in another stream.
"""

from __future__ import annotations

import argparse
import datetime
import fractions
import io
import struct
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch_pickle_kit as kit  # on sys.path through conftest.py

from tensorfile._report import Verdict
from tensorfile.errors import ConversionError, UnsafePickleError
from tensorfile.pickles.convert import convert
from tensorfile.scan.pickle.containers import scan_file

torch = pytest.importorskip("torch")
st_torch = pytest.importorskip("safetensors.torch")


def _model_and_optimizer(seed: int = 0) -> tuple[Any, Any]:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    return model, opt


def _lightning(path: Path, hyper: object) -> dict[str, Any]:
    """The layout of a PyTorch Lightning checkpoint (lightning 2.x ``dump_checkpoint``)."""
    model, opt = _model_and_optimizer()
    ck = {
        "epoch": 3, "global_step": 120, "pytorch-lightning_version": "2.4.0",
        "state_dict": model.state_dict(),
        "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"total": {"ready": 4}}}},
        "callbacks": {"ModelCheckpoint{'monitor': 'val_loss', 'mode': 'min'}": {
            "best_model_score": torch.tensor(0.25), "best_model_path": "/ckpt/best.ckpt",
            "dirpath": "/ckpt", "last_duration": datetime.timedelta(seconds=3)}},
        "optimizer_states": [opt.state_dict()],
        "lr_schedulers": [{"last_epoch": 3, "_last_lr": [1e-3]}],
        "hparams_name": "hparams",
        "hyper_parameters": hyper,
    }
    torch.save(ck, path)
    return ck


def _oracle(path: Path, *keys: str) -> dict[str, Any]:
    value = torch.load(path, weights_only=False)  # trusted: this test wrote the file
    for key in keys:
        value = value[key]
    return dict(value)


def _same(expected: dict[str, Any], out: Path) -> None:
    got = st_torch.load_file(out)
    assert set(got) == set(expected)
    for name, tensor in expected.items():
        assert got[name].dtype == tensor.dtype and torch.equal(got[name], tensor), name


def test_lightning_state_dict_with_namespace_hyper_parameters(tmp_path: Path) -> None:
    src = tmp_path / "epoch=3.ckpt"
    hyper = argparse.Namespace(lr=1e-3, layers=[4, 3, 2], optimizer="adam",
                               when=datetime.date(2024, 1, 2), ratio=fractions.Fraction(1, 3))
    _lightning(src, hyper)
    before = scan_file(src)
    assert before.verdict is Verdict.UNKNOWN
    with pytest.raises(UnsafePickleError, match="not on the allowlist"):
        convert(src, tmp_path / "all.safetensors")  # the whole file is still refused
    assert not (tmp_path / "all.safetensors").exists()

    out = tmp_path / "model.safetensors"
    report = convert(src, out, key="state_dict")
    _same(_oracle(src, "state_dict"), out)
    assert report.tensors == ["0.bias", "0.weight", "2.bias", "2.weight"]
    left = {d.name: d.reason for d in report.left}
    assert set(left) == {"epoch", "global_step", "pytorch-lightning_version", "loops",
                         "callbacks", "optimizer_states", "lr_schedulers", "hparams_name",
                         "hyper_parameters"}
    assert left["hyper_parameters"].startswith("argparse.Namespace (unknown")
    assert "datetime.timedelta" in left["callbacks"]  # what inside it was not allowlisted
    assert left["optimizer_states"] == "list (outside --key state_dict)"
    assert left["epoch"] == "int (outside --key state_dict)"
    assert scan_file(src).to_dict() == before.to_dict()  # the verdict is unchanged


def test_key_reaches_a_sub_tree_of_allowlisted_values_beside_anything(tmp_path: Path) -> None:
    """Dotted paths, values of the sub-tree other than tensors, stdlib objects standing
    in for omegaconf's DictConfig (any non-allowlisted class is the same to the
    converter)."""
    model, opt = _model_and_optimizer(1)
    src = tmp_path / "train.pt"
    torch.save({"model": {"ema": model.state_dict(), "steps": 7},
                "optimizer": opt.state_dict(),
                "config": {"trainer": fractions.Fraction(3, 4), "seed": 1}}, src)
    out = tmp_path / "ema.safetensors"
    report = convert(src, out, key="model.ema")
    _same(_oracle(src, "model", "ema"), out)
    assert {d.name for d in report.left} == {"model.steps", "optimizer", "config"}
    config = next(d.reason for d in report.left if d.name == "config")
    assert "fractions.Fraction" in config
    # The optimizer state is itself a clean sub-tree of the same file.
    out2 = tmp_path / "opt.safetensors"
    convert(src, out2, key="optimizer")
    expected = _oracle(src, "optimizer")["state"]
    got = st_torch.load_file(out2)
    assert torch.equal(got["state.0.exp_avg"], expected[0]["exp_avg"])


def test_a_non_allowlisted_value_inside_the_sub_tree_is_refused(tmp_path: Path) -> None:
    model, _ = _model_and_optimizer()
    sd = model.state_dict()
    src = tmp_path / "ck.pt"
    torch.save({"state_dict": {"weights": sd, "made": datetime.datetime(2024, 5, 6)},
                "epoch": 1}, src)
    with pytest.raises(UnsafePickleError, match=r"state_dict.made: .*datetime.datetime"):
        convert(src, tmp_path / "out.safetensors", key="state_dict")
    assert not (tmp_path / "out.safetensors").exists()
    convert(src, tmp_path / "out.safetensors", key="state_dict.weights")  # one level down


def test_a_sub_tree_shared_with_an_unknown_object_is_refused(tmp_path: Path) -> None:
    """The Namespace receives the very state dict (one memo entry): under torch.load its
    code could change the dict, so the dict is not converted."""
    model, _ = _model_and_optimizer()
    sd = model.state_dict()
    src = tmp_path / "ck.pt"
    torch.save({"state_dict": sd, "hyper_parameters": argparse.Namespace(model=sd)}, src)
    with pytest.raises(UnsafePickleError, match="shares a value or a storage"):
        convert(src, tmp_path / "out.safetensors", key="state_dict")
    assert not (tmp_path / "out.safetensors").exists()


def test_a_storage_shared_with_an_unknown_object_is_refused(tmp_path: Path) -> None:
    """A tensor outside that shares its storage could be changed in place."""
    full = torch.arange(8.0)
    src = tmp_path / "shared.pt"
    torch.save({"state_dict": {"w": full[:4]}, "hp": argparse.Namespace(full=full)}, src)
    with pytest.raises(UnsafePickleError, match="shares a value or a storage"):
        convert(src, tmp_path / "out.safetensors", key="state_dict")
    # The control: the same layout with a copy converts.
    torch.save({"state_dict": {"w": full[:4].clone()}, "hp": argparse.Namespace(full=full)}, src)
    convert(src, tmp_path / "out.safetensors", key="state_dict")
    _same(_oracle(src, "state_dict"), tmp_path / "out.safetensors")


def test_a_tensor_shared_with_a_clean_sibling_is_fine(tmp_path: Path) -> None:
    """Sharing with allowlisted values outside is harmless: nothing there runs."""
    model, _ = _model_and_optimizer()
    sd = model.state_dict()
    src = tmp_path / "ck.pt"
    torch.save({"state_dict": sd, "ema": {"0.weight": sd["0.weight"]},
                "hp": argparse.Namespace(lr=0.1)}, src)
    convert(src, tmp_path / "out.safetensors", key="state_dict")
    _same(_oracle(src, "state_dict"), tmp_path / "out.safetensors")


def test_a_dangerous_file_is_refused_even_with_a_clean_key(tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    pwn = kit.glob("posix", "system") + kit.tup([kit.text(f"touch {canary}")]) + kit.REDUCE
    body = kit.stream(kit.dict_of([
        ("state_dict", kit.dict_of([("w", kit.tensor_v2(kit.storage("0"), 0, (4,), (1,)))])),
        ("hp", pwn)]))
    src = tmp_path / "bad.pt"
    src.write_bytes(kit.Checkpoint(body, {"0": bytes(16)}).zip_bytes())
    with pytest.raises(UnsafePickleError, match=r"posix\.system"):
        convert(src, tmp_path / "out.safetensors", key="state_dict")
    assert not (tmp_path / "out.safetensors").exists() and not canary.exists()


# -- hand-assembled: what torch.save does not write ---------------------------------

BINPUT, BINGET, BUILD, SETITEM, POP = b"q", b"h", b"b", b"s", b"0"


def _put(i: int) -> bytes:
    return BINPUT + bytes([i])


def _get(i: int) -> bytes:
    return BINGET + bytes([i])


def _unknown() -> bytes:
    return kit.glob("argparse", "Namespace") + kit.EMPTY_TUPLE + kit.REDUCE


def _weights() -> bytes:
    return kit.tensor_v2(kit.storage("0"), 0, (4,), (1,))


def _write(tmp: Path, body: bytes) -> Path:
    src = tmp / "hand.pt"
    src.write_bytes(kit.Checkpoint(kit.stream(body), {"0": bytes(range(16))}).zip_bytes())
    return src


def test_hand_control_converts(tmp_path: Path) -> None:
    """The layout the next cases twist: {'sd': {'w': t}, 'hp': Namespace()} converts."""
    body = (kit.EMPTY_DICT + kit.MARK + kit.text("sd") + kit.dict_of([("w", _weights())])
            + kit.text("hp") + _unknown() + kit.SETITEMS)
    report = convert(_write(tmp_path, body), tmp_path / "out.safetensors", key="sd")
    assert report.tensors == ["w"]


def test_dict_handed_to_a_call_before_it_is_filled(tmp_path: Path) -> None:
    """d = {}; Namespace(d); d['w'] = t; root = {'sd': d}: the call saw d first."""
    body = (kit.EMPTY_DICT + _put(0) + POP                   # d, memoized, popped
            + kit.glob("argparse", "Namespace") + kit.tup([_get(0)]) + kit.REDUCE + _put(1)
            + POP
            + _get(0) + kit.text("w") + _weights() + SETITEM + POP   # fill d afterwards
            + kit.EMPTY_DICT + kit.MARK + kit.text("sd") + _get(0) + kit.text("hp") + _get(1)
            + kit.SETITEMS)
    with pytest.raises(UnsafePickleError, match="shares a value"):
        convert(_write(tmp_path, body), tmp_path / "out.safetensors", key="sd")


def test_build_hands_the_selected_dict_to_an_unknown_object(tmp_path: Path) -> None:
    """hp = Namespace(); BUILD(hp, {'x': sd}): __setstate__ would receive sd."""
    body = (kit.EMPTY_DICT + kit.MARK
            + kit.text("sd") + kit.dict_of([("w", _weights())]) + _put(0)
            + kit.text("hp") + _unknown() + kit.dict_of([("x", _get(0))]) + BUILD
            + kit.SETITEMS)
    with pytest.raises(UnsafePickleError, match="shares a value"):
        convert(_write(tmp_path, body), tmp_path / "out.safetensors", key="sd")


def test_setitems_on_an_unknown_object_with_the_selected_dict(tmp_path: Path) -> None:
    """hp = Namespace(); hp['k'] = sd (its __setitem__ would receive sd)."""
    body = (kit.EMPTY_DICT + kit.MARK
            + kit.text("sd") + kit.dict_of([("w", _weights())]) + _put(0)
            + kit.text("hp") + _unknown() + kit.text("k") + _get(0) + SETITEM
            + kit.SETITEMS)
    with pytest.raises(UnsafePickleError, match="shares a value"):
        convert(_write(tmp_path, body), tmp_path / "out.safetensors", key="sd")


def test_unknown_call_on_the_root_dict_is_refused(tmp_path: Path) -> None:
    """root = {'sd': {...}}; Namespace(root) is kept under a second key of root."""
    body = (kit.EMPTY_DICT + _put(0) + kit.MARK + kit.text("sd")
            + kit.dict_of([("w", _weights())]) + kit.SETITEMS
            + kit.text("hp") + kit.glob("argparse", "Namespace") + kit.tup([_get(0)])
            + kit.REDUCE + SETITEM)
    with pytest.raises(UnsafePickleError, match="shares a value"):
        convert(_write(tmp_path, body), tmp_path / "out.safetensors", key="sd")


def test_a_key_made_by_a_call_beside_the_path_is_refused(tmp_path: Path) -> None:
    """An object key could compare equal to 'sd' and replace its value in a real dict."""
    body = (kit.EMPTY_DICT + kit.MARK + kit.text("sd") + kit.dict_of([("w", _weights())])
            + _unknown() + kit.integer(1) + kit.SETITEMS)
    with pytest.raises(UnsafePickleError, match="key built by a call"):
        convert(_write(tmp_path, body), tmp_path / "out.safetensors", key="sd")


def test_a_finding_in_another_stream_is_refused(tmp_path: Path) -> None:
    """The object stream is clean, but a second pickle entry of the zip is not."""
    clean = kit.stream(kit.dict_of([("sd", kit.dict_of([("w", _weights())]))]))
    raw = io.BytesIO(kit.Checkpoint(clean, {"0": bytes(16)}).zip_bytes())
    with zipfile.ZipFile(raw, "a") as z:
        z.writestr("archive/extra.pkl", kit.stream(_unknown()))
    src = tmp_path / "two.pt"
    src.write_bytes(raw.getvalue())
    assert scan_file(src).verdict is Verdict.UNKNOWN
    with pytest.raises(UnsafePickleError, match=r"argparse\.Namespace"):
        convert(src, tmp_path / "out.safetensors", key="sd")


def test_two_unknown_streams_are_refused(tmp_path: Path) -> None:
    body = kit.stream(kit.dict_of([("sd", kit.dict_of([("w", _weights())])),
                                   ("hp", _unknown())]))
    raw = io.BytesIO(kit.Checkpoint(body, {"0": bytes(16)}).zip_bytes())
    with zipfile.ZipFile(raw, "a") as z:
        z.writestr("archive/extra.pkl", kit.stream(_unknown()))
    src = tmp_path / "two.pt"
    src.write_bytes(raw.getvalue())
    with pytest.raises(UnsafePickleError):
        convert(src, tmp_path / "out.safetensors", key="sd")


def test_missing_key_lists_the_top_level_keys(tmp_path: Path) -> None:
    src = tmp_path / "ck.ckpt"
    _lightning(src, argparse.Namespace(lr=1))
    with pytest.raises(ConversionError, match=r"no key 'model'.*hyper_parameters.*state_dict"):
        convert(src, tmp_path / "out.safetensors", key="model")


def _qtensor(params: bytes) -> bytes:
    hooks = kit.glob("collections", "OrderedDict") + kit.EMPTY_TUPLE + kit.REDUCE
    return kit.glob("torch._utils", "_rebuild_qtensor") + kit.tup([
        kit.storage("1", "QInt8Storage"), kit.integer(0), kit.ints((4,)), kit.ints((1,)),
        params, kit.NEWFALSE, hooks]) + kit.REDUCE


def test_only_torchs_own_quantized_rebuild_is_tolerated(tmp_path: Path) -> None:
    """_rebuild_qtensor with a qscheme is left out and the rest converted; the same call
    holding an unknown object, or a rebuild that calls its argument, refuses the file."""
    scheme = kit.glob("torch", "per_tensor_affine")
    plain = kit.tup([scheme, b"G" + struct.pack(">d", 0.1), kit.integer(0)])  # BINFLOAT
    records = {"0": bytes(range(16)), "1": bytes(4)}

    def write(body: bytes) -> Path:
        src = tmp_path / "q.pt"
        src.write_bytes(kit.Checkpoint(kit.stream(body), records).zip_bytes())
        return src

    ok = kit.dict_of([("w", _weights()), ("q", _qtensor(plain))])
    report = convert(write(ok), tmp_path / "out.safetensors")
    assert report.tensors == ["w"] and [d.name for d in report.tensors_left] == ["q"]
    (tmp_path / "out.safetensors").unlink()
    odd = kit.tup([_unknown(), kit.integer(1), kit.integer(0)])
    with pytest.raises(UnsafePickleError, match=r"argparse\.Namespace"):
        convert(write(kit.dict_of([("w", _weights()), ("q", _qtensor(odd))])),
                tmp_path / "out.safetensors")
    calls = kit.glob("torch._tensor", "_rebuild_from_type_v2") + kit.tup([
        kit.glob("mylib", "f"), kit.NONE, kit.tup([]), kit.EMPTY_DICT]) + kit.REDUCE
    with pytest.raises(ConversionError):
        convert(write(kit.dict_of([("w", _weights()), ("x", calls)])),
                tmp_path / "out.safetensors")
    assert not (tmp_path / "out.safetensors").exists()


# -- differential: the rule against what torch.load actually shares -------------------

def _walk(value: Any, seen: dict[int, Any], storages: set[int], stop_at_namespace: bool
          ) -> bool:
    """Add every mutable object below ``value`` to ``seen`` and every tensor's storage
    to ``storages``; True when a Namespace sits below (it would run code)."""
    work, found = [value], False
    while work:
        v = work.pop()
        if isinstance(v, (int, float, str)) or v is None or id(v) in seen:
            continue
        seen[id(v)] = v
        if isinstance(v, argparse.Namespace):
            found = True
            if stop_at_namespace:
                continue
            work.extend(vars(v).values())
        elif isinstance(v, dict):
            work.extend(v.values())
        elif isinstance(v, list):
            work.extend(v)
        else:
            storages.add(v.untyped_storage().data_ptr())
    return found


def _independent(loaded: dict[str, Any], key: str) -> bool:
    """What --key must decide, judged on torch's own load: the value holds no
    Namespace, and no Namespace anywhere reaches an object or storage it holds."""
    inside: dict[int, Any] = {}
    inside_storages: set[int] = set()
    if _walk(loaded[key], inside, inside_storages, stop_at_namespace=True):
        return False
    spaces: dict[int, Any] = {}
    _walk(loaded, spaces, set(), stop_at_namespace=False)
    exposed: dict[int, Any] = {}
    exposed_storages: set[int] = set()
    for v in spaces.values():
        if isinstance(v, argparse.Namespace):
            for attr in vars(v).values():
                _walk(attr, exposed, exposed_storages, stop_at_namespace=False)
    return not (set(inside) & set(exposed)) and not (inside_storages & exposed_storages)


def _named(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return {prefix or "tensor": value} if isinstance(value, torch.Tensor) else {}
    out: dict[str, Any] = {}
    for k, v in items:
        out.update(_named(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def test_key_decisions_match_what_torch_load_shares(tmp_path: Path) -> None:
    """Random checkpoints of dicts, lists, tensors and views (some sharing storage) and
    Namespaces holding random parts of them: --key converts exactly the top-level
    values that torch.load shows no Namespace could reach, and those match it."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    @st.composite
    def checkpoints(draw: Any) -> dict[str, Any]:
        bases = [torch.arange(6.0), torch.arange(8.0).reshape(2, 4)]
        made: list[Any] = []

        def value(depth: int) -> Any:
            kind = draw(st.integers(0, 6 if depth < 3 else 3))
            if kind == 0:
                base = draw(st.sampled_from(bases))
                how = draw(st.integers(0, 2))
                out: Any = base if how == 0 else (base[1:] if how == 1 else base.clone())
            elif kind == 1 and made:
                return draw(st.sampled_from(made))
            elif kind in (1, 2):
                return draw(st.integers(0, 9))
            elif kind == 3:
                out = torch.ones(2) * draw(st.integers(1, 5))
            elif kind == 4:
                out = {f"k{i}": value(depth + 1) for i in range(draw(st.integers(1, 3)))}
            elif kind == 5:
                out = [value(depth + 1) for _ in range(draw(st.integers(1, 2)))]
            else:
                out = argparse.Namespace(x=value(depth + 1), y=value(depth + 1))
            made.append(out)
            return out

        return {name: value(0) for name in ("a", "b", "c")}

    seen = {"converted": 0, "refused": 0}

    @settings(max_examples=120, deadline=None, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture,
                                     HealthCheck.too_slow])
    @given(checkpoints())
    def check(ck: dict[str, Any]) -> None:
        src, out = tmp_path / "ck.pt", tmp_path / "out.safetensors"
        torch.save(ck, src)
        loaded = torch.load(src, weights_only=False)  # trusted: written here
        for key in ("a", "b", "c"):
            ok = _independent(loaded, key)
            try:
                report = convert(src, out, key=key)
            except UnsafePickleError as exc:
                assert not ok, f"{key}: refused, but torch shares nothing with it: {exc}"
                seen["refused"] += 1
                continue
            assert ok, f"{key}: converted, but a Namespace reaches it"
            seen["converted"] += 1
            got = st_torch.load_file(out) if report.tensors else {}
            expected = _named(loaded[key])
            assert set(report.tensors) | set(report.aliases) == set(expected)
            for name, tensor in expected.items():
                assert torch.equal(got[report.aliases.get(name, name)], tensor), name
            out.unlink()

    check()
    assert seen["converted"] > 20 and seen["refused"] > 20, seen


def test_lightning_state_dict_with_omegaconf_hyper_parameters(tmp_path: Path) -> None:
    """Lightning saves hparams given as a DictConfig as omegaconf objects (defaultdict,
    ContainerMetadata, AnyNode, typing.Any...): none allowlisted, none near state_dict."""
    omegaconf = pytest.importorskip("omegaconf")
    hyper = omegaconf.OmegaConf.create({"model": {"hidden": 3, "layers": [4, 3, 2]},
                                        "optim": {"lr": 1e-3, "betas": [0.9, 0.99]}})
    src = tmp_path / "epoch=0-step=10.ckpt"
    _lightning(src, hyper)
    out = tmp_path / "model.safetensors"
    report = convert(src, out, key="state_dict")
    _same(_oracle(src, "state_dict"), out)
    left = {d.name: d.reason for d in report.left}
    assert left["hyper_parameters"].startswith("omegaconf.dictconfig.DictConfig (unknown")
