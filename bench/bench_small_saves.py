"""100 small ``save_file(durable=False)`` calls against the reference's
``save_file``, each side in its own fresh process, rounds interleaved
(issue 24 item 4: goal within 1.5x).

    python bench/bench_small_saves.py [--rounds 7] [--small-kb 64] [--before DIR]

Each round runs, one after another, the reference, tensorfile (this
checkout), and with ``--before DIR`` an older checkout (its ``src/``), each
writing 100 files of ``--small-kb`` kB (4 float32 tensors) into a fresh
folder under bench/out, five times; a side's figure for the round is the
median of the five, as wall seconds and as CPU seconds (user + system: less
disturbed by other processes on a shared machine than wall time). Printed:
the median (range) over rounds of each side's ratio to the reference in the
same round, with the load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

OUT = Path(__file__).parent / "out"
ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, os, shutil, statistics, sys, tempfile, time
import numpy as np
side, kb, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rng = np.random.default_rng(0)
n = kb * 1024 // 4 // 4
small = [{f"w{i}": rng.standard_normal(n).astype(np.float32) for i in range(4)}
         for _ in range(100)]
if side == "safetensors":
    import safetensors.numpy
    def save(t, p):
        safetensors.numpy.save_file(t, p)
else:
    import tensorfile
    def save(t, p):
        tensorfile.save_file(t, p, durable=False)
base = tempfile.mkdtemp(prefix="small-saves-", dir=out)
try:
    save(small[0], os.path.join(base, "warm.safetensors"))
    walls, cpus = [], []
    for _ in range(5):
        d = tempfile.mkdtemp(dir=base)
        w, c = time.perf_counter(), time.process_time()
        for i, t in enumerate(small):
            save(t, f"{d}/f{i}.safetensors")
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
        shutil.rmtree(d)
finally:
    shutil.rmtree(base, ignore_errors=True)
print(json.dumps({"wall": statistics.median(walls), "cpu": statistics.median(cpus)}))
"""


def _run(side: str, src: Path, kb: int) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(src / "src"), str(src / "cli")]))
    res = subprocess.run([sys.executable, "-c", CHILD, side, str(kb), str(OUT)], env=env,
                         capture_output=True, text=True, check=True)
    out: dict[str, float] = json.loads(res.stdout)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--small-kb", type=int, default=64)
    ap.add_argument("--before", type=Path, default=None, help="an older checkout to compare")
    args = ap.parse_args()
    OUT.mkdir(exist_ok=True)
    sides = {"safetensors": ROOT, "tensorfile": ROOT}
    if args.before is not None:
        sides["before"] = args.before
    load = os.getloadavg()
    got: dict[str, list[dict[str, float]]] = {s: [] for s in sides}
    for _ in range(args.rounds):
        for side, src in sides.items():
            got[side].append(_run("tensorfile" if side == "before" else side, src, args.small_kb))
    after = os.getloadavg()
    print(f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, after: "
          f"{after[0]:.2f} {after[1]:.2f} {after[2]:.2f}; {args.rounds} rounds of 100 x "
          f"{args.small_kb} kB, ratio to the reference in the same round: median (range)")
    rows = []
    for side in sides:
        if side == "safetensors":
            continue
        line = f"{side:<12}"
        row: dict[str, object] = {"side": side}
        for field in ("wall", "cpu"):
            q = [t[field] / r[field] for t, r in zip(got[side], got["safetensors"], strict=True)]
            ms = statistics.median(t[field] for t in got[side]) * 1e3
            ref_ms = statistics.median(r[field] for r in got["safetensors"]) * 1e3
            line += (f"  {field} {ms:6.1f} ms (reference {ref_ms:6.1f}) ratio "
                     f"{statistics.median(q):.2f} ({min(q):.2f}-{max(q):.2f})")
            row[field] = {"ms": ms, "reference_ms": ref_ms, "ratio_median": statistics.median(q),
                          "ratio_min": min(q), "ratio_max": max(q)}
        rows.append(row)
        print(line)
    (OUT / "small_saves.json").write_text(json.dumps(
        {"load_before": load, "load_after": after, "rounds": args.rounds, "rows": rows,
         "raw": got}, indent=1) + "\n")


if __name__ == "__main__":
    main()
