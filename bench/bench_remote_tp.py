"""Tensor-parallel loads of a remote sharded model on loopback, side by side
in one run (issue 25): what one rank of ``--world`` fetches and how long it
takes, against a plain parallel download of the same bytes.

A sharded model of ``--size-mib`` (float32; half its bytes in tensors split by
rows, ``*.q.weight``, half by columns, ``*.o.weight``, 4096 columns, plus a
replicated ``norm``) is served by nginx (and, with ``--transports http,s3``,
by moto's S3 server) and loaded by rank 0:

- ``cat_ranges``: the anchor, fsspec's ``cat_ranges`` of exactly the byte
  ranges rank 0's blocks cover (one range per run, as many at once as fsspec
  sends), into memory;
- ``partition``: ``load_partition(URL, plan, 0, world)`` with the default
  ``merge_gap`` (column runs close together in one request, gaps dropped);
- ``partition-exact``: the same with ``merge_gap=0`` (one request a run);
- ``whole``: ``load_file(URL)``, every tensor: what a rank fetches without
  tensor-parallel reads.

Each is run ``--repeat`` times, interleaved, in this process (a fresh model
open each time); the best time is kept. Bytes are counted by the readers
(``RemoteFile.bytes_fetched``: header probes and merged gaps included).
moto copies the whole object for every range request: keep S3 runs small.

    python bench/bench_remote_tp.py [--size-mib 256] [--world 2] [--repeat 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "remote"))

PLAN = {"*.q.weight": 0, "*.o.weight": 1, "norm": None}
COLS = 4096


def build(folder: Path, size_mib: int) -> None:
    import numpy as np

    from tensorfile.sharded import save_sharded

    rows = 1024
    per = rows * COLS * 4
    n = max(2, (size_mib << 20) // per)
    rng = np.random.default_rng(0)
    t = {"norm": rng.standard_normal(COLS).astype(np.float32)}
    for i in range(n):
        kind = "q" if i % 2 == 0 else "o"
        t[f"layer.{i // 2}.{kind}.weight"] = rng.standard_normal((rows, COLS)).astype(np.float32)
    save_sharded(t, folder, max_shard_size=max(per * 2, (size_mib << 20) // 4))


def rank_ranges(index_url: str, opts: dict[str, Any], world: int) -> list[tuple[str, int, int]]:
    """(shard URL, start, end) of every run of rank 0's blocks."""
    from tensorfile.parallel import block_for, plan_from_patterns
    from tensorfile.sharded import open_sharded

    plan = plan_from_patterns(PLAN)
    out = []
    with open_sharded(index_url, storage_options=opts) as m:
        for name in m.keys():
            h = m[name]
            block = block_for(h.info, plan, 0, world)
            base = m.shard(h.shard).byte_range(name)[0]
            out += [(m.location(h.shard), base + block.first + i * block.stride,
                     base + block.first + i * block.stride + block.run) for i in range(block.outer)]
    return out


def fetched(model: Any) -> int:
    return sum(f.bytes_fetched for f in model._store.files.values())


def run_one(kind: str, index_url: str, opts: dict[str, Any], world: int,
            ranges: list[tuple[str, int, int]]) -> tuple[float, int]:
    import fsspec

    from tensorfile.parallel import load_partition, plan_from_patterns
    from tensorfile.remote import RemoteOptions
    from tensorfile.sharded import open_sharded

    plan = plan_from_patterns(PLAN)
    t0 = time.perf_counter()
    if kind == "cat_ranges":
        fs, _ = fsspec.core.url_to_fs(index_url, **opts)
        paths = [fs._strip_protocol(u) for u, _, _ in ranges]
        got = fs.cat_ranges(paths, [a for _, a, _ in ranges], [b for _, _, b in ranges])
        return time.perf_counter() - t0, sum(len(g) for g in got)
    remote = RemoteOptions(merge_gap=0) if kind == "partition-exact" else None
    with open_sharded(index_url, "np", storage_options=opts, remote=remote) as m:
        if kind == "whole":
            m.tensors()
        else:
            load_partition(m, plan, 0, world)
        return time.perf_counter() - t0, fetched(m)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mib", type=int, default=256)
    ap.add_argument("--world", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--transports", default="http")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    from servers import Nginx, S3Server

    kinds = ["cat_ranges", "partition", "partition-exact", "whole"]
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "www"
        build(root / "m", args.size_mib)
        model_bytes = sum(p.stat().st_size for p in (root / "m").glob("*.safetensors"))
        for transport in args.transports.split(","):
            if transport == "http":
                server: Any = Nginx(root, Path(tmp) / "nginx")
                server.__enter__()
                url, opts = server.url("m/model.safetensors.index.json"), {}
            else:
                import logging

                logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto logs every request
                server = S3Server()
                server.__enter__()
                client = server.client()
                client.create_bucket(Bucket="models")
                for p in (root / "m").iterdir():
                    client.upload_file(str(p), "models", f"m/{p.name}")
                url, opts = "s3://models/m/model.safetensors.index.json", dict(server.storage_options)
                opts.pop("skip_instance_cache", None)
            try:
                ranges = rank_ranges(url, opts, args.world)
                best: dict[str, tuple[float, int]] = {}
                for _ in range(args.repeat):
                    for kind in kinds:
                        secs, nbytes = run_one(kind, url, opts, args.world, ranges)
                        if kind not in best or secs < best[kind][0]:
                            best[kind] = (secs, nbytes)
            finally:
                server.__exit__(None, None, None)
            anchor = best["cat_ranges"][0]
            results[transport] = {
                k: {"seconds": round(s, 3), "bytes": b, "share_of_model": round(b / model_bytes, 3),
                    "time_vs_cat_ranges": round(s / anchor, 2)}
                for k, (s, b) in best.items()
            }
            results[transport]["runs_of_rank0"] = {"count": len(ranges)}
    out = {"model_bytes": model_bytes, "world": args.world, "repeat": args.repeat, "results": results}
    if args.json:
        print(json.dumps(out, indent=1))
        return
    print(f"model {model_bytes / 2**20:.0f} MiB, rank 0 of {args.world}, best of {args.repeat}")
    for transport, r in results.items():
        print(f"{transport}: {r['runs_of_rank0']['count']} runs in rank 0's blocks")
        for k in kinds:
            x = r[k]
            print(f"  {k:16} {x['seconds']:7.3f} s  {x['bytes'] / 2**20:8.1f} MiB "
                  f"({x['share_of_model']:.0%} of the model)  {x['time_vs_cat_ranges']:.2f}x cat_ranges")


if __name__ == "__main__":
    main()
