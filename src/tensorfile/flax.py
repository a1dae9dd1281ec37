"""Drop-in replacement for ``safetensors.flax`` (jax arrays); extra ``flax``.

``load_file`` returns jax arrays that share the file's memory map, without a
copy, when the array is on the cpu and its data is aligned as jax requires
(``jax.device_put`` wraps the host buffer in place; jax arrays are immutable,
so a read-only map is safe to share); otherwise (other devices, unaligned
data) jax copies. ``load`` copies. As with the reference, 64-bit values become
32-bit unless ``jax_enable_x64`` is set.

Saving reads each array's host buffer (``numpy.asarray``, no copy on the cpu).
``load_file`` and ``load`` take ``verify=`` as :func:`tensorfile.safe_open`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from tensorfile import _via_numpy

if TYPE_CHECKING:
    from tensorfile.integrity.onload import VerifyWith

_FW = "jax"
_via_numpy.require(_FW, __name__)


def save(tensors: dict[str, Any], metadata: dict[str, str] | None = None) -> bytes:
    """Serialize jax arrays to safetensors bytes."""
    return _via_numpy.save(_FW, tensors, metadata)


def save_file(
    tensors: dict[str, Any],
    filename: str | os.PathLike[str],
    metadata: dict[str, str] | None = None,
    *,
    durable: bool = True,
) -> None:
    """Write jax arrays to ``filename`` atomically; ``durable=False`` skips the syncs (see
    :func:`tensorfile.save_file`)."""
    _via_numpy.save_file(_FW, tensors, filename, metadata, durable)


def load(data: bytes, *, verify: VerifyWith | None = None) -> dict[str, Any]:
    """jax arrays from safetensors bytes."""
    return _via_numpy.load(_FW, data, verify)


def load_file(
    filename: str | os.PathLike[str],
    *,
    backend: str = "mmap",
    verify: VerifyWith | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """jax arrays from a file (sharing its map where jax can, see above).

    ``filename`` may be a URL, read with fsspec's ``storage_options`` (see
    :func:`tensorfile.safe_open`)."""
    return _via_numpy.load_file(_FW, filename, backend, verify, storage_options=storage_options)


__all__ = ["load", "load_file", "save", "save_file"]
