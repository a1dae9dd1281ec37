"""The framework-free half of ``safetensors``' Rust core, over tensorfile's
reader and writer: :func:`serialize`, :func:`serialize_file` (tensors given as
:class:`~tensorfile._frameworks.TensorSpec` raw memory), :func:`deserialize`
(tensors as bytes) and ``_safe_open_handle`` (a file object).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import IO, TYPE_CHECKING, Any

from tensorfile import _api
from tensorfile._format import header as hdr
from tensorfile._frameworks import TensorSpec
from tensorfile._io import reader, writer
from tensorfile.errors import NotATensorError

if TYPE_CHECKING:
    from tensorfile.integrity.onload import VerifyWith


def _specs(tensor_dict: Mapping[str, TensorSpec]) -> Mapping[str, TensorSpec]:
    if not isinstance(tensor_dict, Mapping):
        raise NotATensorError(
            f"expected a dict of str to TensorSpec, got {type(tensor_dict).__name__}"
        )
    for name, spec in tensor_dict.items():
        if not isinstance(spec, TensorSpec):
            raise NotATensorError(
                f"tensor {name!r}: expected a TensorSpec, got {type(spec).__name__} "
                "(safetensors 0.8 takes TensorSpec, not dicts)"
            )
    return tensor_dict


def serialize(
    tensor_dict: Mapping[str, TensorSpec], metadata: Mapping[str, str] | None = None
) -> bytes:
    """safetensors bytes of raw-memory tensors (``safetensors.serialize``)."""
    return writer.save(_specs(tensor_dict), metadata)


def serialize_file(
    tensor_dict: Mapping[str, TensorSpec],
    filename: str | os.PathLike[str],
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Write raw-memory tensors to ``filename`` atomically (``safetensors.serialize_file``)."""
    writer.save_file(_specs(tensor_dict), filename, metadata)


def deserialize(bytes: bytes | bytearray | memoryview) -> list[tuple[str, dict[str, Any]]]:
    """``[(name, {"dtype": "F32", "shape": [...], "data": bytearray}), ...]`` in file
    order, each ``data`` a copy (``safetensors.deserialize``)."""
    buf = memoryview(bytes).cast("B")
    header = hdr.parse(buf)
    out: list[tuple[str, dict[str, Any]]] = []
    for info in header.tensors.values():
        start = header.data_offset + info.start
        out.append(
            (
                info.name,
                {
                    "dtype": info.dtype.name,
                    "shape": list(info.shape),
                    "data": bytearray(buf[start : start + info.nbytes]),
                },
            )
        )
    return out


def _safe_open_handle(
    f: IO[Any], framework: str, device: str = "cpu", *, verify: VerifyWith | None = None
) -> reader.SafeOpen:
    """``safe_open`` on an open file object (``safetensors._safe_open_handle``)."""
    return _api.safe_open(f, framework, device, verify=verify)
