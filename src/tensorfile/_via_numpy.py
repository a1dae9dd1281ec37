"""What tensorfile.flax, .tensorflow, .paddle and .mlx share: each reads and
writes through numpy arrays, converted by :mod:`tensorfile._frameworks`."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from tensorfile import _api
from tensorfile._frameworks import from_numpy, import_framework, to_numpy
from tensorfile._io import writer
from tensorfile.errors import SerializationError

if TYPE_CHECKING:
    from tensorfile.integrity.onload import VerifyWith


def require(framework: str, module: str) -> None:
    """Raise ImportError at import of ``module`` when ``framework`` is not installed,
    as safetensors' module does: code that probes ``import safetensors.flax``
    (through :mod:`tensorfile.compat`) sees the same answer. The framework
    itself is imported on first use."""
    import importlib.util

    if importlib.util.find_spec(framework) is None:
        raise ImportError(
            f"{module} needs {framework}, which is not installed "
            f"(pip install 'tensorfile[{module.rsplit('.', 1)[-1]}]')",
            name=framework,
        )


def arrays(framework: str, tensors: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(tensors, Mapping):
        raise SerializationError(
            f"expected a dict of names to {framework} arrays, got {type(tensors).__name__}"
        )
    return {name: to_numpy(framework, name, value) for name, value in tensors.items()}


def save(framework: str, tensors: Mapping[str, Any], metadata: Mapping[str, str] | None) -> bytes:
    return writer.save(arrays(framework, tensors), metadata)


def save_file(
    framework: str,
    tensors: Mapping[str, Any],
    filename: str | os.PathLike[str],
    metadata: Mapping[str, str] | None,
    durable: bool = True,
) -> None:
    writer.save_file(arrays(framework, tensors), filename, metadata, durable=durable)


def load(framework: str, data: bytes, verify: VerifyWith | None, device: str = "cpu") -> dict[str, Any]:
    import_framework(framework)  # fail before reading anything
    return {
        k: from_numpy(framework, v, device)
        for k, v in _api.load(data, "np", verify=verify).items()
    }


def load_file(
    framework: str,
    filename: str | os.PathLike[str],
    backend: str,
    verify: VerifyWith | None,
    device: str = "cpu",
    *,
    storage_options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    import_framework(framework)
    loaded = _api.load_file(filename, "np", backend=backend, verify=verify,
                            storage_options=storage_options)
    return {k: from_numpy(framework, v, device) for k, v in loaded.items()}
