"""Benchmark: ``tensorfile convert`` against ``torch.load(weights_only=True)`` + ``save_file``.

A ~1 GiB zip checkpoint shaped like a small transformer (fp32; embedding and
untied head of 125 MiB each, 16 layers of 4 attention and 2 MLP matrices, norms)
is written once with ``torch.save``. Each method then runs in a fresh
interpreter (the *worker*), started by a fresh *runner* process that reports
the worker's peak resident memory through
``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss``, so no measurement sees
another's peak. Times are the median of ``--repeat`` runs, alternating the
methods, with the source file in the page cache for both:

* ``work``: the conversion call itself (after imports), measured in the worker;
* ``process``: the worker's whole life, interpreter and imports included;
* ``cpu``: the worker's user + system CPU time (less sensitive to a busy machine).

Targets (issue 4): time ratio <= 0.5 and peak-memory ratio <= 0.25. Note that
tensorfile's output is durable (fsync before the atomic rename) while
``safetensors.torch.save_file`` does not fsync.

    python bench/bench_convert.py [--size-gib 1] [--repeat 3] [--lightning] [--workdir DIR]
                                  [--out FILE]

Measured 2026-11-22 on the 2-core, 24 GiB development VM while other jobs ran
(load average 2.5-5), four runs of ``--repeat 5``, medians per run: peak
memory 50 MiB vs 1239 MiB (ratio 0.04); whole process 1.7-6.1 s vs 4.3-15.0 s
(ratios 0.31, 0.40, 0.41, 0.49); CPU ratios 0.39-0.48; the call alone
0.62-0.98x of the reference's load + save. Contiguous tensors are copied file
to file in the kernel (``os.copy_file_range``: ~0.5 s per GiB on this VM), the
output is fsync'd (~0.3-0.6 s), and the source's SHA-256 for the report runs
on a second thread meanwhile (~1 s of CPU per GiB), the only pass that reads
the source into the process. Before the kernel copy (same session,
alternating old and new code): the call took 2.56 s vs 1.76 s and 3.69 s vs
3.14 s (medians of 8 and 6 pairs), peak memory 175 MiB.

2026-12-04 (object stream read as a graph, issue 17), same VM at load average
5-7, ``--repeat 3``: process ratio 0.41, peak memory 50 vs 1297 MiB (0.039);
``--lightning`` (``--key state_dict`` beside an ``argparse.Namespace``; the
reference then needs ``weights_only=False``): process ratio 0.35, memory 0.039.
Six alternating runs of the converter before and after the change: CPU 1.52 s
vs 1.57 s, peak 49.8 vs 50.4 MiB (wall times were dominated by the load).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORKERS = {
    "tensorfile": """
import sys, time
from tensorfile.pickles.convert import convert
t0 = time.perf_counter()
convert(sys.argv[1], sys.argv[2], key=sys.argv[3] or None)
print(time.perf_counter() - t0)
""",
    "torch+safetensors": """
import sys, time
import torch
from safetensors.torch import save_file
t0 = time.perf_counter()
key = sys.argv[3]
# A Lightning checkpoint holds argparse.Namespace: weights_only=True refuses it.
state = torch.load(sys.argv[1], weights_only=not key)
save_file(state[key] if key else state, sys.argv[2])
print(time.perf_counter() - t0)
""",
}

RUNNER = """
import json, resource, subprocess, sys, time
t0 = time.perf_counter()
proc = subprocess.run([sys.executable, "-c", sys.argv[1], *sys.argv[2:]],
                      capture_output=True, text=True)
wall = time.perf_counter() - t0
if proc.returncode:
    sys.exit(proc.stderr)
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"work": float(proc.stdout.split()[-1]), "process": wall,
                  "cpu": usage.ru_utime + usage.ru_stime, "peak_mib": usage.ru_maxrss / 1024}))
