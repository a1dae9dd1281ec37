"""Header parsing cost against the reference, on legal (and one illegal) huge headers.

Run: ``.venv/bin/python bench/bench_header_bounds.py [--scale 1.0] [--repeat 1]``

Issue 22 item 7: the cost of opening a file must follow what its header
means, not how many bytes an attacker spent. Each case is a file whose header
is close to the 100,000,000-byte limit:

``ignored-lists`` / ``ignored-objects``
    one tensor whose entry carries an unknown field (which both readers
    ignore) holding millions of empty lists ``[]`` or empty objects ``{}``;
``tiny-tensors``
    1.43 million one-byte tensors (a legal file);
``overlapping``
    1.5 million tensors all claiming bytes ``[0, 4)`` (refused by both).

Each open runs in a fresh subprocess (``safe_open`` and ``keys()``), for
tensorfile and for the reference ``safetensors`` package, interleaved; the
figures are wall seconds and peak RSS above the interpreter's after imports
(best of ``--repeat``; Linux only: the peak is read from /proc). Target: tensorfile within 2x of the reference on both.
``--scale 0.1`` makes every header a tenth the size (the bounded test in
tests/format/test_limits.py runs that size). Files go to
``bench/out/header_bounds`` (ignored by git) and are reused.
"""

from __future__ import annotations

import argparse
import json
import struct
import subprocess
import sys
from pathlib import Path

OUT = Path(__file__).parent / "out" / "header_bounds"
LIMIT = 99_000_000

CHILD = r"""
import json, sys, time
which, path = sys.argv[1], sys.argv[2]
if which == "tensorfile":
    # (safe_open is imported lazily: resolve it before the clock starts.)
    from tensorfile import safe_open
    from tensorfile.errors import TensorfileError as Refused
else:
    from safetensors import safe_open
    Refused = Exception
def run():
    with safe_open(path, "np") as f:
        return len(f.keys())
import numpy
def status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
# getrusage's peak starts at the parent's (which wrote the files): reset the
# peak mark (VmHWM) to the current RSS instead.
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
base = status("VmRSS")
t = time.perf_counter()
try:
    n, err = run(), None
except Refused as e:
    n, err = None, type(e).__name__ + ": " + str(e)[:100]
wall = time.perf_counter() - t
peak = status("VmHWM")
print(json.dumps({"wall_s": wall, "rss_mib": (peak - base) / 1024, "tensors": n, "error": err}))
"""


def _write(path: Path, header: bytes, data_size: int) -> None:
    pad = (-len(header)) % 8
    header += b" " * pad
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header)))
        f.write(header)
        f.truncate(8 + len(header) + data_size)


def make_files(scale: float) -> dict[str, Path]:
    """The four files (made once per scale)."""
    OUT.mkdir(parents=True, exist_ok=True)
    budget = int(LIMIT * scale)
    files: dict[str, Path] = {}
    for kind, item in (("lists", b"[]"), ("objects", b"{}")):
        path = files[f"ignored-{kind}"] = OUT / f"ignored-{kind}-{scale}.safetensors"
        if not path.exists():
            head = b'{"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":['
            n = (budget - len(head) - 4) // (len(item) + 1)
            _write(path, head + b",".join([item] * n) + b"]}}", 4)
    n_tiny = int(1_430_000 * scale)
    path = files["tiny-tensors"] = OUT / f"tiny-{scale}.safetensors"
    if not path.exists():
        parts = [f'"t{i}":{{"dtype":"U8","shape":[1],"data_offsets":[{i},{i + 1}]}}'
                 for i in range(n_tiny)]
        _write(path, ("{" + ",".join(parts) + "}").encode(), n_tiny)
    n_over = int(1_500_000 * scale)
    path = files["overlapping"] = OUT / f"overlapping-{scale}.safetensors"
    if not path.exists():
        parts = [f'"t{i}":{{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'
                 for i in range(n_over)]
        _write(path, ("{" + ",".join(parts) + "}").encode(), 4)
    return files


def open_once(which: str, path: Path) -> dict[str, object]:
    """Open ``path`` in a fresh interpreter; its figures."""
    res = subprocess.run([sys.executable, "-c", CHILD, which, str(path)],
                         capture_output=True, text=True, timeout=600, check=False)
    if res.returncode != 0:
        return {"wall_s": float("nan"), "rss_mib": float("nan"), "tensors": None,
                "error": f"exit {res.returncode}: {res.stderr.strip()[-200:]}"}
    out: dict[str, object] = json.loads(res.stdout)
    return out


def measure(scale: float, repeat: int) -> dict[str, dict[str, dict[str, object]]]:
    files = make_files(scale)
    results: dict[str, dict[str, dict[str, object]]] = {}
    for case, path in files.items():
        best: dict[str, dict[str, object]] = {}
        for _ in range(repeat):
            for which in ("safetensors", "tensorfile"):
                got = open_once(which, path)
                old = best.get(which)
                if old is None or float(got["wall_s"]) < float(old["wall_s"]):  # type: ignore[arg-type]
                    if old is not None:
                        got["rss_mib"] = min(float(got["rss_mib"]), float(old["rss_mib"]))  # type: ignore[arg-type]
                    best[which] = got
        results[case] = best
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    results = measure(args.scale, args.repeat)
    print(f"{'case':<16} {'reference s':>12} {'tensorfile s':>13} {'ratio':>6}"
          f" {'ref MiB':>8} {'tf MiB':>8} {'ratio':>6}  outcome")
    for case, r in results.items():
        ref, tf = r["safetensors"], r["tensorfile"]
        tw, rw = float(tf["wall_s"]), float(ref["wall_s"])  # type: ignore[arg-type]
        tm, rm = float(tf["rss_mib"]), float(ref["rss_mib"])  # type: ignore[arg-type]
        outcome = tf["error"] or f"{tf['tensors']} tensors"
        print(f"{case:<16} {rw:>12.2f} {tw:>13.2f} {tw / rw:>6.2f} {rm:>8.0f} {tm:>8.0f}"
              f" {tm / max(rm, 1):>6.2f}  {outcome} (reference: {ref['error'] or ref['tensors']})")
    (OUT / f"results-{args.scale}.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
