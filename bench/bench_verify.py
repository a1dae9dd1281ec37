"""Verification speed: tensorfile vs model-signing, vs hashlib, and verify-on-load.

Run: ``.venv/bin/python bench/bench_verify.py [--size-mib 1024] [--shards 4] [--repeat 3]``

Measured in one process, page cache warm (every file is read once first);
each figure is the best of ``--repeat`` runs, taken in interleaved rounds:

1. Full verify of a model of ``--size-mib``, as one safetensors file and split
   in ``--shards`` files, with ``tensorfile.integrity.verify`` and with
   model-signing's ``verifying.Config().use_elliptic_key_verifier(...).verify``
   on the same files and the same signature (target: tensorfile >= 1.8x
   faster). tensorfile checks a file signed with its extension tensor by
   tensor on every core, with the BLAKE3 digests it signs by default and with
   SHA-256 ones (``tensor_algorithm="sha256"``). model-signing hashes each
   file with SHA-256 on one thread (files in parallel). For a like-for-like
   figure model-signing is also timed in its own BLAKE3 mode
   (``use_file_serialization(hashing_algorithm="blake3")``, multithreaded),
   on a bundle it signed itself.
2. tensorfile's verify rate against cores x one core's hashlib SHA-256 rate on
   in-memory bytes (target >= 0.9x), for both tensor digest algorithms.
3. Verify-on-load: ``safe_open(path, verify=key)`` and reading one 4 MiB
   tensor from a single ``--size-mib`` file, against a full verify of that
   file (target <= 2%).
   Also the hashing limit: BLAKE3 over the single file's bytes on every core
   (``blake3`` package, ``max_threads=AUTO``, from a mapping) against its full
   verify (target: verify <= 1.15x).
4. Whole-model verified load: ``load_file(path, fw, verify=key)`` of one
   ``--size-mib`` file in ``--load-tensor-mib`` tensors (default 16 MiB: 64
   tensors for 1 GiB), numpy and torch, against ``verify(path, key)`` plus a
   plain ``load_file(path, fw)`` of the same file (target: ratio <= 1.2x, issue 28; issue 16 asked for 1.3x).
   Wall and CPU seconds are both reported: on a shared machine the CPU ratio
   is the steadier one. ``--load-only`` runs just this part.
5. ``--limit-only``: just the hashing limit of section 3, as ``--repeat``
   interleaved pairs (verify, then BLAKE3 on every core, in alternating
   order), reporting the ratio of the best times and the median of the
   pairs' ratios: a noisy shared machine moves single pairs by 20%.

Files go to ``bench/out/verify`` (ignored by git) and are reused between runs.
Results are printed and written to ``bench/out/verify/results.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from _timing import best_of

import tensorfile
from tensorfile._format.header import parse
from tensorfile.integrity import generate_key, sign, verify
from tensorfile.integrity.onload import load_verifier
from tensorfile.numpy import save_file

MIB = 1 << 20
TENSOR_MIB = 4


def cpu_seconds() -> float:
    """CPU time of this process, all threads (user + system)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    """Wall and CPU seconds of one call."""
    w, c = time.perf_counter(), cpu_seconds()
    fn()
    return time.perf_counter() - w, cpu_seconds() - c