"""


def make_checkpoint(path: Path, size_gib: float, lightning: bool = False) -> int:
    """Write the transformer-shaped checkpoint; returns its tensor bytes.

    ``lightning``: inside a PyTorch Lightning layout (``state_dict`` beside
    ``argparse.Namespace`` hyper-parameters), converted with ``--key state_dict``.
    """
    import torch

    hidden, vocab, ffn = 1024, 32000, 4096
    per_layer = (4 * hidden * hidden + 2 * hidden * ffn + 2 * hidden) * 4
    layers = max(1, round((size_gib * (1 << 30) - 2 * vocab * hidden * 4) / per_layer))
    g = torch.Generator().manual_seed(0)
    sd = {"embed.weight": torch.randn(vocab, hidden, generator=g)}
    for i in range(layers):
        p = f"layers.{i}."
        for name in ("q", "k", "v", "o"):
            sd[p + f"attn.{name}.weight"] = torch.randn(hidden, hidden, generator=g)
        sd[p + "mlp.up.weight"] = torch.randn(ffn, hidden, generator=g)
        sd[p + "mlp.down.weight"] = torch.randn(hidden, ffn, generator=g)
        sd[p + "norm1.weight"] = torch.ones(hidden)
        sd[p + "norm2.weight"] = torch.ones(hidden)
    sd["lm_head.weight"] = torch.randn(vocab, hidden, generator=g)
    if lightning:
        torch.save({"epoch": 1, "global_step": 100, "state_dict": sd,
                    "hyper_parameters": argparse.Namespace(lr=1e-3, hidden=hidden)}, path)
    else:
        torch.save(sd, path)
    return sum(t.numel() * t.element_size() for t in sd.values())


def run(method: str, src: Path, dst: Path, key: str) -> dict[str, float]:
    proc = subprocess.run([sys.executable, "-c", RUNNER, WORKERS[method], str(src), str(dst), key],
                          capture_output=True, text=True, check=True)
    result: dict[str, float] = json.loads(proc.stdout)
    dst.unlink()
    return result


def check_outputs(src: Path, workdir: Path, key: str) -> None:
    """Both methods' outputs hold the same tensors (a few sampled, bit for bit)."""
    import numpy as np
    from safetensors.numpy import load_file

    a, b = workdir / "check_tf.safetensors", workdir / "check_ref.safetensors"
    subprocess.run([sys.executable, "-c", WORKERS["tensorfile"], str(src), str(a), key],
                   check=True, capture_output=True)
    subprocess.run([sys.executable, "-c", WORKERS["torch+safetensors"], str(src), str(b), key],
                   check=True, capture_output=True)
    ta, tb = load_file(a), load_file(b)
    assert set(ta) == set(tb)
    for name in sorted(ta)[:: max(1, len(ta) // 8)]:
        assert np.array_equal(ta[name].view(np.uint8), tb[name].view(np.uint8)), name
    a.unlink()
    b.unlink()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-gib", type=float, default=1.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=None, help="also write the results as JSON here")
    ap.add_argument("--lightning", action="store_true",
                    help="a Lightning-shaped checkpoint, converted with --key state_dict")
    args = ap.parse_args()
    key = "state_dict" if args.lightning else ""
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        work = Path(tmp)
        src = work / "checkpoint.pt"
        t0 = time.perf_counter()
        nbytes = make_checkpoint(src, args.size_gib, args.lightning)
        print(f"checkpoint: {src.stat().st_size / (1 << 30):.3f} GiB file, "
              f"{nbytes / (1 << 30):.3f} GiB of tensors (written in {time.perf_counter() - t0:.1f} s)")
        check_outputs(src, work, key)
        print("outputs agree (sampled tensors bit for bit)")
        results: dict[str, list[dict[str, float]]] = {m: [] for m in WORKERS}
        for _ in range(args.repeat):
            for method in WORKERS:
                results[method].append(run(method, src, work / "out.safetensors", key))
        summary = {}
        for method, runs in results.items():
            summary[method] = {k: statistics.median(r[k] for r in runs)
                               for k in ("work", "process", "cpu", "peak_mib")}
            s = summary[method]
            print(f"{method:>18}: work {s['work']:.2f} s, process {s['process']:.2f} s, "
                  f"cpu {s['cpu']:.2f} s, peak RSS {s['peak_mib']:.0f} MiB  (work runs: "
                  + ", ".join(f"{r['work']:.2f}" for r in runs) + ")")
        tf, ref = summary["tensorfile"], summary["torch+safetensors"]
        ratios = {
            "time_ratio_work": tf["work"] / ref["work"],
            "time_ratio_process": tf["process"] / ref["process"],
            "cpu_ratio_process": tf["cpu"] / ref["cpu"],
            "peak_memory_ratio": tf["peak_mib"] / ref["peak_mib"],
        }
        for k, v in ratios.items():
            print(f"{k}: {v:.3f}")
        doc = {"size_gib": args.size_gib, "repeat": args.repeat, "lightning": args.lightning,
               "runs": results,
               "summary": summary, "ratios": ratios}
        print(json.dumps(doc))
        if args.out is not None:
            args.out.write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
