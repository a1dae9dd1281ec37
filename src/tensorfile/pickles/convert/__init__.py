"""``tensorfile.pickles.convert``: the converter's public name, kept (it lives in :mod:`tensorfile.convert`).

A package rather than a module so that the converter's body could move to
:mod:`tensorfile.convert._convert` as a rename.
"""

from tensorfile.convert import (
    ConversionReport,
    DroppedValue,
    FileAction,
    ProgressCallback,
    convert,
)

__all__ = ["ConversionReport", "DroppedValue", "FileAction", "ProgressCallback", "convert"]
