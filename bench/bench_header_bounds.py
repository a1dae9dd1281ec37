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
(Linux only: the peak is read from /proc). Target: tensorfile within 2x of the
reference on both.

Entry points (``--entries``, all by default): ``open`` (``safe_open`` and
``keys()``, above), ``metadata`` (``safe_open`` and ``metadata()``), and the
command line, ``inspect`` (the text table, to /dev/null) and
``inspect-json`` (``inspect --json``), each a whole ``tensorfile`` process
timed against a whole process of the reference's ``safe_open`` and
``keys()`` (the reference has no inspect command; its figures are then the
process's wall time and peak RSS, interpreter included, as for tensorfile's).

``--before DIR`` adds an older checkout as a third side of every round
(the "before" figures of a change, measured in the same run).

Rounds (``--repeat``) alternate reference and tensorfile; each row prints
the median ratio and its range over the rounds, with the load average
before and after (the machine is shared: ratios of the same round, not
absolute seconds, are what compares).
``--scale 0.1`` makes every header a tenth the size (the bounded test in
tests/format/test_limits.py runs that size). Files go to
``bench/out/header_bounds`` (ignored by git) and are reused.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path

OUT = Path(__file__).parent / "out" / "header_bounds"
LIMIT = 99_000_000

CHILD = r"""
import json, sys, time
which, path, entry = sys.argv[1], sys.argv[2], sys.argv[3]
if which == "tensorfile":
    # (safe_open is imported lazily: resolve it before the clock starts.)
    from tensorfile import safe_open
    from tensorfile.errors import TensorfileError as Refused
else:
    from safetensors import safe_open
    Refused = Exception
def run():
    with safe_open(path, "np") as f:
        if entry == "metadata":
            return len(f.metadata() or {})
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


ENTRIES = ("open", "metadata", "inspect", "inspect-json")
#: The reference's child for each entry point (it has no inspect command).
_REF_ENTRY = {"open": "open", "metadata": "metadata", "inspect": "process",
              "inspect-json": "process"}
#: A whole process's own peak RSS (VmHWM: this exec's, not the parent's),
#: written to stderr's last line at exit.
_PEAK = ("import atexit, sys\n"
         "def _peak():\n"
         "    for line in open('/proc/self/status'):\n"
         "        if line.startswith('VmHWM:'):\n"
         "            sys.stderr.write('\\npeak_kib ' + line.split()[1] + '\\n')\n"
         "atexit.register(_peak)\n")
_KEYS_SCRIPT = _PEAK + ("from safetensors import safe_open\n"
                        "with safe_open(sys.argv[1], 'np') as f:\n    print(len(f.keys()))\n")
_INSPECT_SCRIPT = _PEAK + ("sys.argv = ['tensorfile', 'inspect', *sys.argv[1:]]\n"
                           "from tensorfile_cli.main import main\nmain()\n")


#: ``--before DIR``: an older checkout of tensorfile, run as a third side.
BEFORE: Path | None = None


def open_once(which: str, path: Path, entry: str = "open") -> dict[str, object]:
    """Open ``path`` in a fresh interpreter; its figures."""
    if which == "safetensors":
        entry = _REF_ENTRY[entry]
    if entry in ("process", "inspect", "inspect-json"):
        return _process(which, path, entry)
    res = subprocess.run([sys.executable, "-c", CHILD, _side(which), str(path), entry],
                         capture_output=True, text=True, timeout=900, check=False, env=_env(which))
    if res.returncode != 0:
        return {"wall_s": float("nan"), "rss_mib": float("nan"), "tensors": None,
                "error": f"exit {res.returncode}: {res.stderr.strip()[-200:]}"}
    out: dict[str, object] = json.loads(res.stdout)
    return out


def _process(which: str, path: Path, entry: str) -> dict[str, object]:
    """A whole process: ``tensorfile inspect`` or the reference's open and
    keys(); wall seconds and the process's peak RSS (interpreter included)."""
    if which == "safetensors":
        argv = [sys.executable, "-c", _KEYS_SCRIPT, str(path)]
    else:
        argv = [sys.executable, "-c", _INSPECT_SCRIPT, str(path)]
        argv += ["--json"] if entry == "inspect-json" else []
    t = time.perf_counter()
    with open(os.devnull, "wb") as sink:
        res = subprocess.run(argv, stdout=sink, stderr=subprocess.PIPE, timeout=900, check=False,
                             env=_env(which))
    wall = time.perf_counter() - t
    err = res.stderr.decode(errors="replace").strip()
    *rest, last = err.splitlines() or [""]
    peak = float(last.split()[1]) / 1024 if last.startswith("peak_kib ") else float("nan")
    return {"wall_s": wall, "rss_mib": peak, "tensors": None,
            "error": f"exit {res.returncode}: {' '.join(rest)[-100:]}" if res.returncode else None}


