"""Drop-in replacement for ``safetensors.tensorflow``; extra ``tensorflow``.

TensorFlow copies: ``tf.convert_to_tensor`` does not wrap a read-only buffer,
so each tensor ``load_file`` returns is a copy of the bytes in the file's map
(one copy, made by TensorFlow). Saving reads each tensor with ``.numpy()``.
``load_file`` and ``load`` take ``verify=`` as :func:`tensorfile.safe_open`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from tensorfile import _via_numpy

if TYPE_CHECKING:
    from tensorfile.integrity.onload import VerifyWith

_FW = "tensorflow"
_via_numpy.require(_FW, __name__)


def save(tensors: dict[str, Any], metadata: dict[str, str] | None = None) -> bytes:
    """Serialize TensorFlow tensors to safetensors bytes."""
    return _via_numpy.save(_FW, tensors, metadata)


def save_file(
    tensors: dict[str, Any],
    filename: str | os.PathLike[str],
    metadata: dict[str, str] | None = None,
    *,
    durable: bool = True,
) -> None:
    """Write TensorFlow tensors to ``filename`` atomically; ``durable=False`` skips the syncs (see
    :func:`tensorfile.save_file`)."""
    _via_numpy.save_file(_FW, tensors, filename, metadata, durable)


def load(data: bytes, *, verify: VerifyWith | None = None) -> dict[str, Any]:
    """TensorFlow tensors from safetensors bytes."""
    return _via_numpy.load(_FW, data, verify)


def load_file(
    filename: str | os.PathLike[str],
    *,
    backend: str = "mmap",
    verify: VerifyWith | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """TensorFlow tensors from a file (copies, see above).

    ``filename`` may be a URL, read with fsspec's ``storage_options`` (see
    :func:`tensorfile.safe_open`)."""
    return _via_numpy.load_file(_FW, filename, backend, verify, storage_options=storage_options)


__all__ = ["load", "load_file", "save", "save_file"]
