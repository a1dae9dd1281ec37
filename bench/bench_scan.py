"""Pickle scanner benchmark: ``tensorfile scan`` against picklescan, whole processes.

    python bench/bench_scan.py [--small] [--repeat 3] [--keep DIR]

Makes, in a temporary folder: a 1 GiB torch zip checkpoint, a folder of 200
small checkpoints, and a 64 MiB and a 4 GiB checkpoint whose pickles differ
only in the numbers (one float32 tensor each, written by torch.save from a
sparse memory-mapped file so the bench itself stays small). ``--small``
shrinks them (64 MiB, 50 files, 64 MiB vs 512 MiB) for a quick check.

Every measurement is a fresh process, start-up included, run by a small
wrapper that reports the child's wall time and peak RSS
(``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss``). Runs alternate between
the tools and the best of ``--repeat`` is kept. Ratios below 1.0 mean
tensorfile is faster. Results are printed and written to bench/out/scan.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BIN = Path(sys.executable).parent

_WRAPPER = """
import json, resource, subprocess, sys, time
t = time.perf_counter()
rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
wall = time.perf_counter() - t
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
print(json.dumps({"wall": wall, "rss": rss, "rc": rc}))
"""


def measure(cmd: list[str]) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", _WRAPPER, *cmd], capture_output=True,
                         text=True, check=True)
    result: dict[str, float] = json.loads(out.stdout)
    return result


def tools() -> dict[str, list[str]]:
    found = {}
    cli = BIN / "tensorfile"
    if cli.exists():
        found["tensorfile scan"] = [str(cli), "scan", "--quiet"]
    found["tensorfile library"] = [sys.executable, "-c", (
        "import sys; from tensorfile.pickles import scan; "
        "sys.exit(scan(sys.argv[1:]).exit_code)")]
    # What the scanner costs when the package's __init__ (safetensors reader,
    # numpy) is not executed first: shows what a lazy tensorfile/__init__ saves.
    src = Path(__file__).resolve().parents[1] / "src" / "tensorfile"
    found["tensorfile lazy-init"] = [sys.executable, "-c", (
        "import sys, types; m = types.ModuleType('tensorfile'); "
        f"m.__path__ = [{str(src)!r}]; sys.modules['tensorfile'] = m; "
        "from tensorfile.pickles import scan; sys.exit(scan(sys.argv[1:]).exit_code)")]
    scanner = shutil.which("picklescan", path=str(BIN)) or shutil.which("picklescan")
    if scanner:
        found["picklescan"] = [scanner, "-p"]
    return found


def run_pair(cmds: dict[str, list[str]], target: Path, repeat: int) -> dict[str, dict[str, float]]:
    best: dict[str, dict[str, float]] = {}
    for _ in range(repeat):
        for name, cmd in cmds.items():
            got = measure([*cmd, str(target)])
            prev = best.get(name)
            if prev is None or got["wall"] < prev["wall"]:
                best[name] = {**got, "rss": max(got["rss"], prev["rss"] if prev else 0)}
            else:
                prev["rss"] = max(prev["rss"], got["rss"])
    return best


def make_checkpoints(folder: Path, big: int, ratio_sizes: tuple[int, int], n_small: int
                     ) -> dict[str, Path]:
    import torch

    def from_sparse(nbytes: int, name: str) -> Path:
        raw = folder / f"{name}.raw"
        with open(raw, "wb") as f:
            f.truncate(nbytes)
        tensor = torch.from_file(str(raw), shared=False, size=nbytes // 4, dtype=torch.float32)
        out = folder / f"{name}.pt"
        torch.save({"model.weight": tensor}, out)
        del tensor
        raw.unlink()
        return out

    paths = {"big": folder / "big.pt"}
    # A real-looking 1 GiB state dict: 64 float32 tensors.
    per = big // 64 // 4
    torch.save({f"layers.{i}.weight": torch.zeros(per) for i in range(64)}, paths["big"])
    small_dir = folder / "many"
    small_dir.mkdir()
    model = torch.nn.Sequential(*[torch.nn.Linear(64, 64) for _ in range(4)])
    for i in range(n_small):
        torch.save(model.state_dict(), small_dir / f"ckpt_{i:03d}.pt")
    paths["many"] = small_dir
    paths["ratio_small"] = from_sparse(ratio_sizes[0], "ratio_small")
    paths["ratio_large"] = from_sparse(ratio_sizes[1], "ratio_large")
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", action="store_true", help="small files, quick check")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="build the files here and keep them")
    args = parser.parse_args()
    mib = 1 << 20
    big, ratio, n_small = ((64 * mib, (64 * mib, 512 * mib), 50) if args.small
                           else (1024 * mib, (64 * mib, 4096 * mib), 200))
    folder = args.keep or Path(tempfile.mkdtemp(prefix="bench_scan_"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        paths = make_checkpoints(folder, big, ratio, n_small)
        cmds = tools()
        results = {
            f"{big // mib} MiB checkpoint": run_pair(cmds, paths["big"], args.repeat),
            f"folder of {n_small} checkpoints": run_pair(cmds, paths["many"], args.repeat),
        }
        ours = {k: v for k, v in cmds.items() if k.startswith("tensorfile")}
        small_run = run_pair(ours, paths["ratio_small"], args.repeat + 2)
        large_run = run_pair(ours, paths["ratio_large"], args.repeat + 2)
    finally:
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)

    report: dict[str, object] = {"results": results}
    print(f"{'case':32}{'tool':22}{'wall s':>9}{'peak MiB':>10}{'rc':>4}")
    for case, by_tool in results.items():
        for tool, r in by_tool.items():
            print(f"{case:32}{tool:22}{r['wall']:9.3f}{r['rss'] / mib:10.1f}{r['rc']:4.0f}")
        if "picklescan" in by_tool:
            for tool in ours:
                ratio_v = by_tool[tool]["wall"] / by_tool["picklescan"]["wall"]
                print(f"{'':32}{tool + ' / picklescan':40} {ratio_v:.2f}x wall")
                report[f"{case}: {tool} / picklescan"] = ratio_v
    for tool in ours:
        growth = large_run[tool]["wall"] / small_run[tool]["wall"]
        label = f"{tool}: {ratio[1] // mib} MiB / {ratio[0] // mib} MiB scan time"
        print(f"{label:54} {growth:.2f}x  ({large_run[tool]['wall']:.3f}s vs "
              f"{small_run[tool]['wall']:.3f}s)")
        report[label] = growth
    report["ratio_runs"] = {"small": small_run, "large": large_run}
    out = Path(__file__).parent / "out"
    out.mkdir(exist_ok=True)
    (out / "scan.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
