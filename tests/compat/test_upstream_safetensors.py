"""safetensors 0.8.0's own Python tests, run against tensorfile.

The vendored files (upstream/st_*.py, see upstream/NOTICE.md) are imported
with ``safetensors`` aliased to tensorfile by :func:`tensorfile.compat.install`
and the alias is removed again right after, so the rest of the suite still
compares against the real safetensors. Their tests are re-exported here for
pytest to collect. Tests whose framework is not installed are skipped (the
vendored module fails to import). Where tensorfile deliberately differs from
the reference, conftest.py marks the test as a strict expected failure, with
the reason (spec/FORMAT.md, "Drop-in differences").
"""

from __future__ import annotations

import importlib.util
import sys
import unittest
from pathlib import Path
from types import ModuleType

import pytest

from tensorfile import compat

_HERE = Path(__file__).parent / "upstream"

# Vendored module -> the framework it needs beyond numpy (its test module
# imports it at the top, so without it the module is left out).
_FILES = {
    "st_simple": "torch",
    "st_pt_comparison": "torch",
    "st_pt_model": "torch",
    "st_handle": None,
    "st_multithreaded": "torch",
    "st_threadable": None,
    "st_pread_backend": "torch",
    "st_flax_comparison": "flax",
    "st_tf_comparison": "tensorflow",
    "st_paddle_comparison": "paddle",
    "st_mlx_comparison": "mlx",
}


def _import_aliased(stem: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"tensorfile_upstream_{stem}", _HERE / f"{stem}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    was_installed = compat.installed()
    compat.install()
    try:
        spec.loader.exec_module(module)
    finally:
        if not was_installed:
            compat.uninstall()
    return module


def _export() -> None:
    for stem, needs in _FILES.items():
        if needs is not None and importlib.util.find_spec(needs) is None:
            continue
        module = _import_aliased(stem)
        sys.modules[module.__name__] = module
        for name, value in vars(module).items():
            if getattr(value, "__module__", "") != module.__name__:
                continue
            if name.startswith("test_") and callable(value):
                globals()[f"test_{stem}__{name}"] = value
            elif isinstance(value, type) and issubclass(value, unittest.TestCase):
                globals()[f"{stem}__{name}"] = value


_export()


def test_the_alias_is_gone_after_import() -> None:
    """The rest of the suite compares against the real safetensors."""
    safetensors = pytest.importorskip("safetensors")

    assert "_safetensors_rust" in repr(safetensors.SafetensorError)
    assert not compat.installed()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
