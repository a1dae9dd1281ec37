"""Tensor-parallel reading of a remote file: two ranks (gloo), each fetching
about half the bytes, counted by the server itself (nginx's $body_bytes_sent)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from remote_kit import Model
from servers import Nginx, free_port

from tensorfile.numpy import save_file

HERE = Path(__file__).parent
ROOT = HERE.parents[1]


def test_two_ranks_each_read_about_half(nginx: Nginx, model: Model, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    tensors = {f"layer.{i}.weight": rng.standard_normal((512, 1024)).astype(np.float32)
               for i in range(4)}  # 8 MiB of data; the 256 KiB header probe is noise
    path = model.root / "tp.safetensors"
    save_file(tensors, path)
    before = len(nginx.log())
    out = tmp_path / "result.txt"
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT / 'cli'}"}
    run = subprocess.run(
        [sys.executable, str(HERE / "tp_worker.py"), nginx.url("tp.safetensors"), "2",
         str(free_port()), str(out)],
        capture_output=True, text=True, timeout=300, env=env, check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert out.read_text() == "ok"
    time.sleep(0.1)
    lines = nginx.log()[before:]
    data = sum(t.nbytes for t in tensors.values())
    for rank in (0, 1):
        sent = sum(line.body_bytes for line in lines if line.uri.endswith(f"?rank={rank}")
                   and not line.range.startswith("bytes=0-"))
        # Exactly this rank's rows of every tensor: half of the data.
        assert sent == data // 2, (rank, sent, data)
        total = sum(line.body_bytes for line in lines if line.uri.endswith(f"?rank={rank}"))
        assert 0.45 * path.stat().st_size <= total <= 0.55 * path.stat().st_size
