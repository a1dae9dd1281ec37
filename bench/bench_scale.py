"""Scale benchmarks: one rank's half of a sharded model, and hashing shards on more cores.

    python bench/bench_scale.py [--size-mib 2048] [--shard-mib 256] [--shards 8] [--repeat 3] [--out F]

1. Tensor-parallel load: a sharded model of ``--size-mib`` (float32 tensors of
   64 MiB, shards of 512 MiB). Rank 0 of 2 loads its half of every tensor with
   :func:`tensorfile.parallel.load_partition`, against loading the whole model
   (``load_file`` of the folder, then cloning every tensor, so both end with
   tensors in private memory). Two plans: ``rows`` splits every tensor along
   dim 0 (each rank's half is contiguous), ``mixed`` half along dim 0 and
   half along dim 1 (a run of half a row per row). Both with
   ``backend="mmap"`` and ``backend="pread"``, on a warm page cache and a cold one (the shards'
   pages dropped with ``posix_fadvise(DONTNEED)`` before each run).
   Target: half <= 0.6x whole.
2. Parallel verify: ``--shards`` files of ``--shard-mib`` hashed with
   :func:`tensorfile.parallel.hash_files_processes` on 2 processes against 1
   (and, for comparison, the integrity library's thread pool, 2 threads
   against 1), file digests only, as verification hashes. Warm page cache.
   Target: >= 1.7x. The "ceiling" line is the same hashing on bytes already
   in memory: what two processes can get on this machine at that moment.

Each timing is the best of ``--repeat`` rounds, the two sides alternating.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np


def drop_cache(paths: list[Path]) -> None:
    """Evict the files' clean pages from the page cache (no root needed)."""
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def warm(paths: list[Path]) -> None:
    for p in paths:
        with open(p, "rb") as f:
            while f.read(64 << 20):
                pass


def pair(
    a: Callable[[], object], b: Callable[[], object], repeat: int, before: Callable[[], None]
) -> tuple[float, float]:
    ta, tb = [], []
    for _ in range(repeat):
        for fn, out in ((b, tb), (a, ta)):
            before()
            t = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t)
    return min(ta), min(tb)


