"""Regression tests for what fuzzing found in the format core.

Each input lives in ``fuzz/regressions/header/`` (the replay test runs it
through the whole harness contract too); these tests pin the specific
behaviour the fix promises.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tensorfile import load, safe_open
from tensorfile.errors import FrameworkError

REGRESSIONS = Path(__file__).resolve().parents[2] / "fuzz" / "regressions" / "header"


@pytest.mark.parametrize("backend", ["mmap", "pread"])
def test_more_dimensions_than_numpy_allows_is_a_framework_error(backend: str) -> None:
    """A 65-dimensional tensor is valid safetensors, but numpy caps arrays at 64
    dimensions: reading it as numpy used to escape as numpy's bare ValueError."""
    path = REGRESSIONS / "ndim_65_numpy_limit"
    with safe_open(path, "np", backend=backend) as f:
        assert f.get_slice("a").get_shape() == [1] * 65  # the header itself is fine
        with pytest.raises(FrameworkError, match="65 dimensions"):
            f.get_tensor("a")
        with pytest.raises(FrameworkError, match="65 dimensions"):
            f.get_slice("a")[...]
    with pytest.raises(FrameworkError):
        load(path.read_bytes())


def test_more_dimensions_than_numpy_allows_reads_through_torch() -> None:
    torch = pytest.importorskip("torch")
    with safe_open(REGRESSIONS / "ndim_65_numpy_limit", "pt") as f:
        t = f.get_tensor("a")
    assert t.dim() == 65 and t.dtype == torch.uint8 and int(t.reshape(-1)[0]) == 5
