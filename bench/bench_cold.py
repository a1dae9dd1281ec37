"""Cold-cache whole-model loads: tensorfile against the fast loaders, same run, ratios.

    python bench/bench_cold.py [--size-mib 2048] [--repeat 1] [--dir DIR] [--only a,b]

One safetensors file of ``--size-mib`` (64 tensors, F32 and BF16) is written
once (plus tensorizer's own file of the same tensors); then, for each method,
a fresh process imports its loader, evicts the file from the page cache
(``posix_fadvise(POSIX_FADV_DONTNEED)``), checks with ``mincore`` that no page
of it is resident, and times loading every tensor into this process's memory
as torch CPU tensors and touching one byte per 4 KiB page of each (what a
zero-copy mmap "load" defers to first use is counted, as for the others).

Methods: tensorfile's default (``mmap``), its ``pread`` backend (which,
as a verified load, reads cold tensors straight from the disk with
``O_DIRECT``: ``tensorfile._io.direct``), a verified load (``load_file(..., verify=TrustPolicy(key, signature))``: the signature
checked, then every tensor hashed as its bytes are copied into private
memory; the file is signed once, beside it, with tensorfile's per-tensor
digests), the
``parallel`` strategy (concurrent ``pread`` of the data region in
``--block-mib`` blocks into one buffer, ``--readers`` threads:
``bench/_cold_pread.py``), ``safetensors.torch.load_file`` (mmap, and its
``backend="pread"``),
fastsafetensors on the CPU (``nogds=True``), runai-model-streamer (local
file), tensorizer (its own file format, local file, CPU); and the raw limits:
``dd bs=16M`` and ``cat`` of the same file, cold (the disk), and a warm
memcpy of the same number of bytes (the memory), and the first touch of as
much new memory in a fresh process (what any load into private memory pays
before its first byte is copied; a mapped load never does: on a virtual
machine whose host hands memory back lazily this alone can cost more than
the disk). An anchor that is not
installed, or cannot run here, is reported with the reason. fastsafetensors
(``disable_cache``) and runai-model-streamer read around the page cache, so
their "warm" runs (``--warm``) read the disk again: the ``cached`` column
shows it.

Prints a table (seconds, GB/s, ratio to ``dd``) and, with ``--json``, the raw
figures, plus the load average before and after (a shared machine's
figures are only comparable within one run).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import mmap
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


# ------------------------------------------------------------------ page cache


def evict(path: Path) -> None:
    """Drop ``path``'s clean pages from the page cache."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def resident_fraction(path: Path) -> float:
    """Fraction of ``path``'s pages in the page cache (``mincore`` of a mapping)."""
    size = path.stat().st_size
    if size == 0:
        return 0.0
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if addr in (None, ctypes.c_void_p(-1).value):
            raise OSError(ctypes.get_errno(), "mmap failed")
        try:
            pages = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE
            vec = (ctypes.c_ubyte * pages)()
            if libc.mincore(ctypes.c_void_p(addr), size, vec) != 0:
                raise OSError(ctypes.get_errno(), "mincore failed")
            return sum(b & 1 for b in vec) / pages
        finally:
            libc.munmap(ctypes.c_void_p(addr), size)
    finally:
        os.close(fd)


# ------------------------------------------------------------------ the loaders (child side)


def touch(tensors: dict[str, Any]) -> int:
    """Read one byte per 4 KiB page of every tensor (returns their sum)."""
    import torch

    total = 0
    for t in tensors.values():
        u = t.reshape(-1).view(torch.uint8)
        total += int(u[::4096].sum())
    return total


def load_method(method: str, path: Path, tz_path: Path, readers: int, block: int) -> dict[str, Any]:
    if method == "tensorfile-mmap":
        import tensorfile

        return tensorfile.load_file(path, "pt")
    if method == "tensorfile-pread":
        from tensorfile import safe_open

        with safe_open(path, "pt", backend="pread") as f:
            return f.tensors(threads=readers)
    if method == "tensorfile-verified":
        import tensorfile
        from tensorfile.integrity import TrustPolicy

        key, sig = signature_files(path)
        return tensorfile.load_file(path, "pt", verify=TrustPolicy(key=key.with_suffix(".pub"),
                                                                  signature=sig))
    if method.startswith("tensorfile-parallel"):
        from _cold_pread import load_whole

        return load_whole(path, "pt", readers=readers, block=block)
    if method == "safetensors":
        import safetensors.torch

        return safetensors.torch.load_file(str(path))
    if method == "safetensors-pread":
        import safetensors.torch

        return safetensors.torch.load_file(str(path), backend="pread")
    if method == "fastsafetensors":
        from fastsafetensors import fastsafe_open

        with fastsafe_open(str(path), "pt", device="cpu", nogds=True) as f:
            return {k: f.get_tensor(k) for k in f.keys()}
    if method == "runai":
        # Unlimited CPU buffer: every tensor stays valid after streaming (with a
        # limit the streamer reuses its buffer and each tensor must be cloned).
        os.environ.setdefault("RUNAI_STREAMER_MEMORY_LIMIT", "-1")
        from runai_model_streamer import SafetensorsStreamer

        out = {}
        with SafetensorsStreamer() as s:
            s.stream_file(str(path))
            for name, t in s.get_tensors():
                out[name] = t
        return out
    if method == "tensorizer":
        from tensorizer import TensorDeserializer

        with TensorDeserializer(str(tz_path), device="cpu") as d:
            return dict(d)
    raise SystemExit(f"unknown method {method}")


