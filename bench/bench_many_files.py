"""Saving many files: 100 small ``save_file`` calls and a 12-shard model,
tensorfile beside the reference safetensors in the same run (issue 24 item 4).

    python bench/bench_many_files.py [--repeat 7] [--small-kb 64] [--shard-mb 1]

Rows, each written into a fresh empty folder per round (a new checkpoint),
in the folder ``--dir`` names (default: a temporary folder under bench/out,
so on the disk a user's models live on, not a tmpfs):

* ``100 small``: 100 files of ``--small-kb`` kB (4 tensors each), by
  ``safetensors.numpy.save_file`` (the anchor), by ``tensorfile.save_file``
  (durable, the default: each file's data synced before its rename and its
  folder after it), and by
  ``tensorfile.save_file(durable=False)`` (atomic, no sync: scratch files);
* ``12 shards``: a model of 12 shards of ``--shard-mb`` MB and an index, by
  12 ``safetensors.torch.save_file`` calls and an index written with
  ``json.dump`` (what diffusers and transformers do), by
  ``tensorfile.sharded.save_sharded`` (all or nothing, synced once at the
  end), and by 12 ``tensorfile.torch.save_file`` calls (what those libraries
  do through ``tensorfile.compat.install()``);
* ``fsync floor``: 100 ``fdatasync`` calls of 64 kB files, what the disk
  asks of any durable writer.

Rounds alternate between the rows; the best and the median of ``--repeat``
rounds are printed with each tensorfile row's ratios to its anchor, best to
best and median to median (goal: 1.5x; on a shared machine the best is the
round least disturbed by others, see ``_timing.best_of``). Results go to bench/out/many_files.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

OUT = Path(__file__).parent / "out"
SMALL_FILES = 100
SHARDS = 12
GOAL = 1.5


def _small_tensors(kb: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = kb * 1024 // 4 // 4
    return {f"w{i}": rng.standard_normal(n).astype(np.float32) for i in range(4)}


def _rows(args: argparse.Namespace) -> dict[str, tuple[str, Callable[[Path], None]]]:
    """Row name -> (its anchor's row name, a function writing into a folder)."""
    import safetensors.numpy
    import safetensors.torch
    import torch

    import tensorfile
    import tensorfile.torch
    from tensorfile.sharded import save_sharded

    small = [_small_tensors(args.small_kb, i) for i in range(SMALL_FILES)]
    per_shard = args.shard_mb * 1_000_000 // 4 // 2
    shards = [
        {f"layer{s}.{k}": torch.randn(per_shard) for k in ("a", "b")} for s in range(SHARDS)
    ]
    model = {k: v for shard in shards for k, v in shard.items()}
    limit = 2 * per_shard * 4

    def ref_small(d: Path) -> None:
        for i, t in enumerate(small):
            safetensors.numpy.save_file(t, d / f"f{i}.safetensors")

    def tf_small(d: Path) -> None:
        for i, t in enumerate(small):
            tensorfile.save_file(t, d / f"f{i}.safetensors")

    def tf_small_scratch(d: Path) -> None:
        for i, t in enumerate(small):
            tensorfile.save_file(t, d / f"f{i}.safetensors", durable=False)

    def shard_names() -> list[str]:
        return [f"model-{s + 1:05d}-of-{SHARDS:05d}.safetensors" for s in range(SHARDS)]

    def write_index(d: Path) -> None:
        weight_map = {k: n for n, shard in zip(shard_names(), shards, strict=True) for k in shard}
        with open(d / "model.safetensors.index.json", "w") as f:
            json.dump({"metadata": {"total_size": limit * SHARDS}, "weight_map": weight_map}, f)

    def ref_shards(d: Path) -> None:
        for name, shard in zip(shard_names(), shards, strict=True):
            safetensors.torch.save_file(shard, d / name, metadata={"format": "pt"})
        write_index(d)

    def tf_sharded(d: Path) -> None:
        save_sharded(model, d, max_shard_size=limit, metadata={"format": "pt"})

    def tf_sharded_scratch(d: Path) -> None:
        save_sharded(model, d, max_shard_size=limit, metadata={"format": "pt"}, durable=False)

    def tf_compat_shards(d: Path, durable: bool = True) -> None:
        for name, shard in zip(shard_names(), shards, strict=True):
            tensorfile.torch.save_file(shard, d / name, metadata={"format": "pt"}, durable=durable)
        write_index(d)

    blob = os.urandom(64 * 1024)

    def fsync_floor(d: Path) -> None:
        for i in range(SMALL_FILES):
            fd = os.open(d / f"f{i}", os.O_WRONLY | os.O_CREAT, 0o644)
            try:
                os.write(fd, blob)
                os.fdatasync(fd)
            finally:
                os.close(fd)

    return {
        "100 small: safetensors": ("", ref_small),
        "100 small: tensorfile": ("100 small: safetensors", tf_small),
        "100 small: tensorfile durable=False": ("100 small: safetensors", tf_small_scratch),
        "12 shards: safetensors + index": ("", ref_shards),
        "12 shards: tensorfile save_sharded": ("12 shards: safetensors + index", tf_sharded),
        "12 shards: tensorfile save_sharded durable=False": ("12 shards: safetensors + index",
                                                             tf_sharded_scratch),
        "12 shards: tensorfile.torch.save_file x12": ("12 shards: safetensors + index",
                                                      tf_compat_shards),
        "12 shards: tensorfile.torch.save_file x12 durable=False": (
            "12 shards: safetensors + index", lambda d: tf_compat_shards(d, durable=False)),
        "fsync floor: 100 x 64 kB fdatasync": ("100 small: safetensors", fsync_floor),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--small-kb", type=int, default=64)
    ap.add_argument("--shard-mb", type=int, default=1)
    ap.add_argument("--dir", type=Path, default=None, help="where to write (default: bench/out)")
    args = ap.parse_args()
    OUT.mkdir(exist_ok=True)
    base = Path(tempfile.mkdtemp(prefix="many-files-", dir=args.dir or OUT))
    rows = _rows(args)
    times: dict[str, list[float]] = {name: [] for name in rows}
    try:
        for r in range(args.repeat + 1):  # the first round warms up and is not counted
            for name, (_anchor, fn) in rows.items():
                d = base / f"r{r}-{len(times[name])}-{abs(hash(name))}"
                d.mkdir()
                t = time.perf_counter()
                fn(d)
                elapsed = time.perf_counter() - t
                if r:
                    times[name].append(elapsed)
                shutil.rmtree(d)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    results = []
    print(f"{'row':56} {'best s':>8} {'median s':>9} {'ratio best':>11} {'median':>7}")
    for name, (anchor, _fn) in rows.items():
        best, median = min(times[name]), statistics.median(times[name])
        ratios = ((best / min(times[anchor]), median / statistics.median(times[anchor]))
                  if anchor else None)
        mark = ("" if ratios is None else f"{ratios[0]:11.2f} {ratios[1]:7.2f}"
                + ("  ok" if min(ratios) <= GOAL else "  over"))
        print(f"{name:56} {best:8.4f} {median:9.4f} {mark}")
        results.append({"row": name, "anchor": anchor or None, "best_s": best,
                         "median_s": median, "ratio_best": ratios and ratios[0],
                         "ratio_median": ratios and ratios[1]})
    (OUT / "many_files.json").write_text(json.dumps(
        {"python": sys.version.split()[0], "repeat": args.repeat, "small_kb": args.small_kb,
         "shard_mb": args.shard_mb, "goal_ratio": GOAL, "rows": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
