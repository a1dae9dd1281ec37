"""Two ranks on torch.distributed (gloo, loopback) reading their parts of a
remote model, for tests/remote/test_tp.py: one process group, several jobs.

``JOBS`` (a JSON file) lists jobs, each run by every rank in turn:

- ``{"kind": "slice", "url": U, "options": [o0, o1]}``: rank r opens file
  URL ``U`` with ``safe_open`` and takes rows ``partition_bounds`` of every
  tensor with ``get_slice``; the halves are gathered over the process group
  and rank 0 checks that they put the tensors back together.
- ``{"kind": "partition", "url": U, "options": [o0, o1], "plan": {...},
  "local": FOLDER, "verify": PUB or null, "merge_gap": N (optional)}``: rank
  r loads its part of the model at ``U`` (an index URL) with
  ``load_partition_distributed`` and checks every block against the local
  copy ``FOLDER``.

``options[r]`` are rank r's fsspec ``storage_options``: an ``X-Rank`` header
for nginx, or an endpoint of its own for S3, so the server's byte counts
tell the ranks apart. Each rank writes ``OUT.<rank>`` ("ok" or what differed).

    python tp_worker.py JOBS WORLD PORT OUT
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import tensorfile
from tensorfile.parallel import (
    block_for,
    load_partition_distributed,
    partition_bounds,
    plan_from_patterns,
)
from tensorfile.remote import RemoteOptions
from tensorfile.sharded import open_sharded


def _slice(rank: int, world: int, job: dict[str, Any]) -> list[str]:
    bad = []
    opts = job["options"][rank]
    with tensorfile.safe_open(job["url"], framework="pt", storage_options=opts) as f:
        for name in f.offset_keys():
            rows = f.get_slice(name).get_shape()[0]
            lo, hi = partition_bounds(rows, rank, world)
            mine = f.get_slice(name)[lo:hi].contiguous()
            parts = [torch.empty_like(mine) for _ in range(world)]
            dist.all_gather(parts, mine)
            if rank == 0:
                with tensorfile.safe_open(job["url"], framework="pt") as whole:  # not counted
                    if not torch.equal(torch.cat(parts), whole.get_tensor(name)):
                        bad.append(name)
    return bad


def _partition(rank: int, world: int, job: dict[str, Any]) -> list[str]:
    plan = plan_from_patterns(job["plan"])
    remote = RemoteOptions(merge_gap=job["merge_gap"]) if "merge_gap" in job else None
    got = load_partition_distributed(job["url"], plan, framework="pt", verify=job["verify"],
                                     storage_options=job["options"][rank], remote=remote)
    bad = []
    with open_sharded(job["local"], "pt") as local:
        if sorted(got) != local.keys():
            return ["names differ"]
        for name in local.keys():
            block = block_for(local[name].info, plan, rank, world)
            want = local.get_tensor(name)[block.index()] if block.dim is not None else local.get_tensor(name)
            if not torch.equal(got[name], want):
                bad.append(name)
    return bad


def run(rank: int, jobs_file: str, world: int, port: int, out: str) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        with open(jobs_file) as fh:
            jobs = json.load(fh)
        bad = []
        for i, job in enumerate(jobs):
            run_job = _slice if job["kind"] == "slice" else _partition
            bad += [f"job {i}: {name}" for name in run_job(rank, world, job)]
            dist.barrier()  # each job's requests end before the next one's begin
        with open(f"{out}.{rank}", "w") as fh:
            fh.write("ok" if not bad else "differ: " + ", ".join(bad))
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    jobs_file, world, port, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    mp.spawn(run, args=(jobs_file, world, port, out), nprocs=world, join=True)