def child(args: argparse.Namespace) -> None:
    method, path, tz_path = args.child, Path(args.path), Path(args.tz_path)
    # Import the loader before the clock starts (a server has it loaded).
    warm_import = {"safetensors": "safetensors.torch", "safetensors-pread": "safetensors.torch", "fastsafetensors": "fastsafetensors",
                   "runai": "runai_model_streamer", "tensorizer": "tensorizer"}
    import importlib

    import torch  # noqa: F401

    import tensorfile  # noqa: F401

    if method in warm_import:
        importlib.import_module(warm_import[method])
    target = tz_path if method == "tensorizer" else path
    if not args.warm:
        evict(target)
    before = resident_fraction(target)
    t0 = time.perf_counter()
    tensors = load_method(method, path, tz_path, args.readers, args.block_mib << 20)
    touch(tensors)
    seconds = time.perf_counter() - t0
    nbytes = sum(t.numel() * t.element_size() for t in tensors.values())
    print(json.dumps({"seconds": seconds, "resident_before": before, "bytes": nbytes,
                      "tensors": len(tensors)}))


# ------------------------------------------------------------------ parent side


def signature_files(path: Path) -> tuple[Path, Path]:
    """The bench's signing key (its public half beside it, ``.pub``) and the
    signature of ``path``."""
    return path.parent / "bench-key.pem", path.with_suffix(".sig")


def sign_once(path: Path) -> None:
    from tensorfile.integrity import generate_key, sign

    key, sig = signature_files(path)
    if not key.exists():
        generate_key(key, key.with_suffix(".pub"))
    if not sig.exists():
        sign(path, key, sig)


def make_files(folder: Path, size_mib: int) -> tuple[Path, Path]:
    import numpy as np
    import torch

    import tensorfile.torch

    path, tz = folder / f"cold-{size_mib}.safetensors", folder / f"cold-{size_mib}.tensors"
    if path.exists() and tz.exists():
        return path, tz
    n = 64
    per = (size_mib << 20) // n
    rng = np.random.default_rng(0)
    tensors = {}
    for i in range(n):
        raw = torch.from_numpy(rng.integers(0, 255, per, dtype=np.uint8))
        tensors[f"layer{i:02d}.weight"] = raw.view(torch.float32 if i % 2 else torch.bfloat16).reshape(64, -1)
    tensorfile.torch.save_file(tensors, path)
    try:
        from tensorizer import TensorSerializer

        s = TensorSerializer(str(tz))
        s.write_state_dict(tensors)
        s.close()
    except Exception as e:
        print(f"tensorizer: cannot write its file: {type(e).__name__}: {e}", file=sys.stderr)
    return path, tz


def run_child(method: str, path: Path, tz: Path, readers: int, block_mib: int,
              warm: bool = False) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", method, "--path", str(path),
           "--tz-path", str(tz), "--readers", str(readers), "--block-mib", str(block_mib)]
    if warm:
        cmd.append("--warm")
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
    if run.returncode != 0:
        last = (run.stderr.strip().splitlines() or ["?"])[-1]
        return {"error": last[:200]}
    return dict(json.loads(run.stdout.strip().splitlines()[-1]))


def raw_read(cmd: list[str], path: Path) -> dict[str, Any]:
    evict(path)
    before = resident_fraction(path)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return {"seconds": time.perf_counter() - t0, "resident_before": before,
            "bytes": path.stat().st_size}


def memcpy_warm(nbytes: int, repeat: int = 3) -> dict[str, Any]:
    import numpy as np

    src = np.ones(nbytes, dtype=np.uint8)
    dst = np.empty_like(src)
    dst[:] = 0  # fault it in: the memcpy figure is of resident memory
    best = min(_timed(lambda: np.copyto(dst, src)) for _ in range(repeat))
    return {"seconds": best, "bytes": nbytes}


