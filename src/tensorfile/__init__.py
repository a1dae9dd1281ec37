"""tensorfile: safe, fast model weights.

The whole public surface of the format core::

    from tensorfile import safe_open, load_file, save_file, load, save

``tensorfile.numpy`` and ``tensorfile.torch`` mirror ``safetensors.numpy`` and
``safetensors.torch`` function for function. Signing and verification live in
``tensorfile.integrity``; the pickle scanner and converter in
``tensorfile.pickles``. Every error raised on bad input derives from
:class:`tensorfile.errors.TensorfileError`.
"""

from __future__ import annotations

from tensorfile._io.reader import SafeOpen, TensorSlice, load, load_file, safe_open
from tensorfile._io.writer import save, save_file
from tensorfile.errors import (
    ClosedFileError,
    FormatError,
    FrameworkError,
    SerializationError,
    TensorfileError,
    TensorNotFoundError,
)

__version__ = "0.1.0"

__all__ = [
    "ClosedFileError",
    "FormatError",
    "FrameworkError",
    "SafeOpen",
    "SerializationError",
    "TensorNotFoundError",
    "TensorSlice",
    "TensorfileError",
    "__version__",
    "load",
    "load_file",
    "safe_open",
    "save",
    "save_file",
]
