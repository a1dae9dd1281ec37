"""Streaming writes against save_file: same tensors, same run, ratios.

    python bench/bench_stream_write.py [--size-mib 512] [--tensors 32] [--repeat 3]

Times ``tensorfile.save_file`` of a dict of tensors, and
``tensorfile.save_streaming`` of the same tensors (a ``produce(name)`` that
returns them, so only the writer is timed), without and with ``digests``
(SHA-256 per file, BLAKE3 per tensor, computed while writing), against
``save_file`` followed by ``hash_model`` (what signing right after a plain
save hashes: the digests ``digests=True`` hands to ``sign(written=)``). Runs
alternate and the best of ``--repeat`` is kept; every write is durable
(fsync), as both writers' are. A ratio above 1.0 means streaming is slower.
The peak memory of streaming a model bigger than memory is tested in
tests/format/test_streaming.py (512 MiB under a 256 MiB RSS).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

import tensorfile
from tensorfile.integrity import hash_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-mib", type=int, default=512)
    ap.add_argument("--tensors", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    per = (args.size_mib << 20) // args.tensors // 4
    rng = np.random.default_rng(0)
    tensors = {f"layer{i:03d}": rng.standard_normal(per, dtype=np.float32) for i in range(args.tensors)}
    entries = {n: (a.dtype, a.shape) for n, a in tensors.items()}
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
        dest = Path(tmp) / "m.safetensors"
        cases: dict[str, Callable[[], object]] = {
            "save_file": lambda: tensorfile.save_file(tensors, dest),
            "save_streaming": lambda: tensorfile.save_streaming(tensors.__getitem__, dest, entries),
            "save_streaming digests": lambda: tensorfile.save_streaming(
                tensors.__getitem__, dest, entries, digests=True),
            # What signing right after a plain save costs: the save, then
            # hashing the file again (warm: it was just written).
            "save_file + hash_model": lambda: (tensorfile.save_file(tensors, dest),
                                               hash_model(dest)),
        }
        times: dict[str, list[float]] = {k: [] for k in cases}
        for i in range(args.repeat):
            order = list(cases) if i % 2 == 0 else list(cases)[::-1]
            for name in order:
                t0 = time.perf_counter()
                cases[name]()
                times[name].append(time.perf_counter() - t0)
    base = min(times["save_file"])
    print(f"write {args.size_mib} MiB in {args.tensors} tensors, best of {args.repeat}; "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"{'writer':24} {'seconds':>8} {'GB/s':>6} {'vs save_file':>12}")
    for name, ts in times.items():
        best = min(ts)
        print(f"{name:24} {best:8.3f} {(args.size_mib << 20) / best / 1e9:6.2f} {best / base:12.2f}")


if __name__ == "__main__":
    main()
