"""The core imports only what a call needs: start-up is part of every command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def _modules_after(code: str) -> set[str]:
    run = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys\nprint('\\n'.join(sys.modules))"],
        capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 0, run.stderr
    return set(run.stdout.split())


def test_plain_dtypes_never_import_ml_dtypes(tmp_path: Path) -> None:
    # ml_dtypes 0.7.0 takes ~0.6 s to import; a float32 save and load must not pay it.
    path = tmp_path / "m.safetensors"
    loaded = _modules_after(
        "import numpy as np, tensorfile\n"
        f"tensorfile.save_file({{'a': np.ones(3, np.float32), 'b': np.ones(2, np.int64)}}, {str(path)!r})\n"
        f"tensorfile.load_file({str(path)!r})\n"
    )
    assert "tensorfile" in loaded
    assert "ml_dtypes" not in loaded
    assert "torch" not in loaded


def test_an_ml_dtype_still_round_trips(tmp_path: Path) -> None:
    ml_dtypes = pytest.importorskip("ml_dtypes")
    import numpy as np

    from tensorfile import load_file, save_file

    arr = np.arange(6, dtype=np.float32).astype(ml_dtypes.bfloat16)
    save_file({"x": arr}, tmp_path / "bf16.safetensors")
    got = load_file(tmp_path / "bf16.safetensors")["x"]
    assert got.dtype == arr.dtype and (got == arr).all()


def test_reading_a_bf16_file_imports_ml_dtypes_on_demand(tmp_path: Path) -> None:
    pytest.importorskip("ml_dtypes")
    path = tmp_path / "bf16.safetensors"
    # BF16 bytes written by hand: the writer side needs no ml_dtypes here.
    import struct

    header = b'{"x":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]}}'
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\x80\x3f\x00\x40")
    loaded = _modules_after(
        f"import tensorfile\nx = tensorfile.load_file({str(path)!r})['x']\n"
        "assert x.dtype.name == 'bfloat16' and x.astype('float32').tolist() == [1.0, 2.0], x\n"
    )
    assert "ml_dtypes" in loaded
