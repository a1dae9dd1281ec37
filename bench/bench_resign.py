"""Incremental re-signing: ``sign --update`` after a README edit vs a full sign.

Run: ``.venv/bin/python bench/bench_resign.py [--size-mib 2048] [--shards 4] [--repeat 3]``

A model of ``--size-mib`` MiB of random float32 in ``--shards`` safetensors
files, plus ``config.json`` and ``README.md``, written an hour "ago" (its
files' modification times set back, as for a model downloaded earlier). In
interleaved rounds, best of ``--repeat``, page cache warm:

1. full sign with tensorfile (``sign``: every byte hashed, SHA-256 per file and
   BLAKE3 per tensor) and with model-signing (``sign key``, SHA-256 per file),
   which is what re-signing costs without hints;
2. edit the README (its text grows by one line each round), then
   ``resign`` (``tensorfile sign --update``): bytes fed to the hash functions
   (counted by the progress callback), files re-hashed, wall time.

Target (issue 23): re-signing after the README edit hashes < 1 MiB. The
re-signed bundle is checked with model-signing's verifier every round.

Files go to ``bench/out/resign`` (ignored by git) and are reused between
runs. Results are printed and written to ``bench/out/resign/results.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tensorfile.integrity import generate_key, resign, sign, verify
from tensorfile.numpy import save_file

MIB = 1 << 20
HOUR_NS = 3600 * 10**9


def write_model(model: Path, size_mib: int, shards: int) -> None:
    model.mkdir(parents=True)
    for i in range(shards):
        rng = np.random.default_rng(i)
        n = size_mib // shards // 16  # 16 MiB tensors
        save_file({f"layers.{k}.weight": rng.integers(0, 2**32, 4 * MIB, dtype=np.uint32)
                   .view(np.float32) for k in range(n)},
                  model / f"model-{i + 1:05d}-of-{shards:05d}.safetensors")
    (model / "config.json").write_text('{"bench": true}\n')
    (model / "README.md").write_text("# Bench model\n")
    for p in model.iterdir():
        st = p.stat()
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns - HOUR_NS))


class Counter:
    def __init__(self) -> None:
        self.bytes = 0

    def __call__(self, done: int, total: int) -> None:
        self.bytes = max(self.bytes, done)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mib", type=int, default=2048)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    out = Path(__file__).resolve().parent / "out" / "resign"
    out.mkdir(parents=True, exist_ok=True)
    key, pub = out / "key.pem", out / "key.pem.pub"
    if not key.exists():
        generate_key(key, pub)
    model = out / f"model-{args.size_mib}m-{args.shards}"
    if not model.exists():
        write_model(model, args.size_mib, args.shards)
    sig = model / "model.sig"
    ms_sig = out / f"{model.name}-ms.sig"

    import model_signing as ms

    def ms_sign() -> None:
        ms.signing.Config().use_elliptic_key_signer(private_key=key).set_hashing_config(
            ms.hashing.Config().set_ignored_paths(paths=[sig])
        ).sign(model, ms_sig)

    full_bytes = Counter()
    runs: dict[str, Callable[[], object]] = {
        "tensorfile sign (full)": lambda: sign(model, key, progress=full_bytes, overwrite=True),
        "model-signing sign key (full)": ms_sign,
    }
    times: dict[str, list[float]] = {k: [] for k in [*runs, "tensorfile sign --update"]}
    updates = []
    for r in range(args.repeat):
        for name, fn in runs.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
        # The README edit, then the incremental re-sign of the full signature.
        with open(model / "README.md", "a") as f:
            f.write(f"Round {r}: one more line of description.\n")
        counted = Counter()
        t = time.perf_counter()
        report = resign(model, key, progress=counted)
        times["tensorfile sign --update"].append(time.perf_counter() - t)
        ms.verifying.Config().use_elliptic_key_verifier(public_key=pub).verify(model, sig)
        verify(model, pub)
        updates.append({"rehashed": list(report.rehashed), "bytes_hashed": counted.bytes,
                        "report_bytes_hashed": report.bytes_hashed})
    best = {k: min(v) for k, v in times.items()}
    total = sum(p.stat().st_size for p in model.iterdir() if p.name != "model.sig")
    results = {
        "model_bytes": total,
        "files": len([p for p in model.iterdir() if p.name != "model.sig"]),
        "full_sign_bytes_hashed": full_bytes.bytes,
        "update": updates[-1],
        "seconds_best": best,
        "update_vs_full_sign": best["tensorfile sign --update"] / best["tensorfile sign (full)"],
        "update_vs_model_signing": (best["tensorfile sign --update"]
                                    / best["model-signing sign key (full)"]),
        "load_average": os.getloadavg()[0],
    }
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    assert all(u["bytes_hashed"] < MIB for u in updates), updates


if __name__ == "__main__":
    main()
