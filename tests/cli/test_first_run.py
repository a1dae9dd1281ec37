"""The README's first command: examples/first_run.py, run as a user runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_first_run_does_what_it_says(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    out = tmp_path / "first_run"
    proc = subprocess.run(
        [sys.executable, str(REPO / "examples" / "first_run.py"), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = proc.stdout
    # Each step ran the real command and printed its real output, in order.
    steps = [
        "$ tensorfile scan tiny-model/pytorch_model.bin",
        "tiny-model/pytorch_model.bin: safe",
        "$ tensorfile scan downloads/evil.bin",
        "dangerous",
        "posix.system",
        "$ tensorfile convert tiny-model tiny-model-safetensors",
        "-> tiny-model-safetensors/model.safetensors: 7 tensors",
        "$ tensorfile inspect tiny-model-safetensors/model.safetensors",
        "embed.weight",
        "$ tensorfile convert downloads/evil.bin downloads/evil.safetensors",
        "tensorfile convert: error: downloads/evil.bin",
        "[exit 1]",
        "$ tensorfile keygen keys/signing-key.pem",
        "$ tensorfile sign tiny-model-safetensors --key keys/signing-key.pem",
        "$ tensorfile verify tiny-model-safetensors --key keys/signing-key.pem.pub",
        "verified: tiny-model-safetensors: 2 files, 7 tensors",
        "$ tensorfile verify tiny-model-tampered --key keys/signing-key.pem.pub",
        "tensorfile verify: error: tiny-model-tampered: contents differ",
        "head.weight",
        "[exit 1]",
        "All steps behaved as described.",
    ]
    pos = 0
    for step in steps:
        found = text.find(step, pos)
        assert found >= 0, f"missing or out of order: {step!r}\n{text}"
        pos = found + len(step)
    # What it claims to have made is there.
    import tensorfile

    safe = out / "tiny-model-safetensors"
    assert sorted(p.name for p in safe.iterdir()) == ["config.json", "model.safetensors", "model.sig"]
    assert len(tensorfile.load_file(safe / "model.safetensors")) == 7
    assert not (out / "downloads" / "evil.safetensors").exists()
    assert (out / "keys" / "signing-key.pem.pub").is_file()
    assert (out / "tiny-model-tampered" / "model.safetensors").read_bytes() != (
        safe / "model.safetensors"
    ).read_bytes()


def test_first_run_fails_loudly_when_a_step_misbehaves(tmp_path: Path) -> None:
    """The script's own check: a step whose exit code differs stops it with exit 1."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("first_run", REPO / "examples" / "first_run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.OUT = tmp_path
    with pytest.raises(module.StepFailed, match="exited 2, expected 0"):
        module.run(["inspect", tmp_path / "missing.safetensors"], expect=0)
    with pytest.raises(module.StepFailed, match="did not print"):
        module.run(["--version"], expect=0, shows=("not in the output",))
