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
        "$ tensorfile keygen keys/signing-key.pem",
        "$ tensorfile sign tiny-model --key keys/signing-key.pem",
        "$ tensorfile verify tiny-model --key keys/signing-key.pem.pub",
        "verified: tiny-model",
        "$ tensorfile verify tiny-model-tampered --key keys/signing-key.pem.pub",
        "tensorfile verify: error: tiny-model-tampered: contents differ",
        "[exit 1]",
        "All steps behaved as described.",
    ]
    pos = 0
    for step in steps:
        found = text.find(step, pos)
        assert found >= 0, f"missing or out of order: {step!r}\n{text}"
        pos = found + len(step)
    # What it claims to have made is there.
    assert (out / "tiny-model" / "model.sig").is_file()
    assert (out / "keys" / "signing-key.pem.pub").is_file()
    assert (out / "tiny-model-tampered" / "pytorch_model.bin").read_bytes() != (
        out / "tiny-model" / "pytorch_model.bin"
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
