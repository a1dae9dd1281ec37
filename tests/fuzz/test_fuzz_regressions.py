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
    folders = [FUZZ / "corpus" / name, FUZZ / "regressions" / name]
    return sorted(
        f for d in folders if d.is_dir() for f in d.rglob("*") if f.is_file() and f.name != "README.md"
    )


@pytest.mark.parametrize("name", HARNESSES)
def test_replay_seeds_and_regressions(name: str) -> None:
    inputs = _inputs(name)
    assert inputs, f"harness {name} has no seeds in fuzz/corpus/{name}"
    test_one_input = _load(name)
    failures = []
    for f in inputs:
        try:
            test_one_input(f.read_bytes())
        except Exception as e:  # collect all, so one run shows every broken input
            failures.append(f"{f.relative_to(FUZZ)}: {type(e).__name__}: {e}")
    assert not failures, "\n".join(failures)


def test_every_harness_has_a_reproducer_folder_or_none_needed() -> None:
    """A reproducer must sit under a harness's name, or pytest would never replay it."""
    regressions = FUZZ / "regressions"
    if regressions.is_dir():
        stray = [d.name for d in regressions.iterdir() if d.is_dir() and d.name not in HARNESSES]
        assert not stray, f"reproducers for unknown harnesses: {stray}"
