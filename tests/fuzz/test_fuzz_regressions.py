"""Replay every fuzz seed and every checked-in crash reproducer through its harness.

Each harness in fuzz/ checks a parser's contract (only documented errors
escape, accepted files round-trip, tampered files never verify, the scanner
and converter agree). Running its seeds here makes that contract part of the
ordinary test suite, with no atheris needed; a reproducer in
``fuzz/regressions/<name>/`` stays fixed because this test replays it.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

FUZZ = Path(__file__).resolve().parents[2] / "fuzz"
HARNESSES = sorted(p.stem.removeprefix("fuzz_") for p in FUZZ.glob("fuzz_*.py"))


def _load(name: str) -> Callable[[bytes], None]:
    if str(FUZZ) not in sys.path:
        sys.path.insert(0, str(FUZZ))  # harnesses import their shared fuzzlib
    spec = importlib.util.spec_from_file_location(f"tensorfile_fuzz_{name}", FUZZ / f"fuzz_{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    fn: Callable[[bytes], None] = module.TestOneInput
    return fn


def _inputs(name: str) -> list[Path]:
    _load(name)  # puts fuzz/ on sys.path
    import fuzzlib

    return list(fuzzlib.iter_inputs(fuzzlib.seed_dirs(name)))


@pytest.mark.parametrize("name", HARNESSES)
def test_replay_seeds_and_regressions(name: str) -> None:
    inputs = _inputs(name)
    assert any(f.is_relative_to(FUZZ / "corpus" / name) for f in inputs), f"no seeds for {name}"
    test_one_input = _load(name)
    failures = []
    for f in inputs:
        try:
            test_one_input(f.read_bytes())
        except Exception as e:  # collect all, so one run shows every broken input
            failures.append(f"{f}: {type(e).__name__}: {e}")
    assert not failures, "\n".join(failures)


def _open_findings() -> list[object]:
    root = FUZZ / "open"
    found = sorted(f for f in root.glob("*/*") if f.is_file()) if root.is_dir() else []
    return [
        pytest.param(
            f.parent.name, f, id=f"{f.parent.name}/{f.name}",
            marks=pytest.mark.xfail(strict=True, reason="open finding, reported (fuzz/open/README.md)"),
        )
        for f in found
    ]


@pytest.mark.parametrize(("name", "path"), _open_findings())
def test_open_findings_still_break_their_harness(name: str, path: Path) -> None:
    """An open finding fails its harness; once fixed this XPASSes (strict), which
    says: move the input to fuzz/regressions/<name>/."""
    _load(name)(path.read_bytes())


@pytest.mark.parametrize("folder", ["regressions", "open"])
def test_reproducers_sit_under_a_harness_name(folder: str) -> None:
    """A reproducer must sit under a harness's name, or nothing would replay it."""
    root = FUZZ / folder
    if root.is_dir():
        stray = [d.name for d in root.iterdir() if d.is_dir() and d.name not in HARNESSES]
        assert not stray, f"reproducers for unknown harnesses: {stray}"
