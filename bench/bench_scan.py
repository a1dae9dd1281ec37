"""Pickle scanner benchmark: ``tensorfile scan`` against picklescan, whole processes.

    python bench/bench_scan.py [--small] [--repeat 3] [--keep DIR] [--wheel]

Makes, in a temporary folder: a 1 GiB torch zip checkpoint, a folder of 200
small checkpoints, and a 64 MiB and a 4 GiB checkpoint whose pickles differ
only in the numbers (one float32 tensor each, written by torch.save from a
sparse memory-mapped file so the bench itself stays small). ``--small``
shrinks them (64 MiB, 50 files, 64 MiB vs 512 MiB) for a quick check.

Every measurement is a fresh process, start-up included, run by a small
wrapper that reports the child's wall time and peak RSS
(``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss``). Runs alternate between
the tools and cases round by round and the median of ``--repeat`` rounds is
compared (the best is shown too). Ratios below 1.0 mean tensorfile is faster.
The growth ratio is also measured inside one process (``scan_file``, best of
20), which leaves out start-up noise. Results are printed and written to bench/out/scan.json.

Start-up is measured as users get it: the checkout's modules are byte-compiled
first (``compileall`` into their ``__pycache__``, as pip does when it installs a
wheel and as Python does on the first run), because with
``PYTHONDONTWRITEBYTECODE`` set every run would otherwise compile tensorfile
from source while picklescan, installed by pip, runs from bytecode.

The main figure, ``tensorfile scan``, is the console script of the environment
running the bench; in a development checkout that is an editable install,
whose import hook (``__editable___*_finder``, run by ``site`` at every start;
a few milliseconds, most of it importing pathlib, which the scanner needs
anyway) a user's wheel install does not have. ``--wheel`` adds ``tensorfile
scan (wheel)``: a regular install of this checkout (a wheel built from a copy
of it, installed with ``pip --no-deps`` into a throwaway virtual environment
in bench/out/wheel-venv that sees this environment's other packages through
a ``.pth`` file). Both rows are printed; the README quotes the first.
``tensorfile library`` is the library call from a bare ``python -c``, which
shows what the command line adds.
"""

from __future__ import annotations

import argparse
import compileall
import json
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

from _timing import best_of

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]
OUT = Path(__file__).parent / "out"

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


def compile_checkout() -> None:
    """Byte-compile the checkout's packages, so no measured run compiles them."""
    for package in (REPO / "src" / "tensorfile", REPO / "cli" / "tensorfile_cli"):
        if not compileall.compile_dir(package, quiet=1):
            raise SystemExit(f"could not byte-compile {package}")


def wheel_install() -> Path:
    """A regular (non-editable) install of this checkout; returns its ``tensorfile`` script.

    The wheel is built from a copy (the checkout gets no build/ or egg-info)
    and installed into a fresh venv before that venv is pointed at this
    environment's site-packages, so pip cannot see, let alone uninstall, the
    editable install.
    """
    venv, src, wheels = OUT / "wheel-venv", OUT / "wheel-src", OUT / "wheel-dist"
    for old in (venv, src, wheels):
        shutil.rmtree(old, ignore_errors=True)
    src.mkdir(parents=True)
    skip = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(REPO / name, src / name)
    for name in ("src", "cli"):
        shutil.copytree(REPO / name, src / name, ignore=skip)
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels),
                    str(src)], check=True)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    (wheel,) = wheels.glob("tensorfile-*.whl")
    subprocess.run([*pip, "--python", str(python), "install", "--no-deps", "--no-index",
                    str(wheel)], check=True)
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    # numpy, msgspec... from this environment; tensorfile itself from the wheel
    # (the venv's own site-packages comes first on sys.path, and .pth files in
    # a directory added this way are not run, so the editable hook is not).
    Path(site, "_bench_scan_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    check = subprocess.run([str(python), "-c", "import tensorfile_cli; print(tensorfile_cli.__file__)"],
                           capture_output=True, text=True, check=True).stdout
    assert check.startswith(str(venv)), f"wheel venv imports tensorfile_cli from {check}"
    shutil.rmtree(src)
    shutil.rmtree(wheels)
    return venv / "bin" / "tensorfile"