def _side(which: str) -> str:
    return "tensorfile" if which == "before" else which


def _env(which: str) -> dict[str, str]:
    """The child's environment: ``before`` runs the ``--before`` checkout."""
    env = dict(os.environ)
    if which == "before" and BEFORE is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(BEFORE / "src"), str(BEFORE / "cli")])
    return env


def _sides() -> tuple[str, ...]:
    return ("safetensors", "tensorfile") + (("before",) if BEFORE is not None else ())


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def measure(scale: float, repeat: int, entries: list[str], cases: list[str] | None
            ) -> dict[str, dict[str, list[dict[str, object]]]]:
    """Per ``case/entry`` row, each side's figures of every round."""
    files = make_files(scale)
    results: dict[str, dict[str, list[dict[str, object]]]] = {}
    for _ in range(repeat):
        for case, path in files.items():
            if cases and case not in cases:
                continue
            for entry in entries:
                row = results.setdefault(f"{case} {entry}", {w: [] for w in _sides()})
                for which in _sides():
                    row[which].append(open_once(which, path, entry))
    return results


def _ratios(row: dict[str, list[dict[str, object]]], field: str,
            side: str = "tensorfile") -> list[float]:
    return [float(t[field]) / max(float(r[field]), 1e-9)  # type: ignore[arg-type]
            for r, t in zip(row["safetensors"], row[side], strict=True)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--entries", default=",".join(ENTRIES),
                    help=f"comma-separated, of {', '.join(ENTRIES)}")
    ap.add_argument("--cases", default="", help="comma-separated case names (default: all)")
    ap.add_argument("--before", type=Path, default=None,
                    help="a checkout of an older tensorfile (its src/ and cli/), measured "
                         "in the same rounds as a third side, 'before'")
    args = ap.parse_args()
    global BEFORE
    BEFORE = args.before
    entries = [e for e in args.entries.split(",") if e]
    before = _load()
    results = measure(args.scale, args.repeat, entries,
                      [c for c in args.cases.split(",") if c] or None)
    print(f"load average before: {before}, after: {_load()}; {args.repeat} rounds, "
          "medians (range) of per-round ratios tensorfile / reference")
    print(f"{'case entry':<30} {'ref s':>6} {'tf s':>6} {'time ratio':>18}"
          f" {'ref MiB':>7} {'tf MiB':>7} {'memory ratio':>18}  outcome")
    for name, row in results.items():
        for side in _sides()[1:]:
            ref, tf = row["safetensors"], row[side]
            line = f"{name if side == 'tensorfile' else '  (before)':<30}"
            for field in ("wall_s", "rss_mib"):
                r = statistics.median(float(x[field]) for x in ref)  # type: ignore[arg-type]
                t = statistics.median(float(x[field]) for x in tf)  # type: ignore[arg-type]
                q = _ratios(row, field, side)
                spread = f"{statistics.median(q):.2f} ({min(q):.2f}-{max(q):.2f})"
                line += (f" {r:6.2f} {t:6.2f} {spread:>18}" if field == "wall_s"
                         else f" {r:7.0f} {t:7.0f} {spread:>18}")
            last_tf, last_ref = tf[-1], ref[-1]
            outcome = last_tf["error"] or (f"{last_tf['tensors']} tensors"
                                           if last_tf["tensors"] is not None else "ok")
            print(f"{line}  {str(outcome)[:60]} (reference: "
                  f"{str(last_ref['error'] or last_ref['tensors'] or 'ok')[:60]})")
    (OUT / f"results-{args.scale}.json").write_text(json.dumps(
        {"load_before": before, "load_after": _load(), "rows": results}, indent=1))


if __name__ == "__main__":
    main()