def bench_partition(folder: Path, size_mib: int, repeat: int) -> dict[str, float]:
    import torch

    import tensorfile.torch
    from tensorfile.parallel import load_partition, plan_from_patterns
    from tensorfile.sharded import save_sharded_iter

    n = max(2, size_mib // 64)
    side = 4096  # 4096 x 4096 float32 = 64 MiB
    names = [f"layer{i:03d}.{'q' if i % 2 == 0 else 'o'}.weight" for i in range(n)]
    entries = {name: ("F32", (side, side)) for name in names}
    save_sharded_iter(
        entries,
        lambda name: np.full((side, side), float(names.index(name)), np.float32),
        folder,
        max_shard_size="512MiB",
    )
    shards = sorted(folder.glob("*.safetensors"))
    plans = {
        "rows": plan_from_patterns({"*": 0}),
        "mixed": plan_from_patterns({"*.q.weight": 0, "*.o.weight": 1}),
    }

    def whole(backend: str) -> Callable[[], object]:
        def run() -> object:
            loaded = tensorfile.torch.load_file(folder, backend=backend)
            return {k: v.clone() for k, v in loaded.items()} if backend == "mmap" else loaded
        return run

    def half(backend: str, plan_name: str) -> Callable[[], object]:
        return lambda: load_partition(folder, plans[plan_name], 0, 2, backend=backend)

    torch.set_num_threads(1)
    out: dict[str, float] = {}
    for cache, before in (("warm", lambda: warm(shards)), ("cold", lambda: drop_cache(shards))):
        for backend in ("mmap", "pread"):
            for plan_name in plans:
                t_half, t_whole = pair(half(backend, plan_name), whole(backend), repeat, before)
                key = f"{cache}_{backend}_{plan_name}"
                out[f"{key}_half_s"], out[f"{key}_whole_s"] = t_half, t_whole
                out[f"{key}_ratio"] = t_half / t_whole
    return out


def bench_verify(folder: Path, shards: int, shard_mib: int, repeat: int) -> dict[str, float]:
    from tensorfile.integrity.hashing import HashOptions, ModelFile, hash_files
    from tensorfile.parallel import hash_files_processes
    from tensorfile.sharded import save_sharded_iter

    side = shard_mib * (1 << 20) // 4
    names = [f"t{i:02d}" for i in range(shards)]
    save_sharded_iter(
        {n: ("F32", (side,)) for n in names},
        lambda name: np.full(side, float(names.index(name)), np.float32),
        folder,
        max_shard_size=shard_mib << 20,
    )
    paths = sorted(folder.glob("*.safetensors"))
    files = [ModelFile(p.name, p, p.stat().st_size) for p in paths]
    before = lambda: warm(paths)  # noqa: E731
    t2, t1 = pair(lambda: hash_files_processes(files, HashOptions(workers=2, tensors=False)),
                  lambda: hash_files_processes(files, HashOptions(workers=1, tensors=False)), repeat, before)
    th2, th1 = pair(lambda: hash_files(files, HashOptions(workers=2, tensors=False)),
                    lambda: hash_files(files, HashOptions(workers=1, tensors=False)), repeat, before)
    # What this machine gives two processes right now: the same SHA-256 work
    # on bytes already in memory, no files. Other load on the machine shows here.
    jobs = [shard_mib << 20] * shards
    with ProcessPoolExecutor(2) as pool:
        list(pool.map(_sha_zeros, [1, 1]))  # start the workers before timing
        c2, c1 = pair(lambda: list(pool.map(_sha_zeros, jobs)),
                      lambda: [_sha_zeros(n) for n in jobs], repeat, lambda: None)
    return {
        "processes_1_s": t1, "processes_2_s": t2, "processes_speedup": t1 / t2,
        "threads_1_s": th1, "threads_2_s": th2, "threads_speedup": th1 / th2,
        "ceiling_speedup": c1 / c2,
    }


def _sha_zeros(n: int) -> str:
    return hashlib.sha256(bytes(n)).hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-mib", type=int, default=2048)
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--shard-mib", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dir", type=Path, default=None, help="scratch folder (default: a temporary one)")
    ap.add_argument("--out", type=Path, default=None, help="also write the timings and ratios as JSON here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        part = bench_partition(Path(tmp) / "tp", args.size_mib, args.repeat)
        for p in (Path(tmp) / "tp").iterdir():
            p.unlink()
        ver = bench_verify(Path(tmp) / "verify", args.shards, args.shard_mib, args.repeat)
    print(f"cores: {os.cpu_count()}  load average: {os.getloadavg()[0]:.1f}  model: {args.size_mib} MiB  verify: {args.shards} x {args.shard_mib} MiB")
    for cache in ("warm", "cold"):
        for backend, plan_name in [(b, p) for b in ("mmap", "pread") for p in ("rows", "mixed")]:
            k = f"{cache}_{backend}_{plan_name}"
            print(f"half of every tensor vs whole model [{cache} cache, {backend}, {plan_name} split]: "
                  f"{part[k + '_half_s']:.3f} s vs {part[k + '_whole_s']:.3f} s = "
                  f"{part[k + '_ratio']:.2f}x (target <= 0.6x)")
    print(f"verify {args.shards} shards, 2 processes vs 1: {ver['processes_2_s']:.3f} s vs "
          f"{ver['processes_1_s']:.3f} s = {ver['processes_speedup']:.2f}x (target >= 1.7x)")
    print(f"  (integrity thread pool, 2 threads vs 1: {ver['threads_speedup']:.2f}x; "
          f"machine ceiling now, 2 processes hashing bytes in memory: {ver['ceiling_speedup']:.2f}x)")
    result = {"cores": os.cpu_count(), "load_average": os.getloadavg(), "partition": part, "verify": ver}
    print(json.dumps(result))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
