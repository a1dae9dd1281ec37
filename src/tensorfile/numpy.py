"""Drop-in replacement for ``safetensors.numpy``.

Same functions, same signatures: change the import and code keeps working.
One difference, on purpose: ``load_file`` returns read-only arrays that are
views of the file's memory map instead of copies (call ``.copy()`` on an array
you need to modify). Non-contiguous arrays are written correctly.

``load_file`` and ``load`` also take ``verify=`` (a public key, root
certificates or a :class:`tensorfile.integrity.TrustPolicy`, as
:func:`tensorfile.safe_open` does): each array is checked against the model's
signature before it is returned.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from tensorfile import _api
from tensorfile._api import safe_open as safe_open
from tensorfile._frameworks import TensorSpec as TensorSpec
from tensorfile._io import writer
from tensorfile._raw import deserialize as deserialize
from tensorfile._raw import serialize as serialize
from tensorfile._raw import serialize_file as serialize_file

if TYPE_CHECKING:
    from tensorfile.integrity.onload import VerifyWith


def save(tensor_dict: dict[str, np.ndarray[Any, Any]], metadata: dict[str, str] | None = None) -> bytes:
    """Serialize numpy arrays to safetensors bytes."""
    return writer.save(tensor_dict, metadata)


def save_file(
    tensor_dict: dict[str, np.ndarray[Any, Any]],
    filename: str | os.PathLike[str],
    metadata: dict[str, str] | None = None,
    *,
    durable: bool = True,
) -> None:
    """Write numpy arrays to ``filename`` atomically; ``durable=False`` skips the syncs (see
    :func:`tensorfile.save_file`)."""
    writer.save_file(tensor_dict, filename, metadata, durable=durable)


def load(data: bytes, *, verify: VerifyWith | None = None) -> dict[str, np.ndarray[Any, Any]]:
    """Arrays from safetensors bytes (``verify``: see :func:`tensorfile.torch.load`)."""
    return _api.load(data, "np", verify=verify)


def load_file(
    filename: str | os.PathLike[str],
    *,
    backend: str = "mmap",
    verify: VerifyWith | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> dict[str, np.ndarray[Any, Any]]:
    """Arrays from a file: read-only views of its map (``backend="pread"``: private copies).

    With ``verify`` each array is read into private memory and checked against
    the signature first. ``filename`` may be a URL (``s3://``, ``https://``,
    any fsspec scheme; an index or folder URL is a sharded model), read with
    fsspec's ``storage_options`` (see :func:`tensorfile.safe_open`).
    """
    return _api.load_file(filename, "np", backend=backend, verify=verify,
                          storage_options=storage_options)


__all__ = ["load", "load_file", "save", "save_file"]
