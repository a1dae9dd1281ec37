"""transformers and huggingface_hub running on tensorfile through
:func:`tensorfile.compat.install`, against the same steps on the real
safetensors. Each scenario runs in a fresh interpreter (hf_scenario.py):
transformers binds ``safetensors`` names at import, so the hook must come
first in its process. A tiny GPT-2 is built from a config; nothing is
downloaded."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import tensorfile
from tensorfile.integrity import generate_key, sign

pytest.importorskip("transformers")
pytest.importorskip("huggingface_hub")
pytest.importorskip("torch")

pytestmark = pytest.mark.slow  # four fresh interpreters importing transformers (about a minute)

SCENARIO = Path(__file__).with_name("hf_scenario.py")
ROOT = Path(__file__).resolve().parents[2]


def _run(mode: str, folder: Path, *extra: str) -> dict[str, Any]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "src"), str(ROOT / "cli"), env.get("PYTHONPATH", "")]
    )
    env["HF_HUB_OFFLINE"] = "1"  # nothing may be fetched
    env["TRANSFORMERS_VERBOSITY"] = "error"
    folder.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [sys.executable, str(SCENARIO), mode, str(folder), *extra],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report: dict[str, Any] = json.loads((folder / "report.json").read_text())
    return report


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], Path, dict[str, Any]]:
    real = tmp_path_factory.mktemp("real")
    ours = tmp_path_factory.mktemp("tensorfile")
    return real, _run("save-real", real), ours, _run("save-tensorfile", ours)


def test_transformers_imports_tensorfile_through_the_hook(runs: Any) -> None:
    _, real, _, ours = runs
    assert ours["safe_open_module"].startswith("tensorfile.")
    assert not real["safe_open_module"].startswith("tensorfile.")


def test_sharded_tied_round_trips_are_exact(runs: Any) -> None:
    _, real, ours, report = runs
    assert report["before"] == real["before"]  # same seed, same model
    assert report["from_pretrained"] == report["before"]
    assert report["load_torch_model"] == report["before"]
    assert report["tied"] and report["same_logits"]
    shards = sorted((ours / "pretrained").glob("*.safetensors"))
    assert len(shards) > 1 and (ours / "pretrained" / "model.safetensors.index.json").is_file()
    for shard in shards:
        with tensorfile.safe_open(shard, "np") as f:
            assert f.metadata() == {"format": "pt"}


def test_files_are_byte_identical_to_the_real_safetensors(runs: Any) -> None:
    real, _, ours, _ = runs
    for sub in ("pretrained", "hub"):
        names = sorted(p.name for p in (ours / sub).iterdir())
        assert names == sorted(p.name for p in (real / sub).iterdir())
        for name in names:
            assert (ours / sub / name).read_bytes() == (real / sub / name).read_bytes(), name


def test_verified_from_pretrained_loads_signed_and_refuses_tampered(
    runs: Any, tmp_path: Path
) -> None:
    _, _, ours, report = runs
    keys = generate_key(tmp_path / "key.pem")
    signed = tmp_path / "signed"
    shutil.copytree(ours / "pretrained", signed / "pretrained")
    sign(signed / "pretrained", keys.private_key)
    ok = _run("load-verified", signed, str(keys.public_key))
    assert ok.get("loaded") == report["before"], ok

    shard = sorted((signed / "pretrained").glob("*.safetensors"))[2]
    data = bytearray(shard.read_bytes())
    data[-3] ^= 0x01  # one bit of one tensor
    shard.write_bytes(bytes(data))
    bad = _run("load-verified", signed, str(keys.public_key))
    assert bad.get("error") == "DigestMismatchError", bad
    assert shard.name in bad["message"] and "differs from the signed bytes" in bad["message"]

    other = generate_key(tmp_path / "other.pem")  # a key that did not sign it
    wrong = _run("load-verified", signed, str(other.public_key))
    assert "VerificationError" in wrong.get("mro", []), wrong
