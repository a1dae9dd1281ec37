"""What the remote tests share besides fixtures: the served tensors, the
served model, and the comparison of what came back (a module of its own:
``conftest`` is a different module in every test folder)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


def tensors(seed: int = 0) -> dict[str, np.ndarray[Any, Any]]:
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray[Any, Any]] = {
        f"layer.{i}.weight": rng.standard_normal((64, 256)).astype(np.float32) for i in range(6)
    }
    out["embed"] = rng.integers(0, 1000, size=(512, 64), dtype=np.int64)
    out["empty"] = np.zeros((0, 4), dtype=np.float16)
    out["scalar"] = np.array(3.5, dtype=np.float64)
    return out


@dataclass
class Model:
    """A served folder: ``m.safetensors`` (signed with ``key``), a sharded copy
    (``sharded/``, with its index and its own signature), and the tensors."""

    root: Path
    key: Path
    pub: Path
    tensors: dict[str, np.ndarray[Any, Any]]


def same(got: dict[str, Any], want: dict[str, np.ndarray[Any, Any]]) -> None:
    assert sorted(got) == sorted(want)
    for k, v in want.items():
        assert got[k].dtype == v.dtype and got[k].shape == v.shape, k
        np.testing.assert_array_equal(got[k], v)
