"""Replay the container differential vectors (spec/container-vectors/) against torch.

Each file once fooled the scanner (``safe`` or a missed global while
``torch.load`` reached a payload). The check is the fuzzer's own contract
(``fuzz/fuzz_torchdiff.check_file``: every global the real torch.load reaches,
read through an inert recording unpickler, is reported by the scan) and the
verdict is never ``safe``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tensorfile.pickles import Verdict, scan

ROOT = Path(__file__).resolve().parents[2]
VECTORS = sorted((ROOT / "spec" / "container-vectors").glob("*.pt"))
sys.path.insert(0, str(ROOT / "fuzz"))

pytest.importorskip("torch")


def test_vectors_are_listed_in_the_readme() -> None:
    readme = (ROOT / "spec" / "container-vectors" / "README.md").read_text()
    assert VECTORS
    assert all(f"`{v.name}`" in readme for v in VECTORS)


@pytest.mark.parametrize("vector", VECTORS, ids=[v.stem for v in VECTORS])
def test_vector_is_never_safe_and_reports_what_torch_reaches(vector: Path) -> None:
    import fuzz_torchdiff

    verdict, reading, problems = fuzz_torchdiff.compare(vector)
    assert verdict is not Verdict.SAFE
    assert not problems, (problems, reading)
    assert scan(vector).files[0].verdict is verdict
