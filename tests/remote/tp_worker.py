"""Two ranks on torch.distributed (gloo, loopback), each reading its half of
every tensor of a remote file with ``get_slice``, for tests/remote/test_tp.py.

Each rank opens ``URL?rank=<r>`` (the query tells the ranks apart in nginx's
access log), takes rows ``partition_bounds`` of every tensor, gathers the
halves over the process group and checks that they put the tensors back
together; rank 0 writes ``OUT`` ("ok" or what differed).

    python tp_worker.py URL WORLD PORT OUT
"""

from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import tensorfile
from tensorfile.parallel import partition_bounds


def run(rank: int, url: str, world: int, port: int, out: str) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        bad = []
        with tensorfile.safe_open(f"{url}?rank={rank}", framework="pt") as f:
            for name in f.offset_keys():
                rows = f.get_slice(name).get_shape()[0]
                lo, hi = partition_bounds(rows, rank, world)
                mine = f.get_slice(name)[lo:hi].contiguous()
                parts = [torch.empty_like(mine) for _ in range(world)]
                dist.all_gather(parts, mine)
                if rank == 0:
                    with tensorfile.safe_open(url, framework="pt") as whole:
                        if not torch.equal(torch.cat(parts), whole.get_tensor(name)):
                            bad.append(name)
        if rank == 0:
            with open(out, "w") as fh:
                fh.write("ok" if not bad else "differ: " + ", ".join(bad))
        dist.barrier()
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    url, world, port, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    mp.spawn(run, args=(url, world, port, out), nprocs=world, join=True)
