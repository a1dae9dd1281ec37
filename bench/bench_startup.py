"""Command start-up: each ``tensorfile`` command as a whole process on a tiny
input, beside the anchors' own command lines doing the same job.

    python bench/bench_startup.py [--repeat 15]

On a file of a few hundred bytes the work itself is nothing, so what is timed
is what a user waits for at every call in a script or pipeline: interpreter
start, imports, argument parsing, output. Rows:

* ``inspect`` / ``hash`` / ``sign`` / ``verify`` / ``convert`` / ``scan``
  through the ``tensorfile`` console script of this environment;
* the anchors where they have a command line: ``model_signing sign key`` and
  ``verify key`` (model-signing 1.1.1), ``picklescan -p``; where they have
  none, the shortest ``python -c`` that does the job with the reference
  library (safetensors' ``safe_open`` for inspect, ``torch.load`` +
  ``safetensors.torch.save_file`` for convert);
* ``keygen`` beside ``openssl genpkey`` (EC P-256), when openssl is installed;
* ``python -c pass``, the floor every Python command pays.

Modules are byte-compiled first (as pip does on install). Runs alternate
between rows round by round; the best and the median of ``--repeat`` rounds
are printed, with each tensorfile row's ratio to its anchor (below 1.0:
tensorfile starts faster) and the 0.25 s budget (issue 14). Results go to
bench/out/startup.json.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]
OUT = Path(__file__).parent / "out"
BUDGET = 0.25


def _make_inputs(d: Path) -> None:
    import numpy as np
    import torch

    from tensorfile import save_file
    from tensorfile.integrity import generate_key, sign

    model = d / "model"
    model.mkdir()
    save_file({"w": np.arange(16, dtype=np.float32)}, model / "model.safetensors")
    torch.save({"w": torch.arange(16.0)}, d / "tiny.pt")
    keys = generate_key(d / "key.pem")
    sign(model, keys.private_key, signature=d / "tf.sig")
    subprocess.run([str(BIN / "model_signing"), "sign", "key", str(model), "--private_key",
                    str(keys.private_key), "--signature", str(d / "ms.sig")],
                   check=True, capture_output=True)


def _rows(d: Path) -> dict[str, list[str]]:
    tf, py = str(BIN / "tensorfile"), sys.executable
    m, st = str(d / "model"), str(d / "model" / "model.safetensors")
    return {
        "python -c pass": [py, "-c", "pass"],
        "tensorfile inspect": [tf, "inspect", st],
        "safetensors safe_open (python -c)": [py, "-c", (
            "import sys; from safetensors import safe_open\n"
            f"f = safe_open({st!r}, 'np'); print(list(f.keys()), f.metadata())")],
        "tensorfile hash": [tf, "hash", m, "--json"],
        "tensorfile keygen": [tf, "keygen", str(d / "new.pem"), "--overwrite"],
        "openssl genpkey (EC P-256)": ["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt",
                                       "ec_paramgen_curve:P-256", "-out", str(d / "ossl.pem")],
        "tensorfile sign": [tf, "sign", m, "--key", str(d / "key.pem"),
                            "--signature", str(d / "tf-again.sig"), "--overwrite"],
        "model_signing sign key": [str(BIN / "model_signing"), "sign", "key", m, "--private_key",
                                   str(d / "key.pem"), "--signature", str(d / "ms-again.sig")],
        "tensorfile verify": [tf, "verify", m, "--key", str(d / "key.pem.pub"),
                              "--signature", str(d / "tf.sig")],
        "model_signing verify key": [str(BIN / "model_signing"), "verify", "key", m,
                                     "--public_key", str(d / "key.pem.pub"),
                                     "--signature", str(d / "ms.sig")],
        "tensorfile convert": [tf, "convert", str(d / "tiny.pt"), str(d / "out.safetensors"),
                               "--overwrite"],
        "torch.load + safetensors save_file (python -c)": [py, "-c", (
            "import torch; from safetensors.torch import save_file\n"
            f"save_file(torch.load({str(d / 'tiny.pt')!r}, weights_only=True), "
            f"{str(d / 'out-ref.safetensors')!r})")],
        "tensorfile scan": [tf, "scan", str(d / "tiny.pt")],
        "picklescan -p": [str(BIN / "picklescan"), "-p", str(d / "tiny.pt")],
    }


ANCHOR = {
    "tensorfile keygen": "openssl genpkey (EC P-256)",
    "tensorfile inspect": "safetensors safe_open (python -c)",
    "tensorfile sign": "model_signing sign key",
    "tensorfile verify": "model_signing verify key",
    "tensorfile convert": "torch.load + safetensors save_file (python -c)",
    "tensorfile scan": "picklescan -p",
}


def _time(cmd: list[str]) -> float:
    t = time.perf_counter()
    run = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    took = time.perf_counter() - t
    if run.returncode != 0:
        raise SystemExit(f"{cmd[:3]} failed ({run.returncode}): {run.stderr.decode()[-500:]}")
    return took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=15)
    args = ap.parse_args()
    compileall.compile_dir(REPO / "src", quiet=1)
    compileall.compile_dir(REPO / "cli", quiet=1)
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        _make_inputs(d)
        rows = _rows(d)
        if shutil.which("openssl") is None:
            del rows["openssl genpkey (EC P-256)"], ANCHOR["tensorfile keygen"]
        for cmd in rows.values():  # warm the page cache and byte-compile everything once
            _time(cmd)
        times: dict[str, list[float]] = {name: [] for name in rows}
        for _ in range(args.repeat):
            for name, cmd in rows.items():
                times[name].append(_time(cmd))
    result = {n: {"best": min(t), "median": statistics.median(t)} for n, t in times.items()}
    load = os.getloadavg()[0]
    print(f"load average {load:.1f}, {args.repeat} rounds")
    print(f"{'command':50} {'best':>8} {'median':>8}  ratio (best / median)")
    for name, r in result.items():
        ratio = ""
        if name in ANCHOR:
            a = result[ANCHOR[name]]
            ratio = f"{r['best'] / a['best']:.2f}x / {r['median'] / a['median']:.2f}x vs {ANCHOR[name]}"
        flag = "  OVER BUDGET" if name.startswith("tensorfile") and r["median"] > BUDGET else ""
        print(f"{name:50} {r['best']:8.3f} {r['median']:8.3f}  {ratio}{flag}")
    OUT.mkdir(exist_ok=True)
    (OUT / "startup.json").write_text(json.dumps({"repeat": args.repeat, "load_average": load,
                                                      "seconds": result}, indent=2))


if __name__ == "__main__":
    main()