def fresh_memory(nbytes: int) -> dict[str, Any]:
    """Seconds a fresh process takes to touch ``nbytes`` of new memory, one
    write per 4 KiB page (numpy's allocation: transparent huge pages where
    the kernel gives them), best of three processes."""
    code = ("import time, numpy as np\n"
            f"t = time.perf_counter(); a = np.empty({nbytes}, np.uint8); a[::4096] = 1\n"
            "print(time.perf_counter() - t)")
    runs = [float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                 check=True).stdout) for _ in range(3)]
    return {"seconds": min(runs), "bytes": nbytes}


def _timed(fn: Any) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


METHODS = ["dd", "cat", "tensorfile-mmap", "tensorfile-pread", "tensorfile-verified", "tensorfile-parallel",
           "safetensors", "safetensors-pread", "fastsafetensors", "runai", "tensorizer"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-mib", type=int, default=2048)
    ap.add_argument("--repeat", type=int, default=1, help="cold runs per method (best kept)")
    ap.add_argument("--dir", default=os.path.join(tempfile.gettempdir(), "tensorfile-bench-cold"))
    ap.add_argument("--only", default="", help="comma-separated methods (default: all)")
    ap.add_argument("--readers", default="4", help="reader threads; a list measures each")
    ap.add_argument("--block-mib", default="16", help="block size; a list measures each")
    ap.add_argument("--warm", action="store_true", help="also time each loader warm")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--path", help=argparse.SUPPRESS)
    ap.add_argument("--tz-path", help=argparse.SUPPRESS)
    args, _ = ap.parse_known_args()
    if args.child:
        args.readers, args.block_mib = int(args.readers), int(args.block_mib)
        child(args)
        return
    folder = Path(args.dir)
    folder.mkdir(parents=True, exist_ok=True)
    path, tz = make_files(folder, args.size_mib)
    sign_once(path)
    methods = args.only.split(",") if args.only else METHODS
    readers = [int(x) for x in args.readers.split(",")]
    blocks = [int(x) for x in args.block_mib.split(",")]
    load0 = os.getloadavg()
    rows: list[tuple[str, dict[str, Any]]] = []
    for method in methods:
        variants = [(r, b) for r in readers for b in blocks] if method == "tensorfile-parallel" else (
            [(r, blocks[0]) for r in readers] if method == "tensorfile-pread" else [(readers[0], blocks[0])])
        for r, b in variants:
            label = method
            if method == "tensorfile-parallel":
                label = f"{method} r={r} b={b}MiB"
            elif method == "tensorfile-pread":
                label = f"{method} r={r}"
            best: dict[str, Any] | None = None
            for _ in range(args.repeat):
                if method == "dd":
                    got = raw_read(["dd", f"if={path}", "of=/dev/null", "bs=16M"], path)
                elif method == "cat":
                    got = raw_read(["sh", "-c", f"cat '{path}' > /dev/null"], path)
                else:
                    got = run_child(method, path, tz, r, b)
                if "error" in got:
                    best = got
                    break
                if best is None or got["seconds"] < best["seconds"]:
                    best = got
            assert best is not None
            rows.append((label, best))
            if args.warm and method not in ("dd", "cat"):
                rows.append((label + " (warm)", run_child(method, path, tz, r, b, warm=True)))
            print(f"  {label}: {best}", file=sys.stderr, flush=True)
    rows.append(("memcpy (warm)", memcpy_warm(path.stat().st_size)))
    rows.append(("first touch of new memory", fresh_memory(path.stat().st_size)))
    load1 = os.getloadavg()
    dd = next((g["seconds"] for n, g in rows if n == "dd" and "seconds" in g), None)
    print(f"cold whole-model load, {args.size_mib} MiB, 64 tensors; load average "
          f"{load0[0]:.1f} before, {load1[0]:.1f} after; {os.cpu_count()} CPUs")
    print(f"{'method':38} {'seconds':>8} {'GB/s':>6} {'vs dd':>6} {'cached':>7}")
    for name, got in rows:
        if "error" in got:
            print(f"{name:38} cannot run: {got['error']}")
            continue
        gbs = got["bytes"] / got["seconds"] / 1e9
        ratio = f"{dd / got['seconds']:.2f}" if dd else "-"
        cached = f"{got['resident_before']:.1%}" if "resident_before" in got else "-"
        print(f"{name:38} {got['seconds']:8.3f} {gbs:6.2f} {ratio:>6} {cached:>7}")
    secs = {n: g["seconds"] for n, g in rows if "seconds" in g}
    if "tensorfile-verified" in secs and "tensorfile-mmap" in secs:
        print(f"verified load / plain load (mmap), cold: "
              f"{secs['tensorfile-verified'] / secs['tensorfile-mmap']:.2f}x (target <= 1.1x)")
    if args.json:
        print(json.dumps({"size_mib": args.size_mib, "loadavg": [load0, load1],
                          "rows": dict(rows)}, indent=1))


if __name__ == "__main__":
    main()
