"""The long kill runs of issue 22: N random kills (SIGKILL, SIGTERM, SIGINT in
turn, at three observed moments) of each writer, with every check of
tests/format/test_crash_safety.py after every kill.

    python tools/kill_runs.py [--kills 200] [-k sharded]

The suite runs the same tests with 30 (21) kills each; this runs them with
``--kills`` each (``TENSORFILE_KILL_TRIALS``) and prints, per writer, the
line its test prints (kills, versions or outputs seen, temporary files left
by kills mid-write, all removed by the next write's sweep). A torn file or
model, a stray file, a Ctrl-C that leaves a temporary file, or a leftover the
sweep keeps fails the test: the exit status is pytest's (0: no failure).
Writers: ``save_file``, ``convert`` (one file), ``sign``, ``save_sharded``
(layouts of 6, 3 and 1 files in turn) and ``convert`` of a folder, plus the
CLI's SIGTERM handler and the negative control (a non-atomic writer that
must be caught tearing its file).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=200)
    ap.add_argument("-k", dest="select", default=None, help="pytest -k expression")
    args = ap.parse_args()
    env = {**os.environ, "TENSORFILE_KILL_TRIALS": str(args.kills),
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "cli"),
                                         os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider",
           str(ROOT / "tests" / "format" / "test_crash_safety.py")]
    if args.select:
        cmd += ["-k", args.select]
    start = time.monotonic()
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    lines = [ln for ln in run.stdout.splitlines() if re.search(r"\d+ kills", ln)]
    for ln in lines:
        print(ln.lstrip(". "))
    summary = [ln for ln in run.stdout.splitlines() if re.search(r"\d+ (passed|failed)", ln)]
    print(summary[-1] if summary else run.stdout[-2000:])
    if run.returncode:
        print(run.stdout[-6000:], run.stderr[-2000:], sep="\n")
    print(f"{args.kills} kills per writer, {time.monotonic() - start:.0f} s")
    return run.returncode


if __name__ == "__main__":
    sys.exit(main())