def tools(wheel: Path | None = None) -> dict[str, list[str]]:
    found = {}
    cli = BIN / "tensorfile"
    if cli.exists():
        found["tensorfile scan"] = [str(cli), "scan", "--quiet"]
    if wheel is not None:
        found["tensorfile scan (wheel)"] = [str(wheel), "scan", "--quiet"]
    found["tensorfile library"] = [sys.executable, "-c", (
        "import sys; from tensorfile.pickles import scan; "
        "sys.exit(scan(sys.argv[1:]).exit_code)")]
    scanner = shutil.which("picklescan", path=str(BIN)) or shutil.which("picklescan")
    if scanner:
        found["picklescan"] = [scanner, "-p"]
    return found


def run_cases(cmds: dict[str, list[str]], cases: dict[str, Path], repeat: int
              ) -> dict[str, dict[str, dict[str, float]]]:
    """Every tool on every case, interleaved round by round; median and best wall, max RSS."""
    walls: dict[tuple[str, str], list[float]] = {}
    rss: dict[tuple[str, str], float] = {}
    rcs: dict[tuple[str, str], float] = {}
    for _ in range(repeat):
        for case, target in cases.items():
            for name, cmd in cmds.items():
                got = measure([*cmd, str(target)])
                walls.setdefault((case, name), []).append(got["wall"])
                rss[case, name] = max(rss.get((case, name), 0.0), got["rss"])
                rcs[case, name] = got["rc"]
    out: dict[str, dict[str, dict[str, float]]] = {}
    for (case, name), values in walls.items():
        out.setdefault(case, {})[name] = {
            "wall": statistics.median(values), "best": min(values),
            "rss": rss[case, name], "rc": rcs[case, name]}
    return out


def in_process(path: Path, repeat: int) -> float:
    """Best wall time of scanning ``path`` inside this process (no start-up)."""
    from tensorfile.scan.pickle.containers import scan_file

    return best_of(repeat, lambda: scan_file(path))


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
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--keep", type=Path, help="build the files here and keep them")
    parser.add_argument("--wheel", action="store_true",
                        help="also time a regular (non-editable) install in bench/out/wheel-venv")
    args = parser.parse_args()
    compile_checkout()
    wheel = wheel_install() if args.wheel else None
    mib = 1 << 20
    big, ratio, n_small = ((64 * mib, (64 * mib, 512 * mib), 50) if args.small
                           else (1024 * mib, (64 * mib, 4096 * mib), 200))
    folder = args.keep or Path(tempfile.mkdtemp(prefix="bench_scan_"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        paths = make_checkpoints(folder, big, ratio, n_small)
        cmds = tools(wheel)
        big_case, many_case = f"{big // mib} MiB checkpoint", f"folder of {n_small} checkpoints"
        results = run_cases(cmds, {big_case: paths["big"], many_case: paths["many"]},
                            args.repeat)
        ours = {k: v for k, v in cmds.items() if k.startswith("tensorfile")}
        growth_runs = run_cases(ours, {"small": paths["ratio_small"],
                                       "large": paths["ratio_large"]}, args.repeat)
        inproc = {"small": in_process(paths["ratio_small"], 20),
                  "large": in_process(paths["ratio_large"], 20)}
    finally:
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)

    report: dict[str, object] = {"results": results, "growth_runs": growth_runs,
                                 "in_process": inproc}
    print(f"{'case':32}{'tool':24}{'median s':>9}{'best s':>8}{'peak MiB':>10}{'rc':>4}")
    for case, by_tool in results.items():
        for tool, r in by_tool.items():
            print(f"{case:32}{tool:24}{r['wall']:9.3f}{r['best']:8.3f}"
                  f"{r['rss'] / mib:10.1f}{r['rc']:4.0f}")
        if "picklescan" in by_tool:
            for tool in ours:
                ratio_v = by_tool[tool]["wall"] / by_tool["picklescan"]["wall"]
                print(f"{'':32}{tool + ' / picklescan (median wall)':44} {ratio_v:.2f}x")
                report[f"{case}: {tool} / picklescan"] = ratio_v
    sizes = f"{ratio[1] // mib} MiB / {ratio[0] // mib} MiB"
    for tool in ours:
        small, large = growth_runs["small"][tool]["wall"], growth_runs["large"][tool]["wall"]
        label = f"{tool}: {sizes} whole-process scan time"
        print(f"{label:64} {large / small:.2f}x  ({large:.3f}s vs {small:.3f}s)")
        report[label] = large / small
    label = f"in-process scan_file: {sizes}"
    growth = inproc["large"] / inproc["small"]
    print(f"{label:64} {growth:.2f}x  ({inproc['large'] * 1e3:.2f} ms vs "
          f"{inproc['small'] * 1e3:.2f} ms)")
    report[label] = growth
    OUT.mkdir(exist_ok=True)
    (OUT / "scan.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
