"""Tensor-parallel reading of remote models: two ranks (gloo), each fetching
about half the bytes, counted by the server itself (nginx's
``$body_bytes_sent``, told apart by an ``X-Rank`` header) or, for S3 (moto
keeps no byte counts), by a proxy per rank in front of it that passes every
answer on unchanged."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from remote_kit import Model
from servers import FaultProxy, LogLine, Nginx, S3Server, free_port

from tensorfile.integrity import sign
from tensorfile.numpy import save_file

HERE = Path(__file__).parent
ROOT = HERE.parents[1]

#: Rows split across ranks, one tensor by columns (strided runs), one replicated.
PLAN = {"*.q.weight": 0, "*.o.weight": 1, "norm": None}


def _tp_model(folder: Path, key: Path) -> tuple[dict[str, np.ndarray[Any, Any]], int]:
    """A two-shard model signed with ``key``, and the bytes each rank must
    fetch of it under :data:`PLAN`. 16 MiB of rows: the header probes (256 KiB
    a shard) stay noise."""
    rng = np.random.default_rng(3)
    t = {f"layer.{i}.q.weight": rng.standard_normal((1024, 1024)).astype(np.float32)
         for i in range(4)}
    t["layer.0.o.weight"] = rng.standard_normal((64, 2048)).astype(np.float32)
    t["norm"] = rng.standard_normal(1024).astype(np.float32)
    folder.mkdir(parents=True, exist_ok=True)
    halves = {"model-00001-of-00002.safetensors": ["layer.0.q.weight", "layer.1.q.weight", "norm"],
              "model-00002-of-00002.safetensors": ["layer.2.q.weight", "layer.3.q.weight",
                                                   "layer.0.o.weight"]}
    for shard, names in halves.items():
        save_file({n: t[n] for n in names}, folder / shard)
    index = {"metadata": {"total_size": sum(v.nbytes for v in t.values())},
             "weight_map": {n: s for s, names in halves.items() for n in names}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    sign(folder, key)
    per_rank = sum(v.nbytes for k, v in t.items() if k != "norm") // 2 + t["norm"].nbytes
    return t, per_rank


#: What merging the column-split tensor's runs adds: its 64 runs of 4 KiB,
#: 4 KiB apart, become one range of 63 strides and a run (the gaps read and dropped).
MERGED_EXTRA = (63 * 8192 + 4096) - 64 * 4096


def _spawn(jobs: list[dict[str, Any]], tmp_path: Path) -> None:
    (tmp_path / "jobs.json").write_text(json.dumps(jobs))
    out = tmp_path / "result"
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT / 'cli'}"}
    run = subprocess.run(
        [sys.executable, str(HERE / "tp_worker.py"), str(tmp_path / "jobs.json"), "2",
         str(free_port()), str(out)],
        capture_output=True, text=True, timeout=300, env=env, check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    for rank in (0, 1):
        assert Path(f"{out}.{rank}").read_text() == "ok", rank


def _check_halves(lines: list[LogLine], rank_of: Any, data: int, per_rank: int, size: int) -> None:
    """Each rank fetched exactly its blocks' bytes (beyond the header probes,
    the ranges from byte 0) and, everything counted, about half the model."""
    for rank in (0, 1):
        mine = [line for line in lines if rank_of(line) == rank]
        assert mine and all(line.status in (200, 206) for line in mine)
        sent = sum(line.body_bytes for line in mine if not line.range.startswith("bytes=0-"))
        assert sent == per_rank, (rank, sent, per_rank, data)
        total = sum(line.body_bytes for line in mine)
        assert 0.45 * size <= total <= 0.56 * size, (rank, total, size)


def test_two_ranks_each_read_about_half_over_http(nginx: Nginx, model: Model, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    tensors = {f"layer.{i}.weight": rng.standard_normal((512, 1024)).astype(np.float32)
               for i in range(4)}  # 8 MiB of data; the 256 KiB header probe is noise
    path = model.root / "tp.safetensors"
    save_file(tensors, path)
    folder = model.root / "tp_sharded"
    t, per_rank = _tp_model(folder, model.key)
    ranks = [{"headers": {"X-Rank": f"{job}{rank}"}} for job in "spv" for rank in (0, 1)]
    index = nginx.url("tp_sharded/model.safetensors.index.json")
    before = len(nginx.log())
    _spawn([
        {"kind": "slice", "url": nginx.url("tp.safetensors"), "options": ranks[:2]},
        # merge_gap=0: each strided run of the column split its own request.
        {"kind": "partition", "url": index, "options": ranks[2:4], "plan": PLAN,
         "local": str(folder), "verify": None, "merge_gap": 0},
        # Verified: each rank fetches the signature first and checks every
        # tensor it needs a part of whole (a digest covers a whole tensor).
        {"kind": "partition", "url": index, "options": ranks[4:], "plan": PLAN,
         "local": str(folder), "verify": str(model.pub)},
    ], tmp_path)
    time.sleep(0.1)
    lines = nginx.log()[before:]
    data = sum(v.nbytes for v in tensors.values())
    # get_slice: exactly this rank's rows of every tensor, half of the data.
    _check_halves(lines, lambda line: int(line.rank[1]) if line.rank[:1] == "s" else None,
                  data, data // 2, path.stat().st_size)
    # load_partition_distributed on the index URL: its rows, its columns, the
    # replicated tensor whole; each shard's header probe and the index besides.
    size = sum(p.stat().st_size for p in folder.glob("*.safetensors"))
    _check_halves([line for line in lines if line.uri.endswith(".safetensors")],
                  lambda line: int(line.rank[1]) if line.rank[:1] == "p" else None,
                  sum(v.nbytes for v in t.values()), per_rank, size)
    for rank in ("v0", "v1"):
        mine = [line for line in lines if line.rank == rank]
        uris = [line.uri.rsplit("/", 1)[-1] for line in mine]
        first_data = next(i for i, line in enumerate(mine)
                          if line.uri.endswith(".safetensors") and not line.range.startswith("bytes=0-"))
        assert uris.index("model.sig") < first_data  # the signature before any tensor byte
        assert uris.count("model.sig") == 1  # once for the model, not once per shard


def test_two_ranks_each_read_about_half_from_s3(s3: S3Server, model: Model, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    folder = tmp_path / "tp_s3"
    t, per_rank = _tp_model(folder, model.key)
    client = s3.client()
    for p in folder.iterdir():
        client.upload_file(str(p), "models", f"tp_s3/{p.name}")
    proxies = [FaultProxy(s3.port) for _ in range(2)]  # each rank's own endpoint
    for p in proxies:
        p.__enter__()
    try:
        opts = [{**s3.storage_options, "client_kwargs": {
            "endpoint_url": f"http://127.0.0.1:{p.port}", "region_name": "us-east-1"}}
            for p in proxies]
        _spawn([{"kind": "partition", "url": "s3://models/tp_s3/model.safetensors.index.json",
                 "options": opts, "plan": PLAN, "local": str(folder), "verify": None}], tmp_path)
    finally:
        for p in proxies:
            p.__exit__()
    size = sum(p.stat().st_size for p in folder.glob("*.safetensors"))
    lines = [(rank, line) for rank in (0, 1) for line in proxies[rank].log
             if line.uri.endswith(".safetensors")]
    # The default merge_gap: the column split's runs in one request, its gaps read too.
    _check_halves([line for _, line in lines], lambda line: next(r for r, x in lines if x is line),
                  sum(v.nbytes for v in t.values()), per_rank + MERGED_EXTRA, size)
    for rank in (0, 1):
        data = [line for r, line in lines if r == rank and not line.range.startswith("bytes=0-")]
        assert len(data) <= 6, [line.range for line in data]  # not 64 requests for the runs
