"""tensorfile: safe, fast model weights.

The whole public surface of the format core::

    from tensorfile import safe_open, load_file, save_file, load, save
    from tensorfile import StreamWriter, save_streaming  # bigger than memory

``tensorfile.numpy``, ``tensorfile.torch``, ``tensorfile.flax``,
``tensorfile.tensorflow``, ``tensorfile.paddle`` and ``tensorfile.mlx`` mirror
the ``safetensors`` modules of the same names function for function, and the
rest of ``safetensors``' top level is here too (``SafetensorError``,
``TensorSpec``, ``serialize``, ``serialize_file``, ``deserialize``);
:mod:`tensorfile.compat` makes libraries that ``import safetensors`` use
tensorfile. Signing and verification live in
``tensorfile.integrity``; the pickle scanner and converter in
``tensorfile.pickles``. Every error raised on bad input derives from
:class:`tensorfile.errors.TensorfileError`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tensorfile.errors import (
    ClosedFileError,
    FormatError,
    FrameworkError,
    SafetensorError,
    SerializationError,
    TensorfileError,
    TensorNotFoundError,
)

if TYPE_CHECKING:
    from tensorfile._api import load, load_file, safe_open
    from tensorfile._frameworks import TensorSpec
    from tensorfile._io.reader import SafeOpen, TensorSlice
    from tensorfile._io.writer import save, save_file
    from tensorfile._raw import _safe_open_handle as _safe_open_handle
    from tensorfile._raw import deserialize, serialize, serialize_file
    from tensorfile.streaming import StreamWriter, save_streaming

# The reader and writer (and so numpy) load on first use: the scanner and the
# CLI import tensorfile.* without paying for numpy (PEP 562).
_LAZY = {
    "SafeOpen": "tensorfile._io.reader",
    "TensorSlice": "tensorfile._io.reader",
    "load": "tensorfile._api",
    "load_file": "tensorfile._api",
    "safe_open": "tensorfile._api",
    "save": "tensorfile._io.writer",
    "save_file": "tensorfile._io.writer",
    "TensorSpec": "tensorfile._frameworks",
    "serialize": "tensorfile._raw",
    "serialize_file": "tensorfile._raw",
    "deserialize": "tensorfile._raw",
    "_safe_open_handle": "tensorfile._raw",
    "StreamWriter": "tensorfile.streaming",
    "save_streaming": "tensorfile.streaming",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'tensorfile' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__version__ = "0.1.0"

__all__ = [
    "ClosedFileError",
    "FormatError",
    "FrameworkError",
    "SafeOpen",
    "SafetensorError",
    "SerializationError",
    "StreamWriter",
    "TensorNotFoundError",
    "TensorSlice",
    "TensorSpec",
    "TensorfileError",
    "__version__",
    "deserialize",
    "load",
    "load_file",
    "safe_open",
    "save",
    "save_file",
    "save_streaming",
    "serialize",
    "serialize_file",
]
