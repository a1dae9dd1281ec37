"""Drop-in replacement for ``safetensors.paddle``; extra ``paddle``.

paddle copies: its tensors are writable, and sharing a read-only map with a
writable tensor would crash the process on the first write, so each tensor
``load_file`` returns is a copy (``paddle.to_tensor``) on ``device``. Saving
reads each tensor on the cpu (``.numpy()``; bf16 keeps its type).
``load_file`` and ``load`` take ``verify=`` as :func:`tensorfile.safe_open`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from tensorfile import _via_numpy

if TYPE_CHECKING:
    from tensorfile.integrity.onload import VerifyWith

_FW = "paddle"
_via_numpy.require(_FW, __name__)


def save(tensors: dict[str, Any], metadata: dict[str, str] | None = None) -> bytes:
    """Serialize paddle tensors to safetensors bytes."""
    return _via_numpy.save(_FW, tensors, metadata)


def save_file(
    tensors: dict[str, Any],
    filename: str | os.PathLike[str],
    metadata: dict[str, str] | None = None,
    *,
    durable: bool = True,
) -> None:
    """Write paddle tensors to ``filename`` atomically; ``durable=False`` skips the syncs (see
    :func:`tensorfile.save_file`)."""
    _via_numpy.save_file(_FW, tensors, filename, metadata, durable)


def load(data: bytes, device: str = "cpu", *, verify: VerifyWith | None = None) -> dict[str, Any]:
    """paddle tensors from safetensors bytes, on ``device``."""
    return _via_numpy.load(_FW, data, verify, device)


def load_file(
    filename: str | os.PathLike[str],
    device: str = "cpu",
    *,
    backend: str = "mmap",
    verify: VerifyWith | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """paddle tensors from a file, on ``device`` (copies, see above).

    ``filename`` may be a URL, read with fsspec's ``storage_options`` (see
    :func:`tensorfile.safe_open`)."""
    return _via_numpy.load_file(_FW, filename, backend, verify, device,
                                storage_options=storage_options)


__all__ = ["load", "load_file", "save", "save_file"]
