"""A real torch.distributed run (gloo, localhost) for tests/scale/test_parallel.py.

Run as a script so ``torch.multiprocessing.spawn`` can import this file in each
rank. Every rank loads its partition of a sharded model (mmap, then pread) with
:func:`tensorfile.parallel.load_partition_distributed`, gathers the split
tensors over the process group, compares them with the full tensors, and
writes what it read (bytes counted by the handle, resident pages of each shard
mapping) to ``OUT/rank<r>.json``.

    python dist_worker.py FOLDER WORLD PORT OUT PLAN_JSON
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tensorfile.parallel import load_partition_distributed, plan_from_patterns
from tensorfile.sharded import open_sharded


def mapping_rss(paths: list[Path]) -> dict[str, int]:
    """Resident bytes of this process's mappings of ``paths`` (from /proc/self/smaps)."""
    wanted = {os.path.realpath(p): p.name for p in paths}
    rss: dict[str, int] = {name: 0 for name in wanted.values()}
    current = None
    with open("/proc/self/smaps") as f:
        for line in f:
            fields = line.split()
            if not fields[0].endswith(":"):  # a mapping's first line: range perms offset dev inode [path]
                current = wanted.get(fields[5]) if len(fields) >= 6 else None
            elif current is not None and fields[0] == "Rss:":
                rss[current] += int(fields[1]) * 1024
    return rss


def run(rank: int, world: int, port: int, folder: str, out: str, plan_json: str) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        plan = plan_from_patterns(json.loads(plan_json))
        full = None
        if rank == 0:
            with open_sharded(folder, "pt", backend="pread") as model:
                full = model.tensors()
        report: dict[str, dict[str, object]] = {}
        for backend in ("mmap", "pread"):
            with open_sharded(folder, "pt", backend=backend) as model:
                part = load_partition_distributed(model, plan)
                rss = mapping_rss([model.path_of(s) for s in model.index.shard_files])
                bytes_read = model.bytes_read
            equal = {}
            for name in sorted(part):
                dim = plan.dim_for(name)
                pieces = [part[name]]
                if dim is not None:
                    pieces = [torch.empty(0)] * world
                    dist.all_gather_object(pieces, part[name])
                if full is not None:
                    whole = pieces[0] if dim is None else torch.cat(pieces, dim)
                    equal[name] = bool(torch.equal(whole, full[name]))
            report[backend] = {"bytes_read": bytes_read, "rss": rss, "equal": equal,
                               "shapes": {k: list(v.shape) for k, v in part.items()}}
        Path(out, f"rank{rank}.json").write_text(json.dumps(report))
        dist.barrier()
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    folder, world, port, out, plan_json = sys.argv[1:6]
    mp.spawn(run, args=(int(world), int(port), folder, out, plan_json), nprocs=int(world))
