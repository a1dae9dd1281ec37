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
