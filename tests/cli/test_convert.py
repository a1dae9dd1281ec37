"""convert from the command line (in process and as a subprocess)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    """A training checkpoint with tied weights, plain values and an optimizer state."""
    torch.manual_seed(0)
    emb = torch.nn.Embedding(10, 4)
    head = torch.nn.Linear(4, 10, bias=False)
    head.weight = emb.weight  # tied
    model = torch.nn.ModuleDict({"emb": emb, "head": head})
    path = tmp_path / "ckpt.pt"
    torch.save({"model_state": model.state_dict(), "step": 3, "note": "hi"}, path)
    return path


def test_convert_file(cli: Any, checkpoint: Path, tmp_path: Path, json_of: Any) -> None:
    dst = tmp_path / "out.safetensors"
    res = json_of(cli(["convert", str(checkpoint), str(dst), "--json"]), "convert", 0)
    assert res["outputs"] == [str(dst)]
    assert res["aliases"] == {"model_state.head.weight": "model_state.emb.weight"} or res["aliases"] == {
        "model_state.emb.weight": "model_state.head.weight"
    }
    assert set(res["values"]) >= {"step", "note"}
    import tensorfile

    got = tensorfile.load_file(dst)
    want = torch.load(checkpoint, weights_only=True)["model_state"]  # oracle only
    kept = next(iter(res["tensors"]))
    assert np.array_equal(got[kept], want[kept.removeprefix("model_state.")].numpy())


def test_convert_select_and_human_output(cli: Any, checkpoint: Path, tmp_path: Path) -> None:
    dst = tmp_path / "state.safetensors"
    r = cli(["convert", str(checkpoint), str(dst), "--key", "model_state"])
    assert r.code == 0
    assert f"-> {dst}" in r.stdout and "1 tensor" in r.stdout and "tied:" in r.stdout
    import tensorfile

    with tensorfile.safe_open(dst) as f:
        assert len(f.keys()) == 1 and not f.keys()[0].startswith("model_state.")


def test_convert_and_sign(cli: Any, checkpoint: Path, tmp_path: Path, json_of: Any) -> None:
    from tensorfile.integrity import generate_key, verify

    pair = generate_key(tmp_path / "k.pem")
    dst = tmp_path / "signed" / "model.safetensors"
    dst.parent.mkdir()
    res = json_of(cli(["convert", str(checkpoint), str(dst), "--sign", str(pair.private_key), "--json"]), "convert", 0)
    assert res["signature"] is not None and Path(res["signature"]).exists()
    assert verify(dst, pair.public_key, signature=res["signature"]).verified


def test_convert_refuses_a_hostile_pickle(cli: Any, tmp_path: Path, json_of: Any, error_line: Any) -> None:
    evil = tmp_path / "evil.bin"
    evil.write_bytes(b"\x80\x02cos\nsystem\nq\x00X\x04\x00\x00\x00trueq\x01\x85q\x02Rq\x03.")
    dst = tmp_path / "evil.safetensors"
    err = json_of(cli(["convert", str(evil), str(dst), "--json"]), "convert", 1)
    assert err["type"] == "UnsafePickleError" and "os.system" in err["message"]
    r = cli(["convert", str(evil), str(dst)])
    assert r.code == 1 and "os.system" in error_line(r, "convert")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.bin"]  # nothing written, no temp file


def test_convert_unreadable_input(cli: Any, tmp_path: Path, json_of: Any) -> None:
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"PK\x03\x04 truncated zip")
    err = json_of(cli(["convert", str(bad), "--json"]), "convert", 2)
    assert err["path"] == str(bad)
    assert cli(["convert", str(tmp_path / "missing.pt")]).code == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.pt"]


@pytest.fixture
def lightning(tmp_path: Path) -> Path:
    """A Lightning-shaped checkpoint: state_dict beside argparse.Namespace hyper-parameters."""
    import argparse

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    path = tmp_path / "epoch=1.ckpt"
    torch.save({"epoch": 1, "state_dict": model.state_dict(),
                "hyper_parameters": argparse.Namespace(lr=0.1, bias=torch.ones(2))}, path)
    return path


def test_convert_key_of_a_lightning_checkpoint(cli: Any, lightning: Path, tmp_path: Path,
                                               json_of: Any) -> None:
    dst = tmp_path / "model.safetensors"
    assert cli(["convert", str(lightning), str(dst)]).code == 1  # the whole file: unknown
    r = cli(["convert", str(lightning), str(dst), "--key", "state_dict"])
    assert r.code == 0, r.stderr
    assert "left: hyper_parameters: argparse.Namespace (unknown" in r.stdout
    assert "left: epoch: int (outside --key state_dict)" in r.stdout
    res = json_of(cli(["convert", str(lightning), str(dst), "--key", "state_dict", "--json",
                       "--overwrite"]),
                  "convert", 0)
    assert sorted(res["tensors"]) == ["bias", "weight"]
    assert {d["name"] for d in res["left"]} == {"epoch", "hyper_parameters"}


def test_convert_salvage_tensors(cli: Any, lightning: Path, tmp_path: Path,
                                 json_of: Any) -> None:
    dst = tmp_path / "salvaged.safetensors"
    r = cli(["convert", str(lightning), str(dst), "--salvage-tensors"])
    assert r.code == 0, r.stderr
    assert "salvaged" in r.stdout and "numbers only" in r.stdout
    assert "NEWOBJ argparse.Namespace" in r.stdout and "(at hyper_parameters)" in r.stdout
    res = json_of(cli(["convert", str(lightning), str(dst), "--salvage-tensors", "--json",
                       "--overwrite"]),
                  "convert", 0)
    assert res["salvage"] is True and res["values"] == []
    assert sorted(res["tensors"]) == ["hyper_parameters.__state__.bias", "state_dict.bias",
                                      "state_dict.weight"]
    help_text = cli(["convert", "--help"]).stdout
    assert "--salvage-tensors" in help_text and "numbers" in help_text


def test_convert_warns_about_tensors_left(cli: Any, tmp_path: Path, json_of: Any) -> None:
    src = tmp_path / "c.pt"
    torch.save({"w": torch.ones(2), "c": torch.ones(2, dtype=torch.complex128)}, src)
    r = cli(["convert", str(src), str(tmp_path / "out.safetensors"), "--quiet"])
    assert r.code == 0 and r.stdout == ""
    assert "warning: 1 tensor(s) not converted" in r.stderr and ": c" in r.stderr
    res = json_of(cli(["convert", str(src), str(tmp_path / "out.safetensors"), "--json",
                       "--overwrite"]), "convert", 0)
    assert res["tensors"] == ["w"] and [d["name"] for d in res["tensors_left"]] == ["c"]


def test_convert_trainer_folder_says_what_it_did(cli: Any, tmp_path: Path, json_of: Any) -> None:
    src = tmp_path / "checkpoint-5"
    src.mkdir()
    torch.save({"w": torch.ones(2)}, src / "pytorch_model.bin")
    torch.save({"state": {}, "param_groups": []}, src / "optimizer.pt")
    (src / "config.json").write_text("{}")
    r = cli(["convert", str(src), str(tmp_path / "out")])
    assert r.code == 0, r.stderr
    assert "file pytorch_model.bin: converted" in r.stdout
    assert "file optimizer.pt: not copied (optimizer state; pickle, scan: safe" in r.stdout
    assert "file config.json: copied" in r.stdout
    res = json_of(cli(["convert", str(src), str(tmp_path / "out2"), "--json"]), "convert", 0)
    assert {f["name"]: f["action"] for f in res["files"]} == {
        "pytorch_model.bin": "converted", "optimizer.pt": "not copied", "config.json": "copied"}