def write_shard(path: Path, mib: int, seed: int, tensor_mib: int = TENSOR_MIB) -> None:
    """``mib`` MiB of random float32 in ``tensor_mib`` MiB tensors (the last one takes the remainder)."""
    rng = np.random.default_rng(seed)
    n = max(1, mib // tensor_mib)
    tensors = {}
    for i in range(n):
        size = tensor_mib * MIB if i < n - 1 else (mib - tensor_mib * (n - 1)) * MIB
        tensors[f"layers.{i}.weight"] = rng.integers(0, 2**32, size // 4, dtype=np.uint32).view(
            np.float32
        )
    save_file(tensors, path)


def sha256_signature(model: Path) -> Path:
    """Where the bench keeps the signature with SHA-256 tensor digests (beside the model)."""
    return model.parent / f"{model.parent.name}-{model.name}-sha256.sig"


def blake3_ms_signature(model: Path) -> Path:
    """Where the bench keeps model-signing's own BLAKE3 signature (beside the model)."""
    return model.parent / f"{model.parent.name}-{model.name}-ms-blake3.sig"


def prepare(out: Path, size_mib: int, shards: int) -> tuple[Path, Path, Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    key, pub = out / "key.pem", out / "key.pem.pub"
    if not key.exists():
        generate_key(key, pub)
    model = out / f"model-{size_mib}m-{shards}"
    if not model.exists():
        model.mkdir()
        for i in range(shards):
            write_shard(model / f"model-{i + 1:05d}-of-{shards:05d}.safetensors",
                        size_mib // shards, seed=i)
        (model / "config.json").write_text('{"bench": true}\n')
    single = out / f"single-{size_mib}m" / "model.safetensors"
    if not single.exists():
        single.parent.mkdir(exist_ok=True)
        write_shard(single, size_mib, seed=99)
    import model_signing as ms

    for m in (model, single):
        sign(m, key, overwrite=True)
        sign(m, key, sha256_signature(m), tensor_algorithm="sha256", overwrite=True)
        ms.signing.Config().use_elliptic_key_signer(private_key=key).set_hashing_config(
            ms.hashing.Config().use_file_serialization(hashing_algorithm="blake3")
        ).sign(m, blake3_ms_signature(m))
    return model, single, key, pub


def blake3_all_cores(path: Path) -> str:
    """The hashing limit: BLAKE3 over the file's bytes (mapped, no copy) on
    every core (``max_threads=AUTO``), the anchor for a single-file verify."""
    import mmap

    import blake3

    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        return blake3.blake3(max_threads=blake3.blake3.AUTO).update(mm).hexdigest()


def warm(paths: list[Path]) -> None:
    for p in paths:
        with open(p, "rb") as f:
            while f.read(64 * MIB):
                pass


def signed_file(out: Path, folder: str, size_mib: int, seed: int,
                tensor_mib: int = TENSOR_MIB) -> tuple[Path, Path]:
    """``out/folder/model.safetensors`` (written and signed once, then reused)
    and the public key that verifies it."""
    key, pub = out / "key.pem", out / "key.pem.pub"
    if not key.exists():
        generate_key(key, pub)
    path = out / folder / "model.safetensors"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_shard(path, size_mib, seed=seed, tensor_mib=tensor_mib)
        sign(path, key, overwrite=True)
    return path, pub


def verified_load(out: Path, size_mib: int, tensor_mib: int, repeat: int) -> dict[str, float]:
    """Section 4: whole-model verified loads against verify + plain load, numpy and torch."""
    path, pub = signed_file(out, f"load-{size_mib}m-{tensor_mib}", size_mib, 7, tensor_mib)
    warm([path])
    rounds: dict[str, Callable[[], object]] = {"verify": lambda: verify(path, pub)}
    frameworks = ["np"]
    try:
        import torch  # noqa: F401

        frameworks.append("pt")
    except ImportError:
        pass
    for fw in frameworks:
        rounds[f"plain_{fw}"] = lambda fw=fw: tensorfile.load_file(path, fw)
        rounds[f"verified_{fw}"] = lambda fw=fw: tensorfile.load_file(path, fw, verify=pub)
        # The same private copy a verified load makes, without hashing: what
        # a load into memory that no other process can change costs by itself.
        rounds[f"pread_{fw}"] = lambda fw=fw: tensorfile.load_file(path, fw, backend="pread")
    best = {name: (float("inf"), float("inf")) for name in rounds}
    for _ in range(repeat):  # interleaved, best of each (wall and CPU separately)
        for name, fn in rounds.items():
            w, c = timed(fn)
            best[name] = (min(best[name][0], w), min(best[name][1], c))
    res: dict[str, float] = {"load_file_bytes": path.stat().st_size,
                             "load_tensor_mib": tensor_mib, "load_repeat": repeat}
    res["load_verify_s"], res["load_verify_cpu_s"] = best["verify"]
    for fw in frameworks:
        (tp, cp), (tv, cv) = best[f"plain_{fw}"], best[f"verified_{fw}"]
        res[f"load_plain_{fw}_s"], res[f"load_plain_{fw}_cpu_s"] = tp, cp
        res[f"load_verified_{fw}_s"], res[f"load_verified_{fw}_cpu_s"] = tv, cv
        res[f"load_verified_{fw}_ratio"] = tv / (best["verify"][0] + tp)
        res[f"load_verified_{fw}_cpu_ratio"] = cv / (best["verify"][1] + cp)
        res[f"load_pread_{fw}_s"], res[f"load_pread_{fw}_cpu_s"] = best[f"pread_{fw}"]
        res[f"load_verified_{fw}_ratio_vs_pread"] = tv / (best["verify"][0] + best[f"pread_{fw}"][0])
    print(f"whole-model verified load, one {size_mib} MiB file in {tensor_mib} MiB tensors "
          f"(best of {repeat}, wall / CPU seconds; load average {os.getloadavg()[0]:.1f}):")
    print(f"  tensorfile verify:{best['verify'][0]:7.3f} s {best['verify'][1]:7.3f} s CPU")
    for fw in frameworks:
        print(f"  {fw}: plain load {res[f'load_plain_{fw}_s']:.3f} s, verified load "
              f"{res[f'load_verified_{fw}_s']:.3f} s ({res[f'load_verified_{fw}_cpu_s']:.3f} s CPU) "
              f"= {res[f'load_verified_{fw}_ratio']:.2f}x of verify + plain load "
              f"({res[f'load_verified_{fw}_cpu_ratio']:.2f}x in CPU time; target <= 1.2x)")
        print(f"      plain load into private memory (backend='pread'): "
              f"{res[f'load_pread_{fw}_s']:.3f} s ({res[f'load_pread_{fw}_cpu_s']:.3f} s CPU); "
              f"verified load = {res[f'load_verified_{fw}_ratio_vs_pread']:.2f}x of verify + that")
    return res


def hashing_limit(out: Path, size_mib: int, repeat: int) -> dict[str, float]:
    """Section 5: ``verify`` of one file against BLAKE3 of its bytes on every core."""
    single, pub = signed_file(out, f"single-{size_mib}m", size_mib, 99)
    warm([single])
    pairs: list[tuple[float, float]] = []
    for i in range(repeat):
        first_verify = i % 2 == 0
        a = timed(lambda: verify(single, pub))[0] if first_verify else 0.0
        b = timed(lambda: blake3_all_cores(single))[0]
        if not first_verify:
            a = timed(lambda: verify(single, pub))[0]
        pairs.append((a, b))
    ratios = sorted(a / b for a, b in pairs)
    res = {"limit_verify_best_s": min(a for a, _ in pairs),
           "limit_blake3_best_s": min(b for _, b in pairs),
           "limit_pairs": repeat, "limit_median_pair_ratio": ratios[len(ratios) // 2]}
    res["limit_best_ratio"] = res["limit_verify_best_s"] / res["limit_blake3_best_s"]
    print(f"one {size_mib} MiB file, {repeat} interleaved pairs (load average "
          f"{os.getloadavg()[0]:.1f}): verify best {res['limit_verify_best_s']:.3f} s, BLAKE3 on "
          f"every core best {res['limit_blake3_best_s']:.3f} s = {res['limit_best_ratio']:.2f}x; "
          f"median of the pairs' ratios {res['limit_median_pair_ratio']:.2f}x "
          f"(range {ratios[0]:.2f}-{ratios[-1]:.2f}; target <= 1.15x)")
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--load-tensor-mib", type=int, default=16)
    ap.add_argument("--load-only", action="store_true", help="Run only section 4.")
    ap.add_argument("--limit-only", action="store_true", help="Run only section 5.")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "out" / "verify")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.limit_only:
        res = hashing_limit(args.out, args.size_mib, args.repeat)
        (args.out / "results-limit.json").write_text(json.dumps(res, indent=2) + "\n")
        return
    if args.load_only:
        res = verified_load(args.out, args.size_mib, args.load_tensor_mib, args.repeat)
        (args.out / "results-load.json").write_text(json.dumps(res, indent=2) + "\n")
        return

    model, single, key, pub = prepare(args.out, args.size_mib, args.shards)
    files = sorted(p for p in model.iterdir() if p.is_file())
    total = sum(p.stat().st_size for p in files)
    warm([*files, single])
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1

    import model_signing as ms

    def ms_verify(path: Path, signature: Path | None = None) -> None:
        default = path.parent / "model.sig" if path.is_file() else path / "model.sig"
        ms.verifying.Config().use_elliptic_key_verifier(public_key=pub).verify(
            path, signature or default
        )

    # Interleaved rounds, best of each: a burst of load from elsewhere hits all of them.
    data = os.urandom(256 * MIB)
    inf = (float("inf"), float("inf"))
    rounds: list[tuple[str, Callable[[], object]]] = [("hashlib", lambda: hashlib.sha256(data).digest())]
    for tag, m in (("", model), ("_single", single)):
        rounds += [
            ("tf" + tag, lambda m=m: verify(m, pub)),
            ("tf_sha" + tag, lambda m=m: verify(m, pub, signature=sha256_signature(m))),
            ("ms" + tag, lambda m=m: ms_verify(m)),
            ("ms_b3" + tag, lambda m=m: ms_verify(m, blake3_ms_signature(m))),
        ]
    rounds.append(("blake3_single", lambda: blake3_all_cores(single)))
    best = {name: inf for name, _ in rounds}
    for _ in range(args.repeat):
        for name, fn in rounds:
            best[name] = min(best[name], timed(fn))
    one_core = len(data) / best["hashlib"][0]
    (t_tf, cpu_tf), (t_ms, cpu_ms) = best["tf"], best["ms"]
    t_tf_sha, t_ms_b3 = best["tf_sha"][0], best["ms_b3"][0]
    # CPU seconds per byte, relative to hashlib's: how much work each does, which
    # (unlike wall time) does not depend on what else the machine is running.
    cpu_per_byte_hashlib = best["hashlib"][1] / len(data)

    t_full_single, t_ms_single = best["tf_single"][0], best["ms_single"][0]
    t_sha_single, t_ms_b3_single = best["tf_sha_single"][0], best["ms_b3_single"][0]
    # Signing hashes every byte twice (SHA-256 file digest + tensor digests), on two threads.
    t_sign_single = best_of(1, lambda: sign(single, key, overwrite=True))
    name = f"layers.{max(1, args.size_mib // TENSOR_MIB) // 2}.weight"  # one in the middle

    def on_load() -> None:
        with tensorfile.safe_open(single, "np", verify=pub) as f:
            f.get_tensor(name)

    # The same checks safe_open makes, called directly to count the bytes hashed.
    verifier = load_verifier(pub, single)
    with open(single, "rb") as fh:
        raw = fh.read(8)
        raw += fh.read(int.from_bytes(raw, "little"))
        hdr = parse(raw, single.stat().st_size)
        info = hdr.tensors[name]
        fh.seek(hdr.data_offset + info.start)
        verifier.check_header(raw)
        verifier.check_tensor(name, memoryview(fh.read(info.nbytes)))
    hashed = verifier.bytes_hashed
    t_load = best_of(max(args.repeat, 5), on_load)

    gib = 1 << 30
    results = {
        "cores": cores,
        "model_bytes": total,
        "shards": args.shards,
        "hashlib_one_core_gib_s": one_core / gib,
        "tensorfile_verify_s": t_tf,
        "tensorfile_verify_gib_s": total / t_tf / gib,
        "model_signing_verify_s": t_ms,
        "model_signing_verify_gib_s": total / t_ms / gib,
        "speedup_vs_model_signing": t_ms / t_tf,
        "tensorfile_sha256_tensors_verify_s": t_tf_sha,
        "speedup_sha256_tensors_vs_model_signing": t_ms / t_tf_sha,
        "model_signing_blake3_verify_s": t_ms_b3,
        "speedup_vs_model_signing_blake3": t_ms_b3 / t_tf,
        "tensorfile_cpu_s": cpu_tf,
        "model_signing_cpu_s": cpu_ms,
        "tensorfile_cpu_efficiency_vs_hashlib": cpu_per_byte_hashlib * total / cpu_tf,
        "load_average_at_end": os.getloadavg(),
        "fraction_of_cores_x_hashlib": (total / t_tf) / (cores * one_core),
        "fraction_of_cores_x_hashlib_sha256_tensors": (total / t_tf_sha) / (cores * one_core),
        "single_file_bytes": single.stat().st_size,
        "single_file_full_verify_s": t_full_single,
        "single_file_model_signing_verify_s": t_ms_single,
        "single_file_speedup_vs_model_signing": t_ms_single / t_full_single,
        "single_file_sha256_tensors_verify_s": t_sha_single,
        "single_file_speedup_sha256_tensors_vs_model_signing": t_ms_single / t_sha_single,
        "single_file_model_signing_blake3_verify_s": t_ms_b3_single,
        "single_file_speedup_vs_model_signing_blake3": t_ms_b3_single / t_full_single,
        "single_file_sign_s": t_sign_single,
        "single_file_blake3_all_cores_s": best["blake3_single"][0],
        "single_file_verify_vs_blake3_all_cores": t_full_single / best["blake3_single"][0],
        "verify_on_load_one_tensor_s": t_load,
        "verify_on_load_bytes_hashed": hashed,
        "verify_on_load_fraction_of_full": t_load / t_full_single,
    }
    results.update(verified_load(args.out, args.size_mib, args.load_tensor_mib, args.repeat))
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"model: {total / MIB:.0f} MiB in {args.shards} shards, {cores} cores, warm cache")
    print(f"hashlib sha256, one core:     {one_core / gib:6.2f} GiB/s")

    def row(label: str, t: float, size: int) -> None:
        rate = size / t / gib
        print(f"  {label:<44}{t:6.3f} s {rate:6.2f} GiB/s = {rate * gib / (cores * one_core):5.2f}x"
              f" of {cores} x hashlib")

    for title, size, tf, tf_sha, msv, ms_b3 in (
        (f"{args.shards} shards", total, t_tf, t_tf_sha, t_ms, t_ms_b3),
        (f"one {single.stat().st_size / MIB:.0f} MiB file", single.stat().st_size,
         t_full_single, t_sha_single, t_ms_single, t_ms_b3_single),
    ):
        print(f"full verify, {title}:")
        row("tensorfile (BLAKE3 tensor digests, default)", tf, size)
        row("tensorfile (SHA-256 tensor digests)", tf_sha, size)
        row("model_signing API (SHA-256, its default)", msv, size)
        row("model_signing API (its BLAKE3 mode)", ms_b3, size)
        print(f"  tensorfile vs model_signing: {msv / tf:.2f}x faster (target >= 1.8x); with "
              f"SHA-256 tensor digests {msv / tf_sha:.2f}x; vs its BLAKE3 mode {ms_b3 / tf:.2f}x")
    print("  (target for the fraction of cores x hashlib: >= 0.9x)")
    print(f"one file: verify {t_full_single:.3f} s, BLAKE3 of its bytes on every core "
          f"{best['blake3_single'][0]:.3f} s = {results['single_file_verify_vs_blake3_all_cores']:.2f}x "
          "(target <= 1.15x)")
    print(f"CPU time, {args.shards} shards: tensorfile {cpu_tf:.3f} s, model_signing {cpu_ms:.3f} s; "
          f"tensorfile's CPU per byte is {results['tensorfile_cpu_efficiency_vs_hashlib']:.2f}x "
          f"hashlib SHA-256's; load average {os.getloadavg()[0]:.1f}")
    print(f"sign one {single.stat().st_size / MIB:.0f} MiB file (SHA-256 file digest + BLAKE3 "
          f"tensor digests): {t_sign_single:.3f} s")
    print(f"verify-on-load, one {TENSOR_MIB} MiB tensor: {t_load * 1000:6.1f} ms "
          f"({hashed} bytes hashed) = {t_load / t_full_single:.2%} of full verify (target <= 2%)")


if __name__ == "__main__":
    main()
