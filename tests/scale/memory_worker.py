"""One phase of the bigger-than-memory test, in a fresh process so its peak RSS is its own.

    python memory_worker.py PHASE PATH N_TENSORS TENSOR_MIB [EXTRA]

Prints one JSON line: the phase's peak resident memory above the process's
resident memory once imports are done (``VmHWM`` after resetting it through
``/proc/self/clear_refs``), plus what the phase checked.

Phases: ``save`` writes N tensors of TENSOR_MIB each with
:func:`tensorfile.sharded.save_file_iter`, producing one tensor at a time
(tensor i filled with i + 0.5); ``load`` reads every tensor back with
``backend="pread"`` one at a time and checks every value (EXTRA ``first``:
only element 0 is i + 0.5, the rest zeros); ``torchsave`` writes a torch
checkpoint EXTRA of such "first" tensors, each backed by its own sparse file
so making it costs no memory; ``convert`` converts checkpoint PATH to EXTRA
with :func:`tensorfile.pickles.convert.convert`; ``verify`` signs and verifies
PATH with :mod:`tensorfile.integrity` (key and signature in folder EXTRA).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

import tensorfile
import tensorfile.torch
from tensorfile.sharded import save_file_iter


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _value(i: int) -> np.float32:
    return np.float32(i + 0.5)


def _values_ok(arr: np.ndarray, i: int, first_only: bool) -> bool:
    """Every element as the producer made it, compared in slices (no tensor-sized temporary)."""
    step = 1 << 20
    if first_only:
        return bool(arr[0] == _value(i)) and all(
            not arr[max(j, 1) : j + step].any() for j in range(0, arr.size, step)
        )
    return all(bool((arr[j : j + step] == _value(i)).all()) for j in range(0, arr.size, step))


def main() -> None:
    phase, path, n_str, mib_str = sys.argv[1:5]
    extra = sys.argv[5] if len(sys.argv) > 5 else ""
    n, elems = int(n_str), int(mib_str) * (1 << 20) // 4
    names = [f"layer{i:03d}.weight" for i in range(n)]
    checked = 0
    if phase == "torchsave":
        import torch  # imported before the baseline: its own memory is not the phase's

    if phase == "convert":
        # torch is imported before the baseline, so its memory does not count as the phase's
        import torch

        from tensorfile.pickles.convert import convert
    if phase == "verify":
        from tensorfile.integrity import generate_key, sign, verify
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    baseline = _status("VmRSS")
    if phase == "save":
        entries = {name: ("F32", (elems,)) for name in names}
        save_file_iter(entries, lambda name: np.full(elems, _value(names.index(name)), np.float32), path)
    elif phase == "load":
        with tensorfile.safe_open(path, backend="pread") as f:
            for i, name in enumerate(names):
                arr = f.get_tensor(name)
                if arr.shape != (elems,) or not _values_ok(arr, i, extra == "first"):
                    raise SystemExit(f"{name}: wrong values")
                checked += arr.nbytes
                del arr
    elif phase == "torchsave":
        state = {}
        for i, name in enumerate(names):
            backing = Path(f"{extra}.{i}.zeros")
            with open(backing, "wb") as b:
                b.truncate(elems * 4)  # sparse: reads as zeros, occupies nothing
            state[name] = torch.from_file(str(backing), shared=False, size=elems, dtype=torch.float32)
            state[name][0] = float(_value(i))
        torch.save(state, extra, _use_new_zipfile_serialization=False)
        for i in range(n):
            Path(f"{extra}.{i}.zeros").unlink()
    elif phase == "convert":
        convert(path, extra)
    elif phase == "verify":
        keys = generate_key(Path(extra) / "key.pem", overwrite=True)
        sign(path, keys.private_key, Path(extra) / "model.sig")
        report = verify(path, keys.public_key, signature=Path(extra) / "model.sig")
        checked = sum(int(getattr(f, "size", 0) or 0) for f in getattr(report, "files", []))
    else:
        raise SystemExit(f"unknown phase {phase}")
    print(json.dumps({"phase": phase, "baseline": baseline, "peak": _status("VmHWM"),
                      "rss_file": _status("RssFile"), "checked": checked}))


if __name__ == "__main__":
    main()
