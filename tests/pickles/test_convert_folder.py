"""Folders in the Hugging Face layout, signing the result, and converting without torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tensorfile.errors import UnsafePickleError
from tensorfile.pickles.convert import convert

torch = pytest.importorskip("torch")
st_torch = pytest.importorskip("safetensors.torch")


def _state(seed: int, n: int = 3) -> dict[str, Any]:
    g = torch.Generator().manual_seed(seed)
    return {f"layer{seed}.{i}.weight": torch.randn(4, 3, generator=g) for i in range(n)}


def _hf_single(folder: Path) -> dict[str, Any]:
    folder.mkdir()
    sd = {**_state(0), "lm_head.weight": torch.ones(2, 2)}
    sd["embed.weight"] = sd["lm_head.weight"]  # tied
    torch.save(sd, folder / "pytorch_model.bin")
    (folder / "config.json").write_text('{"model_type": "tiny"}')
    return sd


def _hf_sharded(folder: Path) -> dict[str, Any]:
    folder.mkdir()
    shards = {"pytorch_model-00001-of-00002.bin": _state(1),
              "pytorch_model-00002-of-00002.bin": _state(2)}
    weight_map = {}
    for name, sd in shards.items():
        torch.save(sd, folder / name)
        weight_map.update(dict.fromkeys(sd, name))
    (folder / "pytorch_model.bin.index.json").write_text(json.dumps(
        {"metadata": {"total_size": 0}, "weight_map": weight_map}))
    (folder / "config.json").write_text("{}")
    return {k: v for sd in shards.values() for k, v in sd.items()}


def _same(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert set(a) == set(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_single_file_folder_in_place(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    sd = _hf_single(folder)
    report = convert(folder)
    out = folder / "model.safetensors"
    assert report.outputs == [str(out)]
    assert report.aliases == {"lm_head.weight": "embed.weight"}
    got = st_torch.load_file(out)
    _same({k: v for k, v in sd.items() if k != "lm_head.weight"}, got)
    assert sorted(p.name for p in folder.iterdir()) == [
        "config.json", "model.safetensors", "pytorch_model.bin"]  # other files left alone


def test_sharded_folder_to_new_folder(tmp_path: Path) -> None:
    from tensorfile.sharded import load_sharded

    src = tmp_path / "src"
    sd = _hf_sharded(src)
    dst = tmp_path / "dst"
    report = convert(src, dst)
    names = sorted(p.name for p in dst.iterdir())
    assert names == ["config.json", "model-00001-of-00002.safetensors",
                     "model-00002-of-00002.safetensors", "model.safetensors.index.json"]
    index = json.loads((dst / "model.safetensors.index.json").read_text())
    assert index["weight_map"]["layer1.0.weight"] == "model-00001-of-00002.safetensors"
    assert index["weight_map"]["layer2.2.weight"] == "model-00002-of-00002.safetensors"
    assert index["metadata"]["total_size"] == report.bytes_written == 6 * 12 * 4
    _same(sd, load_sharded(dst, "pt"))
    assert len(report.source_sha256) == 2
    assert report.outputs[-1] == str(dst / "model.safetensors.index.json")


def test_one_hostile_shard_means_nothing_is_written(tmp_path: Path) -> None:
    src = tmp_path / "src"
    _hf_sharded(src)
    (src / "pytorch_model-00002-of-00002.bin").write_bytes(
        b"\x80\x02cposix\nsystem\nX\x04\x00\x00\x00true\x85R.")
    before = sorted(p.name for p in src.iterdir())
    with pytest.raises(UnsafePickleError, match=r"posix\.system"):
        convert(src)
    assert sorted(p.name for p in src.iterdir()) == before


def test_sign_the_result(tmp_path: Path) -> None:
    from tensorfile.integrity import generate_key, verify

    keys = generate_key(tmp_path / "key.pem")
    folder = tmp_path / "model"
    _hf_single(folder)
    report = convert(folder, tmp_path / "out", sign=keys.private_key)
    assert report.signature is not None and Path(report.signature).is_file()
    result = verify(tmp_path / "out", keys.public_key, signature=report.signature)
    assert result is not None
    single = tmp_path / "single.pt"
    torch.save(_state(5), single)
    report = convert(single, sign=keys.private_key)
    verify(report.outputs[0], keys.public_key, signature=report.signature)


_NO_TORCH = r"""
import json, sys
sys.modules["torch"] = None  # any `import torch` now raises ImportError
from tensorfile.pickles.convert import convert
report = convert(sys.argv[1], sys.argv[2])
assert sys.modules["torch"] is None
print(json.dumps(report.to_dict()))
"""


def test_converts_without_torch(tmp_path: Path) -> None:
    src = tmp_path / "ck.pt"
    sd = {"w": torch.randn(3, 4).t(), "b": torch.arange(5).to(torch.bfloat16)}
    torch.save(sd, src)
    out = tmp_path / "ck.safetensors"
    proc = subprocess.run([sys.executable, "-c", _NO_TORCH, str(src), str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert sorted(json.loads(proc.stdout)["tensors"]) == ["b", "w"]
    _same(sd, st_torch.load_file(out))


def test_api_errors_write_nothing(tmp_path: Path) -> None:
    from tensorfile.errors import ConversionError, InputNotFoundError

    src = tmp_path / "ck.pt"
    torch.save({"model_state": {"w": torch.ones(1)}, "step": 1}, src)
    with pytest.raises(ConversionError, match=r"no key .model.*model_state, step"):
        convert(src, key="model")
    with pytest.raises(ConversionError, match="overwrite the source"):
        convert(src, src)
    with pytest.raises(InputNotFoundError, match="no such file"):
        convert(tmp_path / "missing.pt")
    with pytest.raises(ConversionError, match=r"pytorch_model\.bin"):
        convert(tmp_path)  # a folder without Hugging Face weights
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.pt"]


def test_report_is_json_ready(tmp_path: Path) -> None:
    src = tmp_path / "ck.pt"
    torch.save({"w": torch.ones(2), "v": torch.ones(2), "n": 1, "rng": torch.device("cpu")}, src)
    report = convert(src, tmp_path)  # a folder as dst: the default file name inside it
    doc = json.loads(json.dumps(report.to_dict()))
    assert doc["outputs"] == [str(tmp_path / "ck.safetensors")]
    assert doc["tensors"] == ["v", "w"] and doc["values"] == ["n"]
    assert doc["dropped"][0]["name"] == "rng" and "torch.device" in doc["dropped"][0]["reason"]
    assert doc["bytes_written"] == 16 and doc["format"] == "torch-zip"


def test_destinations(tmp_path: Path) -> None:
    from tensorfile.errors import ConversionError

    src = tmp_path / "ck.pt"
    torch.save({"w": torch.ones(3)}, src)
    deep = tmp_path / "a" / "b" / "w.safetensors"
    assert convert(src, deep).outputs == [str(deep)]  # missing parent folders are made
    folder = tmp_path / "model"
    _hf_single(folder)
    with pytest.raises(ConversionError, match="not a file"):
        convert(folder, src)


def _trainer_folder(folder: Path, *, sharded: bool) -> dict[str, Any]:
    """A Hugging Face Trainer ``checkpoint-N`` folder, the files Trainer._save_checkpoint
    writes (transformers 4.x, safe_serialization=False), made with torch.save."""
    import argparse

    sd = _hf_sharded(folder) if sharded else _hf_single(folder)
    params = [torch.nn.Parameter(v.clone()) for v in sd.values()]
    opt = torch.optim.AdamW(params, lr=1e-3)
    sum(p.sum() for p in params).backward()
    opt.step()
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    torch.save(opt.state_dict(), folder / "optimizer.pt")
    torch.save(sched.state_dict(), folder / "scheduler.pt")
    torch.save({"python": (3, tuple(range(5)), None), "numpy": ("MT19937", np.arange(4), 1, 0,
                                                              0.0),
                "cpu": torch.get_rng_state()}, folder / "rng_state.pth")
    # TrainingArguments is a transformers dataclass; any non-allowlisted class is the same.
    torch.save(argparse.Namespace(output_dir=str(folder), learning_rate=1e-3),
               folder / "training_args.bin")
    (folder / "trainer_state.json").write_text('{"global_step": 10}')
    return sd


@pytest.mark.parametrize("sharded", [False, True], ids=["single", "sharded"])
def test_trainer_checkpoint_folder(tmp_path: Path, sharded: bool) -> None:
    from tensorfile.sharded import load_sharded

    src = tmp_path / "checkpoint-10"
    sd = _trainer_folder(src, sharded=sharded)
    dst = tmp_path / "out"
    report = convert(src, dst)
    got = load_sharded(dst, "pt")
    for name, tensor in got.items():
        assert torch.equal(tensor, sd[name]), name
    assert set(got) | set(report.aliases) == set(sd)
    actions = {f.name: (f.action, f.detail) for f in report.files}
    weights = ({"pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin",
                "pytorch_model.bin.index.json"} if sharded else {"pytorch_model.bin"})
    assert {n for n, (a, _) in actions.items() if a == "converted"} == weights
    assert {n for n, (a, _) in actions.items() if a == "copied"} == {
        "config.json", "trainer_state.json"}
    not_copied = {n: d for n, (a, d) in actions.items() if a == "not copied"}
    assert set(not_copied) == {"optimizer.pt", "scheduler.pt", "rng_state.pth",
                               "training_args.bin"}
    assert "optimizer state" in not_copied["optimizer.pt"]
    assert "scan: safe" in not_copied["optimizer.pt"]
    assert "scan: unknown" in not_copied["training_args.bin"]
    # The output folder holds no pickle.
    assert not any(p.suffix in (".bin", ".pt", ".pth") for p in dst.iterdir())
    # In place: the same report, with every other file left where it is.
    report = convert(src)
    actions = {f.name: f.action for f in report.files}
    assert actions["optimizer.pt"] == "left" and actions["trainer_state.json"] == "left"
    assert not any(f.name.endswith(".safetensors") for f in report.files)


def test_trainer_side_files_convert_on_their_own(tmp_path: Path) -> None:
    """optimizer.pt and rng_state.pth are safe pickles: converted alone when asked."""
    src = tmp_path / "checkpoint-1"
    _trainer_folder(src, sharded=False)
    report = convert(src / "optimizer.pt", tmp_path / "optimizer.safetensors")
    expected = torch.load(src / "optimizer.pt", weights_only=False)  # trusted: written here
    got = st_torch.load_file(tmp_path / "optimizer.safetensors")
    assert torch.equal(got["state.0.exp_avg"], expected["state"][0]["exp_avg"])
    assert "param_groups" in report.values
    rng = convert(src / "rng_state.pth", tmp_path / "rng.safetensors")
    assert rng.tensors == ["cpu"]
    assert {d.name for d in rng.dropped} == {"numpy.1"}  # the array alone, not all of "numpy"


def test_an_index_naming_a_tensor_twice_is_refused(tmp_path: Path) -> None:
    """Two readings of which shard holds a tensor: refused, not resolved."""
    from tensorfile.errors import MalformedCheckpointError

    model = tmp_path / "model"
    _hf_sharded(model)
    index = model / "pytorch_model.bin.index.json"
    doc = json.loads(index.read_text())
    first = next(iter(doc["weight_map"]))
    shards = sorted(set(doc["weight_map"].values()))
    # The same key again, pointing at the other shard, as raw JSON text.
    text = index.read_text().replace('"weight_map": {', f'"weight_map": {{"{first}": "{shards[-1]}", ', 1)
    assert text != index.read_text()
    index.write_text(text)
    with pytest.raises(MalformedCheckpointError, match="more than once"):
        convert(model, tmp_path / "out")
    assert not (tmp_path / "out").exists()
